//! The seed's state-synchronisation types: offline-queue operations, cross-tab
//! messages and persisted snapshots. The client crate builds on these.

use crate::{EntityKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The seed's `SyncOperation.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncOperationType {
    /// Creates an entity.
    Create,
    /// Changes an entity.
    Update,
    /// Deletes an entity.
    Delete,
    /// Several operations as one.
    Batch,
}

/// The seed's `SyncOperation.entity`: an entity kind or `USER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncEntity {
    /// A task.
    Task,
    /// A project.
    Project,
    /// A note.
    Note,
    /// A user (the seed's; no rtsync entity).
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
///
/// The seed's shape, kept for clients written from it; nothing in this workspace uses
/// it: the client's outbox queues and persists `rtsync_client::outbox::PendingOp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncOperation {
    /// The opId.
    pub id: String,
    /// What the operation does.
    #[serde(rename = "type")]
    pub kind: SyncOperationType,
    /// The kind of entity it acts on.
    pub entity: SyncEntity,
    /// The entity it acts on.
    pub entity_id: String,
    /// The change.
    pub data: Value,
    /// When it was queued.
    pub timestamp: Timestamp,
    /// Who queued it.
    pub user_id: String,
    /// The tab that queued it.
    pub session_id: String,
    /// Whether the view already shows it.
    pub is_optimistic: bool,
    /// opIds that must be acknowledged before this one is sent.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// The seed's `CrossTabMessage.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CrossTabType {
    /// A store changed in the sending tab.
    StateUpdate,
    /// The user did something in the sending tab.
    UserAction,
    /// Query keys to invalidate in the other tabs' caches.
    CacheInvalidation,
    /// The sending tab gained or lost focus.
    FocusChange,
}

/// The seed's `CrossTabMessage` (BroadcastChannel payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossTabMessage {
    /// What the message is about.
    #[serde(rename = "type")]
    pub kind: CrossTabType,
    /// The message's content, shaped by `kind`.
    pub payload: Value,
    /// The sending tab's id.
    pub source: String,
    /// When it was posted.
    pub timestamp: Timestamp,
}

/// The stores a snapshot holds (the seed's `StateSnapshot.stores`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStores {
    /// The task store.
    pub tasks: Value,
    /// The project store.
    pub projects: Value,
    /// The note store.
    pub notes: Value,
    /// The focus-mode store.
    pub focus: Value,
    /// The UI store.
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
    /// The snapshot's id.
    pub id: String,
    /// Schema version of `stores`.
    pub version: u32,
    /// When it was taken (checked against the max age on load).
    pub timestamp: Timestamp,
    /// Whose state it is.
    pub user_id: String,
    /// The stores themselves.
    pub stores: SnapshotStores,
    /// SHA-256 of the canonical JSON of `stores`, hex.
    pub checksum: String,
    /// rtsync extension (TanStack's persister has it): a snapshot written under another
    /// buster string is discarded on load, so a deploy can invalidate every saved state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub buster: String,
}
