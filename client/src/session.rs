//! One tab's sync engine: the connection, the stream position, the offline queue and
//! the replica, wired together as one sans-IO state machine. The simulator and live
//! mode drive it; the app reads the optimistic view and the notes it emits.
//!
//! Inputs: `handle_*(…, now_ms)`, `mutate`, `go_offline`/`go_online`. Outputs:
//! `poll_action()` for the shell (connect, send, POST, close, fetch snapshots),
//! `poll_note()` for the app, `poll_timeout()` for when to call `handle_timeout`.
//! [`Session`] documents the contract in full.

mod stream;

use crate::connection::{
    Action as ConnAction, Attempt, ConnEvent, ConnectError, Connection, ConnectionConfig, Transport,
};
use crate::outbox::{Outbox, OutboxConfig, OutboxError, PendingOp};
use crate::replica::Replica;
use crate::rng::Rng;
use crate::seq::{SeqTracker, SeqVerdict};
use rtsync_protocol::{
    Ack, ClientEvent, ClientMsg, ConflictDetected, Entity, EntityKind, ErrorCode, ErrorPayload,
    EventType, PresenceChange, PresenceDiff, RealtimeEvent, Resume, ServerMsg, Strategy, Timestamp,
    UserPresence,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::VecDeque;

/// A session's settings; the defaults are in `Default`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Reconnect, heartbeat and fallback settings.
    pub connection: ConnectionConfig,
    /// The offline queue's policy and bounds.
    pub outbox: OutboxConfig,
    /// A seq hole (or a parked ack) open this long means the stream lost something:
    /// resume (default 2 s).
    pub gap_timeout_ms: u64,
    /// Seqs remembered above the watermark, events buffered during a resync, acks
    /// parked, and server versions remembered from conflicts, each at most
    /// (default 10 000).
    pub stream_buffer_max: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            connection: ConnectionConfig::default(),
            outbox: OutboxConfig::default(),
            gap_timeout_ms: 2_000,
            stream_buffer_max: 10_000,
        }
    }
}

/// Mutations an SSE tab has in flight at most: a browser opens six HTTP/1.1 connections
/// per origin, and the event stream takes one.
pub const SSE_POSTS_MAX: usize = 5;

/// How long to hold writes after a `RATE_LIMITED` that does not say (`retryAfterMs`).
pub const RATE_LIMITED_WAIT_MS: u64 = 1000;

/// What the shell must do, in the order [`Session::poll_action`] gives them.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a WebSocket (`/ws` with epoch and lastSeq) or an SSE stream (`Last-Event-ID`),
    /// and report the outcome with `handle_open` or `handle_connect_failed`.
    Connect {
        /// WebSocket or SSE.
        transport: Transport,
        /// Where to resume the stream; `None`: no position (the session fetches
        /// snapshots after `CONNECTED`).
        resume: Option<Resume>,
        /// Quote it in every report about this connection.
        attempt: Attempt,
    },
    /// A frame on the WebSocket (ops in opId order, heartbeats, presence, `RESUME`).
    Send(ClientMsg),
    /// A mutation over `POST /api/events` (SSE mode); answer with `handle_post_answer`.
    /// A POST that gets no answer needs no report: the ack timeout covers it.
    Post(ClientMsg),
    /// Close the socket of `attempt`, then report it with `handle_closed`.
    Close {
        /// The close code to send.
        code: u16,
        /// The socket to close (an older one may already be gone).
        attempt: Attempt,
    },
    /// `GET /api/entities/{tasks,projects,notes}` (every page); answer with
    /// `handle_snapshot`, or `handle_snapshot_failed`.
    FetchSnapshot,
    /// The queue changed (an op queued or answered): write `sync_state()` to storage
    /// now. `mutate` queues it ahead of the op's `Send`, so a shell that acts in order
    /// persists an op before it can reach the server.
    PersistQueue,
}

/// Why an optimistic change was taken back.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackReason {
    /// The server answered `CONFLICT_DETECTED` (MERGE overlap, or MANUAL).
    Conflict,
    /// The server refused the op with this code. `OUT_OF_ORDER`, `RATE_LIMITED` and
    /// `STALE_OP` are handled without a rollback (resend, hold, refetch).
    Error(ErrorCode),
    /// Legacy outbox: no answer within the ack timeout.
    Timeout,
    /// An op it depended on (this opId) was rolled back.
    Dependency(String),
}

