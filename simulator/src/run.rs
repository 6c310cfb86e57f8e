//! One run of a scenario, simulated: its worlds (`shards`), then the checkers and the
//! end-of-run gauges over the merged history.

use crate::record::Recorder;
use crate::scenario::Scenario;
use crate::world::{LoadWindow, RunError};

#[derive(Debug)]
pub struct RunOutput {
    /// Live mode (real TCP, real time): the figures are measured, not deterministic.
    pub live: bool,
    pub recorder: Recorder,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub tabs: usize,
    /// The workload after warm-up, on its own: the speed under load, which the
    /// whole-run figure flatters with its idle quiescence (simulated runs only).
    pub load: Option<LoadWindow>,
}

/// Ends a run: the checkers, the gauges.
pub fn conclude(
    mut recorder: Recorder,
    live: bool,
    simulated_s: f64,
    wall_s: f64,
    tabs: usize,
    load: Option<LoadWindow>,
) -> RunOutput {
    crate::check::run_all(&mut recorder);
    recorder.finalize_gauges();
    RunOutput {
        live,
        recorder,
        simulated_s,
        wall_s,
        tabs,
        load,
    }
}

/// Runs the scenario with `seed`; `progress(simulated_s, total_s)` is called about once
/// per simulated second.
pub fn run(
    sc: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunOutput, RunError> {
    let started = std::time::Instant::now(); // measured section only: wall-clock speed
    let w = crate::shards::run_worlds(sc, seed, progress)?;
    let wall_s = started.elapsed().as_secs_f64();
    Ok(conclude(
        w.recorder,
        false,
        w.simulated_s,
        wall_s,
        w.tabs,
        Some(w.load),
    ))
}
