//! `simulate` as a user runs it.

use crate::{TempDir, simulate};
use rtsync_simulator::report::{EXIT_INVALID, EXIT_PASS, EXIT_THRESHOLD};

/// Small enough for a test, with a partition so the reconnect path runs; the quiet
/// phase outlasts the simulated heartbeat timeout (15 s) that finds black-holed sockets.
const SMALL: &str = r#"
name = "small"
duration_s = 4
quiescence_s = 16
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
kind = "partition"
[[faults]]
at_s = 2.5
kind = "repair"
[thresholds]
ws_delivery_ms = ["p(99)<100000"]
"#;

#[test]
fn a_passing_run_exits_0_and_writes_every_report_file() {
    let dir = TempDir::new("pass");
    let file = dir.file("small.toml", SMALL);
    let out = dir.path().join("out");
    let (code, text) = simulate(&[
        &file,
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "3",
        "--check-determinism",
        "-q",
    ]);
    assert_eq!(code, EXIT_PASS, "{text}");
    let run = out.join("small");
    for f in [
        "summary.json",
        "report.html",
        "ws_delivery_ms.hgrm",
        "ws_delivery_ms.hlog",
        "ack_ms.hgrm",
    ] {
        assert!(run.join(f).is_file(), "{f} missing in {}", run.display());
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["deterministic"]["verdict"], "pass");
    assert_eq!(summary["deterministic"]["seed"], 3);
    // The same run compared with itself is no regression.
    let (code, text) = simulate(&["compare", out.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, EXIT_PASS, "{text}");
}

#[test]
fn live_spawn_server_runs_a_scenario_over_real_tcp() {
    let dir = TempDir::new("live");
    let file = dir.file("small.toml", SMALL);
    let out = dir.path().join("out");
    let (code, text) = simulate(&[
        "live",
        &file,
        "--spawn-server",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "1",
        "-q",
    ]);
    assert_eq!(code, EXIT_PASS, "{text}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("small/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["deterministic"]["mode"], "live");
    assert_eq!(summary["deterministic"]["verdict"], "pass");
}

/// Runs `simulate` with its stdout closed before it writes (a `| head` that already
/// went away); returns its exit code and stderr.
fn with_reader_gone(args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("simulate starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("simulate ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_goes_away_ends_simulate_quietly_and_the_reports_are_still_written() {
    // `list` has a folder to read before its first line.
    let (code, stderr) =
        with_reader_gone(&["list", concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    let dir = TempDir::new("pipe");
    let file = dir.file("small.toml", SMALL);
    let out = dir.path().join("out");
    let (code, stderr) = with_reader_gone(&[&file, "--out", out.to_str().unwrap(), "-q"]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.join("small/summary.json").is_file());
}

#[test]
fn the_cli_exits_104_on_an_invalid_scenario_and_prints_a_replay_line_on_failure() {
    let dir = std::env::temp_dir().join(format!("rtsync-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nduration_s = 0\n[[groups]]\nname = \"g\"\nusers = 1\n",
    )
    .unwrap();
    let (code, text) = simulate(&[bad.to_str().unwrap(), "--out", dir.to_str().unwrap(), "-q"]);
    assert_eq!(code, EXIT_INVALID, "{text}");
    assert!(text.contains("duration_s"), "{text}");
    let failing = dir.join("failing.toml");
    std::fs::write(&failing, "name = \"failing\"\nduration_s = 3\nquiescence_s = 3\n[[groups]]\nname = \"g\"\nusers = 2\n[thresholds]\nack_ms = [\"p(99)<1\"]\n").unwrap();
    let (code, text) = simulate(&[
        failing.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "-q",
        "--seed",
        "5",
    ]);
    assert_eq!(code, EXIT_THRESHOLD, "{text}");
    assert!(
        text.contains(&format!(
            "replay: cargo run --release --bin simulate -- {} --seed 5",
            failing.display()
        )),
        "{text}"
    );
    assert!(dir.join("failing/summary.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `simulate conformance --spawn-server`: every case passes against the reference
/// server (a child `simulate serve-child`), the summary is printed per area, both
/// report files are written; a case list that names no case is refused with a message.
#[test]
fn conformance_against_the_spawned_reference_server_passes_every_case() {
    let dir = TempDir::new("conformance");
    let out = dir.path().join("out");
    let (code, text) = simulate(&[
        "conformance",
        "--spawn-server",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let cases = rtsync_simulator::conformance::cases::all().len();
    assert!(
        text.contains(&format!("{cases} cases: {cases} pass")),
        "{text}"
    );
    assert!(text.contains("7 Resume"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("conformance.json")).unwrap())
            .unwrap();
    assert_eq!(json["totals"]["pass"], cases as u64);
    let html = std::fs::read_to_string(out.join("conformance.html")).unwrap();
    assert!(html.contains("<details") && html.contains("CONNECTED"));

    let (code, text) = simulate(&["conformance", "--spawn-server", "--cases", "3.9,42"]);
    assert_ne!(code, 0);
    assert!(text.contains("no case or area \"3.9\""), "{text}");
}

/// `live --spawn-cluster 3 --node-kills 2`: a real `redis-server` and three
/// `reference-server` child processes, two of them SIGKILLed mid-run and started again.
/// The run passes (no anomaly), the kills are in the report's fault timeline, tabs lost
/// their connections, and the rerun line names the cluster.
#[test]
fn live_spawn_cluster_kills_nodes_for_real() {
    let dir = TempDir::new("live-cluster");
    let file = dir.file(
        "cluster.toml",
        r#"
name = "cluster"
duration_s = 8
quiescence_s = 12
[server]
lease_ms = 1500
redis_timeout_ms = 500
[[groups]]
name = "office"
users = 3
sse_fraction = 0.3
[[groups]]
name = "home"
users = 3
[workload]
ops_per_s = 2.0
keys = 20
[thresholds]
ws_delivery_ms = ["p(99)<100000"]
"#,
    );
    let out = dir.path().join("out");
    let (code, text) = simulate(&[
        "live",
        &file,
        "--spawn-cluster",
        "3",
        "--node-kills",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "5",
        "-q",
    ]);
    assert_eq!(code, EXIT_PASS, "{text}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cluster/summary.json")).unwrap()).unwrap();
    let d = &summary["deterministic"];
    assert_eq!(d["verdict"], "pass");
    let kills = d["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["fault"] == "ServerCrash")
        .count();
    assert_eq!(kills, 2, "{}", d["faults"]);
    assert!(d["counters"]["connection_losses"].as_u64().unwrap() > 0);
    let html = std::fs::read_to_string(out.join("cluster/report.html")).unwrap();
    assert!(
        html.contains("--spawn-cluster 3 --node-kills 2"),
        "the rerun line"
    );
}
