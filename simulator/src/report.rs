//! Verdicts (thresholds and invariants), the console summary in k6's layout, and
//! `summary.json` with a deterministic section (a function of scenario, seed and
//! binary — byte-stable) apart from a measured section (wall-clock figures).

use crate::metrics::{COUNTERS, GAUGES, HISTOGRAMS, INVARIANTS};
use crate::record::{PHASES, Recorder, round3};
use crate::run::RunOutput;
use crate::scenario::Scenario;
use crate::threshold::{Agg, Condition, Selector};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const EXIT_PASS: i32 = 0;
pub const EXIT_THRESHOLD: i32 = 99;
pub const EXIT_INVARIANT: i32 = 100;
pub const EXIT_INVALID: i32 = 104;

#[derive(Debug, Clone)]
pub struct ThresholdResult {
    pub selector: String,
    pub condition: String,
    pub observed: Option<f64>,
    pub pass: bool,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub thresholds: Vec<ThresholdResult>,
    pub invariants: BTreeMap<String, u64>,
    pub expected_violation: Option<String>,
    /// Invariants a canary's bug may break too (`[expect] tolerate`): not failures.
    pub tolerated: Vec<String>,
    /// Why the run failed, in words; empty on a pass.
    pub failures: Vec<String>,
    pub code: i32,
}

fn aggregate(h: &Histogram<u64>, agg: Agg) -> f64 {
    match agg {
        Agg::Percentile(q) => h.value_at_quantile(q / 100.0) as f64,
        Agg::Avg => round3(h.mean()),
        Agg::Min => h.min() as f64,
        Agg::Max => h.max() as f64,
        Agg::Med => h.value_at_quantile(0.5) as f64,
        Agg::Count | Agg::Value => h.len() as f64,
        Agg::Rate => f64::NAN,
    }
}

pub fn observe(rec: &Recorder, sel: &Selector, cond: &Condition) -> Option<f64> {
    let phase = sel.tags.get("phase").map(String::as_str);
    let group = sel.tags.get("group").map(String::as_str);
    let m = sel.metric.as_str();
    if HISTOGRAMS.contains(&m) {
        let h = rec.merged(m, phase, group)?;
        let v = aggregate(&h, cond.agg);
        return (!v.is_nan()).then_some(v);
    }
    if GAUGES.contains(&m) {
        return rec.gauges.get(m).copied();
    }
    if COUNTERS.contains(&m) {
        return matches!(cond.agg, Agg::Count | Agg::Value).then(|| rec.counter(m, group) as f64);
    }
    if INVARIANTS.contains(&m) {
        return Some(rec.invariant(m) as f64);
    }
    None
}

pub fn evaluate(sc: &Scenario, rec: &Recorder) -> Verdict {
    let mut thresholds = Vec::new();
    let mut failures = Vec::new();
    for (sel_text, conds) in &sc.thresholds {
        let Ok(sel) = Selector::parse(sel_text) else {
            continue;
        };
        for c in conds {
            let Ok(cond) = Condition::parse(c) else {
                continue;
            };
            let observed = observe(rec, &sel, &cond);
            let pass = observed.is_some_and(|v| cond.holds(v));
            if !pass {
                failures.push(format!(
                    "threshold {sel_text} {c}: observed {}",
                    observed.map_or("no samples".into(), |v| v.to_string())
                ));
            }
            thresholds.push(ThresholdResult {
                selector: sel_text.clone(),
                condition: c.clone(),
                observed,
                pass,
            });
        }
    }
    let invariants: BTreeMap<String, u64> = INVARIANTS
        .iter()
        .map(|i| (i.to_string(), rec.invariant(i)))
        .collect();
    let expected = sc.expect.violation.clone();
    let mut invariant_failed = false;
    let tolerated = sc.expect.tolerate.clone();
    for (name, n) in &invariants {
        let is_expected = expected.as_deref() == Some(name.as_str());
        if *n > 0 && !is_expected && !tolerated.contains(name) {
            invariant_failed = true;
            failures.push(format!("invariant {name}: {n} anomalies"));
        }
        if is_expected && *n == 0 {
            invariant_failed = true;
            failures.push(format!("canary: expected {name} to be violated, but its checker found nothing (is the checker blind?)"));
        }
    }
    let code = if invariant_failed {
        EXIT_INVARIANT
    } else if thresholds.iter().any(|t| !t.pass) {
        EXIT_THRESHOLD
    } else {
        EXIT_PASS
    };
    Verdict {
        thresholds,
        invariants,
        expected_violation: expected,
        tolerated,
        failures,
        code,
    }
}

