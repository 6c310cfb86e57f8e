//! `simulate fidelity`: the same scenarios simulated and live (`--spawn-server`), their
//! latency percentiles side by side, and which differ beyond a stated tolerance.
//!
//! Simulated latencies are the network model alone: turmoil charges no CPU, no
//! scheduling and no timer granularity. Live runs pay all three on a shared machine —
//! the server, every tab and the fault proxies on the same cores, tokio timers that fire
//! on whole milliseconds. The tolerance says how much of that is "the same figure";
//! docs/performance.md ("Simulator fidelity") explains the rows beyond it.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The latencies compared (docs/metrics.md).
pub const METRICS: [&str; 4] = [
    "ws_delivery_ms",
    "sse_delivery_ms",
    "ack_ms",
    "reconnect_ms",
];

/// How far live may sit from simulated and still count as the same figure: within
/// `absolute_ms` or within `relative` of the simulated value, whichever is larger.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    pub absolute_ms: f64,
    pub relative: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        // Live adds a few ms of real work and timer rounding to every hop (measured:
        // 3 ms for an ACK with no latency to add, +1 ms per proxy hop); 5 ms or half
        // of the figure, whichever is larger, separates that from a model that is wrong.
        Tolerance {
            absolute_ms: 5.0,
            relative: 0.5,
        }
    }
}

impl Tolerance {
    pub fn holds(&self, sim: f64, live: f64) -> bool {
        (live - sim).abs() <= self.absolute_ms.max(self.relative * sim)
    }
}

/// One metric's percentiles in one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub sim: Option<Stats>,
    pub live: Option<Stats>,
    /// `None` when one side has no samples (nothing to judge).
    pub within: Option<bool>,
}

fn stats(summary: &Value, metric: &str) -> Option<Stats> {
    let all = &summary["metrics"][metric]["all"];
    let count = all["count"].as_u64().filter(|&c| c > 0)?;
    Some(Stats {
        count,
        p50: all["p50"].as_f64()?,
        p99: all["p99"].as_f64()?,
    })
}

/// Rows for every scenario present in both runs (`deterministic` sections of their
/// summaries, as `compare::load` reads them) and every metric either side measured.
pub fn rows(
    sim: &BTreeMap<String, Value>,
    live: &BTreeMap<String, Value>,
    tol: &Tolerance,
) -> Vec<Row> {
    let mut out = Vec::new();
    for (name, s) in sim {
        let Some(l) = live.get(name) else { continue };
        for metric in METRICS {
            let (a, b) = (stats(s, metric), stats(l, metric));
            if a.is_none() && b.is_none() {
                continue;
            }
            let within = match (a, b) {
                (Some(a), Some(b)) => Some(tol.holds(a.p50, b.p50) && tol.holds(a.p99, b.p99)),
                _ => None,
            };
            out.push(Row {
                scenario: name.clone(),
                metric: metric.to_owned(),
                sim: a,
                live: b,
                within,
            });
        }
    }
    out
}

/// A Markdown table (it reads as well in a terminal): one row per scenario and metric.
pub fn table(rows: &[Row]) -> String {
    let cell = |s: Option<Stats>| {
        s.map_or("—".to_owned(), |s| {
            format!("{} / {} ({})", s.p50, s.p99, s.count)
        })
    };
    let mut t = String::from(
        "| scenario | metric | simulated p50 / p99 (n) | live p50 / p99 (n) | within |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let verdict = match r.within {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "—",
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {verdict} |\n",
            r.scenario,
            r.metric,
            cell(r.sim),
            cell(r.live)
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(metric: &str, count: u64, p50: f64, p99: f64) -> Value {
        json!({"metrics": {metric: {"all": {"count": count, "p50": p50, "p99": p99}}}})
    }

    #[test]
    fn rows_judge_both_percentiles_and_leave_one_sided_metrics_unjudged() {
        let tol = Tolerance::default();
        let sim = BTreeMap::from([
            ("a".to_owned(), summary("ack_ms", 10, 10.0, 10.0)),
            ("b".to_owned(), summary("ack_ms", 10, 100.0, 200.0)),
            ("c".to_owned(), summary("ws_delivery_ms", 5, 10.0, 10.0)),
        ]);
        let live = BTreeMap::from([
            ("a".to_owned(), summary("ack_ms", 12, 14.0, 15.0)),
            ("b".to_owned(), summary("ack_ms", 12, 120.0, 420.0)),
            ("c".to_owned(), summary("ack_ms", 3, 1.0, 1.0)),
        ]);
        let r = rows(&sim, &live, &tol);
        let find = |s: &str, m: &str| r.iter().find(|x| x.scenario == s && x.metric == m);
        assert_eq!(
            find("a", "ack_ms").unwrap().within,
            Some(true),
            "+5 ms is within"
        );
        assert_eq!(
            find("b", "ack_ms").unwrap().within,
            Some(false),
            "p50 within 50%, p99 twice the simulated: beyond"
        );
        assert_eq!(find("c", "ack_ms").unwrap().within, None, "live only");
        assert_eq!(
            find("c", "ws_delivery_ms").unwrap().within,
            None,
            "simulated only"
        );
        let t = table(&r);
        assert!(
            t.contains("| b | ack_ms | 100 / 200 (10) | 120 / 420 (12) | ✗ |"),
            "{t}"
        );
    }
}
