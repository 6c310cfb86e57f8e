//! The sans-IO domain core: plain structs, time passed in as `now_ms`, outputs
//! returned as [`Delivery`]s. The axum edge owns sockets, clocks and locks; tests and
//! benches drive this directly.
//!
//! - [`workspace`] — the hub of one workspace: sessions, fan-out, mutations, resume.
//! - [`store`] — entities with per-field versions and the conflict strategies.
//! - [`log`] — the bounded event log (seq, epoch, replay).
//! - [`journal`] — the records a durable server persists, and their replay.
//! - [`ops`] — idempotent, ordered mutations per client.
//! - [`presence`] — presence with a grace period and batched diffs.
//! - [`ratelimit`] — token buckets.

pub mod journal;
pub mod log;
pub mod ops;
pub mod presence;
pub mod ratelimit;
pub mod store;
pub mod workspace;

use rtsync_protocol::{EntityKind, ErrorCode, ServerMsg, Strategy};
use std::sync::Arc;

pub use journal::Record;
pub use workspace::{Sender, SessionInfo, Workspace};

/// Identifies one connection (one WebSocket or one SSE stream) within a server.
pub type ConnId = u64;

/// What a frame is, known where it is made, so the edge picks an HTTP status or counts
/// an error without parsing its own output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrameKind {
    /// `REALTIME_EVENT` (logged or ephemeral).
    Event,
    /// `ACK` of a mutation.
    Ack,
    /// `CONFLICT_DETECTED` answering a mutation.
    Conflict,
    /// `ERROR` with its code.
    Error(ErrorCode),
    /// Anything else (`CONNECTED`, presence, `RECENT_EVENTS`, heartbeats).
    Other,
}

impl FrameKind {
    fn of(msg: &ServerMsg) -> Self {
        match msg {
            ServerMsg::RealtimeEvent { .. } => FrameKind::Event,
            ServerMsg::Ack(_) => FrameKind::Ack,
            ServerMsg::ConflictDetected(_) => FrameKind::Conflict,
            ServerMsg::Error(e) => FrameKind::Error(e.code),
            _ => FrameKind::Other,
        }
    }
}

/// One encoded server frame, shared by every receiver of a fan-out (it is encoded once,
/// and a clone is a reference-count bump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub text: Arc<str>,
    /// The event's seq when it is a logged event (SSE writes it as `id: E:N`).
    pub seq: Option<u64>,
    pub kind: FrameKind,
    /// Group commit: the frame may leave only once the workspace's log is synced this
    /// far (`WorkspaceLog::appended_total`); 0 = at once. Set by the edge, never by the core.
    pub durable_at: u64,
}

impl Frame {
    /// A frame of already-encoded text (`RECENT_EVENTS` is spliced from event frames).
    pub fn new(text: String, seq: Option<u64>) -> Self {
        Frame {
            text: text.into(),
            seq,
            kind: FrameKind::Other,
            durable_at: 0,
        }
    }

    pub fn of(msg: &ServerMsg) -> Self {
        let seq = match msg {
            ServerMsg::RealtimeEvent { seq, .. } => *seq,
            _ => None,
        };
        Frame {
            kind: FrameKind::of(msg),
            ..Frame::new(msg.encode(), seq)
        }
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

fn d() -> CoreConfig {
    CoreConfig::default()
}

/// The core's bounds and policies, with their defaults (`Default`). Part of
/// [`crate::config::ServerConfig`], flattened: each field is a `serve` flag and a
/// scenario `[server]` key, and its doc comment is the flag's help.
#[derive(Debug, Clone, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CoreConfig {
    /// Events kept per workspace for resume; an older resume point is answered
    /// `complete: false` (the client reloads a snapshot).
    #[arg(long, default_value_t = d().history_events_max)]
    pub history_events_max: usize,
    /// …and for at most this long.
    #[arg(long, default_value_t = d().history_age_ms)]
    pub history_age_ms: u64,
    /// A user leaves the presence list this long after its last session went, so a
    /// reconnect does not flicker.
    #[arg(long, default_value_t = d().presence_grace_ms)]
    pub presence_grace_ms: u64,
    /// Cursor updates of one session are forwarded at most once per this interval.
    #[arg(long, default_value_t = d().cursor_interval_ms)]
    pub cursor_interval_ms: u64,
    /// Default conflict strategy for tasks: LAST_WRITE_WINS, MERGE or MANUAL (a
    /// mutation may name its own).
    #[arg(long, default_value_t = d().strategy_task)]
    pub strategy_task: Strategy,
    /// …for projects.
    #[arg(long, default_value_t = d().strategy_project)]
    pub strategy_project: Strategy,
    /// …for notes.
    #[arg(long, default_value_t = d().strategy_note)]
    pub strategy_note: Strategy,
    /// Answers kept per client, so a duplicate op gets its first answer again.
    #[arg(long, default_value_t = d().op_answers_per_client)]
    pub op_answers_per_client: usize,
    /// Clients whose answers are kept per workspace; past it the least recently used
    /// are forgotten.
    #[arg(long, default_value_t = d().op_clients_max)]
    pub op_clients_max: usize,
    /// Bytes all kept op answers of a workspace may take; past it the least recently
    /// used clients are forgotten (counted as evictions; their next op sets a baseline).
    #[arg(long, default_value_t = d().op_answers_bytes_max)]
    pub op_answers_bytes_max: usize,
    /// Entities per workspace; a create past it is answered `LIMIT_EXCEEDED`.
    #[arg(long, default_value_t = d().entities_max)]
    pub entities_max: usize,
    /// An entity's fields, encoded, at most this large: every event carries the whole
    /// entity, so one that grew past what a client may send in a message would cost
    /// every reader that much per change. A write past it: `TOO_LARGE`, nothing applied.
    #[arg(long, default_value_t = d().entity_bytes_max)]
    pub entity_bytes_max: usize,
    /// Each presence string (`currentPage`, `currentTask`, `currentProject`) at most
    /// this long: presence is sent to every session of the workspace on join.
    #[arg(long, default_value_t = d().presence_field_bytes_max)]
    pub presence_field_bytes_max: usize,
    /// `GET /api/entities/{kind}` answers at most this many entities per page…
    #[arg(long, default_value_t = d().snapshot_page_entities)]
    pub snapshot_page_entities: usize,
    /// …and about this many bytes (at least one entity).
    #[arg(long, default_value_t = d().snapshot_page_bytes)]
    pub snapshot_page_bytes: usize,
    /// Events per replay batch at most; the next batch is sent when the connection's
    /// queue has drained.
    #[arg(long, default_value_t = d().replay_batch_events)]
    pub replay_batch_events: usize,
    /// A replay batch holds at most this many bytes of events (at least one event), so
    /// a batch fits well inside a connection's outbound bound.
    #[arg(long, default_value_t = d().replay_batch_bytes)]
    pub replay_batch_bytes: usize,
    /// The server pings every WebSocket this often (`HEARTBEAT`, advertised in `CONNECTED`).
    #[arg(long, default_value_t = d().heartbeat_ms)]
    pub heartbeat_ms: u64,
    /// Advertised in `CONNECTED` (0: not advertised). Not a flag or a scenario key: the
    /// edge sets it from its outbound queue bound.
    #[arg(skip)]
    #[serde(skip)]
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