fn hist_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": round3(h.mean()),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p95": h.value_at_quantile(0.95),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// `summary.json`. The `deterministic` section is byte-stable for a seed; `measured`
/// holds wall-clock figures that vary run to run.
pub fn summary(sc: &Scenario, seed: u64, out: &RunOutput, v: &Verdict) -> Value {
    let rec = &out.recorder;
    let mut metrics = serde_json::Map::new();
    for m in HISTOGRAMS {
        let Some(all) = rec.merged(m, None, None) else {
            continue;
        };
        let mut by_phase = serde_json::Map::new();
        for p in PHASES {
            if let Some(h) = rec.merged(m, Some(p), None) {
                by_phase.insert(p.into(), hist_json(&h));
            }
        }
        let mut by_group = serde_json::Map::new();
        for g in sc.groups.iter().map(|g| g.name.as_str()) {
            if let Some(h) = rec.merged(m, None, Some(g)) {
                by_group.insert(g.into(), hist_json(&h));
            }
        }
        metrics.insert(
            m.into(),
            json!({"all": hist_json(&all), "phases": by_phase, "groups": by_group}),
        );
    }
    let counters: BTreeMap<&str, u64> = COUNTERS
        .iter()
        .map(|c| (*c, rec.counter(c, None)))
        .collect();
    let thresholds: Vec<Value> = v.thresholds.iter().map(|t| json!({"metric": t.selector, "condition": t.condition, "observed": t.observed, "pass": t.pass})).collect();
    let deliveries = rec.counter("deliveries", None);
    json!({
        "deterministic": {
            "scenario": sc.name,
            // Live runs are real time over real TCP: this section is then measured too.
            "mode": if out.live { "live" } else { "simulated" },
            // What the server's ACKs promised in this run (docs/durability.md); against a
            // `--target` server, what the scenario asked for.
            "durability": sc.server.config.durability.as_str(),
            "seed": seed,
            // A swarm scenario's draws for this seed (absent for a fixed scenario).
            "swarm": (!sc.drawn.is_empty()).then(|| sc.drawn.iter().cloned().collect::<BTreeMap<String, String>>()),
            "simulated_s": round3(out.simulated_s),
            "tabs": out.tabs,
            "verdict": match v.code { EXIT_PASS => "pass", EXIT_THRESHOLD => "threshold_failed", _ => "invariant_violated" },
            "exit_code": v.code,
            "expected_violation": v.expected_violation,
            "metrics": metrics,
            "counters": counters,
            "gauges": rec.gauges,
            "invariants": v.invariants,
            "anomalies": rec.anomalies.iter().take(200).collect::<Vec<_>>(),
            "anomalies_total": rec.anomalies.len(),
            "thresholds": thresholds,
            "faults": rec.fault_marks.iter().map(|(t, l)| json!({"at_ms": t, "fault": l})).collect::<Vec<_>>(),
            "timelines": rec.timelines,
        },
        "measured": {
            "wall_s": round3(out.wall_s),
            "simulated_s_per_wall_s": round3(out.simulated_s / out.wall_s.max(1e-9)),
            "deliveries_per_wall_s": round3(deliveries as f64 / out.wall_s.max(1e-9)),
            // The workload after warm-up alone: the speed under load.
            "load_simulated_s_per_wall_s": out.load.map(|l| round3(l.simulated_s / l.wall_s.max(1e-9))),
            "load_deliveries_per_wall_s": out.load.map(|l| round3(l.deliveries as f64 / l.wall_s.max(1e-9))),
            "persist_reload_us": wall_summary(&rec.measured_persist_us),
            "optimistic_apply_us": wall_summary(&rec.measured_apply_us),
        }
    })
}

/// Percentiles of wall-clock samples (measured, not deterministic).
fn wall_summary(us: &[u64]) -> Value {
    if us.is_empty() {
        return Value::Null;
    }
    let mut v = us.to_vec();
    v.sort_unstable();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    json!({"count": v.len(), "p50": q(0.5), "p99": q(0.99), "max": v[v.len() - 1]})
}

/// A k6-style console summary.
pub fn console(sc: &Scenario, seed: u64, out: &RunOutput, v: &Verdict, replay: &str) -> String {
    let rec = &out.recorder;
    let mut s = String::new();
    console_header(&mut s, sc, seed, out);
    console_histograms(&mut s, rec, v);
    s.push('\n');
    console_figures(&mut s, rec);
    console_checks(&mut s, rec, v);
    console_verdict(&mut s, v, replay);
    s
}

