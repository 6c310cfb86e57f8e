//! Per-client performance monitor: the seed's `PerformanceMetrics` fields that make
//! sense outside a browser — state-update time, query resolution time, network
//! requests, errors and warnings, cache hit rate — as counters and HDR histograms,
//! and the report the seed POSTs to `/api/analytics/performance`. Browser-only
//! figures (Core Web Vitals, bundle size, render time) are reported as 0.

use hdrhistogram::Histogram;
use rtsync_protocol::Timestamp;
use rtsync_protocol::perf::{MemoryFigures, NetworkMetric, PerformanceMetrics};
use std::collections::VecDeque;

/// Network requests kept for the next report (the seed sends them all; we bound it).
pub const NETWORK_KEPT: usize = 100;

/// The seed's `PerformanceMonitor`, for one tab: what it records and the report it
/// makes for `POST /api/analytics/performance`.
///
/// No scenario drives it yet: the simulator's tabs measure latencies with their own
/// recorder and send no performance reports, so only the unit test uses it.
#[derive(Debug)]
pub struct PerformanceMonitor {
    /// Applying a change to local state, µs.
    pub state_update_us: Histogram<u64>,
    /// Query start → data available, ms.
    pub query_resolution_ms: Histogram<u64>,
    network: VecDeque<NetworkMetric>,
    /// Requests dropped from the list past [`NETWORK_KEPT`] since the monitor began.
    pub network_dropped: u64,
    /// Errors counted by the app (reported as `errorCount`).
    pub errors: u64,
    /// Warnings counted by the app (reported as `warningCount`).
    pub warnings: u64,
}

fn histogram(max: u64) -> Histogram<u64> {
    // 3 significant figures over 1..=max: a few KiB each.
    Histogram::new_with_bounds(1, max, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

impl Default for PerformanceMonitor {
    fn default() -> Self {
        PerformanceMonitor {
            state_update_us: histogram(60_000_000),
            query_resolution_ms: histogram(3_600_000),
            network: VecDeque::new(),
            network_dropped: 0,
            errors: 0,
            warnings: 0,
        }
    }
}

impl PerformanceMonitor {
    /// Records one state update's duration (0 counts as 1 µs).
    pub fn record_state_update_us(&mut self, us: u64) {
        self.state_update_us.saturating_record(us.max(1));
    }

    /// Records one query's resolution time (0 counts as 1 ms).
    pub fn record_query_ms(&mut self, ms: u64) {
        self.query_resolution_ms.saturating_record(ms.max(1));
    }

    /// Keeps one request for the next report; past [`NETWORK_KEPT`] the oldest goes.
    pub fn record_request(&mut self, request: NetworkMetric) {
        if self.network.len() >= NETWORK_KEPT {
            self.network.pop_front();
            self.network_dropped += 1;
        }
        self.network.push_back(request);
    }

    /// The seed's report. Means stand for the seed's single figures; the histograms
    /// hold the distributions. Drains the kept requests; the histograms and counters
    /// keep counting. `memory_bytes` is reported as used and total.
    pub fn report(
        &mut self,
        id: &str,
        session_id: &str,
        user_id: &str,
        now_ms: u64,
        cache_hit_rate: f64,
        memory_bytes: usize,
    ) -> PerformanceMetrics {
        let m = PerformanceMetrics {
            id: id.to_owned(),
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            timestamp: Timestamp(now_ms),
            lcp: 0.0,
            fid: 0.0,
            cls: 0.0,
            fcp: 0.0,
            tti: 0.0,
            memory: MemoryFigures {
                used: memory_bytes as f64,
                total: memory_bytes as f64,
                limit: 0.0,
            },
            network_requests: self.network.drain(..).collect(),
            cache_hit_rate: cache_hit_rate.clamp(0.0, 1.0),
            bundle_size: 0.0,
            render_time: 0.0,
            state_update_time: self.state_update_us.mean() / 1000.0,
            query_resolution_time: self.query_resolution_ms.mean(),
            user_actions: Vec::new(),
            error_count: self.errors,
            warning_count: self.warnings,
        };
        debug_assert!(m.validate().is_ok());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtsync_protocol::perf::NetworkKind;

    #[test]
    fn reports_valid_seed_metrics_with_bounded_network_lists() {
        let mut p = PerformanceMonitor::default();
        for i in 0..150 {
            p.record_request(NetworkMetric {
                url: "/api/entities/tasks".into(),
                method: "GET".into(),
                duration: 12.0,
                size: 2048.0,
                cached: i % 2 == 0,
                status: 200,
                kind: NetworkKind::Fetch,
            });
        }
        p.record_state_update_us(40);
        p.record_state_update_us(60);
        p.record_query_ms(20);
        p.errors = 2;
        let r = p.report("m1", "s1", "u1", 5, 0.85, 1 << 20);
        assert!(r.validate().is_ok());
        assert_eq!(
            (r.network_requests.len(), p.network_dropped),
            (NETWORK_KEPT, 50)
        );
        assert!((r.state_update_time - 0.05).abs() < 0.001);
        assert_eq!((r.error_count, r.cache_hit_rate), (2, 0.85));
        assert_eq!(
            p.report("m2", "s1", "u1", 6, 0.9, 0).network_requests.len(),
            0,
            "a report drains them"
        );
    }
}
