//! What the core must persist, as records: the durable log's content (docs/durability.md).
//!
//! The core stays sans-IO. With journaling on, every state change a mutation makes is
//! also appended to a pending list as a [`Record`], which the edge takes after each
//! call ([`Workspace::take_journal`](super::Workspace::take_journal)) and writes
//! before any of that call's frames leave. Start-up feeds a file's records back
//! ([`Workspace::restore`](super::Workspace::restore)): event sourcing of *outcomes*,
//! not of commands, so a replay never runs conflict resolution again and does not
//! depend on the strategies or bounds the server now runs with.
//!
//! A snapshot ([`Workspace::snapshot_records`](super::Workspace::snapshot_records)) is
//! the same record kinds, one per entity, kept event and kept answer: replaying it
//! gives the same state, which is what compaction relies on.

use super::FrameKind;
use super::store::Stored;
use rtsync_protocol::EntityKind;
use serde::{Deserialize, Serialize};

/// One durable state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "camelCase")]
pub enum Record {
    /// The workspace's epoch, and the seq its kept history starts after. First in
    /// every file; again after damage was accepted (a new epoch).
    #[serde(rename_all = "camelCase")]
    Epoch {
        workspace: String,
        epoch: u64,
        head: u64,
    },
    /// An entity's whole stored state after a change (fields, per-field versions).
    Put {
        kind: EntityKind,
        id: String,
        stored: Stored,
    },
    /// A logged event: its seq (one more than the last), when, and its encoded frame.
    #[serde(rename_all = "camelCase")]
    Event { seq: u64, at_ms: u64, text: String },
    /// The answer to op `n` of (`user`, `client`), kept for duplicates.
    Answer {
        user: String,
        client: String,
        n: u64,
        kind: FrameKind,
        text: String,
    },
}

/// Why a record could not be restored (the file is damaged or not ours).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("event seq {got} does not follow the head {head}")]
    SeqGap { got: u64, head: u64 },
    #[error("a {0} record before the file's epoch record")]
    NoEpoch(&'static str),
}
