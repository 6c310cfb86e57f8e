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

/// A live cluster scenario on three nodes, with these groups and faults. A long lease
/// (2.5 s): most of a killed owner's tabs come back while it still holds.
fn live_cluster(groups: &str, faults: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "live-cluster"
duration_s = 9
quiescence_s = 8
[server]
nodes = 3
lease_ms = 2500
redis_timeout_ms = 500
{groups}
[workload]
ops_per_s = 2.0
keys = 20
{faults}
"#
    ))
}

/// Runs `sc` live against a cluster spawned in-process (each node on its own runtime
/// thread: a crash drops it where it stands, no close frames, leases left to lapse).
fn run_live_cluster(sc: &Scenario, seed: u64) -> rtsync_simulator::record::Recorder {
    let _live = one_live_run_at_a_time();
    let mut cluster =
        rtsync_simulator::live::SpawnedCluster::start(sc, 3, None).expect("cluster starts");
    let spawned = rtsync_simulator::live::Servers::Spawned(&mut cluster);
    let out =
        rtsync_simulator::live::run(sc, seed, spawned, false, 2, &mut |_, _| {}).expect("live run");
    assert!(
        (0..3).all(|n| cluster.is_running(n)),
        "every node up at the end"
    );
    let rec = out.recorder;
    assert!(rec.anomalies.is_empty(), "{:#?}", rec.anomalies);
    assert!(rec.counter("ops_acked", None) > 0);
    assert!(rec.tabs.iter().all(|t| t.open && t.settled));
    rec
}

/// Over real sockets and a real `redis-server`: every tab on node 0, which owns the
/// workspace, killed and started again. The tabs move to node 1, which waits for the
/// dead owner's lease to lapse and takes over rather than answering 503: no connect
/// fails, nothing is lost or duplicated, every tab converges. (Without the wait, most
/// of the tabs were refused at least once.)
#[test]
fn live_mode_moves_a_killed_owners_tabs_without_a_refusal() {
    let sc = live_cluster(
        r#"
[[groups]]
name = "a"
users = 8
sse_fraction = 0.4
"#,
        r#"
[[faults]]
at_s = 2
kind = "server_crash"
node = 0
[[faults]]
at_s = 5
kind = "server_restart"
node = 0
"#,
    );
    let rec = run_live_cluster(&sc, 3);
    assert!(
        rec.counter("connection_losses", Some("a")) >= 8,
        "every tab was on the killed node and lost it"
    );
    assert_eq!(
        rec.counter("connect_failures", None),
        0,
        "node 1 waited for the takeover instead of answering 503"
    );
}

/// The backplane's faults for real, through each node's proxy to Redis: node 1 cut off
/// from Redis past its lease (it steps down: its clients reconnect elsewhere), then
/// Redis killed and restarted. Nothing lost, every tab converges.
#[test]
fn live_mode_cuts_a_nodes_link_to_redis_and_restarts_redis() {
    let sc = live_cluster(
        r#"
[[groups]]
name = "a"
users = 3
sse_fraction = 0.4
[[groups]]
name = "b"
users = 3
sse_fraction = 0.4
"#,
        r#"
[[faults]]
at_s = 2
kind = "backplane_partition"
node = 1
[[faults]]
at_s = 5.5
kind = "backplane_repair"
node = 1
[[faults]]
at_s = 6
kind = "redis_restart"
"#,
    );
    let rec = run_live_cluster(&sc, 4);
    assert!(
        rec.counter("connection_losses", Some("b")) >= 3,
        "node 1 stepped down: group b's tabs were closed (1012) and moved"
    );
}

/// `01-websocket-connection` (one workspace, the seed's 100 ms delivery target) on three
/// simulated nodes with two node kills, as `simulate live --spawn-cluster 3
/// --node-kills 2` runs it. A dead owner's tabs wait at other nodes' relays for its
/// lease to lapse; the relays route again at that instant (the lease's `PTTL`), so the
/// tabs come back together and none misses the others' first events for long.
#[test]
fn a_dead_owners_tabs_come_back_together_and_delivery_holds() {
    let toml = include_str!("../../../scenarios/01-websocket-connection.toml");
    let sc = scenario(toml).on_cluster(3, 2).expect("01 on three nodes");
    for seed in [101, 7] {
        let (out, verdict, _) = run(&sc, seed);
        let rec = &out.recorder;
        assert!(rec.anomalies.is_empty(), "{:#?}", rec.anomalies);
        assert!(
            rec.counter("connection_losses", None) >= 20,
            "seed {seed}: the kills moved the tabs"
        );
        assert_eq!(
            verdict.code, EXIT_PASS,
            "seed {seed}: {:?}",
            verdict.failures
        );
    }
}