/// The run's identity and speed, and what a swarm seed drew.
fn console_header(s: &mut String, sc: &Scenario, seed: u64, out: &RunOutput) {
    s.push_str(&format!(
        "\n  scenario: {}   seed: {seed}   tabs: {}   {}\n\n",
        sc.name,
        out.tabs,
        if out.live {
            format!(
                "LIVE over real TCP for {:.0} s (latencies are real time)",
                out.wall_s
            )
        } else {
            format!(
                "simulated {:.0} s in {:.1} s wall ({:.1}× real time{})",
                out.simulated_s,
                out.wall_s,
                out.simulated_s / out.wall_s.max(1e-9),
                out.load
                    .filter(|l| l.wall_s > 0.0)
                    .map_or(String::new(), |l| format!(
                        "; {:.1}× under load",
                        l.simulated_s / l.wall_s
                    ))
            )
        }
    ));
    for (path, value) in &sc.drawn {
        s.push_str(&format!("  swarm: {path} = {value}\n"));
    }
    if !sc.drawn.is_empty() {
        s.push('\n');
    }
}

/// One line per latency histogram, k6-style, marked by its thresholds.
fn console_histograms(s: &mut String, rec: &Recorder, v: &Verdict) {
    let passed: BTreeMap<&str, bool> = v.thresholds.iter().fold(BTreeMap::new(), |mut m, t| {
        let metric = t.selector.split('{').next().unwrap_or_default();
        let e = m.entry(metric).or_insert(true);
        *e &= t.pass;
        m
    });
    for m in HISTOGRAMS {
        let Some(h) = rec.merged(m, None, None) else {
            continue;
        };
        let mark = passed.get(m).map_or("  ", |p| if *p { "✓ " } else { "✗ " });
        s.push_str(&format!(
            "  {mark}{:.<28}: avg={:<8} min={:<6} med={:<6} max={:<7} p(90)={:<6} p(95)={:<6} p(99)={:<6} n={}\n",
            m,
            format!("{:.1}ms", h.mean()),
            format!("{}ms", h.min()),
            format!("{}ms", h.value_at_quantile(0.5)),
            format!("{}ms", h.max()),
            format!("{}ms", h.value_at_quantile(0.9)),
            format!("{}ms", h.value_at_quantile(0.95)),
            format!("{}ms", h.value_at_quantile(0.99)),
            h.len()
        ));
    }
}

/// The counters that counted something, and the end-of-run gauges.
fn console_figures(s: &mut String, rec: &Recorder) {
    for c in COUNTERS {
        let n = rec.counter(c, None);
        if n > 0 {
            s.push_str(&format!("    {:.<28}: {n}\n", c));
        }
    }
    for (name, v) in &rec.gauges {
        s.push_str(&format!("    {:.<28}: {v}\n", name));
    }
}

/// Thresholds and invariants, each with its mark, and the first anomalies.
fn console_checks(s: &mut String, rec: &Recorder, v: &Verdict) {
    s.push_str("\n  thresholds\n");
    for t in &v.thresholds {
        s.push_str(&format!(
            "    {} {} {} (observed {})\n",
            if t.pass { "✓" } else { "✗" },
            t.selector,
            t.condition,
            t.observed.map_or("no samples".into(), |x| format!("{x}"))
        ));
    }
    s.push_str("\n  invariants\n");
    for (name, n) in &v.invariants {
        let expected = v.expected_violation.as_deref() == Some(name.as_str());
        let mark = match (n, expected) {
            (0, false) => "✓",
            (_, true) if *n > 0 => "✓ (canary: expected)",
            (_, false) if v.tolerated.contains(name) => "~ (canary: tolerated)",
            _ => "✗",
        };
        s.push_str(&format!("    {mark} {name} = {n}\n"));
    }
    if !rec.anomalies.is_empty() {
        s.push_str(&format!("\n  anomalies ({}):\n", rec.anomalies.len()));
        for a in rec.anomalies.iter().take(10) {
            s.push_str(&format!("    - {}: {}\n", a.invariant, a.explanation));
        }
        if rec.anomalies.len() > 10 {
            s.push_str(&format!(
                "    … {} more in summary.json\n",
                rec.anomalies.len() - 10
            ));
        }
    }
}

/// The verdict, and on a failure its reasons and the replay line.
fn console_verdict(s: &mut String, v: &Verdict, replay: &str) {
    let verdict = match (v.code, &v.expected_violation) {
        (0, Some(e)) => format!("PASS (canary failed as expected: {e})"),
        (0, None) => "PASS".into(),
        (99, _) => "FAIL: threshold breached (exit 99)".into(),
        _ => "FAIL: invariant violated (exit 100)".into(),
    };
    s.push_str(&format!("\n  verdict: {verdict}\n"));
    if v.code != 0 {
        for f in &v.failures {
            s.push_str(&format!("    {f}\n"));
        }
        s.push_str(&format!("  replay: {replay}\n"));
    }
}
