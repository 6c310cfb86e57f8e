//! The hub of one workspace: its sessions, entity store, event log, op table and
//! presence. Every method takes `now_ms` and returns the frames to deliver; nothing
//! here blocks, sleeps or reads a clock.

use super::journal::{Record, RestoreError};
use super::log::{EventLog, Replay};
use super::ops::{OpTable, Verdict};
use super::presence::Presence;
use super::store::{Change, EntityStore, Outcome};
use super::{ConnId, CoreConfig, Delivery, Frame};
use rtsync_protocol::{
    Ack, ClientEvent, ClientMsg, CollaborationCursor, ConflictDetected, ConflictResolution,
    Connected, Device, Entity, EntityKind, ErrorCode, ErrorPayload, EventType, Heartbeat,
    MutationPayload, OpId, PresenceChange, PresenceDiff, PresenceStatus, RealtimeEvent, Resume,
    ServerMsg, Timestamp, UserAction, UserPresence, sse,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who a session is. Fixed at connect.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user_id: String,
    pub session_id: String,
    pub device: Device,
}

/// The author of a mutation: a session (WebSocket) or an SSE client's POST.
#[derive(Debug, Clone)]
pub struct Sender<'a> {
    pub user_id: &'a str,
    pub session_id: &'a str,
}

#[derive(Debug)]
struct Session {
    info: SessionInfo,
    last_cursor_ms: Option<u64>,
    pending_cursor: Option<CollaborationCursor>,
    /// Catching up: the last seq its replay has sent. Logged events are not fanned out
    /// to it meanwhile — the replay reads them from the log, in order, a batch at a time
    /// as its connection drains (`continue_replay`), so a replay larger than the
    /// outbound bound still gets through and never interleaves with live events.
    replayed_through: Option<u64>,
    /// Receiving the presence list in pages: the last user id sent. A list larger than
    /// one batch (hundreds of users with large fields) goes a page at a time as the
    /// connection drains, each built from presence as it is then; the first page is
    /// `PRESENCE_UPDATE`, the rest `PRESENCE_DIFF` joins, so ticks' diffs sent in
    /// between apply as set operations in the order they were queued.
    presence_after: Option<String>,
}

#[derive(Debug)]
pub struct Workspace {
    id: String,
    cfg: Arc<CoreConfig>,
    sessions: BTreeMap<ConnId, Session>,
    store: EntityStore,
    log: EventLog,
    ops: OpTable,
    presence: Presence,
    /// Numbers ephemeral events (`E:eN`) so their ids never repeat within an epoch.
    ephemeral_n: u64,
    /// With a durable log: the records of state changes not yet taken by the edge.
    journal: Option<Vec<Record>>,
}

/// A snapshot read: live entities plus the seq watermark to stream from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub workspace_id: String,
    pub epoch: u64,
    pub seq: u64,
    pub entities: Vec<Entity>,
    /// More pages follow: ask again with `after=` this (docs/protocol.md, Snapshots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

fn error(
    code: ErrorCode,
    message: String,
    op_id: Option<String>,
    expected_n: Option<u64>,
) -> Frame {
    Frame::of(&ServerMsg::Error(ErrorPayload {
        code,
        message,
        op_id,
        expected_n,
        retry_after_ms: None,
    }))
}

impl Workspace {
    pub fn new(id: impl Into<String>, epoch: u64, cfg: Arc<CoreConfig>) -> Self {
        Workspace {
            id: id.into(),
            sessions: BTreeMap::new(),
            store: EntityStore::new(cfg.entities_max, cfg.entity_bytes_max),
            log: EventLog::new(epoch, cfg.history_events_max, cfg.history_age_ms),
            ops: OpTable::new(
                cfg.op_answers_per_client,
                cfg.op_clients_max,
                cfg.op_answers_bytes_max,
            ),
            presence: Presence::default(),
            ephemeral_n: 0,
            journal: None,
            cfg,
        }
    }

    // ---- durability (core/journal.rs) ----