/// What the app (or the simulator's recorder) should know.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A connection opened (catching up follows; `Synced` says when it is done).
    Opened {
        /// On which transport.
        transport: Transport,
        /// When, ms.
        at_ms: u64,
    },
    /// An open connection was lost, or the tab went offline; a reconnect follows
    /// unless the tab is offline or the reconnect policy says otherwise.
    Lost {
        /// The close code, if a close frame came.
        code: Option<u16>,
        /// When, ms.
        at_ms: u64,
    },
    /// A remote change was applied to the replica: entity `(kind, id)` is now at
    /// `version` (`replica().get` reads it). Not the event itself: the replica took
    /// its payload, and copying it for every delivery would double the cost of one.
    Applied {
        /// The event's seq.
        seq: u64,
        /// The event's type.
        event: EventType,
        /// The entity's kind.
        kind: EntityKind,
        /// The entity's id.
        id: String,
        /// The entity's version now.
        version: u64,
        /// The op that made this version, whoever sent it.
        op_id: Option<String>,
        /// The entity is now a tombstone.
        deleted: bool,
    },
    /// The confirmed copy of `(kind, id)` changed other than by a delivered event: our
    /// own op's ack, or a MERGE's result. With `Applied`, every change of the replica's
    /// entities is told (a snapshot resync is told by `Synced { by_snapshot: true }`),
    /// so an app can keep what it derives from them (a query cache) in step.
    Confirmed {
        /// The entity's kind.
        kind: EntityKind,
        /// The entity's id.
        id: String,
    },
    /// A logged event seen before (a replay overlapping the stream); skipped.
    Duplicate {
        /// Its seq.
        seq: u64,
    },
    /// Our op was applied by the server; it has left the queue.
    Acked {
        /// The op.
        op: Box<PendingOp>,
        /// The server's answer.
        ack: Ack,
        /// When the answer arrived, ms.
        at_ms: u64,
    },
    /// The seed's rollback notification: the change is no longer in the view.
    RolledBack {
        /// The op, out of the queue.
        op: Box<PendingOp>,
        /// Why.
        reason: RollbackReason,
    },
    /// A conflict for the app (or a simulated user) to resolve.
    Conflict(Box<ConflictDetected>),
    /// Caught up after a (re)connect: by replay, or by a snapshot when continuity was lost.
    Synced {
        /// True when continuity was lost and snapshots were fetched.
        by_snapshot: bool,
        /// When, ms.
        at_ms: u64,
    },
    /// `PRESENCE_UPDATE`: who is online now.
    Presence(Vec<UserPresence>),
    /// `PRESENCE_DIFF`: who joined and who left.
    PresenceDiff(PresenceDiff),
    /// An ephemeral event (a presence change, a cursor): not logged, no seq.
    Ephemeral(Box<RealtimeEvent>),
    /// An `ERROR` from the server, after the session acted on it (rollback, resend,
    /// hold or refetch).
    Error(ErrorPayload),
    /// The token was refused or expired: call `reauthorize` once the app has a new one.
    NeedsAuth,
    /// The reconnect policy gave up (legacy policy only): nothing more is attempted.
    GaveUp,
}

/// What a persisted tab carries besides its stores: the queue and the stream position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// The outbox's opId prefix: a reloaded tab keeps numbering its ops.
    pub client_id: String,
    /// The n of the next op, so no opId is ever reused.
    pub next_n: u64,
    /// The unanswered ops, oldest first.
    pub outbox: Vec<PendingOp>,
    /// The log incarnation `seq` counts in; `None`: no position (refetch on open).
    pub epoch: Option<u64>,
    /// The stream watermark to resume from.
    pub seq: u64,
}

/// What a seq carries for the replica.
#[derive(Debug, PartialEq)]
enum Change {
    /// Another session's event: the entity as it now is. Noted (`Note::Applied`) when
    /// applied — live, or from the buffer after a snapshot.
    Event(Entity, EventType),
    /// The entity as a conflict reported it (our MERGE applied in part): applied
    /// without a note, as it is our own write, not a delivery.
    Entity(Entity),
    /// Our own op, acknowledged at this version.
    Ack(Box<PendingOp>, u64),
}

