//! The self-contained HTML report: inline SVG charts drawn with plotters (no script,
//! no fetch), the threshold table, per-phase percentiles, anomalies, the replay line;
//! and an index page when several scenarios ran.

use crate::metrics::{HISTOGRAMS, INVARIANTS};
use crate::record::{PHASES, Recorder};
use crate::report::Verdict;
use crate::run::RunOutput;
use crate::scenario::Scenario;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;

const W: u32 = 640;
const H: u32 = 300;

/// Renders one chart into an SVG string.
fn svg_of(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>)) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let _ = root.fill(&WHITE);
        draw(&root);
        let _ = root.present();
    }
    svg
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Latency (ms) against 1/(1-q) on a log axis, HdrHistogram's classic plot.
pub fn percentile_chart(metric: &str, h: &Histogram<u64>) -> String {
    let pts: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            (
                1.0 / (1.0 - v.quantile_iterated_to()).max(1e-6),
                v.value_iterated_to() as f64,
            )
        })
        .collect();
    // Up to the resolution the sample count supports (as HdrHistogram's plotter does).
    let x_max = pts
        .iter()
        .map(|p| p.0)
        .fold(10.0, f64::max)
        .min((h.len() as f64 * 10.0).max(10.0));
    let pts: Vec<(f64, f64)> = pts.into_iter().filter(|p| p.0 <= x_max).collect();
    let y_max = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    svg_of(|root| {
        let Ok(mut chart) = ChartBuilder::on(root)
            .caption(
                format!("{metric}: percentile distribution"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
        else {
            return;
        };
        let _ = chart
            .configure_mesh()
            .x_desc("1/(1-percentile): 10 = p90, 100 = p99, 1000 = p99.9")
            .y_desc("ms")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw();
        let _ = chart.draw_series(LineSeries::new(pts, BLUE.stroke_width(2)));
    })
}

/// p50 and p99 per interval over simulated time, fault instants marked in red.
pub fn over_time_chart(
    metric: &str,
    intervals: &BTreeMap<u64, Histogram<u64>>,
    interval_ms: u64,
    faults: &[(u64, String)],
    end_s: f64,
) -> String {
    let at = |slot: u64| (slot * interval_ms) as f64 / 1000.0;
    let p50: Vec<(f64, f64)> = intervals
        .iter()
        .map(|(s, h)| (at(*s), h.value_at_quantile(0.5) as f64))
        .collect();
    let p99: Vec<(f64, f64)> = intervals
        .iter()
        .map(|(s, h)| (at(*s), h.value_at_quantile(0.99) as f64))
        .collect();
    let y_max = p99.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    svg_of(|root| {
        let Ok(mut chart) = ChartBuilder::on(root)
            .caption(
                format!("{metric} over time (faults in red)"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..end_s.max(1.0), 0f64..y_max)
        else {
            return;
        };
        let _ = chart
            .configure_mesh()
            .x_desc("simulated s")
            .y_desc("ms")
            .draw();
        if let (Some(first), Some(last)) = (faults.first(), faults.last()) {
            let (a, b) = (
                first.0 as f64 / 1000.0,
                (last.0 as f64 / 1000.0).max(first.0 as f64 / 1000.0 + interval_ms as f64 / 1000.0),
            );
            let _ = chart.draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, y_max)],
                RED.mix(0.08).filled(),
            )));
        }
        for (t, _) in faults {
            let x = *t as f64 / 1000.0;
            let _ = chart.draw_series(LineSeries::new(vec![(x, 0.0), (x, y_max)], RED.mix(0.6)));
        }
        if let Ok(s) = chart.draw_series(LineSeries::new(p50, BLUE.stroke_width(2))) {
            s.label("p50")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
        }
        if let Ok(s) = chart.draw_series(LineSeries::new(p99, MAGENTA.stroke_width(2))) {
            s.label("p99")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], MAGENTA));
        }
        let _ = chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw();
    })
}

