//! `simulate conformance` against the reference server (every case passes) and against
//! a deliberately partial server (`partial.rs`), which must be told, case by case, what
//! it lacks: FAIL with the evidence where it answers wrongly, NOT IMPLEMENTED where it
//! says it does not support something or has no endpoint.

use super::partial;
use rtsync_simulator::auth::SECRET;
use rtsync_simulator::conformance::{self, CaseResult, Selection, Verdict};
use rtsync_simulator::live::SpawnedServer;

fn run_all(addr: &str) -> Vec<CaseResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(conformance::run(
        addr,
        SECRET,
        "test",
        &Selection::All,
        |_| {},
    ))
}

fn verdict<'a>(results: &'a [CaseResult], id: &str) -> &'a Verdict {
    &results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no case {id}"))
        .verdict
}

#[test]
fn the_reference_server_passes_every_case() {
    let server = SpawnedServer::with_config(conformance::reference_config(), None).unwrap();
    let results = run_all(&server.addr.to_string());
    assert_eq!(results.len(), conformance::cases::all().len());
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| format!("{} {:?}\n{:#?}", r.id, r.verdict, r.transcript))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn a_partial_server_is_told_what_it_lacks_case_by_case() {
    let addr = partial::start().to_string();
    let results = run_all(&addr);
    // What it does speak passes.
    for id in [
        "1.1", "1.2", "1.3", "1.4", "1.6", "2.2", "3.1", "4.1", "5.1", "9.1",
    ] {
        assert_eq!(verdict(&results, id), &Verdict::Pass, "{id}");
    }
    // What it says it does not support, or has no endpoint for.
    for id in ["7.5", "8.4", "11.1", "12.1"] {
        assert!(
            matches!(verdict(&results, id), Verdict::NotImplemented { .. }),
            "{id}: {:?}",
            verdict(&results, id)
        );
    }
    // What it gets wrong, each with what was expected and the frames behind it.
    for id in ["1.5", "2.1", "2.3", "3.2", "3.3", "7.3", "8.1"] {
        let r = results.iter().find(|r| r.id == id).unwrap();
        let Verdict::Fail { expected, .. } = &r.verdict else {
            panic!("{id}: {:?}", r.verdict);
        };
        assert!(!expected.is_empty() && !r.transcript.is_empty(), "{id}");
    }
    let Verdict::Fail { expected, got } = verdict(&results, "3.3") else {
        unreachable!()
    };
    assert!(
        expected.contains("OUT_OF_ORDER") && got.contains("ACK"),
        "{expected} / {got}"
    );
}

#[test]
fn live_mode_stops_with_the_missing_minimum_named() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let partial = partial::start().to_string();
    let why = rt
        .block_on(conformance::precheck(&partial, SECRET))
        .unwrap_err();
    for needle in ["7.3", "12.1", "NOT IMPLEMENTED", "docs/conformance.md"] {
        assert!(why.contains(needle), "{needle} in: {why}");
    }
    assert!(!why.contains("1.1 "), "1.1 passes: {why}");
    let server = SpawnedServer::with_config(conformance::reference_config(), None).unwrap();
    rt.block_on(conformance::precheck(&server.addr.to_string(), SECRET))
        .unwrap();
}
