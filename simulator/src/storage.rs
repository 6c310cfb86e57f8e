//! A tab's simulated browser storage: the state snapshot (the seed's pipeline:
//! JSON → SHA-256 → gzip → base64) and, apart from it, the offline queue. Reloads go
//! through the real `rtsync_client::persist` code; corruption and old schemas are
//! produced here, deterministically from the tab's RNG.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rtsync_client::persist::{self, PersistConfig, PersistError};
use rtsync_client::rng::Rng;
use rtsync_client::session::{Session, SyncState};
use rtsync_protocol::{Entity, EntityKind, SnapshotStores};
use serde_json::{Value, json};

/// What a reload found.
#[derive(Debug)]
pub struct Restored {
    pub entities: Vec<Entity>,
    pub sync: SyncState,
    /// The stored schema was older and was migrated (the state is then revalidated).
    pub migrated: bool,
}

fn list(s: &Session, kind: EntityKind) -> Value {
    serde_json::to_value(
        s.replica()
            .entities()
            .filter(|e| e.entity == kind)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(Value::Null)
}

/// Dehydrates a tab's state (its replica and stream position; the queue lives in its
/// own key, written on every change).
pub fn save(s: &Session, user: &str, now_ms: u64) -> String {
    let sync = s.sync_state();
    let stores = SnapshotStores {
        tasks: list(s, EntityKind::Task),
        projects: list(s, EntityKind::Project),
        notes: list(s, EntityKind::Note),
        focus: json!({}),
        ui: json!({}),
        sync: json!({"epoch": sync.epoch, "seq": sync.seq}),
    };
    persist::dehydrate(&persist::snapshot("state", user, stores, "", now_ms))
}

/// The same state as an old build (schema v1) wrote it: tasks had `completed: bool`.
pub fn save_v1(s: &Session, user: &str, now_ms: u64) -> String {
    let mut snap: Value =
        serde_json::from_str(&decode_json(&save(s, user, now_ms)).unwrap_or_default())
            .unwrap_or_default();
    if let Some(tasks) = snap["stores"]["tasks"].as_array_mut() {
        for t in tasks {
            if let Some(o) = t.as_object_mut() {
                let done = o.remove("status").is_some_and(|v| v == "done");
                o.insert("completed".into(), json!(done));
            }
        }
    }
    snap["version"] = json!(1);
    snap["checksum"] = json!(persist::checksum(&snap["stores"]));
    encode_json(&snap.to_string())
}

fn decode_json(blob: &str) -> Option<String> {
    use std::io::Read;
    let gz = STANDARD.decode(blob).ok()?;
    let mut out = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut out)
        .ok()?;
    Some(out)
}

fn encode_json(json: &str) -> String {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = gz.write_all(json.as_bytes());
    STANDARD.encode(gz.finish().unwrap_or_default())
}

/// Corrupts a blob one of five ways (chosen by `rng`): truncated, not base64, not
/// gzip, a tampered store (checksum mismatch), not JSON.
pub fn corrupt(blob: &str, rng: &mut Rng) -> (String, &'static str) {
    match rng.below(5) {
        0 => (blob[..blob.len() / 2].to_owned(), "truncated"),
        1 => (format!("%{}", &blob[1..]), "bad base64"),
        2 => (STANDARD.encode(b"this is not gzip data"), "bad gzip"),
        3 => {
            let mut v: Value =
                serde_json::from_str(&decode_json(blob).unwrap_or_default()).unwrap_or_default();
            v["stores"]["ui"] = json!({"tampered": true});
            (encode_json(&v.to_string()), "bad checksum")
        }
        _ => (encode_json("{\"version\": 3, \"stores\": "), "bad JSON"),
    }
}

/// Hydrates a state blob and joins it with the stored queue.
pub fn load(state: &str, queue: Option<&str>, now_ms: u64) -> Result<Restored, PersistError> {
    let snap = persist::hydrate(state, &PersistConfig::default(), now_ms)?;
    let stored = serde_json::from_str::<Value>(&decode_json(state).unwrap_or_default()).ok();
    let migrated = stored
        .and_then(|v| v["version"].as_u64())
        .is_some_and(|v| v < u64::from(persist::SCHEMA_VERSION));
    let mut entities = Vec::new();
    for list in [
        &snap.stores.tasks,
        &snap.stores.projects,
        &snap.stores.notes,
    ] {
        let es: Vec<Entity> =
            serde_json::from_value(list.clone()).map_err(|e| PersistError::Shape(e.to_string()))?;
        entities.extend(es);
    }
    let mut sync = queue_of(queue);
    // A migrated state is shown at once but revalidated: forget the stream position so
    // the next connect refetches snapshots.
    sync.epoch = if migrated {
        None
    } else {
        snap.stores.sync["epoch"].as_u64()
    };
    sync.seq = snap.stores.sync["seq"].as_u64().unwrap_or(0);
    Ok(Restored {
        entities,
        sync,
        migrated,
    })
}

/// The stored queue (the empty queue if none was written).
pub fn queue_of(queue: Option<&str>) -> SyncState {
    queue
        .and_then(|q| serde_json::from_str::<SyncState>(q).ok())
        .unwrap_or(SyncState {
            client_id: String::new(),
            next_n: 1,
            outbox: Vec::new(),
            epoch: None,
            seq: 0,
        })
}