/// A per-second timeline drawn as steps over every second of the run: `accumulate`
/// turns deltas into a level (connections open); otherwise values are per-second counts
/// (connect attempts per second: a reconnect herd is a spike).
pub fn timeline_chart(
    name: &str,
    deltas: &BTreeMap<u64, i64>,
    faults: &[(u64, String)],
    end_s: f64,
    accumulate: bool,
) -> String {
    let mut level = 0i64;
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for sec in 0..=(end_s.ceil() as u64) {
        let before = level as f64;
        let d = deltas.get(&sec).copied().unwrap_or(0);
        level = if accumulate { level + d } else { d };
        pts.push((sec as f64, before));
        pts.push((sec as f64, level as f64));
    }
    let y_max = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    svg_of(|root| {
        let Ok(mut chart) = ChartBuilder::on(root)
            .caption(name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..end_s.max(1.0), 0f64..y_max)
        else {
            return;
        };
        let _ = chart.configure_mesh().x_desc("simulated s").draw();
        for (t, _) in faults {
            let x = *t as f64 / 1000.0;
            let _ = chart.draw_series(LineSeries::new(vec![(x, 0.0), (x, y_max)], RED.mix(0.6)));
        }
        let _ = chart.draw_series(LineSeries::new(pts, GREEN.stroke_width(2)));
    })
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.pass{color:#080}.fail{color:#b00;font-weight:bold}.charts{display:flex;flex-wrap:wrap;gap:1em}code{background:#f3f3f3;padding:.1em .3em}";

/// One scenario's report page.
pub fn page(sc: &Scenario, seed: u64, out: &RunOutput, verdict: &Verdict, replay: &str) -> String {
    let rec = &out.recorder;
    let mut h = String::new();
    page_head(&mut h, sc, seed, out, verdict, replay);
    page_checks(&mut h, rec, verdict);
    page_phases(&mut h, rec);
    page_charts(&mut h, rec, out.simulated_s);
    page_faults(&mut h, rec);
    h.push_str("</body></html>\n");
    h
}

/// The document head, the run's identity and verdict, and a swarm seed's draws.
fn page_head(
    h: &mut String,
    sc: &Scenario,
    seed: u64,
    out: &RunOutput,
    verdict: &Verdict,
    replay: &str,
) {
    let ok = verdict.code == 0;
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rtsync: {}</title><style>{STYLE}</style></head><body>",
        esc(&sc.name)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p><p>seed {seed} · {} tabs · {:.0} simulated s · durability {} · verdict: <span class=\"{}\">{}</span></p><p>replay: <code>{}</code></p><p class=\"measured\">{}</p>",
        esc(&sc.name),
        esc(&sc.description),
        out.tabs,
        out.simulated_s,
        sc.server.config.durability.as_str(),
        if ok { "pass" } else { "fail" },
        if ok { "PASS" } else { "FAIL" },
        esc(replay),
        esc(&run_line(sc, out))
    );
    if !sc.drawn.is_empty() {
        h.push_str(
            "<h2>Swarm draws for this seed</h2><table><tr><th>parameter</th><th>value</th></tr>",
        );
        for (path, value) in &sc.drawn {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(path), esc(value));
        }
        h.push_str("</table>");
    }
}

/// Thresholds, invariants and the first anomalies.
fn page_checks(h: &mut String, rec: &Recorder, verdict: &Verdict) {
    h.push_str("<h2>Thresholds</h2><table><tr><th>metric</th><th>condition</th><th>observed</th><th></th></tr>");
    for t in &verdict.thresholds {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&t.selector),
            esc(&t.condition),
            t.observed.map_or("no samples".into(), |v| v.to_string()),
            if t.pass { "pass" } else { "fail" },
            if t.pass { "✓" } else { "✗" }
        );
    }
    h.push_str(
        "</table><h2>Invariants</h2><table><tr><th>invariant</th><th>anomalies</th><th></th></tr>",
    );
    for name in INVARIANTS {
        let n = verdict.invariants.get(name).copied().unwrap_or(0);
        let expected = verdict.expected_violation.as_deref() == Some(name);
        let tolerated = !expected && verdict.tolerated.iter().any(|t| t == name);
        let good = (n == 0) != expected || tolerated;
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{n}</td><td class=\"{}\">{}</td></tr>",
            if good { "pass" } else { "fail" },
            match (good, expected) {
                (true, true) => "✓ canary: expected",
                (true, false) if tolerated && n > 0 => "~ canary: tolerated",
                (true, false) => "✓",
                _ => "✗",
            }
        );
    }
    h.push_str("</table>");
    if !rec.anomalies.is_empty() {
        let _ = write!(h, "<h2>Anomalies ({})</h2><ul>", rec.anomalies.len());
        for a in rec.anomalies.iter().take(100) {
            let _ = write!(
                h,
                "<li><b>{}</b>: {}</li>",
                esc(&a.invariant),
                esc(&a.explanation)
            );
        }
        h.push_str("</ul>");
    }
}

