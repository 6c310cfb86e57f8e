//! Shards: a scenario's workspaces dealt into independent simulated worlds that run on
//! parallel threads, each with its own copy of the reference server.
//!
//! Why this is sound: nothing in the protocol crosses workspaces (the server keeps one
//! hub per workspace), and a simulated server has no CPU to contend for, so splitting
//! the workspaces changes no simulated behaviour — only which turmoil world carries it.
//! What a shard cannot see: traffic of another shard's workspaces (a cross-workspace
//! leak is only detectable between workspaces of one shard) and server-wide limits
//! (each server counts only its own connections). turmoil runs a world on one thread,
//! so shards are how a large scenario uses more than one core.
//!
//! Determinism: the shard count is part of the scenario, each world is deterministic,
//! and the worlds' histories are merged in shard order, so the result does not depend
//! on how many cores run them or in which order they finish.

use crate::scenario::Scenario;
use crate::world::{LoadWindow, RunError, Shard, WorldOutput, run_world};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Runs every shard of `sc` and merges them into one history, as if one world had run.
pub fn run_worlds(
    sc: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WorldOutput, RunError> {
    let count = sc.shards.max(1);
    if count == 1 {
        return run_world(sc, seed, Shard { index: 0, count }, progress);
    }
    // Simulated seconds reached by each shard; the slowest is the run's progress.
    let reached: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
    let total = AtomicU64::new(0);
    let outputs = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|index| {
                let (reached, total) = (&reached[index], &total);
                std::thread::Builder::new()
                    .name(format!("shard-{index}"))
                    .spawn_scoped(scope, move || {
                        let mut report = |s: u64, t: u64| {
                            reached.store(s, Ordering::Relaxed);
                            total.store(t, Ordering::Relaxed);
                        };
                        run_world(sc, seed, Shard { index, count }, &mut report)
                    })
            })
            .collect();
        let mut last = u64::MAX;
        // Progress on this thread (the callback is not Send); wall-clock pacing only.
        while handles
            .iter()
            .any(|h| h.as_ref().is_ok_and(|h| !h.is_finished()))
        {
            let slowest = reached.iter().map(|r| r.load(Ordering::Relaxed)).min();
            if let Some(s) = slowest.filter(|s| *s != last) {
                last = s;
                progress(s, total.load(Ordering::Relaxed));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(RunError::Sim("a shard's thread panicked".into()))),
                Err(e) => Err(RunError::Sim(format!("cannot start a shard's thread: {e}"))),
            })
            .collect::<Vec<_>>()
    });
    merge(outputs.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// One history from the shards' (in shard order). Fault marks are the same timeline in
/// every shard: shard 0's stand for all.
fn merge(outputs: Vec<WorldOutput>) -> Result<WorldOutput, RunError> {
    let mut it = outputs.into_iter();
    let mut all = it
        .next()
        .ok_or_else(|| RunError::Sim("no shard ran".into()))?;
    for mut o in it {
        o.recorder.fault_marks.clear();
        all.recorder.absorb(o.recorder);
        all.simulated_s = all.simulated_s.max(o.simulated_s);
        all.tabs += o.tabs;
        all.load = LoadWindow {
            simulated_s: all.load.simulated_s.max(o.load.simulated_s),
            // The shards run side by side: the window lasts as long as the slowest.
            wall_s: all.load.wall_s.max(o.load.wall_s),
            deliveries: all.load.deliveries + o.load.deliveries,
        };
    }
    Ok(all)
}