    /// From now on, every state change is also kept as a [`Record`] for the edge to
    /// persist ([`take_journal`](Self::take_journal)).
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// Continuity is lost (damage accepted): a new epoch with no kept history, so every
    /// resume is answered `complete: false`. Entities stay; op answers go: ops
    /// acknowledged after the damage are gone, and a client whose next op would be
    /// answered `OUT_OF_ORDER` for an n it no longer holds could never drain its queue,
    /// so each client's next op sets a new baseline.
    pub fn start_epoch(&mut self, epoch: u64) {
        self.log = EventLog::restored(
            epoch,
            self.log.head(),
            self.cfg.history_events_max,
            self.cfg.history_age_ms,
        );
        self.ops = OpTable::new(
            self.cfg.op_answers_per_client,
            self.cfg.op_clients_max,
            self.cfg.op_answers_bytes_max,
        );
    }

    /// Takes over `old`'s live part — sessions, presence, ephemeral numbering — when
    /// this workspace was just rebuilt from its log after a failed write (whose frames
    /// never left, so no session has seen past this workspace's head).
    pub fn adopt_sessions(&mut self, old: &mut Workspace) {
        self.sessions = std::mem::take(&mut old.sessions);
        self.presence = std::mem::take(&mut old.presence);
        self.ephemeral_n = old.ephemeral_n;
        let head = self.log.head();
        for s in self.sessions.values_mut() {
            if s.replayed_through.is_some_and(|t| t > head) {
                s.replayed_through = Some(head);
            }
        }
    }

    /// The records of the state changes since the last call, in order.
    pub fn take_journal(&mut self) -> Vec<Record> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn journal(&mut self, r: impl FnOnce(&Self) -> Record) {
        if self.journal.is_some() {
            let rec = r(self);
            if let Some(j) = self.journal.as_mut() {
                j.push(rec);
            }
        }
    }

    /// Applies one record of a durable log to a fresh workspace (start-up replay).
    /// Journals nothing. The file's first record must be its `Epoch`.
    pub fn restore(&mut self, rec: Record, restored: &mut bool) -> Result<(), RestoreError> {
        let what = match &rec {
            Record::Epoch { .. } => "",
            Record::Put { .. } => "put",
            Record::Event { .. } => "event",
            Record::Answer { .. } => "answer",
        };
        if !*restored && !what.is_empty() {
            return Err(RestoreError::NoEpoch(what));
        }
        match rec {
            Record::Epoch { epoch, head, .. } => {
                self.log = EventLog::restored(
                    epoch,
                    head,
                    self.cfg.history_events_max,
                    self.cfg.history_age_ms,
                );
                *restored = true;
            }
            Record::Put { kind, id, stored } => self.store.put(kind, id, stored),
            Record::Event { seq, at_ms, text } => {
                let head = self.log.head();
                if seq != head + 1 {
                    return Err(RestoreError::SeqGap { got: seq, head });
                }
                let frame = Frame {
                    text: text.into(),
                    seq: Some(seq),
                    kind: super::FrameKind::Event,
                    durable_at: 0,
                };
                self.log.append(frame, at_ms);
            }
            Record::Answer {
                user,
                client,
                n,
                kind,
                text,
            } => {
                let frame = Frame {
                    text: text.into(),
                    seq: None,
                    kind,
                    durable_at: 0,
                };
                self.ops.record(&user, &client, n, frame);
            }
        }
        Ok(())
    }

    /// The whole durable state as records: replayed into a fresh workspace, they give
    /// this one's entities, kept history and kept answers (compaction writes these).
    pub fn snapshot_records(&self) -> Vec<Record> {
        let mut out = vec![Record::Epoch {
            workspace: self.id.clone(),
            epoch: self.epoch(),
            head: self.log.history_base(),
        }];
        out.extend(self.store.all().map(|(kind, id, s)| Record::Put {
            kind,
            id: id.to_owned(),
            stored: s.clone(),
        }));
        out.extend(self.log.kept().map(|(seq, at_ms, f)| Record::Event {
            seq,
            at_ms,
            text: f.text.to_string(),
        }));
        out.extend(self.ops.kept().map(|(user, client, n, f)| Record::Answer {
            user: user.to_owned(),
            client: client.to_owned(),
            n,
            kind: f.kind,
            text: f.text.to_string(),
        }));
        out
    }