/// An ack that arrived ahead of versions we have not seen yet: applied once they land.
#[derive(Debug, PartialEq)]
struct Parked {
    seq: u64,
    op: Box<PendingOp>,
    version: u64,
    since_ms: u64,
}

#[derive(Debug, PartialEq)]
enum Stream {
    /// Applying events as they come.
    Live,
    /// Waiting for snapshots; what logged events and our acked ops change waits here,
    /// and is applied after the snapshot if its seq is newer than the snapshot's.
    Resyncing { buffer: Vec<(u64, Change)> },
}

/// One tab's sync engine, as a sans-IO state machine in quinn-proto's style: it does
/// no I/O and reads no clock. The caller (the *shell*: the simulator, live mode, a
/// test) owns the sockets, HTTP, storage and time, carries out what the session asks,
/// and reports back what happened.
///
/// # Inputs
///
/// Every input that can act on time takes `now_ms`: the caller's clock, in
/// milliseconds, never going backwards. Deadlines the session hands out are on the
/// same clock.
///
/// - Setting up: [`restore`](Self::restore) a persisted tab's entities, queue and
///   position (no entities and `epoch: None` when only its queue survived: the session
///   then fetches snapshots), then [`start`](Self::start), which makes the first
///   connect attempt. [`reset_state`](Self::reset_state) drops the replica and the
///   position at any time, keeping the queue.
/// - From the app: [`mutate`](Self::mutate) (queued, and in the view at once),
///   [`set_presence`](Self::set_presence), [`go_offline`](Self::go_offline) /
///   [`go_online`](Self::go_online), [`reauthorize`](Self::reauthorize) after
///   [`Note::NeedsAuth`], [`close`](Self::close).
/// - From the shell, what the network did: [`handle_open`](Self::handle_open),
///   [`handle_connect_failed`](Self::handle_connect_failed) and
///   [`handle_closed`](Self::handle_closed), each with the [`Attempt`] of the
///   [`Action::Connect`] it is about (reports about an older attempt are ignored);
///   [`handle_frame`](Self::handle_frame) for every server frame (a WebSocket message
///   or an SSE `data:`); [`handle_activity`](Self::handle_activity) for an SSE
///   keep-alive comment; [`handle_post_answer`](Self::handle_post_answer);
///   [`handle_snapshot`](Self::handle_snapshot) or
///   [`handle_snapshot_failed`](Self::handle_snapshot_failed).
/// - Time: [`handle_timeout`](Self::handle_timeout) (below, *Timers*).
///
/// # Outputs
///
/// After every input, `handle_timeout` included, drain two queues:
///
/// 1. [`poll_action`](Self::poll_action) until `None`, carrying out each [`Action`]
///    in the order given: `Send`s and `Post`s carry ops in opId order, which the
///    server requires, and a `PersistQueue` comes before the `Send` of the op it
///    persists. Carrying one out may be an input itself (a failed write is a
///    `handle_closed`, a `Close` is answered with `handle_closed`).
/// 2. [`poll_note`](Self::poll_note) until `None`: [`Note`]s for the app (or the
///    simulator's recorder), in the order things happened.
///
/// Repeat until both are empty, as the simulator and `client/tests/sync` do. Between
/// inputs, read state with the getters ([`view`](Self::view),
/// [`replica`](Self::replica), [`outbox`](Self::outbox),
/// [`is_settled`](Self::is_settled), …).
///
/// # Timers
///
/// [`poll_timeout`](Self::poll_timeout) is the earliest time, in ms on the caller's
/// clock, at which something is due: a connect timeout or reconnect backoff, a ping or
/// its pong deadline, an SSE idle limit or the time to retry the WebSocket, and while
/// open an op's ack timeout, the end of a `RATE_LIMITED` hold, or `gap_timeout_ms`
/// after a seq hole opened or an ack was parked. `None`: nothing is timed; wait for
/// the next input. Any input may move it, so read it again after each. When the clock
/// reaches it, call [`handle_timeout`](Self::handle_timeout) with the current time and
/// drain the outputs; a late call acts on everything due by then, and an early one is
/// harmless (it acts only on what is due).
#[derive(Debug)]
pub struct Session {
    user_id: String,
    conn: Connection,
    seq: SeqTracker,
    outbox: Outbox,
    replica: Replica,
    stream: Stream,
    /// Set between a (re)open and the first sign the stream is caught up.
    catching_up: bool,
    /// The epoch of the log the current connection streams (its `CONNECTED`). While a
    /// resync has cleared the position, answers and snapshots are still checked against
    /// it: a POST answered by an earlier incarnation must not be replayed into the new
    /// log's replica, nor its seq marked seen in the new numbering.
    stream_epoch: Option<u64>,
    /// The log head when the current connection registered (`CONNECTED.seq`): a
    /// snapshot read before it misses what happened between its read and the stream's
    /// start, and is refused.
    stream_head: u64,
    buffer_max: usize,
    actions: VecDeque<Action>,
    notes: VecDeque<Note>,
    /// Versions the server was seen to hold (from conflicts), bounded.
    known_versions: std::collections::BTreeMap<(EntityKind, String), u64>,
    /// Acks waiting for the versions before theirs (bounded by `buffer_max`); after
    /// `gap_timeout_ms` the stream is replayed instead.
    parked: Vec<Parked>,
    gap_timeout_ms: u64,
    /// Snapshot resyncs started (continuity lost, or no position), for reports.
    pub resyncs: u64,
    /// The presence this tab announces, sent again on every WebSocket (re)connect: the
    /// server forgets a session's presence when its connection ends.
    presence: Option<PresenceChange>,
}