/// Every histogram's percentiles per phase (the table is closed by the charts).
fn page_phases(h: &mut String, rec: &Recorder) {
    h.push_str("<h2>Latency by phase (ms)</h2><table><tr><th>metric</th><th>phase</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for m in HISTOGRAMS {
        for p in PHASES {
            if let Some(x) = rec.merged(m, Some(p), None) {
                let _ = write!(
                    h,
                    "<tr><td>{m}</td><td>{p}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    x.len(),
                    x.value_at_quantile(0.5),
                    x.value_at_quantile(0.9),
                    x.value_at_quantile(0.99),
                    x.value_at_quantile(0.999),
                    x.max()
                );
            }
        }
    }
}

/// Timelines, percentile distributions and latency over time, as inline SVG.
fn page_charts(h: &mut String, rec: &Recorder, end_s: f64) {
    h.push_str("</table><h2>Charts</h2><p>Latencies are simulated time (network model, round trips, backoff, queueing), not CPU time.</p><div class=\"charts\">");
    for (name, title) in [
        ("connections_open", "connections open"),
        ("queued_ops", "queued ops (all tabs)"),
        ("retained_bytes", "retained bytes (all tabs)"),
    ] {
        if let Some(c) = rec.timelines.get(name) {
            h.push_str(&timeline_chart(title, c, &rec.fault_marks, end_s, true));
        }
    }
    for (name, c) in rec.timelines.iter().filter(|(n, _)| n.contains("_per_s")) {
        h.push_str(&timeline_chart(name, c, &rec.fault_marks, end_s, false));
    }
    for m in HISTOGRAMS {
        if let Some(all) = rec.merged(m, None, None) {
            h.push_str(&percentile_chart(m, &all));
            if let Some(iv) = rec.intervals.get(m) {
                h.push_str(&over_time_chart(
                    m,
                    iv,
                    rec.interval_ms,
                    &rec.fault_marks,
                    end_s,
                ));
            }
        }
    }
    h.push_str("</div>");
}

/// The fault timeline, as it was applied.
fn page_faults(h: &mut String, rec: &Recorder) {
    if !rec.fault_marks.is_empty() {
        h.push_str("<h2>Faults</h2><table><tr><th>at (s)</th><th>fault</th></tr>");
        for (t, f) in &rec.fault_marks {
            let _ = write!(
                h,
                "<tr><td>{:.1}</td><td>{}</td></tr>",
                *t as f64 / 1000.0,
                esc(f)
            );
        }
        h.push_str("</table>");
    }
}

/// How the run went on this machine (measured: differs from run to run).
fn run_line(sc: &Scenario, out: &RunOutput) -> String {
    if out.live {
        return format!("live over real TCP for {:.0} s", out.wall_s);
    }
    let under_load = out
        .load
        .filter(|l| l.wall_s > 0.0)
        .map_or(String::new(), |l| {
            format!("; {:.1}× under load", l.simulated_s / l.wall_s)
        });
    format!(
        "simulated in {:.1} s of wall time: {:.1}× real time{under_load}; {} world{}",
        out.wall_s,
        out.simulated_s / out.wall_s.max(1e-9),
        sc.shards,
        if sc.shards == 1 { "" } else { "s (shards)" }
    )
}

/// The index of a multi-scenario run: each scenario with its verdict and a link.
pub fn index(entries: &[(String, i32, String)]) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rtsync reports</title><style>{STYLE}</style></head><body><h1>rtsync simulation reports</h1><table><tr><th>scenario</th><th>verdict</th></tr>"
    );
    for (name, code, link) in entries {
        let _ = write!(
            h,
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"{}\">{}</td></tr>",
            esc(link),
            esc(name),
            if *code == 0 { "pass" } else { "fail" },
            match code {
                0 => "✓ pass".to_owned(),
                c => format!("✗ exit {c}"),
            }
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
