//! Several server nodes in the simulator: three nodes over the simulated Redis, with
//! the split-brain fault (a node held away from Redis past its lease, then released),
//! fenced and unfenced.

use super::*;

/// `51-cluster-split-brain` at a smaller size, `canary_unfenced` when asked.
fn split_brain(unfenced: bool) -> Scenario {
    scenario(&format!(
        r#"
name = "split-brain"
duration_s = 30
quiescence_s = 30
[server]
nodes = 3
lease_ms = 2000
redis_timeout_ms = 700
canary_unfenced = {unfenced}
[[groups]]
name = "a"
users = 4
workspaces = 2
[[groups]]
name = "b"
users = 3
workspaces = 2
[[groups]]
name = "c"
users = 3
workspaces = 2
[workload]
ops_per_s = 2.0
[[faults]]
at_s = 5
kind = "backplane_hold"
node = 0
[[faults]]
at_s = 13
kind = "backplane_release"
node = 0
[[faults]]
at_s = 16
kind = "backplane_hold"
node = 1
[[faults]]
at_s = 24
kind = "backplane_release"
node = 1
"#
    ))
}

fn anomaly_names(out: &run::RunOutput) -> Vec<&str> {
    out.recorder
        .anomalies
        .iter()
        .map(|a| a.invariant.as_str())
        .collect()
}

#[test]
fn a_paused_owner_waking_after_its_lease_moved_is_fenced_off() {
    let (out, verdict, summary) = run(&split_brain(false), 7);
    assert!(
        out.recorder.anomalies.is_empty(),
        "{:#?}",
        out.recorder.anomalies
    );
    assert_eq!(verdict.code, EXIT_PASS, "{:?}", verdict.failures);
    // The workspaces did move: tabs lost their connections and came back.
    let losses = summary["deterministic"]["counters"]["connection_losses"]
        .as_u64()
        .unwrap_or(0);
    assert!(losses > 0, "the holds cut no connection: {summary}");
}

#[test]
fn without_fencing_the_deposed_owners_late_write_is_caught() {
    let (out, _, _) = run(&split_brain(true), 7);
    let names = anomaly_names(&out);
    assert!(names.contains(&"fencing_violations"), "{names:?}");
}

#[test]
fn a_cluster_run_is_a_function_of_its_seed() {
    let sc = split_brain(false);
    let (_, _, a) = run(&sc, 3);
    let (_, _, b) = run(&sc, 3);
    assert_eq!(a["deterministic"], b["deterministic"]);
}
