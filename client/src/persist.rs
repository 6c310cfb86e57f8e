//! State persistence, the seed's pipeline: JSON → SHA-256 checksum → gzip → base64,
//! with a schema version and an ascending migration chain, `maxAge` and a buster.
//! Every corruption (bad base64, bad gzip, bad JSON, wrong shape, bad checksum) is
//! detected and reported as a [`PersistError`]; nothing here panics on any input, and
//! decompression is bounded so a hostile blob cannot exhaust memory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use rtsync_protocol::{SnapshotStores, StateSnapshot, Timestamp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 3;

/// Persistence settings; the defaults are in `Default`.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// Older snapshots are discarded (seed: 24 h).
    pub max_age_ms: u64,
    /// A snapshot written under another buster is discarded, so a deploy can
    /// invalidate every saved state (default empty).
    pub buster: String,
    /// Decompressed size limit, bytes (default 64 MiB).
    pub bytes_max: usize,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            max_age_ms: 24 * 3600 * 1000,
            buster: String::new(),
            bytes_max: 64 << 20,
        }
    }
}

/// Why a stored snapshot could not be loaded. Every one but `Downgrade` makes the
/// snapshot unusable: the caller resets the state and refetches
/// (`Session::reset_state`); the queue, stored apart, survives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The blob is not base64.
    #[error("persisted state is not base64: {0}")]
    Base64(String),
    /// The decoded bytes are not gzip.
    #[error("persisted state is not gzip: {0}")]
    Gzip(String),
    /// Decompression passed `bytes_max` (holds the bound).
    #[error("persisted state decompresses past {0} bytes")]
    TooLarge(usize),
    /// The decompressed text is not JSON.
    #[error("persisted state is not JSON: {0}")]
    Json(String),
    /// JSON, but not a `StateSnapshot`.
    #[error("persisted state has the wrong shape: {0}")]
    Shape(String),
    /// The stores do not hash to the stored checksum.
    #[error("persisted state checksum mismatch: stored {stored}, computed {computed}")]
    Checksum {
        /// The checksum in the snapshot.
        stored: String,
        /// The checksum of the stores as read.
        computed: String,
    },
    /// Older than `max_age_ms`.
    #[error("persisted state is {age_ms} ms old; the limit is {max_ms} ms")]
    TooOld {
        /// The snapshot's age, ms.
        age_ms: u64,
        /// The limit, ms.
        max_ms: u64,
    },
    /// Written under another buster string.
    #[error("persisted state was written under another buster ({found:?})")]
    Busted {
        /// The snapshot's buster.
        found: String,
    },
    /// Written by a newer build: refused, and the stored state is kept.
    #[error(
        "persisted state has schema v{found}, newer than this build's v{current}: refusing to downgrade (the stored state is kept)"
    )]
    Downgrade {
        /// The snapshot's schema version.
        found: u32,
        /// This build's, [`SCHEMA_VERSION`].
        current: u32,
    },
    /// A migration step refused the stores.
    #[error("migration from schema v{from} failed: {why}")]
    Migration {
        /// The schema version the failing step starts from.
        from: u32,
        /// What the step found wrong.
        why: String,
    },
}

impl PersistError {
    /// True when the stored state must be kept (a newer build wrote it), not reset.
    pub fn keeps_stored_state(&self) -> bool {
        matches!(self, PersistError::Downgrade { .. })
    }
}

/// SHA-256 of the canonical JSON of the stores (serde_json's maps are sorted).
pub fn checksum(stores: &Value) -> String {
    let text = serde_json::to_string(stores).unwrap_or_default();
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds a snapshot of `stores` at the current schema version, checksummed.
pub fn snapshot(
    id: &str,
    user_id: &str,
    stores: SnapshotStores,
    buster: &str,
    now_ms: u64,
) -> StateSnapshot {
    let value = serde_json::to_value(&stores).unwrap_or(Value::Null);
    StateSnapshot {
        id: id.to_owned(),
        version: SCHEMA_VERSION,
        timestamp: Timestamp(now_ms),
        user_id: user_id.to_owned(),
        checksum: checksum(&value),
        stores,
        buster: buster.to_owned(),
    }
}

/// JSON → gzip → base64.
pub fn dehydrate(s: &StateSnapshot) -> String {
    let json = serde_json::to_vec(s).unwrap_or_default();
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&json);
    STANDARD.encode(gz.finish().unwrap_or_default())
}

