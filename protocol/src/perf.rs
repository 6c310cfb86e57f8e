//! The seed's performance-monitoring types, as `POST /api/analytics/performance` takes them.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFigures {
    pub used: f64,
    pub total: f64,
    pub limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    Fetch,
    Websocket,
    Sse,
}

/// The seed's `NetworkMetric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMetric {
    pub url: String,
    pub method: String,
    pub duration: f64,
    pub size: f64,
    pub cached: bool,
    pub status: u16,
    #[serde(rename = "type")]
    pub kind: NetworkKind,
}

/// The seed's `UserActionMetric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserActionMetric {
    pub action: String,
    pub element: String,
    pub timestamp: Timestamp,
    pub duration: f64,
    pub successful: bool,
}

/// The seed's `PerformanceMetrics`. Field names keep the seed's spelling, Core Web
/// Vitals in capitals included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceMetrics {
    pub id: String,
    pub session_id: String,
    pub user_id: String,
    pub timestamp: Timestamp,
    #[serde(rename = "LCP")]
    pub lcp: f64,
    #[serde(rename = "FID")]
    pub fid: f64,
    #[serde(rename = "CLS")]
    pub cls: f64,
    #[serde(rename = "FCP")]
    pub fcp: f64,
    #[serde(rename = "TTI")]
    pub tti: f64,
    pub memory: MemoryFigures,
    pub network_requests: Vec<NetworkMetric>,
    pub cache_hit_rate: f64,
    pub bundle_size: f64,
    pub render_time: f64,
    pub state_update_time: f64,
    pub query_resolution_time: f64,
    pub user_actions: Vec<UserActionMetric>,
    pub error_count: u64,
    pub warning_count: u64,
}

/// Bounds a report is checked against before it is accepted.
pub const NETWORK_REQUESTS_MAX: usize = 1000;
pub const USER_ACTIONS_MAX: usize = 1000;

impl PerformanceMetrics {
    /// Checks what serde cannot: finite, non-negative figures and bounded lists.
    pub fn validate(&self) -> Result<(), String> {
        let figures = [
            ("LCP", self.lcp),
            ("FID", self.fid),
            ("CLS", self.cls),
            ("FCP", self.fcp),
            ("TTI", self.tti),
            ("memory.used", self.memory.used),
            ("memory.total", self.memory.total),
            ("memory.limit", self.memory.limit),
            ("bundleSize", self.bundle_size),
            ("renderTime", self.render_time),
            ("stateUpdateTime", self.state_update_time),
            ("queryResolutionTime", self.query_resolution_time),
        ];
        for (name, v) in figures {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.cache_hit_rate) {
            return Err(format!(
                "cacheHitRate must be within 0..=1, got {}",
                self.cache_hit_rate
            ));
        }
        if self.network_requests.len() > NETWORK_REQUESTS_MAX {
            return Err(format!(
                "networkRequests has more than {NETWORK_REQUESTS_MAX} entries"
            ));
        }
        if self.user_actions.len() > USER_ACTIONS_MAX {
            return Err(format!(
                "userActions has more than {USER_ACTIONS_MAX} entries"
            ));
        }
        Ok(())
    }
}