    // ---- getters ----

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn epoch(&self) -> u64 {
        self.log.epoch()
    }
    pub fn head(&self) -> u64 {
        self.log.head()
    }
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
    pub fn history_len(&self) -> usize {
        self.log.len()
    }
    pub fn entities(&self) -> usize {
        self.store.len()
    }
    pub fn op_clients_evicted(&self) -> u64 {
        self.ops.evicted
    }
    pub fn entity(&self, kind: EntityKind, id: &str) -> Option<Entity> {
        self.store.get(kind, id)
    }

    pub fn snapshot(&self, kind: EntityKind, project: Option<&str>) -> Snapshot {
        Snapshot {
            workspace_id: self.id.clone(),
            epoch: self.epoch(),
            seq: self.head(),
            entities: self.store.list(kind, project),
            next: None,
        }
    }

    /// One page of [`snapshot`](Self::snapshot): entities after id `after`, at most
    /// `limit` (capped at `snapshot_page_entities`) and about `snapshot_page_bytes`.
    /// Each page has its own watermark; a client that streams from the first page's
    /// gets every change made while it paged (versions only move forward).
    pub fn snapshot_page(
        &self,
        kind: EntityKind,
        project: Option<&str>,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Snapshot {
        let cap = self.cfg.snapshot_page_entities;
        let limit = limit.map_or(cap, |l| l.clamp(1, cap));
        let (entities, next) =
            self.store
                .page(kind, project, after, limit, self.cfg.snapshot_page_bytes);
        Snapshot {
            workspace_id: self.id.clone(),
            epoch: self.epoch(),
            seq: self.head(),
            entities,
            next,
        }
    }

    // ---- inputs ----

    /// Registers a session. It gets `CONNECTED`, the full presence, and — when it
    /// resumes — the events it missed, all before any later event (the caller holds
    /// the workspace while delivering).
    pub fn connect(
        &mut self,
        conn: ConnId,
        info: SessionInfo,
        resume: Option<Resume>,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let now = Timestamp(now_ms);
        let meta = UserPresence {
            user_id: info.user_id.clone(),
            session_id: info.session_id.clone(),
            last_seen: now,
            status: PresenceStatus::Online,
            current_page: None,
            current_task: None,
            current_project: None,
            device: info.device.clone(),
        };
        self.presence.add(conn, meta);
        let connected = ServerMsg::Connected(Connected {
            user_id: info.user_id.clone(),
            session_id: info.session_id.clone(),
            connection_id: conn,
            workspace_id: self.id.clone(),
            epoch: self.epoch(),
            seq: self.head(),
            heartbeat_ms: self.cfg.heartbeat_ms,
            server_time: now,
            inflight_max: (self.cfg.inflight_max > 0).then_some(self.cfg.inflight_max as u64),
        });
        self.sessions.insert(
            conn,
            Session {
                info,
                last_cursor_ms: None,
                pending_cursor: None,
                replayed_through: None,
                presence_after: None,
            },
        );
        let mut out = vec![
            Delivery {
                to: conn,
                frame: Frame::of(&connected),
            },
            self.presence_page(conn, None),
        ];
        if let Some(r) = resume {
            out.extend(self.resume(conn, r));
        }
        out
    }

    pub fn disconnect(&mut self, conn: ConnId, now_ms: u64) {
        if let Some(s) = self.sessions.remove(&conn) {
            self.presence.remove(&s.info.user_id, conn, now_ms);
        }
    }

    /// Answers `RESUME`: the first batch of the missed events (the rest follow with
    /// `continue_replay` as the connection drains), or `complete: false`.
    pub fn resume(&mut self, conn: ConnId, r: Resume) -> Vec<Delivery> {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.replayed_through = None;
        }
        self.replay_from(conn, r.epoch, r.last_seq)
    }

    /// Whether `conn` is catching up (more presence pages or replay batches to come).
    pub fn is_replaying(&self, conn: ConnId) -> bool {
        self.sessions
            .get(&conn)
            .is_some_and(|s| s.replayed_through.is_some() || s.presence_after.is_some())
    }

