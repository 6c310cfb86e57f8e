//! What a run leaves on disk: `summary.json`, one `.hgrm` and `.hlog` per latency
//! metric, and `report.html`, in one folder per scenario. Shared by single runs, live
//! runs and sweeps (which keep the reports of failing seeds only).

use crate::report::{self, Verdict};
use crate::run::RunOutput;
use crate::scenario::Scenario;
use crate::{hgrm, html};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The command line that replays a run (a simulated one exactly; a live one only reruns).
pub fn replay_line(source: &str, seed: u64, live: bool) -> String {
    if live {
        // A live run depends on the machine and the network; the line reruns it, it
        // cannot replay it exactly.
        format!(
            "cargo run --release --bin simulate -- live {source} --seed {seed} (live: reruns, not an exact replay)"
        )
    } else {
        format!("cargo run --release --bin simulate -- {source} --seed {seed}")
    }
}

/// Writes every report file of one run into `dir` (created if missing) and returns the
/// SHA-256 of the deterministic section of `summary.json`, in hex.
pub fn write_reports(
    dir: &Path,
    sc: &Scenario,
    seed: u64,
    out: &RunOutput,
    verdict: &Verdict,
    replay: &str,
) -> anyhow::Result<String> {
    let summary = report::summary(sc, seed, out, verdict);
    let det = serde_json::to_string(&summary["deterministic"])?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    write("summary.json", serde_json::to_vec_pretty(&summary)?)?;
    let rec = &out.recorder;
    for m in crate::metrics::HISTOGRAMS {
        if let Some(h) = rec.merged(m, None, None) {
            write(
                &format!("{m}.hgrm"),
                hgrm::percentile_distribution(&h).into_bytes(),
            )?;
        }
        if let Some(iv) = rec.intervals.get(m) {
            write(
                &format!("{m}.hlog"),
                hgrm::interval_log(m, iv, rec.interval_ms, crate::net::SIM_EPOCH_MS),
            )?;
        }
    }
    write(
        "report.html",
        html::page(sc, seed, out, verdict, replay).into_bytes(),
    )?;
    Ok(Sha256::digest(det.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
