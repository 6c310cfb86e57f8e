//! The sans-IO domain core: plain structs, time passed in as `now_ms`, outputs
//! returned as [`Delivery`]s. The axum edge owns sockets, clocks and locks; tests and
//! benches drive this directly.
//!
//! - [`workspace`] — the hub of one workspace: sessions, fan-out, mutations, resume.
//! - [`store`] — entities with per-field versions and the conflict strategies.
//! - [`log`] — the bounded event log (seq, epoch, replay).
//! - [`ops`] — idempotent, ordered mutations per client.
//! - [`presence`] — presence with a grace period and batched diffs.
//! - [`ratelimit`] — token buckets.

pub mod log;
pub mod ops;
pub mod presence;
pub mod ratelimit;
pub mod store;
pub mod workspace;

use axum::extract::ws::Utf8Bytes;
use rtsync_protocol::{EntityKind, ServerMsg, Strategy};

pub use workspace::{Sender, SessionInfo, Workspace};

/// Identifies one connection (one WebSocket or one SSE stream) within a server.
pub type ConnId = u64;

/// One encoded server frame, shared by every receiver of a fan-out (it is encoded once).
/// The text is a reference-counted UTF-8 buffer (axum's `Utf8Bytes`, a
/// `bytes::Bytes` wrapper), so a WebSocket write of it is a refcount bump, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub text: Utf8Bytes,
    /// The event's seq when it is a logged event (SSE writes it as `id: E:N`).
    pub seq: Option<u64>,
}

impl Frame {
    pub fn new(text: String, seq: Option<u64>) -> Self {
        Frame {
            text: text.into(),
            seq,
        }
    }

    pub fn of(msg: &ServerMsg) -> Self {
        let seq = match msg {
            ServerMsg::RealtimeEvent { seq, .. } => *seq,
            _ => None,
        };
        Frame::new(msg.encode(), seq)
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// A frame for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub to: ConnId,
    pub frame: Frame,
}

/// The core's bounds and policies. Every field is documented with its default in
/// [`crate::config::ServerConfig`], which owns one of these.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub history_events_max: usize,
    pub history_age_ms: u64,
    pub presence_grace_ms: u64,
    pub cursor_interval_ms: u64,
    pub strategy_task: Strategy,
    pub strategy_project: Strategy,
    pub strategy_note: Strategy,
    pub op_answers_per_client: usize,
    pub op_clients_max: usize,
    /// Bytes all kept op answers of a workspace may take; past it the least recently
    /// used clients are forgotten (counted as evictions; their next op sets a baseline).
    pub op_answers_bytes_max: usize,
    pub entities_max: usize,
    /// An entity's fields, encoded, at most this large: every event carries the whole
    /// entity, so one that grew past what a client may send in a message would cost
    /// every reader that much per change. A write past it: `TOO_LARGE`, nothing applied.
    pub entity_bytes_max: usize,
    /// Each presence string (`currentPage`, `currentTask`, `currentProject`) at most
    /// this long: presence is sent to every session of the workspace on join.
    pub presence_field_bytes_max: usize,
    /// `GET /api/entities/{kind}` answers at most this many entities per page…
    pub snapshot_page_entities: usize,
    /// …and about this many bytes (at least one entity).
    pub snapshot_page_bytes: usize,
    pub replay_batch_events: usize,
    /// A replay batch holds at most this many bytes of events (at least one event), so
    /// a batch fits well inside a connection's outbound bound.
    pub replay_batch_bytes: usize,
    pub heartbeat_ms: u64,
    /// Advertised in `CONNECTED` (0: not advertised); the edge sets it from its
    /// outbound queue bound.
    pub inflight_max: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            history_events_max: 10_000,
            history_age_ms: 10 * 60 * 1000,
            presence_grace_ms: 5_000,
            cursor_interval_ms: 50,
            strategy_task: Strategy::Merge,
            strategy_project: Strategy::Merge,
            strategy_note: Strategy::LastWriteWins,
            op_answers_per_client: 256,
            op_clients_max: 100_000,
            op_answers_bytes_max: 16 << 20,
            entities_max: 100_000,
            entity_bytes_max: 64 * 1024,
            presence_field_bytes_max: 8 * 1024,
            snapshot_page_entities: 1000,
            snapshot_page_bytes: 1024 * 1024,
            replay_batch_events: 500,
            replay_batch_bytes: 256 * 1024,
            heartbeat_ms: 30_000,
            inflight_max: 0,
        }
    }
}

impl CoreConfig {
    pub fn strategy(&self, kind: EntityKind) -> Strategy {
        match kind {
            EntityKind::Task => self.strategy_task,
            EntityKind::Project => self.strategy_project,
            EntityKind::Note => self.strategy_note,
        }
    }
}