    /// The presence page after user `after` (the first page when `None`), bounded like a
    /// replay batch; notes where the next one starts.
    fn presence_page(&mut self, conn: ConnId, after: Option<&str>) -> Delivery {
        let (page, next) = self.presence.page(after, self.cfg.replay_batch_bytes);
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.presence_after = next;
        }
        let msg = match after {
            None => ServerMsg::PresenceUpdate(page),
            Some(_) => ServerMsg::PresenceDiff(PresenceDiff {
                joins: page,
                leaves: Vec::new(),
            }),
        };
        Delivery {
            to: conn,
            frame: Frame::of(&msg),
        }
    }

    /// The next batch of a replay in progress; empty when `conn` is not replaying.
    /// When the batch reaches the head, the session is live again (in the same step, so
    /// no event falls between the replay and the fan-out). History trimmed past the
    /// replay meanwhile is answered `complete: false`.
    pub fn continue_replay(&mut self, conn: ConnId) -> Vec<Delivery> {
        if let Some(after) = self
            .sessions
            .get(&conn)
            .and_then(|s| s.presence_after.clone())
        {
            return vec![self.presence_page(conn, Some(&after))];
        }
        let Some(through) = self.sessions.get(&conn).and_then(|s| s.replayed_through) else {
            return Vec::new();
        };
        let epoch = self.epoch();
        self.replay_from(conn, epoch, through)
    }

    fn replay_from(&mut self, conn: ConnId, epoch: u64, last_seq: u64) -> Vec<Delivery> {
        let head = self.head();
        let (frame, through) = match self.log.replay(epoch, last_seq) {
            // A point far ahead (or unreadable: `Resume::UNUSABLE`) answers from the
            // head, not from a wrapped `u64::MAX + 1`.
            Replay::Lost => {
                let from = last_seq.saturating_add(1).min(head + 1);
                (recent_events(&[], from, head, false), None)
            }
            Replay::Complete(events) if events.is_empty() => {
                (recent_events(&[], last_seq + 1, last_seq, true), None)
            }
            Replay::Complete(events) => {
                // At least one event, then as many as fit both batch bounds.
                let (events_max, bytes_max) = (
                    self.cfg.replay_batch_events.max(1),
                    self.cfg.replay_batch_bytes,
                );
                let mut n = 0;
                let mut bytes = 0;
                while n < events.len().min(events_max)
                    && (n == 0 || bytes + events[n].len() <= bytes_max)
                {
                    bytes += events[n].len();
                    n += 1;
                }
                let from = events[0].seq.unwrap_or(0);
                let to = events[n - 1].seq.unwrap_or(0);
                let more = n < events.len();
                (
                    recent_events(&events[..n], from, to, true),
                    more.then_some(to),
                )
            }
        };
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.replayed_through = through;
        }
        vec![Delivery { to: conn, frame }]
    }

    /// What one message from a WebSocket session does: the one dispatch of a
    /// [`ClientMsg`], for the edge and for tests that drive the core directly. After a
    /// `RESUME` the edge sends the rest of the replay as the connection drains
    /// ([`Workspace::continue_replay`]).
    pub fn handle_msg(&mut self, conn: ConnId, msg: &ClientMsg, now_ms: u64) -> Vec<Delivery> {
        match msg {
            ClientMsg::RealtimeEvent(ev) => self.handle_event(conn, ev, now_ms),
            ClientMsg::UserAction(UserAction::CursorMove { x, y, element_id }) => {
                self.cursor(conn, *x, *y, element_id.clone(), now_ms)
            }
            ClientMsg::Resume(r) => self.resume(conn, *r),
            ClientMsg::Heartbeat(_) => vec![Delivery {
                to: conn,
                frame: Frame::of(&ServerMsg::HeartbeatAck(Heartbeat {
                    timestamp: Timestamp(now_ms),
                })),
            }],
            ClientMsg::HeartbeatAck(_) => Vec::new(),
        }
    }

    /// A `REALTIME_EVENT` from a WebSocket session.
    pub fn handle_event(&mut self, conn: ConnId, ev: &ClientEvent, now_ms: u64) -> Vec<Delivery> {
        let Some(s) = self.sessions.get(&conn) else {
            return Vec::new();
        };
        let (user, session) = (s.info.user_id.clone(), s.info.session_id.clone());
        self.presence.touch(&user, conn, Timestamp(now_ms));
        match ev.kind {
            k if k.is_mutation() => {
                let sender = Sender {
                    user_id: &user,
                    session_id: &session,
                };
                let (answer, mut out) = self.mutate(&sender, ev, now_ms);
                out.insert(
                    0,
                    Delivery {
                        to: conn,
                        frame: answer,
                    },
                );
                out
            }
            EventType::UserPresenceChanged => self.presence_change(conn, &user, ev, now_ms),
            other => {
                let msg = format!(
                    "{} is sent by the server only; send cursors as USER_ACTION CURSOR_MOVE",
                    other.as_str()
                );
                vec![Delivery {
                    to: conn,
                    frame: error(ErrorCode::Forbidden, msg, None, None),
                }]
            }
        }
    }

    fn presence_change(
        &mut self,
        conn: ConnId,
        user: &str,
        ev: &ClientEvent,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let change: PresenceChange = match serde_json::from_value(ev.payload.clone()) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("invalid USER_PRESENCE_CHANGED payload: {e}");
                return vec![Delivery {
                    to: conn,
                    frame: error(ErrorCode::InvalidPayload, msg, None, None),
                }];
            }
        };
        if change.user_id.as_deref().is_some_and(|u| u != user) {
            let msg = "presence may only be changed for the token's own user".to_owned();
            return vec![Delivery {
                to: conn,
                frame: error(ErrorCode::Forbidden, msg, None, None),
            }];
        }
        let max = self.cfg.presence_field_bytes_max;
        let long = [
            ("currentPage", &change.current_page),
            ("currentTask", &change.current_task),
            ("currentProject", &change.current_project),
        ]
        .into_iter()
        .find_map(|(f, v)| v.as_ref().filter(|v| v.len() > max).map(|v| (f, v.len())));
        if let Some((field, len)) = long {
            let msg = format!("presence {field} is {len} bytes; at most {max} (nothing changed)");
            return vec![Delivery {
                to: conn,
                frame: error(ErrorCode::TooLarge, msg, None, None),
            }];
        }
        let Some(meta) = self.presence.update(user, conn, &change, Timestamp(now_ms)) else {
            return Vec::new();
        };
        let payload = serde_json::to_value(&meta).unwrap_or_default();
        self.ephemeral(conn, EventType::UserPresenceChanged, payload, now_ms)
    }

    /// `USER_ACTION CURSOR_MOVE`: relayed at most once per `cursor_interval_ms` per
    /// session; in between, the latest position waits and older ones are replaced.
    pub fn cursor(
        &mut self,
        conn: ConnId,
        x: f64,
        y: f64,
        element_id: Option<String>,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let interval = self.cfg.cursor_interval_ms;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return Vec::new();
        };
        let user = s.info.user_id.clone();
        let cursor = CollaborationCursor {
            user_id: user.clone(),
            user_name: user.clone(),
            user_color: color_of(&user).to_owned(),
            x,
            y,
            element_id,
            last_moved: Timestamp(now_ms),
        };
        let due = s
            .last_cursor_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= interval);
        self.presence.touch(&user, conn, Timestamp(now_ms));
        if !due {
            s.pending_cursor = Some(cursor);
            return Vec::new();
        }
        s.last_cursor_ms = Some(now_ms);
        s.pending_cursor = None;
        let payload = serde_json::to_value(&cursor).unwrap_or_default();
        self.ephemeral(conn, EventType::CollaborationCursor, payload, now_ms)
    }

    /// Applies a mutation. Returns the answer for the sender (`ACK`,
    /// `CONFLICT_DETECTED` or `ERROR`) and the event for every other session.
    pub fn mutate(
        &mut self,
        sender: &Sender<'_>,
        ev: &ClientEvent,
        now_ms: u64,
    ) -> (Frame, Vec<Delivery>) {
        let Some(kind) = ev.kind.entity_kind() else {
            let msg = format!("{} is not a mutation", ev.kind.as_str());
            return (
                error(ErrorCode::InvalidPayload, msg, None, None),
                Vec::new(),
            );
        };
        let raw_op = ev
            .payload
            .get("opId")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let op = match OpId::parse(raw_op) {
            Ok(op) => op,
            Err(e) => {
                return (
                    error(ErrorCode::InvalidPayload, e.to_string(), None, None),
                    Vec::new(),
                );
            }
        };
        let op_id = Some(raw_op.to_owned());
        match self.ops.check(sender.user_id, &op.client_id, op.n) {
            Verdict::New => {}
            Verdict::Duplicate(answer) => return (answer, Vec::new()),
            Verdict::Stale { last_n } => {
                let msg = format!(
                    "op {raw_op} was applied before n={last_n}; its answer is no longer kept"
                );
                return (error(ErrorCode::StaleOp, msg, op_id, None), Vec::new());
            }
            Verdict::Gap { expected } => {
                let msg =
                    format!("op {raw_op} skips ahead: expected n={expected}; replay from there");
                return (
                    error(ErrorCode::OutOfOrder, msg, op_id, Some(expected)),
                    Vec::new(),
                );
            }
        }
        let (answer, out) = match MutationPayload::from_event(ev.kind, &ev.payload) {
            Err(e) => (
                error(ErrorCode::InvalidPayload, e.to_string(), op_id, None),
                Vec::new(),
            ),
            Ok((p, _)) => self.apply(sender, ev, kind, &p, now_ms),
        };
        self.ops
            .record(sender.user_id, &op.client_id, op.n, answer.clone());
        self.journal(|_| Record::Answer {
            user: sender.user_id.to_owned(),
            client: op.client_id.clone(),
            n: op.n,
            kind: answer.kind,
            text: answer.text.to_string(),
        });
        (answer, out)
    }

    fn apply(
        &mut self,
        sender: &Sender<'_>,
        ev: &ClientEvent,
        kind: EntityKind,
        p: &MutationPayload,
        now_ms: u64,
    ) -> (Frame, Vec<Delivery>) {
        let strategy = p.strategy.unwrap_or(self.cfg.strategy(kind));
        let change = Change {
            kind,
            id: &p.id,
            delete: ev.kind.is_delete(),
            base: ev.version,
            changes: &p.changes,
            strategy,
            by: sender.user_id,
            at: Timestamp(now_ms),
            op_id: &p.op_id,
        };
        let epoch = self.epoch();
        let conflict = |strategy, conflicts, current, seq: Option<u64>| {
            Frame::of(&ServerMsg::ConflictDetected(Box::new(ConflictDetected {
                resolution: ConflictResolution {
                    id: format!("conflict:{}", p.op_id),
                    kind,
                    entity_id: p.id.clone(),
                    conflicts,
                    resolved_by: None,
                    resolved_at: None,
                    strategy,
                },
                op_id: p.op_id.clone(),
                current,
                seq,
                epoch: seq.map(|_| epoch),
            })))
        };
        let ack = |version, seq: Option<u64>, resolution, overwritten| {
            Frame::of(&ServerMsg::Ack(Ack {
                op_id: p.op_id.clone(),
                entity: kind,
                entity_id: p.id.clone(),
                version,
                seq,
                epoch: seq.map(|_| epoch),
                resolution,
                overwritten,
            }))
        };
        match self.store.apply(&change) {
            Outcome::Applied {
                entity,
                resolution,
                overwritten,
                conflicts,
            } => {
                let version = entity.version;
                let (seq, fanout) = self.log_event(sender, ev.kind, entity.clone(), now_ms);
                let answer = if conflicts.is_empty() {
                    ack(version, Some(seq), resolution, overwritten)
                } else {
                    conflict(strategy, conflicts, entity, Some(seq))
                };
                (answer, fanout)
            }
            Outcome::Conflict {
                strategy,
                conflicts,
                current,
            } => (conflict(strategy, conflicts, current, None), Vec::new()),
            Outcome::Unchanged { entity } => {
                (ack(entity.version, None, None, Vec::new()), Vec::new())
            }
            Outcome::Refused { code, message } => (
                error(code, message, Some(p.op_id.clone()), None),
                Vec::new(),
            ),
        }
    }

    /// Logs an entity event and fans it out to every session but the sender's.
    fn log_event(
        &mut self,
        sender: &Sender<'_>,
        kind: EventType,
        mut entity: Entity,
        now_ms: u64,
    ) -> (u64, Vec<Delivery>) {
        let seq = self.log.next_seq();
        if kind == EventType::TaskStatusChanged {
            entity.task_id = Some(entity.id.clone());
        }
        let version = entity.version;
        let event = RealtimeEvent {
            id: sse::event_id(self.epoch(), seq),
            kind,
            payload: serde_json::to_value(&entity).unwrap_or_default(),
            user_id: sender.user_id.to_owned(),
            session_id: sender.session_id.to_owned(),
            timestamp: Timestamp(now_ms),
            version,
        };
        let frame = Frame::of(&ServerMsg::RealtimeEvent {
            seq: Some(seq),
            event,
        });
        if self.journal.is_some()
            && let Some(stored) = self.store.stored(entity.entity, &entity.id).cloned()
        {
            self.journal(|_| Record::Put {
                kind: entity.entity,
                id: entity.id.clone(),
                stored,
            });
        }
        self.journal(|_| Record::Event {
            seq,
            at_ms: now_ms,
            text: frame.text.to_string(),
        });
        self.log.append(frame.clone(), now_ms);
        (seq, self.fan_out(sender.user_id, sender.session_id, &frame))
    }

    fn ephemeral(
        &mut self,
        conn: ConnId,
        kind: EventType,
        payload: serde_json::Value,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let Some(s) = self.sessions.get(&conn) else {
            return Vec::new();
        };
        self.ephemeral_n += 1;
        let event = RealtimeEvent {
            id: format!("{}:e{}", self.epoch(), self.ephemeral_n),
            kind,
            payload,
            user_id: s.info.user_id.clone(),
            session_id: s.info.session_id.clone(),
            timestamp: Timestamp(now_ms),
            version: 0,
        };
        let frame = Frame::of(&ServerMsg::RealtimeEvent { seq: None, event });
        let (user, session) = (s.info.user_id.clone(), s.info.session_id.clone());
        self.fan_out(&user, &session, &frame)
    }

    /// Every other session gets `frame`; a logged event skips sessions still catching
    /// up (their replay will read it from the log).
    fn fan_out(&self, user: &str, session: &str, frame: &Frame) -> Vec<Delivery> {
        let logged = frame.seq.is_some();
        // Sized up front: a filtered iterator gives `collect` no size hint, and growing
        // the vector by doubling was 4% of a fan-out benchmark's profile.
        let mut out = Vec::with_capacity(self.sessions.len());
        out.extend(
            self.sessions
                .iter()
                .filter(|(_, s)| !(s.info.session_id == session && s.info.user_id == user))
                .filter(|(_, s)| !(logged && s.replayed_through.is_some()))
                .map(|(&to, _)| Delivery {
                    to,
                    frame: frame.clone(),
                }),
        );
        out
    }

    /// Time passes: presence diffs (batched, after the grace period), throttled
    /// cursors, history trimmed by age.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Delivery> {
        let mut out = Vec::new();
        if let Some(diff) = self.presence.tick(now_ms, self.cfg.presence_grace_ms) {
            let frame = Frame::of(&ServerMsg::PresenceDiff(diff));
            out.extend(self.sessions.keys().map(|&to| Delivery {
                to,
                frame: frame.clone(),
            }));
        }
        let interval = self.cfg.cursor_interval_ms;
        let due: Vec<(ConnId, CollaborationCursor)> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| {
                s.last_cursor_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) >= interval)
            })
            .filter_map(|(&c, s)| {
                let cur = s.pending_cursor.take()?;
                s.last_cursor_ms = Some(now_ms);
                Some((c, cur))
            })
            .collect();
        for (conn, cursor) in due {
            let payload = serde_json::to_value(&cursor).unwrap_or_default();
            out.extend(self.ephemeral(conn, EventType::CollaborationCursor, payload, now_ms));
        }
        self.log.trim_by_age(now_ms);
        out
    }
}

/// Builds `RECENT_EVENTS` by splicing the already-encoded event frames, so a replay
/// costs a copy, not a re-encode.
fn recent_events(events: &[&Frame], from_seq: u64, to_seq: u64, complete: bool) -> Frame {
    let body: usize = events.iter().map(|f| f.len() + 1).sum();
    let mut s = String::with_capacity(body + 96);
    s.push_str(r#"{"type":"RECENT_EVENTS","payload":{"events":["#);
    for (i, f) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&f.text);
    }
    s.push_str(&format!(
        r#"],"fromSeq":{from_seq},"toSeq":{to_seq},"complete":{complete}}}}}"#
    ));
    Frame::new(s, None)
}

/// A stable colour per user for cursors (FNV-1a over the id into a palette).
fn color_of(user: &str) -> &'static str {
    const PALETTE: [&str; 8] = [
        "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#9a6324",
    ];
    let h = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    PALETTE[(h % PALETTE.len() as u64) as usize]
}

#[cfg(test)]
mod tests;