impl Session {
    /// A closed session with an empty replica and queue, for `user_id`, numbering its
    /// ops `client_id:n`; `rng` draws its reconnect jitter.
    pub fn new(user_id: &str, client_id: &str, cfg: SessionConfig, rng: Rng) -> Self {
        Session {
            user_id: user_id.to_owned(),
            conn: Connection::new(cfg.connection, rng),
            seq: SeqTracker::new(cfg.stream_buffer_max, cfg.gap_timeout_ms),
            outbox: Outbox::new(client_id, cfg.outbox),
            replica: Replica::default(),
            stream: Stream::Live,
            catching_up: false,
            stream_epoch: None,
            stream_head: 0,
            buffer_max: cfg.stream_buffer_max.max(1),
            actions: VecDeque::new(),
            notes: VecDeque::new(),
            known_versions: std::collections::BTreeMap::new(),
            parked: Vec::new(),
            gap_timeout_ms: cfg.gap_timeout_ms,
            resyncs: 0,
            presence: None,
        }
    }

    // ---- getters ----

    /// The connection state machine (state, transport, counters).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
    /// The offline queue (pending ops, counters).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
    /// The confirmed state (what the server acknowledged or streamed).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }
    /// Hands the confirmed state over when the session ends (a simulation's final
    /// check), leaving the replica empty: moved, not copied.
    pub fn take_replica(&mut self) -> Replica {
        std::mem::take(&mut self.replica)
    }
    /// The stream position.
    pub fn seq(&self) -> &SeqTracker {
        &self.seq
    }
    /// Waiting for snapshots (continuity lost, or no position yet).
    pub fn is_resyncing(&self) -> bool {
        matches!(self.stream, Stream::Resyncing { .. })
    }
    /// Nothing queued, nothing being caught up: the view equals confirmed state.
    pub fn is_settled(&self) -> bool {
        self.outbox.is_empty()
            && !self.is_resyncing()
            && !self.catching_up
            && self.parked.is_empty()
    }
    /// The optimistic view of one entity.
    pub fn view(&self, kind: EntityKind, id: &str) -> Option<Entity> {
        self.replica.view(kind, id, self.outbox.ops())
    }
    /// Records that the server holds `kind`/`id` at `version` at least (a conflict's
    /// `current`), so a change made in answer to it — resolving the conflict — is based
    /// on that version even while the replica has not caught up. Without this a user
    /// resolving a conflict on a stale replica conflicts again, forever.
    pub fn note_server_version(&mut self, kind: EntityKind, id: &str, version: u64) {
        let e = self
            .known_versions
            .entry((kind, id.to_owned()))
            .or_insert(0);
        *e = (*e).max(version);
        if self.known_versions.len() > self.buffer_max {
            self.known_versions.pop_first();
        }
    }

