//! What durability costs one mutation on this machine's disk: the core's step with its
//! records taken, then appended to a workspace log on a real file in each mode
//! (`process`: written to the OS; `fsync`: synced before the ACK), against the step
//! alone (`memory`). Figures go to docs/performance.md, "Durability".

use criterion::{Criterion, criterion_group, criterion_main};
use rtsync_protocol::{ClientEvent, EventType};
use rtsync_server::core::{CoreConfig, Sender, Workspace};
use rtsync_server::storage::{Durability, LogOptions, RealDisk, WorkspaceLog};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn update(n: u64) -> ClientEvent {
    ClientEvent {
        id: None,
        kind: if n == 1 {
            EventType::TaskCreated
        } else {
            EventType::TaskUpdated
        },
        payload: json!({"opId": format!("bench:{n}"), "id": "t1",
            "changes": {"title": format!("title {n}"), "status": "doing", "projectId": "p1"}}),
        user_id: None,
        session_id: None,
        timestamp: None,
        version: n - 1,
    }
}

fn bench_modes(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("rtsync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = Arc::new(CoreConfig::default());
    let sender = Sender {
        user_id: "alice",
        session_id: "s1",
    };
    let mut g = c.benchmark_group("durable_mutation");
    g.measurement_time(Duration::from_secs(5));
    for mode in [Durability::Memory, Durability::Process, Durability::Fsync] {
        let path = dir.join(format!("{mode}.log"));
        let _ = std::fs::remove_file(&path);
        let opts = LogOptions {
            mode,
            compact_bytes: u64::MAX,
            accept_damage: false,
        };
        let (mut ws, mut log) = if mode == Durability::Memory {
            (Workspace::new("bench", 1, cfg.clone()), None)
        } else {
            let (ws, log, _) =
                WorkspaceLog::open(&RealDisk, &path, Some("bench"), 1, &cfg, &opts).expect("open");
            (ws, Some(log))
        };
        let mut n = 0;
        g.bench_function(mode.as_str(), |b| {
            b.iter(|| {
                n += 1;
                let (answer, _) = ws.mutate(&sender, &update(n), n);
                let records = ws.take_journal();
                if let Some(log) = log.as_mut() {
                    log.append(&records).expect("append");
                }
                answer
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_modes);
criterion_main!(benches);