/// base64 → gunzip (bounded) → JSON → version, checksum, age and buster checks →
/// migrations → typed snapshot.
pub fn hydrate(
    blob: &str,
    cfg: &PersistConfig,
    now_ms: u64,
) -> Result<StateSnapshot, PersistError> {
    let gz = STANDARD
        .decode(blob.trim())
        .map_err(|e| PersistError::Base64(e.to_string()))?;
    let mut json = Vec::new();
    GzDecoder::new(gz.as_slice())
        .take(cfg.bytes_max as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| PersistError::Gzip(e.to_string()))?;
    if json.len() > cfg.bytes_max {
        return Err(PersistError::TooLarge(cfg.bytes_max));
    }
    let mut v: Value =
        serde_json::from_slice(&json).map_err(|e| PersistError::Json(e.to_string()))?;
    let shape = |why: &str| PersistError::Shape(why.to_owned());
    let obj = v.as_object().ok_or_else(|| shape("not an object"))?;
    let version = obj
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| shape("no numeric version"))? as u32;
    if version > SCHEMA_VERSION {
        return Err(PersistError::Downgrade {
            found: version,
            current: SCHEMA_VERSION,
        });
    }
    let stores = obj.get("stores").ok_or_else(|| shape("no stores"))?;
    let stored = obj
        .get("checksum")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no checksum"))?;
    let computed = checksum(stores);
    if stored != computed {
        return Err(PersistError::Checksum {
            stored: stored.to_owned(),
            computed,
        });
    }
    let at = obj
        .get("timestamp")
        .cloned()
        .ok_or_else(|| shape("no timestamp"))?;
    let at: Timestamp =
        serde_json::from_value(at).map_err(|e| PersistError::Shape(e.to_string()))?;
    let age_ms = now_ms.saturating_sub(at.0);
    if age_ms > cfg.max_age_ms {
        return Err(PersistError::TooOld {
            age_ms,
            max_ms: cfg.max_age_ms,
        });
    }
    let found = obj
        .get("buster")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if found != cfg.buster {
        return Err(PersistError::Busted {
            found: found.to_owned(),
        });
    }
    for from in version..SCHEMA_VERSION {
        migrate(from, &mut v["stores"]).map_err(|why| PersistError::Migration { from, why })?;
    }
    v["version"] = json!(SCHEMA_VERSION);
    let mut snap: StateSnapshot =
        serde_json::from_value(v).map_err(|e| PersistError::Shape(e.to_string()))?;
    // The checksum now describes the migrated stores.
    snap.checksum = checksum(&serde_json::to_value(&snap.stores).unwrap_or(Value::Null));
    Ok(snap)
}

/// One step of the migration chain, `from` → `from + 1`.
fn migrate(from: u32, stores: &mut Value) -> Result<(), String> {
    let tasks = |stores: &mut Value| -> Result<Vec<Value>, String> {
        match stores.get_mut("tasks").map(Value::take) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(format!("tasks is {other}, expected a list")),
        }
    };
    match from {
        // v1 → v2: tasks had `completed: bool`; v2 has `status: "done" | "todo"`.
        1 => {
            let mut list = tasks(stores)?;
            for t in &mut list {
                let o = t.as_object_mut().ok_or("a task is not an object")?;
                if let Some(done) = o.remove("completed") {
                    let done = done.as_bool().ok_or("completed is not a boolean")?;
                    o.insert("status".into(), json!(if done { "done" } else { "todo" }));
                }
            }
            stores["tasks"] = Value::Array(list);
            Ok(())
        }
        // v2 → v3: `projectID` became `projectId`, and the focus store appeared.
        2 => {
            let mut list = tasks(stores)?;
            for t in &mut list {
                let o = t.as_object_mut().ok_or("a task is not an object")?;
                if let Some(p) = o.remove("projectID") {
                    o.insert("projectId".into(), p);
                }
            }
            stores["tasks"] = Value::Array(list);
            if stores.get("focus").is_none_or(Value::is_null) {
                stores["focus"] = json!({});
            }
            Ok(())
        }
        other => Err(format!("no migration from v{other}")),
    }
}

#[cfg(test)]
mod tests;