    /// A server version learned from a conflict, plus our pending ops on the entity.
    fn known_at_least(&self, kind: EntityKind, id: &str) -> u64 {
        let Some(v) = self.known_versions.get(&(kind, id.to_owned())).copied() else {
            return 0;
        };
        let confirmed = self.replica.get(kind, id).map_or(0, |e| e.version);
        if confirmed >= v {
            return 0; // the replica caught up: predicted_version says it all
        }
        let pending = self
            .outbox
            .ops()
            .filter(|o| o.entity_id == id && o.kind.entity_kind() == Some(kind))
            .count() as u64;
        v + pending
    }

    /// The version a change made now is based on: confirmed plus our pending ops on it.
    pub fn predicted_version(&self, kind: EntityKind, id: &str) -> u64 {
        let confirmed = self.replica.get(kind, id).map_or(0, |e| e.version);
        let pending = self
            .outbox
            .ops()
            .filter(|o| o.entity_id == id && o.kind.entity_kind() == Some(kind))
            .count() as u64;
        confirmed + pending
    }

    /// What to persist on `Action::PersistQueue`: the queue and the stream position.
    pub fn sync_state(&self) -> SyncState {
        SyncState {
            client_id: self.outbox.client_id().to_owned(),
            next_n: self.outbox.next_n(),
            outbox: self.outbox.ops().cloned().collect(),
            epoch: self.seq.epoch(),
            seq: self.seq.watermark(),
        }
    }

    // ---- inputs ----

    /// Makes the first connect attempt, resuming from the restored position if any.
    pub fn start(&mut self, now_ms: u64) {
        self.conn.set_resume(self.seq.resume_point());
        self.conn.start(now_ms);
        self.pump(now_ms);
    }

    /// Restores a persisted tab: its replica, queue and stream position.
    pub fn restore(&mut self, entities: Vec<Entity>, sync: SyncState) {
        self.replica.clear();
        self.parked.clear();
        for e in entities {
            self.replica.apply_event(e);
        }
        self.outbox.restore(sync.outbox, sync.next_n);
        match sync.epoch {
            Some(epoch) => self.seq.reset(epoch, sync.seq),
            None => self.seq.clear(),
        }
    }

    /// Persisted state was unusable: start from nothing but the queue (kept separately),
    /// and refetch everything on the next open.
    pub fn reset_state(&mut self) {
        self.replica.clear();
        self.parked.clear();
        self.seq.clear();
    }

    /// Queues a mutation; the view shows it at once.
    #[allow(clippy::too_many_arguments)]
    pub fn mutate(
        &mut self,
        kind: EventType,
        entity_id: &str,
        changes: Map<String, Value>,
        strategy: Option<Strategy>,
        dependencies: Vec<String>,
        now_ms: u64,
    ) -> Result<String, OutboxError> {
        let entity = kind
            .entity_kind()
            .ok_or(OutboxError::NotAMutation(kind.as_str()))?;
        let base = self
            .predicted_version(entity, entity_id)
            .max(self.known_at_least(entity, entity_id));
        let op = self
            .outbox
            .enqueue(
                kind,
                entity_id,
                base,
                changes,
                strategy,
                dependencies,
                now_ms,
            )?
            .op_id
            .clone();
        self.actions.push_back(Action::PersistQueue);
        self.pump(now_ms);
        Ok(op)
    }

    /// Sets the presence this tab announces (the seed's `updatePresence`): sent now if
    /// a WebSocket is open, and after every reconnect. SSE tabs cannot send it (the
    /// protocol takes presence changes on the WebSocket only).
    pub fn set_presence(&mut self, change: PresenceChange) {
        self.presence = Some(change);
        if self.conn.is_open() {
            self.send_presence();
        }
    }

