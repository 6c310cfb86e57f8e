//! The seed's state-synchronisation types: offline-queue operations, cross-tab
//! messages and persisted snapshots. The client crate builds on these.

use crate::{EntityKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncOperationType {
    Create,
    Update,
    Delete,
    Batch,
}

/// The seed's `SyncOperation.entity`: an entity kind or `USER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncEntity {
    Task,
    Project,
    Note,
    User,
}

impl From<EntityKind> for SyncEntity {
    fn from(k: EntityKind) -> Self {
        match k {
            EntityKind::Task => SyncEntity::Task,
            EntityKind::Project => SyncEntity::Project,
            EntityKind::Note => SyncEntity::Note,
        }
    }
}

/// The seed's `SyncOperation`: one entry of the offline queue. `id` is the opId.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperation {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: SyncOperationType,
    pub entity: SyncEntity,
    pub entity_id: String,
    pub data: Value,
    pub timestamp: Timestamp,
    pub user_id: String,
    pub session_id: String,
    pub is_optimistic: bool,
    /// opIds that must be acknowledged before this one is sent.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CrossTabType {
    StateUpdate,
    UserAction,
    CacheInvalidation,
    FocusChange,
}

/// The seed's `CrossTabMessage` (BroadcastChannel payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossTabMessage {
    #[serde(rename = "type")]
    pub kind: CrossTabType,
    pub payload: Value,
    /// The sending tab's id.
    pub source: String,
    pub timestamp: Timestamp,
}

/// The stores a snapshot holds (the seed's `StateSnapshot.stores`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStores {
    pub tasks: Value,
    pub projects: Value,
    pub notes: Value,
    pub focus: Value,
    pub ui: Value,
    /// rtsync extension: the offline queue and the stream position (epoch, seq), so a
    /// reload resumes where it stopped and loses no queued write.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub sync: Value,
}

/// The seed's `StateSnapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateSnapshot {
    pub id: String,
    /// Schema version of `stores`.
    pub version: u32,
    pub timestamp: Timestamp,
    pub user_id: String,
    pub stores: SnapshotStores,
    /// SHA-256 of the canonical JSON of `stores`, hex.
    pub checksum: String,
    /// rtsync extension (TanStack's persister has it): a snapshot written under another
    /// buster string is discarded on load, so a deploy can invalidate every saved state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub buster: String,
}
