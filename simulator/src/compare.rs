//! `simulate compare BASE NEW`: per scenario and metric, the change of p99 and mean
//! between two runs' `summary.json`, judged against a noise band; new anomalies and a
//! verdict that got worse are regressions too.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Band {
    /// Relative increase tolerated on p99 and means (0.10 = 10%).
    pub relative: f64,
    /// Absolute increase (ms) always tolerated, so 1 ms → 2 ms is not "+100%".
    pub absolute_ms: f64,
}

impl Default for Band {
    fn default() -> Self {
        Band {
            relative: 0.10,
            absolute_ms: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub stat: &'static str,
    pub base: f64,
    pub new: f64,
    pub regression: bool,
}

#[derive(Debug, Default)]
pub struct Comparison {
    pub rows: Vec<Row>,
    /// Scenario-level findings (new anomalies, verdict changes, missing scenarios).
    pub notes: Vec<(String, bool)>,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.regression) || self.notes.iter().any(|(_, bad)| *bad)
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "  {:<32} {:<24} {:<5} {:>10} {:>10} {:>8}\n",
            "scenario", "metric", "stat", "base", "new", "change"
        );
        for r in &self.rows {
            let change = if r.base > 0.0 {
                format!("{:+.1}%", (r.new - r.base) / r.base * 100.0)
            } else {
                "n/a".into()
            };
            s.push_str(&format!(
                "{} {:<32} {:<24} {:<5} {:>10.1} {:>10.1} {:>8}\n",
                if r.regression { "✗" } else { " " },
                r.scenario,
                r.metric,
                r.stat,
                r.base,
                r.new,
                change
            ));
        }
        for (n, bad) in &self.notes {
            s.push_str(&format!("{} {n}\n", if *bad { "✗" } else { " " }));
        }
        s
    }
}

/// Reads `summary.json` files: a file, or a folder of `<scenario>/summary.json`.
pub fn load(path: &Path) -> Result<BTreeMap<String, Value>, String> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let f = e.join("summary.json");
            if f.is_file() {
                files.push(f);
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    if files.is_empty() {
        return Err(format!("{}: no summary.json found", path.display()));
    }
    let mut out = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", f.display()))?;
        let name = v["deterministic"]["scenario"]
            .as_str()
            .ok_or_else(|| format!("{}: not an rtsync summary", f.display()))?
            .to_owned();
        out.insert(name, v["deterministic"].clone());
    }
    Ok(out)
}

pub fn compare(
    base: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
    band: &Band,
) -> Comparison {
    let mut c = Comparison::default();
    for (name, b) in base {
        let Some(n) = new.get(name) else {
            c.notes
                .push((format!("{name}: missing from the new run"), true));
            continue;
        };
        if let Some(metrics) = b["metrics"].as_object() {
            for (metric, bm) in metrics {
                for stat in ["p99", "mean"] {
                    let (Some(bv), Some(nv)) = (
                        bm["all"][stat].as_f64(),
                        n["metrics"][metric]["all"][stat].as_f64(),
                    ) else {
                        continue;
                    };
                    let regression = nv > bv * (1.0 + band.relative) && nv - bv > band.absolute_ms;
                    c.rows.push(Row {
                        scenario: name.clone(),
                        metric: metric.clone(),
                        stat,
                        base: bv,
                        new: nv,
                        regression,
                    });
                }
            }
        }
        let (bc, nc) = (
            b["exit_code"].as_i64().unwrap_or(0),
            n["exit_code"].as_i64().unwrap_or(0),
        );
        if nc != bc {
            c.notes
                .push((format!("{name}: exit code {bc} → {nc}"), nc != 0));
        }
        let (ba, na) = (
            b["anomalies_total"].as_u64().unwrap_or(0),
            n["anomalies_total"].as_u64().unwrap_or(0),
        );
        if na > ba && b["expected_violation"].is_null() {
            c.notes
                .push((format!("{name}: anomalies {ba} → {na}"), true));
        }
    }
    for name in new.keys().filter(|k| !base.contains_key(*k)) {
        c.notes
            .push((format!("{name}: new scenario (no baseline)"), false));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(p99: f64, mean: f64, code: i64, anomalies: u64) -> Value {
        json!({"scenario": "s", "exit_code": code, "anomalies_total": anomalies, "expected_violation": null,
               "metrics": {"ws_delivery_ms": {"all": {"p99": p99, "mean": mean}}}})
    }

    fn run(base: Value, new: Value) -> Comparison {
        let b = BTreeMap::from([("s".to_string(), base)]);
        let n = BTreeMap::from([("s".to_string(), new)]);
        compare(&b, &n, &Band::default())
    }

    #[test]
    fn identical_runs_pass_and_an_injected_regression_fails() {
        assert!(!run(summary(80.0, 20.0, 0, 0), summary(80.0, 20.0, 0, 0)).regressed());
        assert!(
            !run(summary(80.0, 20.0, 0, 0), summary(87.0, 21.0, 0, 0)).regressed(),
            "inside the band"
        );
        let c = run(summary(80.0, 20.0, 0, 0), summary(130.0, 70.0, 0, 0));
        assert!(c.regressed());
        assert!(c.table().contains("✗ s"));
        assert!(c.table().contains("+62.5%"));
        assert!(
            !run(summary(1.0, 1.0, 0, 0), summary(3.0, 2.0, 0, 0)).regressed(),
            "tiny absolute change"
        );
    }

    #[test]
    fn new_anomalies_and_worse_verdicts_are_regressions() {
        assert!(run(summary(80.0, 20.0, 0, 0), summary(80.0, 20.0, 100, 3)).regressed());
        assert!(
            !run(summary(80.0, 20.0, 99, 0), summary(80.0, 20.0, 0, 0)).regressed(),
            "better is fine"
        );
    }
}
