//! Criterion benches for the sans-IO domain core: what one mutation costs the server
//! before any socket is involved. Figures go to docs/performance.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtsync_protocol::{ClientEvent, Device, EventType, Resume};
use rtsync_server::core::{CoreConfig, SessionInfo, Workspace};
use rtsync_server::edge::metrics::WAIT_BUCKETS_S;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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

/// The `/metrics` queue-wait histogram is observed once per frame written, on every
/// runtime thread: the server's (`prometheus-client`, a mutex per observation) against
/// the lock-free cumulative atomics it replaced, kept here as [`AtomicBuckets`], alone
/// and with two threads observing at once (the machine's cores).
fn queue_wait_observe(c: &mut Criterion) {
    use rtsync_server::edge::metrics::Metrics;
    let ours = Arc::new(AtomicBuckets::default());
    let theirs = Arc::new(Metrics::default());
    let waits: Vec<Duration> = (0..64u64)
        .map(|i| Duration::from_micros(i * i * 97))
        .collect();
    let mut g = c.benchmark_group("queue_wait_observe");
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("hand_written_atomics", threads), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &waits, &ours, AtomicBuckets::observe))
        });
        g.bench_function(BenchmarkId::new("prometheus_client", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &waits, &theirs, Metrics::observe_queue_wait)
            })
        });
    }
    g.finish();
}

/// The hand-written histogram `/metrics` used before prometheus-client: one atomic per
/// cumulative bucket, every bucket at or above the value bumped.
#[derive(Default)]
struct AtomicBuckets {
    buckets: [AtomicU64; WAIT_BUCKETS_S.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl AtomicBuckets {
    fn observe(&self, wait: Duration) {
        let s = wait.as_secs_f64();
        for (i, le) in WAIT_BUCKETS_S.iter().enumerate() {
            if s <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(wait.as_micros() as u64, Relaxed);
    }
}

/// Runs `iters` observations on each of `threads` threads at once; the wall time of the
/// slowest, so contention shows as time per observation.
fn on_threads<T: Send + Sync>(
    threads: usize,
    iters: u64,
    waits: &[Duration],
    target: &Arc<T>,
    observe: impl Fn(&T, Duration) + Sync,
) -> Duration {
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for i in 0..iters {
                    observe(target, black_box(waits[i as usize % waits.len()]));
                }
            });
        }
    });
    start.elapsed()
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = fan_out, conflicts, event_log, queue_wait_observe
}
criterion_main!(benches);
