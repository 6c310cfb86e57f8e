//! Sweeps: many scenarios over a range of seeds, on parallel threads, keeping the
//! reports of failing seeds only (TigerBeetle's VOPR and FoundationDB's swarm runs do
//! the same: a verdict is worth what the seeds behind it are worth).
//!
//! Each (scenario, seed) is an independent simulation, so the result is the same
//! whatever the number of threads or the order they finish in; the outcome lists runs in
//! scenario order, then seed order.

use crate::output;
use crate::report::{self, EXIT_PASS};
use crate::run;
use crate::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The exit code of a seed whose simulation could not run to its end (as `simulate`
/// exits 1 on such an error).
pub const EXIT_ERROR: i32 = 1;

/// One scenario of a sweep and the path its replay line names.
#[derive(Debug)]
pub struct Entry {
    pub source: String,
    pub scenario: Scenario,
}

/// One finished (scenario, seed).
#[derive(Debug, Clone)]
pub struct SeedResult {
    /// Index into the sweep's entries.
    pub entry: usize,
    pub seed: u64,
    pub code: i32,
    /// The first reason it failed, in words (the first anomaly's explanation for an
    /// invariant, the threshold and what was observed otherwise); empty on a pass.
    pub first_failure: String,
    /// Where its reports went (failing seeds only).
    pub reports: Option<PathBuf>,
}

/// Runs every entry over `seeds` on `jobs` threads. `done` is called on the calling
/// thread as each run finishes (for a progress bar). Reports of failing seeds go to
/// `out/<scenario>/seed-<N>/`; reports of passing seeds are not written.
pub fn run(
    entries: &[Entry],
    seeds: std::ops::Range<u64>,
    jobs: usize,
    out: &Path,
    mut done: impl FnMut(&SeedResult),
) -> anyhow::Result<Vec<SeedResult>> {
    // Seed-major order: every scenario gets its first seeds early, so a failure anywhere
    // shows up soon and the ETA averages over the whole mix.
    let work: Vec<(usize, u64)> = seeds
        .flat_map(|seed| (0..entries.len()).map(move |e| (e, seed)))
        .collect();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<anyhow::Result<SeedResult>>();
    let mut results = Vec::with_capacity(work.len());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let (work, next) = (&work, &next);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(entry, seed)) = work.get(i) else {
                        break;
                    };
                    // A panic in one run (the harness's own limits, say) fails that seed
                    // with its message; the sweep goes on.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_seed(entries, entry, seed, out)
                    }))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        Ok(SeedResult {
                            entry,
                            seed,
                            code: EXIT_ERROR,
                            first_failure: format!("the simulation panicked: {msg}"),
                            reports: None,
                        })
                    });
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        // An error (not a failing seed: a file that cannot be written)
                        // stops this worker; the caller reports it.
                        break;
                    }
                }
            });
        }
        drop(tx);
        for r in rx {
            match r {
                Ok(r) => {
                    done(&r);
                    results.push(r);
                }
                Err(e) => {
                    // Stop handing out work; the running seeds finish.
                    next.store(work.len(), Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(())
    })?;
    results.sort_by_key(|r| (r.entry, r.seed));
    Ok(results)
}

fn run_seed(entries: &[Entry], entry: usize, seed: u64, out: &Path) -> anyhow::Result<SeedResult> {
    let Entry { source, scenario } = &entries[entry];
    let sc = match scenario.for_seed(seed) {
        Ok(sc) => sc,
        // A swarm whose draws make an invalid scenario: that seed fails, the sweep goes on.
        Err(e) => {
            return Ok(SeedResult {
                entry,
                seed,
                code: crate::report::EXIT_INVALID,
                first_failure: e.to_string(),
                reports: None,
            });
        }
    };
    let run = match run::run(&sc, seed, &mut |_, _| {}) {
        Ok(run) => run,
        // The simulation itself broke (a tab that never finished, say): that seed
        // fails with the reason; the sweep goes on.
        Err(e) => {
            return Ok(SeedResult {
                entry,
                seed,
                code: EXIT_ERROR,
                first_failure: e.to_string(),
                reports: None,
            });
        }
    };
    let verdict = report::evaluate(&sc, &run.recorder);
    let mut r = SeedResult {
        entry,
        seed,
        code: verdict.code,
        first_failure: String::new(),
        reports: None,
    };
    if verdict.code != EXIT_PASS {
        // The first anomaly of a failing invariant says more than its count.
        let anomaly = run.recorder.anomalies.iter().find(|a| {
            verdict.invariants.get(&a.invariant).is_some_and(|n| *n > 0)
                && verdict.expected_violation.as_deref() != Some(a.invariant.as_str())
                && !verdict.tolerated.contains(&a.invariant)
        });
        r.first_failure = match anomaly {
            Some(a) => format!("{}: {}", a.invariant, a.explanation),
            None => verdict.failures.first().cloned().unwrap_or_default(),
        };
        let dir = out.join(&sc.name).join(format!("seed-{seed}"));
        let replay = output::replay_line(source, seed, false);
        output::write_reports(&dir, &sc, seed, &run, &verdict, &replay)?;
        r.reports = Some(dir);
    }
    Ok(r)
}

/// The end-of-sweep table: per scenario the seeds run and failing, then per failing
/// seed (at most `shown_max` per scenario) its exit code, first failure and replay line.
pub fn table(entries: &[Entry], seeds: u64, results: &[SeedResult], shown_max: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let width = entries
        .iter()
        .map(|e| e.scenario.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        s,
        "{:<width$}  {:>6}  {:>7}",
        "scenario", "seeds", "failing"
    );
    for (i, e) in entries.iter().enumerate() {
        let failing: Vec<&SeedResult> = results
            .iter()
            .filter(|r| r.entry == i && r.code != EXIT_PASS)
            .collect();
        let mark = if failing.is_empty() { "✓" } else { "✗" };
        let _ = writeln!(
            s,
            "{:<width$}  {:>6}  {:>7}  {mark}",
            e.scenario.name,
            seeds,
            failing.len()
        );
        for r in failing.iter().take(shown_max) {
            let _ = writeln!(
                s,
                "    seed {} (exit {}): {}",
                r.seed,
                r.code,
                one_line(&r.first_failure, 160)
            );
            let _ = writeln!(s, "      {}", output::replay_line(&e.source, r.seed, false));
        }
        if failing.len() > shown_max {
            let _ = writeln!(
                s,
                "    … and {} more failing seeds: {}",
                failing.len() - shown_max,
                failing[shown_max..]
                    .iter()
                    .map(|r| r.seed.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    s
}

fn one_line(text: &str, chars_max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= chars_max {
        flat
    } else {
        flat.chars().take(chars_max).chain("…".chars()).collect()
    }
}

/// `sweep.json`: every failing seed with its exit code, first failure and replay line,
/// and the totals. Deterministic: the same sweep twice writes the same file.
pub fn summary_json(
    entries: &[Entry],
    seeds: &std::ops::Range<u64>,
    results: &[SeedResult],
) -> serde_json::Value {
    let scenarios: Vec<serde_json::Value> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let failing: Vec<serde_json::Value> = results
                .iter()
                .filter(|r| r.entry == i && r.code != EXIT_PASS)
                .map(|r| {
                    serde_json::json!({
                        "seed": r.seed,
                        "exit": r.code,
                        "first_failure": r.first_failure,
                        "replay": output::replay_line(&e.source, r.seed, false),
                    })
                })
                .collect();
            serde_json::json!({
                "scenario": e.scenario.name,
                "source": e.source,
                "seeds_run": seeds.end - seeds.start,
                "failing": failing,
            })
        })
        .collect();
    serde_json::json!({
        "seeds": format!("{}..{}", seeds.start, seeds.end),
        "runs": results.len(),
        "failing_runs": results.iter().filter(|r| r.code != EXIT_PASS).count(),
        "scenarios": scenarios,
    })
}
