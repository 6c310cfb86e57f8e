//! Criterion benches for the sans-IO domain core: what one mutation costs the server
//! before any socket is involved. Figures go to docs/performance.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtsync_protocol::{ClientEvent, Device, EventType, Resume};
use rtsync_server::core::{CoreConfig, SessionInfo, Workspace};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

fn update(n: u64, id: &str, base: u64) -> ClientEvent {
    ClientEvent {
        id: None,
        kind: EventType::TaskUpdated,
        payload: json!({"opId": format!("bench:{n}"), "id": id, "changes": {"title": format!("title {n}"), "status": "doing"}}),
        user_id: None,
        session_id: None,
        timestamp: None,
        version: base,
    }
}

fn create(n: u64, id: &str) -> ClientEvent {
    ClientEvent {
        kind: EventType::TaskCreated,
        version: 0,
        ..update(n, id, 0)
    }
}

fn workspace(sessions: u64) -> Workspace {
    let mut w = Workspace::new("bench", 1, Arc::new(CoreConfig::default()));
    for conn in 1..=sessions {
        let info = SessionInfo {
            user_id: format!("u{conn}"),
            session_id: format!("s{conn}"),
            device: Device::default(),
        };
        w.connect(conn, info, None, 0);
    }
    w
}

/// One mutation (decode-free: the event is already parsed) applied, logged, encoded
/// once and fanned out to every other session.
fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_out");
    for sessions in [10u64, 100, 1000] {
        let mut w = workspace(sessions);
        w.handle_event(1, &create(1, "t1"), 1);
        let mut n = 1;
        g.throughput(Throughput::Elements(sessions - 1));
        g.bench_function(BenchmarkId::from_parameter(sessions), |b| {
            b.iter(|| {
                n += 1;
                let out = w.handle_event(1, &update(n, "t1", n - 1), n);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// The conflict path: a stale write whose fields all overlap (answered
/// CONFLICT_DETECTED, nothing applied), and a MERGE pair — a current write of one
/// field, then a stale write of another field that merges on top.
fn conflicts(c: &mut Criterion) {
    let mut w = workspace(2);
    w.handle_event(1, &create(1, "t1"), 1);
    w.handle_event(1, &update(2, "t1", 1), 2); // t1 at v2: title and status changed at v2
    let mut n = 2;
    c.bench_function("conflict_check_overlap", |b| {
        b.iter(|| {
            n += 1;
            black_box(w.handle_event(1, &update(n, "t1", 1), n).len())
        })
    });
    let field = |op: String, id: &str, base: u64, f: &str, v: u64| ClientEvent {
        payload: json!({"opId": op, "id": id, "changes": {f: v}}),
        ..update(0, id, base)
    };
    let mut w = workspace(2);
    w.handle_event(1, &create(1, "t1"), 1);
    let (mut version, mut n) = (1u64, 1u64);
    c.bench_function("merge_pair_current_then_stale_disjoint", |b| {
        b.iter(|| {
            n += 1;
            let a = w.handle_event(2, &field(format!("b:{n}"), "t1", version, "status", n), n);
            let m = w.handle_event(
                1,
                &field(format!("bench:{n}"), "t1", version, "title", n),
                n,
            );
            version += 2;
            black_box(a.len() + m.len())
        })
    });
}

/// Appending to the event log (through a mutation) and resuming 100 / 1 000 events back.
fn event_log(c: &mut Criterion) {
    let mut w = workspace(1);
    for n in 1..=5000u64 {
        w.handle_event(1, &create(n, &format!("t{n}")), n);
    }
    let epoch = w.epoch();
    let mut g = c.benchmark_group("resume");
    for back in [100u64, 1000] {
        g.throughput(Throughput::Elements(back));
        g.bench_function(BenchmarkId::from_parameter(back), |b| {
            b.iter(|| {
                black_box(
                    w.resume(
                        1,
                        Resume {
                            epoch,
                            last_seq: 5000 - back,
                        },
                    )
                    .len(),
                )
            })
        });
    }
    g.finish();
    let mut n = 5000;
    c.bench_function("append_create", |b| {
        b.iter(|| {
            n += 1;
            black_box(w.handle_event(1, &create(n, &format!("t{n}")), n).len())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = fan_out, conflicts, event_log
}
criterion_main!(benches);