    /// Attempt `attempt` opened; the stream is caught up once `Note::Synced` comes.
    pub fn handle_open(&mut self, attempt: Attempt, now_ms: u64) {
        self.conn.handle_open(attempt, now_ms);
        self.catching_up = true;
        self.pump(now_ms);
    }

    /// Attempt `attempt` failed before opening (backoff, SSE fallback, or needs-auth).
    pub fn handle_connect_failed(&mut self, attempt: Attempt, err: ConnectError, now_ms: u64) {
        self.conn.handle_connect_failed(attempt, err, now_ms);
        self.pump(now_ms);
    }

    /// The socket of `attempt` closed: `code` from its close frame, `None` for a reset
    /// or EOF. The sequenced outbox resends unanswered ops after the reconnect.
    pub fn handle_closed(&mut self, attempt: Attempt, code: Option<u16>, now_ms: u64) {
        self.conn.handle_closed(attempt, code, now_ms);
        self.pump(now_ms);
    }

    /// A sign of life that is not a frame (an SSE keep-alive comment).
    pub fn handle_activity(&mut self, now_ms: u64) {
        self.conn.handle_activity(now_ms);
    }

    /// The device went offline: the socket is closed and nothing is attempted until
    /// `go_online`; mutations still queue.
    pub fn go_offline(&mut self, now_ms: u64) {
        self.conn.go_offline(now_ms);
        self.pump(now_ms);
    }

    /// The device is back online: connect now, resuming from the current position.
    pub fn go_online(&mut self, now_ms: u64) {
        self.conn.set_resume(self.seq.resume_point());
        self.conn.go_online(now_ms);
        self.pump(now_ms);
    }

    /// The app has a fresh token after `Note::NeedsAuth` (the shell connects with it).
    pub fn reauthorize(&mut self, now_ms: u64) {
        self.conn.set_resume(self.seq.resume_point());
        self.conn.reauthorize(now_ms);
        self.pump(now_ms);
    }

    /// The app closes the connection on purpose: no reconnect.
    pub fn close(&mut self, now_ms: u64) {
        self.conn.close();
        self.pump(now_ms);
    }

    /// A frame from the WebSocket or SSE stream.
    pub fn handle_frame(&mut self, msg: ServerMsg, now_ms: u64) {
        self.conn.handle_frame(&msg, now_ms);
        self.dispatch(msg, now_ms);
        self.pump(now_ms);
    }

    /// The answer to a `POST /api/events` (SSE mode).
    pub fn handle_post_answer(&mut self, msg: ServerMsg, now_ms: u64) {
        self.dispatch(msg, now_ms);
        self.pump(now_ms);
    }

    /// The snapshots asked for by `FetchSnapshot`: per kind, its entities and the seq
    /// watermark it was read at.
    pub fn handle_snapshot(
        &mut self,
        epoch: u64,
        parts: Vec<(EntityKind, u64, Vec<Entity>)>,
        now_ms: u64,
    ) {
        let watermark = parts.iter().map(|(_, seq, _)| *seq).min().unwrap_or(0);
        if self.stream_epoch.is_some_and(|e| e != epoch) || watermark < self.stream_head {
            // Read from another incarnation than the one our stream is on (the server
            // restarted between the two), or before the stream started (a fetch from
            // an earlier resync): applying it would mix two logs or leave a hole. Read
            // again; a stream that is stale too reconnects and asks for its own.
            if self.is_resyncing() {
                self.actions.push_back(Action::FetchSnapshot);
            }
            return;
        }
        let Stream::Resyncing { buffer } = std::mem::replace(&mut self.stream, Stream::Live) else {
            return;
        };
        for (kind, _, entities) in parts {
            self.replica.replace_kind(kind, entities);
        }
        self.seq.reset(epoch, watermark);
        self.conn.set_resume(self.seq.resume_point());
        // In seq order, which is the server's order: an SSE answer may have arrived
        // before the stream's earlier events.
        let mut buffer = buffer;
        buffer.sort_by_key(|(seq, _)| *seq);
        for (seq, change) in buffer {
            if seq > watermark {
                self.advance(seq, change, now_ms);
            }
        }
        self.unpark_all(now_ms);
        self.catching_up = false;
        self.notes.push_back(Note::Synced {
            by_snapshot: true,
            at_ms: now_ms,
        });
        self.pump(now_ms);
    }

