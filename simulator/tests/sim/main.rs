//! The simulator end to end: the real server and real clients in turmoil, small
//! scenarios, each invariant checked on a faulty run, the canary, determinism and
//! reports. The `simulate` binary itself is run by the top-level tests/e2e.

use rtsync_simulator::report::{self, EXIT_INVARIANT, EXIT_PASS, EXIT_THRESHOLD};
use rtsync_simulator::run;
use rtsync_simulator::scenario::Scenario;

/// Live tests run in real time, one at a time: several at once on two cores measure
/// the machine's contention, not the code (one in fifteen runs of five side by side
/// broke a live run's timing).
fn one_live_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn scenario(toml: &str) -> Scenario {
    Scenario::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn run(sc: &Scenario, seed: u64) -> (run::RunOutput, report::Verdict, serde_json::Value) {
    let out = run::run(sc, seed, &mut |_, _| {}).expect("simulation runs");
    let verdict = report::evaluate(sc, &out.recorder);
    let summary = report::summary(sc, seed, &out, &verdict);
    (out, verdict, summary)
}

const FAULTY: &str = r#"
name = "faulty"
duration_s = 20
quiescence_s = 15
[server]
strategy_task = "MERGE"
[[groups]]
name = "office"
users = 4
tabs_per_device = 2
sse_fraction = 0.25
[[groups]]
name = "mobile"
users = 3
latency_ms = 30
[workload]
ops_per_s = 1.0
keys = 12
[[faults]]
at_s = 4
kind = "partition"
group = "mobile"
[[faults]]
at_s = 5
kind = "offline"
group = "office"
fraction = 0.5
[[faults]]
at_s = 8
kind = "repair"
group = "mobile"
[[faults]]
at_s = 9
kind = "online"
group = "office"
fraction = 0.5
[[faults]]
at_s = 12
kind = "server_bounce"
[[faults]]
at_s = 15
kind = "corrupt_storage"
group = "office"
fraction = 0.5
"#;

#[test]
fn a_faulty_run_keeps_every_invariant_and_converges() {
    let sc = scenario(FAULTY);
    let (out, verdict, _) = run(&sc, 3);
    let rec = &out.recorder;
    assert!(rec.anomalies.is_empty(), "{:#?}", rec.anomalies);
    assert_eq!(verdict.code, EXIT_PASS, "{:?}", verdict.failures);
    // The run really exercised what it claims to.
    for c in [
        "ops_acked",
        "deliveries",
        "connection_losses",
        "resyncs_by_snapshot",
        "state_resets",
        "conflicts",
    ] {
        assert!(rec.counter(c, None) > 0, "{c} was never exercised");
    }
    assert!(
        rec.merged("sse_delivery_ms", None, None)
            .is_some_and(|h| !h.is_empty())
    );
    assert!(
        rec.merged("recovery_ms", None, None)
            .is_some_and(|h| !h.is_empty())
    );
    assert_eq!(rec.tabs.len(), 11);
    assert!(
        rec.tabs
            .iter()
            .all(|t| t.open && t.settled && t.outbox_len == 0)
    );
}

#[test]
fn the_same_seed_gives_a_byte_identical_deterministic_summary() {
    let sc = scenario(FAULTY);
    let (_, _, a) = run(&sc, 11);
    let (_, _, b) = run(&sc, 11);
    let (_, _, c) = run(&sc, 12);
    let det = |v: &serde_json::Value| serde_json::to_string(&v["deterministic"]).unwrap();
    assert_eq!(det(&a), det(&b));
    assert_ne!(det(&a), det(&c), "another seed is another run");
}

/// SSE tabs POST their writes on fresh connections, which reach a bounced server's
/// new incarnation while the stream still sits on the old one: each answer must be
/// recorded under the epoch of the log that gave its seq, not the stream's.
// A server that keeps nothing: each bounce is a new epoch, which this is about.
const SSE_BOUNCES: &str = r#"
name = "sse-post-across-bounce"
duration_s = 16
warmup_s = 1
[server]
durability = "memory"
[[groups]]
name = "office"
users = 6
sse_fraction = 1.0
latency_ms = 150
[workload]
ops_per_s = 4.0
[[faults]]
at_s = 5
kind = "server_bounce"
[[faults]]
at_s = 9
kind = "server_bounce"
[[faults]]
at_s = 13
kind = "server_bounce"
"#;

#[test]
fn post_answers_across_a_bounce_are_recorded_in_their_own_epoch() {
    let sc = scenario(SSE_BOUNCES);
    for seed in [1, 2] {
        let (out, verdict, _) = run(&sc, seed);
        let rec = &out.recorder;
        assert!(
            rec.anomalies.is_empty(),
            "seed {seed}: {:#?}",
            rec.anomalies
        );
        assert_eq!(
            verdict.code, EXIT_PASS,
            "seed {seed}: {:?}",
            verdict.failures
        );
        // The run really put acked writes in more than one incarnation.
        assert!(
            rec.applied_at.len() >= 3,
            "seed {seed}: epochs {:?}",
            rec.applied_at.keys()
        );
    }
}

const SHARDED: &str = r#"
name = "sharded"
duration_s = 12
quiescence_s = 10
[[groups]]
name = "office"
users = 8
workspaces = 4
tabs_per_device = 2
[[groups]]
name = "mobile"
users = 4
workspaces = 4
latency_ms = 30
[workload]
ops_per_s = 2.0
keys = 20
[[faults]]
at_s = 3
kind = "partition"
group = "mobile"
[[faults]]
at_s = 6
kind = "repair"
group = "mobile"
[[faults]]
at_s = 8
kind = "server_bounce"
"#;

#[test]
fn shards_split_the_workspaces_and_merge_into_the_same_history() {
    let whole = scenario(SHARDED);
    let split = scenario(&SHARDED.replace("quiescence_s = 10", "quiescence_s = 10\nshards = 2"));
    assert_eq!((whole.shards, split.shards), (1, 2));
    let (one, _, _) = run(&whole, 5);
    let (two, verdict, a) = run(&split, 5);
    let (_, _, b) = run(&split, 5);
    let det = |v: &serde_json::Value| serde_json::to_string(&v["deterministic"]).unwrap();
    assert_eq!(det(&a), det(&b), "a sharded run is deterministic too");
    assert_eq!(verdict.code, EXIT_PASS, "{:?}", verdict.failures);
    let rec = &two.recorder;
    assert!(rec.anomalies.is_empty(), "{:#?}", rec.anomalies);
    assert_eq!(rec.tabs.len(), one.recorder.tabs.len());
    assert_eq!(
        rec.server.len(),
        4,
        "every workspace's final state was read"
    );
    assert_eq!(
        rec.fault_marks.len(),
        3,
        "one fault timeline, not one per shard"
    );
    // Nothing crosses workspaces, so splitting them changes no simulated behaviour.
    for c in [
        "ops_enqueued",
        "ops_acked",
        "deliveries",
        "connection_losses",
    ] {
        assert!(rec.counter(c, None) > 0, "{c} was never exercised");
        assert_eq!(rec.counter(c, None), one.recorder.counter(c, None), "{c}");
    }
}

const CANARY: &str = r#"
name = "canary"
duration_s = 20
quiescence_s = 10
[[groups]]
name = "legacy"
users = 2
outbox = "legacy"
[workload]
ops_per_s = 12.0
keys = 500
[[faults]]
at_s = 2
kind = "offline"
[[faults]]
at_s = 15
kind = "online"
[expect]
violation = "silent_queue_drops"
"#;

#[test]
fn the_canary_fails_its_checker_and_that_is_its_pass() {
    let sc = scenario(CANARY);
    let (out, verdict, _) = run(&sc, 1);
    assert!(out.recorder.invariant("silent_queue_drops") > 0);
    assert_eq!(verdict.code, EXIT_PASS, "{:?}", verdict.failures);
    // The same workload with our outbox loses nothing — so the canary would now "fail".
    let fixed = scenario(&CANARY.replace("outbox = \"legacy\"", "outbox_capacity = 5000"));
    let (out, verdict, _) = run(&fixed, 1);
    assert_eq!(out.recorder.invariant("silent_queue_drops"), 0);
    assert_eq!(verdict.code, EXIT_INVARIANT);
    assert!(
        verdict
            .failures
            .iter()
            .any(|f| f.contains("checker found nothing"))
    );
}

#[test]
fn a_breached_threshold_exits_99() {
    let sc = scenario(&format!(
        "{FAULTY}\n[thresholds]\nws_delivery_ms = [\"p(99)<1\"]\n"
    ));
    let (_, verdict, summary) = run(&sc, 3);
    assert_eq!(verdict.code, EXIT_THRESHOLD);
    assert_eq!(summary["deterministic"]["verdict"], "threshold_failed");
}

#[test]
fn invalid_scenarios_name_the_field() {
    let cases = [
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\ncolour = 3\n",
            "colour",
        ),
        ("name = \"x\"\nduration_s = 5\ngroups = []\n", "groups"),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[[faults]]\nat_s = 1\nkind = \"partition\"\ngroup = \"nope\"\n",
            "faults[0].group",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[[faults]]\nat_s = 9\nkind = \"offline\"\n",
            "faults[0].at_s",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[thresholds]\nlatency = [\"p(99)<1\"]\n",
            "thresholds.latency",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[thresholds]\nack_ms = [\"p99 < 1\"]\n",
            "thresholds.ack_ms",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[[faults]]\nat_s = 1\nkind = \"explode\"\n",
            "explode",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"server\"\nusers = 1\n",
            "groups[0].name",
        ),
        (
            "name = \"x\"\nduration_s = 5\nshards = 3\n[[groups]]\nname = \"g\"\nusers = 4\nworkspaces = 2\n",
            "shards",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[server]\nheartbeat_msec = 5\n",
            "heartbeat_msec",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[server]\nheartbeat_ms = 0\n",
            "heartbeat_ms must be greater than 0",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[server]\nstrategy_note = \"NEWEST\"\n",
            "NEWEST",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\nreconnect = \"eager\"\n",
            "eager",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[workload]\nzipf_s = -1.0\n",
            "workload.zipf_s",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[workload]\nqueries_per_s = nan\n",
            "workload.queries_per_s",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[workload]\ncursors_per_s = inf\n",
            "workload.cursors_per_s",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[expect]\ntolerate = [\"focus_divergence\"]\n",
            "expect.tolerate",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[expect]\nviolation = \"focus_miscounts\"\ntolerate = [\"nope\"]\n",
            "expect.tolerate",
        ),
        (
            "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[workload]\nfocus = \"sometimes\"\n",
            "sometimes",
        ),
    ];
    for (text, field) in cases {
        let e = Scenario::parse(text, "bad.toml").unwrap_err().to_string();
        assert!(
            e.contains(field) && e.starts_with("bad.toml"),
            "{field}: {e}"
        );
    }
}

#[test]
fn server_keys_overlay_the_simulation_defaults_one_by_one() {
    let sc = scenario(
        "name = \"x\"\nduration_s = 5\n[[groups]]\nname = \"g\"\nusers = 1\n[server]\nstrategy_note = \"MERGE\"\nlatency_ms = 7\noutbound_messages_max = 9\n",
    );
    assert_eq!(sc.server.latency_ms, 7);
    assert_eq!(sc.server.config.outbound_messages_max, 9);
    assert_eq!(sc.server.config.core.strategy_note.to_string(), "MERGE");
    // Untouched keys keep the simulation's defaults, not the production ones.
    let defaults = rtsync_simulator::scenario::ServerSpec::default();
    assert_eq!(
        sc.server.config.core.heartbeat_ms,
        defaults.config.core.heartbeat_ms
    );
    assert_ne!(sc.server.config.core.heartbeat_ms, 30_000);
    assert_eq!(sc.server.config.jwt_secret, defaults.config.jwt_secret);
}

#[test]
fn reports_carry_every_chart_and_verdict_and_compare_catches_added_latency() {
    use rtsync_simulator::{compare, hgrm, html};
    let small = r#"
name = "small"
duration_s = 10
quiescence_s = 8
[[groups]]
name = "office"
users = 3
tabs_per_device = 2
[workload]
ops_per_s = 1.0
[[faults]]
at_s = 4
kind = "partition"
[[faults]]
at_s = 6
kind = "repair"
[thresholds]
ws_delivery_ms = ["p(99)<100000"]
ack_ms = ["p(99)<1"]
"#;
    let sc = scenario(small);
    let (out, verdict, base) = run(&sc, 2);
    let rec = &out.recorder;
    let page = html::page(
        &sc,
        2,
        &out,
        &verdict,
        "cargo run --release --bin simulate -- small.toml --seed 2",
    );
    // Self-contained: inline SVG, no script, nothing fetched.
    assert!(page.contains("<svg"));
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("<link"));
    for m in ["ws_delivery_ms", "ack_ms", "cross_tab_ms", "reconnect_ms"] {
        assert!(
            page.contains(&format!("{m}: percentile distribution")),
            "{m} distribution chart"
        );
        assert!(
            page.contains(&format!("{m} over time")),
            "{m} over-time chart"
        );
    }
    assert!(page.contains("connections open"));
    assert!(
        page.contains("ws_delivery_ms</td><td>p(99)&lt;100000</td>")
            && page.contains("class=\"pass\">✓")
    );
    assert!(page.contains("ack_ms</td><td>p(99)&lt;1</td>") && page.contains("class=\"fail\">✗"));
    assert!(page.contains("--seed 2"));
    let index = html::index(&[("small".into(), verdict.code, "small/report.html".into())]);
    assert!(index.contains("small/report.html") && index.contains("exit 99"));
    let h = rec.merged("ws_delivery_ms", None, None).unwrap();
    assert!(
        hgrm::percentile_distribution(&h)
            .starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n")
    );
    // 50 ms more link latency is a regression compare must report.
    let slower = scenario(&small.replace("users = 3", "users = 3\nlatency_ms = 55"));
    let (_, _, new) = run(&slower, 2);
    let b =
        std::collections::BTreeMap::from([("small".to_string(), base["deterministic"].clone())]);
    let n = std::collections::BTreeMap::from([("small".to_string(), new["deterministic"].clone())]);
    let c = compare::compare(&b, &n, &compare::Band::default());
    assert!(c.regressed(), "{}", c.table());
    assert!(c.table().contains("✗ small") && c.table().contains("ack_ms"));
    assert!(!compare::compare(&b, &b, &compare::Band::default()).regressed());
}

#[test]
fn live_mode_drives_the_same_tabs_over_real_tcp() {
    let _live = one_live_run_at_a_time();
    // quiescence_s outlasts the backoff a tab may reach in the partition (three failures:
    // up to 8 s with full jitter). With 5 s, a slow machine left a tab still waiting
    // with an op queued (1 run of CI's test command, 2 cores under load).
    let sc = scenario(
        r#"
name = "live"
duration_s = 3
quiescence_s = 12
[[groups]]
name = "office"
users = 4
tabs_per_device = 2
sse_fraction = 0.25
[workload]
ops_per_s = 2.0
keys = 20
[[faults]]
at_s = 1
kind = "offline"
fraction = 0.5
[[faults]]
at_s = 1.5
kind = "partition"
[[faults]]
at_s = 2
kind = "online"
fraction = 0.5
[[faults]]
at_s = 2.5
kind = "repair"
"#,
    );
    let server = rtsync_simulator::live::SpawnedServer::start(&sc).expect("server starts");
    let at = rtsync_simulator::live::Servers::At(server.addr);
    let out = rtsync_simulator::live::run(&sc, 1, at, false, 2, &mut |_, _| {}).expect("live run");
    let rec = &out.recorder;
    assert!(out.live);
    assert!(rec.anomalies.is_empty(), "{:#?}", rec.anomalies);
    assert!(rec.counter("ops_acked", None) > 0 && rec.counter("deliveries", None) > 0);
    assert!(
        rec.counter("connection_losses", None) > 0,
        "the proxy's partition cut connections"
    );
    assert!(rec.merged("ws_delivery_ms", None, None).is_some());
    assert!(rec.merged("sse_delivery_ms", None, None).is_some());
    assert_eq!(rec.tabs.len(), 8);
    assert!(rec.tabs.iter().all(|t| t.open && t.settled));
    let summary = report::summary(&sc, 1, &out, &report::evaluate(&sc, rec));
    assert_eq!(summary["deterministic"]["mode"], "live");
}

#[test]
fn live_mode_crashes_and_restarts_a_spawned_server() {
    let _live = one_live_run_at_a_time();
    let sc = scenario(
        r#"
name = "live-bounce"
duration_s = 4
quiescence_s = 12
[[groups]]
name = "office"
users = 3
tabs_per_device = 2
sse_fraction = 0.3
[workload]
ops_per_s = 2.0
keys = 20
[[faults]]
at_s = 1.5
kind = "server_crash"
[[faults]]
at_s = 2.5
kind = "server_restart"
"#,
    );
    let mut server = rtsync_simulator::live::SpawnedServer::start(&sc).expect("server starts");
    let spawned = rtsync_simulator::live::Servers::Spawned(&mut server);
    let out =
        rtsync_simulator::live::run(&sc, 2, spawned, false, 2, &mut |_, _| {}).expect("live run");
    assert!(server.is_running(), "restarted, and still up at the end");
    let rec = &out.recorder;
    assert!(rec.anomalies.is_empty(), "{:#?}", rec.anomalies);
    assert!(
        rec.counter("connection_losses", None) >= 6,
        "every tab lost its connection"
    );
    // The server is durable (fsync, the default): the restart replayed its log, kept
    // the epoch, and the tabs resumed without a reload.
    assert_eq!(
        rec.counter("resyncs_by_snapshot", None),
        6,
        "one snapshot load per tab, at start only"
    );
    let final_epoch = rec.server.values().next().expect("probed").epoch;
    let applied: Vec<u64> = rec
        .ops
        .values()
        .filter_map(|o| match o.outcome {
            rtsync_simulator::record::Outcome::Applied { epoch, .. } => Some(epoch),
            _ => None,
        })
        .collect();
    assert!(!applied.is_empty() && applied.iter().all(|&e| e == final_epoch));
    assert!(
        rec.tabs
            .iter()
            .all(|t| t.open && t.settled && t.outbox_len == 0)
    );
}

mod cluster;
mod conformance_run;
mod partial;
mod regressions;

#[test]
fn a_quiet_phase_shorter_than_the_heartbeat_timeout_after_a_partition_is_warned_about() {
    let short = "name = \"short\"\nduration_s = 4\nquiescence_s = 6\n[[groups]]\nname = \"g\"\nusers = 2\n[[faults]]\nat_s = 1.5\nkind = \"partition\"\n[[faults]]\nat_s = 2.5\nkind = \"repair\"\n";
    let w = scenario(short).warnings();
    assert!(
        w.len() == 1 && w[0].contains("Raise quiescence_s to 13"),
        "{w:?}"
    );
    let long = short.replace("quiescence_s = 6", "quiescence_s = 13");
    assert!(scenario(&long).warnings().is_empty());
}
