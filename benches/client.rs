//! Criterion benches for the client state machines' hot paths, against the seed's
//! targets: optimistic update feedback < 16 ms, state persistence < 100 ms.
//! Figures go to docs/performance.md.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use rtsync_client::cache::{CacheConfig, Filter, QueryCache};
use rtsync_client::persist::{PersistConfig, dehydrate, hydrate, snapshot};
use rtsync_client::rng::Rng;
use rtsync_client::session::{Session, SessionConfig, SyncState};
use rtsync_client::virtual_list::{ListGeometry, window};
use rtsync_protocol::{Entity, EntityKind, EventType, SnapshotStores, Timestamp};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::time::Duration;

fn task(i: usize) -> Entity {
    let status = ["todo", "doing", "done"][i % 3];
    let fields = json!({"title": format!("Task number {i}"), "status": status, "projectId": format!("p{}", i % 20), "priority": i % 5, "tags": ["a", "b"]});
    Entity {
        id: format!("t{i}"),
        entity: EntityKind::Task,
        version: 3,
        updated_at: Timestamp(1_795_000_000_000),
        updated_by: "u1".into(),
        op_id: None,
        deleted: false,
        task_id: None,
        fields: fields.as_object().cloned().unwrap_or_default(),
    }
}

/// A mutation queued and the optimistic view read back — what the UI waits for — on
/// a replica of 1 000 tasks with 10 ops already pending on the same task.
fn optimistic_apply(c: &mut Criterion) {
    let mut changes = Map::new();
    changes.insert("status".into(), json!("done"));
    let setup = || {
        let mut s = Session::new("u1", "c1", SessionConfig::default(), Rng::new(1));
        let sync = SyncState {
            client_id: "c1".into(),
            next_n: 1,
            outbox: vec![],
            epoch: Some(1),
            seq: 0,
        };
        s.restore((0..1000).map(task).collect(), sync);
        for _ in 0..10 {
            s.mutate(
                EventType::TaskUpdated,
                "t500",
                changes.clone(),
                None,
                vec![],
                0,
            )
            .ok();
        }
        s
    };
    c.bench_function("optimistic_apply", |b| {
        b.iter_batched_ref(
            setup,
            |s| {
                s.mutate(
                    EventType::TaskUpdated,
                    "t500",
                    changes.clone(),
                    None,
                    vec![],
                    0,
                )
                .ok();
                black_box(s.view(EntityKind::Task, "t500"))
            },
            BatchSize::SmallInput,
        )
    });
}

fn cache(c: &mut Criterion) {
    let mut q = QueryCache::new(CacheConfig {
        stale_time_ms: 60_000,
        entries_max: 20_000,
        ..CacheConfig::default()
    });
    let keys: Vec<Vec<String>> = (0..10_000)
        .map(|i| vec!["tasks".to_string(), format!("p{}", i % 100), format!("{i}")])
        .collect();
    for k in &keys {
        q.query(k, 0);
        q.resolve(k, json!({"id": k[2], "title": "x"}), 0);
    }
    let mut i = 0;
    c.bench_function("cache_lookup_10k", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(q.query(&keys[i], 1))
        })
    });
    let prefix = vec!["tasks".to_string(), "p42".to_string()];
    c.bench_function("cache_invalidate_prefix_10k", |b| {
        b.iter(|| black_box(q.invalidate(Filter::Prefix(&prefix)).len()))
    });
}

fn persistence(c: &mut Criterion) {
    let mut g = c.benchmark_group("persist");
    for n in [1000usize, 10_000] {
        let tasks: Value =
            serde_json::to_value((0..n).map(task).collect::<Vec<_>>()).unwrap_or_default();
        let stores = SnapshotStores {
            tasks,
            projects: json!([]),
            notes: json!([]),
            focus: json!({}),
            ui: json!({}),
            sync: Value::Null,
        };
        let snap = snapshot("s", "u1", stores.clone(), "", 0);
        let blob = dehydrate(&snap);
        g.bench_function(BenchmarkId::new("save", n), |b| {
            b.iter(|| black_box(dehydrate(&snapshot("s", "u1", stores.clone(), "", 0)).len()))
        });
        g.bench_function(BenchmarkId::new("load", n), |b| {
            b.iter(|| black_box(hydrate(&blob, &PersistConfig::default(), 0).is_ok()))
        });
    }
    g.finish();
}

/// Replaying a queue of 1 000 offline ops after a reconnect: every op resent in order.
fn outbox_replay(c: &mut Criterion) {
    use rtsync_client::outbox::{Outbox, OutboxConfig, OutboxPolicy};
    let mut changes = Map::new();
    changes.insert("title".into(), json!("edited offline"));
    let mut o = Outbox::new(
        "c1",
        OutboxConfig {
            policy: OutboxPolicy::Sequenced { capacity: 2000 },
            inflight_max: 2000,
            ack_timeout_ms: 10_000,
        },
    );
    for i in 0..1000 {
        o.enqueue(
            EventType::TaskUpdated,
            &format!("t{i}"),
            1,
            changes.clone(),
            None,
            vec![],
            0,
        )
        .ok();
    }
    c.bench_function("outbox_replay_1000", |b| {
        b.iter(|| {
            o.on_disconnect();
            let mut n = 0;
            while let Some(m) = o.poll_send(1) {
                n += black_box(m.encode().len());
            }
            n
        })
    });
}

fn virtual_list(c: &mut Criterion) {
    let g = ListGeometry::default();
    let mut scroll = 0u64;
    c.bench_function("virtual_window_1m_rows", |b| {
        b.iter(|| {
            scroll = (scroll + 12_345) % (1_000_000 * 60);
            black_box(window(&g, 1_000_000, scroll))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    targets = optimistic_apply, cache, persistence, outbox_replay, virtual_list
}
criterion_main!(benches);
