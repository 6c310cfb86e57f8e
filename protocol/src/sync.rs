//! The seed's state-synchronisation types: cross-tab messages and persisted snapshots.
//! The client crate builds on these (its offline queue has its own type,
//! `rtsync_client::outbox::PendingOp`).

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// A focus session changed in the sending tab (the seed's `FOCUS_STARTED` and the
    /// like; the simulator's focus timer carries the whole session state).
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
