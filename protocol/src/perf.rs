//! The seed's performance-monitoring types, as `POST /api/analytics/performance` takes them.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// The seed's `PerformanceMetrics.memory` (a browser's `performance.memory`), bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFigures {
    /// Heap in use, bytes.
    pub used: f64,
    /// Heap allocated, bytes.
    pub total: f64,
    /// Heap limit, bytes (0 when unknown).
    pub limit: f64,
}

/// The seed's `NetworkMetric.type`: which transport a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// An HTTP request (`fetch`).
    Fetch,
    /// A WebSocket connection.
    Websocket,
    /// A Server-Sent Events stream.
    Sse,
}

/// The seed's `NetworkMetric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMetric {
    /// The request's URL.
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// How long it took, ms (the seed's name has no unit).
    pub duration: f64,
    /// Response size, bytes.
    pub size: f64,
    /// Whether it was answered from a cache.
    pub cached: bool,
    /// HTTP status (0 when the request failed before one).
    pub status: u16,
    /// The transport.
    #[serde(rename = "type")]
    pub kind: NetworkKind,
}

/// The seed's `UserActionMetric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserActionMetric {
    /// What the user did.
    pub action: String,
    /// On which element.
    pub element: String,
    /// When.
    pub timestamp: Timestamp,
    /// How long the app took to handle it, ms.
    pub duration: f64,
    /// Whether it succeeded.
    pub successful: bool,
}

/// The seed's `PerformanceMetrics`. Field names keep the seed's spelling, Core Web
/// Vitals in capitals included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceMetrics {
    /// The report's id.
    pub id: String,
    /// The reporting tab.
    pub session_id: String,
    /// The reporting user.
    pub user_id: String,
    /// When the report was made.
    pub timestamp: Timestamp,
    /// Largest Contentful Paint, ms (browser only; 0 from rtsync's client).
    #[serde(rename = "LCP")]
    pub lcp: f64,
    /// First Input Delay, ms (browser only; 0 from rtsync's client).
    #[serde(rename = "FID")]
    pub fid: f64,
    /// Cumulative Layout Shift, unitless (browser only; 0 from rtsync's client).
    #[serde(rename = "CLS")]
    pub cls: f64,
    /// First Contentful Paint, ms (browser only; 0 from rtsync's client).
    #[serde(rename = "FCP")]
    pub fcp: f64,
    /// Time to Interactive, ms (browser only; 0 from rtsync's client).
    #[serde(rename = "TTI")]
    pub tti: f64,
    /// Memory in use.
    pub memory: MemoryFigures,
    /// Requests since the last report (at most [`NETWORK_REQUESTS_MAX`]).
    pub network_requests: Vec<NetworkMetric>,
    /// Query-cache hits over queries, 0..=1.
    pub cache_hit_rate: f64,
    /// JavaScript bundle size, bytes (browser only; 0 from rtsync's client).
    pub bundle_size: f64,
    /// Render time, ms (browser only; 0 from rtsync's client).
    pub render_time: f64,
    /// Mean time to apply a change to local state, ms.
    pub state_update_time: f64,
    /// Mean time from a query's start to its data, ms.
    pub query_resolution_time: f64,
    /// User actions since the last report (at most [`USER_ACTIONS_MAX`]).
    pub user_actions: Vec<UserActionMetric>,
    /// Errors since the last report.
    pub error_count: u64,
    /// Warnings since the last report.
    pub warning_count: u64,
}

/// The most `networkRequests` a report may hold; past it the report is refused.
pub const NETWORK_REQUESTS_MAX: usize = 1000;
/// The most `userActions` a report may hold; past it the report is refused.
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