    /// The snapshot fetch failed: ask again (the shell retries on the next pump).
    pub fn handle_snapshot_failed(&mut self) {
        if self.is_resyncing() {
            self.actions.push_back(Action::FetchSnapshot);
        }
    }

    /// The clock reached `poll_timeout`: acts on every deadline due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.conn.handle_timeout(now_ms);
        if self.conn.is_open() {
            let (suspect, late) = self.outbox.handle_timeout(now_ms);
            if suspect {
                self.conn.suspect(now_ms);
            }
            for op in late {
                self.notes.push_back(Note::RolledBack {
                    op: Box::new(op),
                    reason: RollbackReason::Timeout,
                });
            }
            if self.seq.needs_resync(now_ms) || self.park_expired(now_ms) {
                // The replay brings the parked acks' own events: they need not wait on.
                self.parked.clear();
                self.resume_stream(now_ms);
            }
        }
        self.pump(now_ms);
    }

    // ---- outputs ----

    /// The next thing the shell must do; drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing the app should know; drain until `None` after every input.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// When (ms, the caller's clock) to call `handle_timeout`; `None`: nothing timed.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.conn.poll_timeout();
        if self.conn.is_open() {
            let parked = self.parked.iter().map(|p| p.since_ms).min();
            let parked = parked.map(|t| t + self.gap_timeout_ms);
            for other in [self.outbox.poll_timeout(), self.seq.poll_timeout(), parked]
                .into_iter()
                .flatten()
            {
                t = Some(t.map_or(other, |t| t.min(other)));
            }
        }
        t
    }

    // ---- internals (the inbound stream is in stream.rs) ----

    fn send_presence(&mut self) {
        if self.conn.transport() != Transport::WebSocket {
            return;
        }
        let Some(p) = &self.presence else {
            return;
        };
        self.actions
            .push_back(Action::Send(ClientMsg::RealtimeEvent(ClientEvent {
                id: None,
                kind: EventType::UserPresenceChanged,
                payload: serde_json::to_value(p).unwrap_or_default(),
                user_id: None,
                session_id: None,
                timestamp: None,
                version: 0,
            })));
    }

    /// Moves the connection's outputs to the shell, and sends what the queue allows.
    fn pump(&mut self, now_ms: u64) {
        loop {
            while let Some(ev) = self.conn.poll_event() {
                match ev {
                    ConnEvent::Opened { transport, at_ms } => {
                        self.notes.push_back(Note::Opened { transport, at_ms })
                    }
                    ConnEvent::Lost { code, at_ms } => {
                        self.outbox.on_disconnect();
                        self.conn.set_resume(self.seq.resume_point());
                        self.notes.push_back(Note::Lost { code, at_ms });
                    }
                    ConnEvent::NeedsAuth => self.notes.push_back(Note::NeedsAuth),
                    ConnEvent::GaveUp => self.notes.push_back(Note::GaveUp),
                }
            }
            let Some(a) = self.conn.poll_action() else {
                break;
            };
            match a {
                ConnAction::Connect {
                    transport,
                    resume,
                    attempt,
                } => {
                    self.outbox.on_disconnect();
                    self.actions.push_back(Action::Connect {
                        transport,
                        resume,
                        attempt,
                    });
                }
                ConnAction::Send(m) if self.conn.transport() == Transport::WebSocket => {
                    self.actions.push_back(Action::Send(m))
                }
                ConnAction::Send(_) => {} // SSE cannot carry pings
                ConnAction::Close { code, attempt } => {
                    self.actions.push_back(Action::Close { code, attempt })
                }
            }
        }
        if !self.conn.is_open() {
            return;
        }
        let sse = self.conn.transport() == Transport::Sse;
        // Each POST holds an HTTP/1.1 connection: a browser keeps at most six per origin,
        // and the SSE stream holds one of them.
        while !(sse && self.outbox.inflight() >= SSE_POSTS_MAX)
            && let Some(m) = self.outbox.poll_send(now_ms)
        {
            self.actions.push_back(if sse {
                Action::Post(m)
            } else {
                Action::Send(m)
            });
        }
    }
}
