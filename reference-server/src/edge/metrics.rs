//! Counters and a queue-wait histogram, exposed in the Prometheus text format at
//! `/metrics`. Atomics only: recording never takes a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A gauge read at scrape time: series name, help text, and its values — one per
/// workspace (labelled) when per-workspace series are on, else one server-wide total.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(Option<String>, u64)>);

/// Upper bounds (seconds) of the outbound queue-wait histogram's buckets.
const WAIT_BUCKETS_S: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Server-wide counters; each field is one Prometheus series `rtsync_<name>`.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            wait_buckets: [AtomicU64; WAIT_BUCKETS_S.len()],
            wait_count: AtomicU64,
            wait_sum_us: AtomicU64,
        }

        impl Metrics {
            fn write_counters(&self, out: &mut String) {
                $(
                    let _ = writeln!(out, "# HELP rtsync_{} {}", stringify!($name), $help);
                    let kind = if stringify!($name).ends_with("_total") { "counter" } else { "gauge" };
                    let _ = writeln!(out, "# TYPE rtsync_{} {}", stringify!($name), kind);
                    let _ = writeln!(out, "rtsync_{} {}", stringify!($name), self.$name.load(Relaxed));
                )*
            }
        }
    };
}

counters! {
    connections_ws_opened_total: "WebSocket sessions opened.",
    connections_sse_opened_total: "SSE streams opened.",
    connections_active: "Open WebSocket and SSE connections.",
    messages_in_total: "Frames received from clients (WebSocket and POST /api/events).",
    messages_out_total: "Frames written to clients.",
    bytes_out_total: "Bytes of frames written to clients.",
    mutations_total: "Mutations answered (ACK, CONFLICT_DETECTED or ERROR).",
    errors_sent_total: "ERROR frames sent.",
    rate_limited_total: "Messages refused with RATE_LIMITED.",
    closes_policy_total: "Connections closed 1008 (sustained abuse, protocol error).",
    closes_too_big_total: "Connections closed 1009 (frame too large).",
    closes_slow_consumer_total: "Connections closed 1013 (outbound queue full).",
    closes_heartbeat_timeout_total: "Connections closed 4000 (silent past the heartbeat timeout).",
    closes_token_expired_total: "Sessions ended 4001 (their token expired).",
    closes_unsupported_total: "Connections closed 1003 (a binary frame).",
    auth_failures_total: "Connections or requests refused 401.",
    admission_refused_total: "Connections refused 503/429 (admission rate, connection limits).",
    header_timeouts_total: "Connections closed without complete request headers within header_read_timeout_ms.",
    handshakes_evicted_total: "Connections closed waiting for their first request, to make room (handshakes_max).",
    analytics_reports_total: "Performance reports accepted.",
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn observe_queue_wait(&self, wait: Duration) {
        let s = wait.as_secs_f64();
        for (i, le) in WAIT_BUCKETS_S.iter().enumerate() {
            if s <= *le {
                self.wait_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.wait_count.fetch_add(1, Relaxed);
        self.wait_sum_us.fetch_add(wait.as_micros() as u64, Relaxed);
    }

    /// The exposition; `extra` holds gauges read at scrape time (per workspace).
    pub fn render(&self, extra: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        self.write_counters(&mut out);
        let name = "rtsync_outbound_queue_wait_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time a frame waited in a connection's outbound queue."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, le) in WAIT_BUCKETS_S.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.wait_buckets[i].load(Relaxed)
            );
        }
        let count = self.wait_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.wait_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        for (series, help, samples) in extra {
            let _ = writeln!(out, "# HELP rtsync_{series} {help}");
            let _ = writeln!(out, "# TYPE rtsync_{series} gauge");
            for (ws, v) in samples {
                match ws {
                    Some(ws) => {
                        let ws = ws.replace('\\', "\\\\").replace('"', "\\\"");
                        let _ = writeln!(out, "rtsync_{series}{{workspace=\"{ws}\"}} {v}");
                    }
                    None => {
                        let _ = writeln!(out, "rtsync_{series} {v}");
                    }
                }
            }
        }
        out
    }
}
