//! What the server's frames do to a session: the stream of logged events (applied
//! once, in order; buffered during a resync), acks, conflicts and errors, and asking
//! for a replay when the stream has a hole.

use super::*;

impl Session {
    pub(super) fn dispatch(&mut self, msg: ServerMsg, now_ms: u64) {
        match msg {
            // No position to resume from (first connect, or after a reset): fetch
            // snapshots. With a position, the resume's RECENT_EVENTS says what to do.
            ServerMsg::Connected(c) => {
                self.stream_epoch = Some(c.epoch);
                self.stream_head = c.seq;
                self.outbox.set_server_window(c.inflight_max);
                self.send_presence();
                if self.seq.epoch().is_none() {
                    self.start_resync();
                }
            }
            ServerMsg::RecentEvents(r) => {
                if r.complete {
                    for f in r.events {
                        self.logged(f.seq, f.payload, now_ms);
                    }
                    if !self.is_resyncing() && self.catching_up {
                        self.catching_up = false;
                        self.notes.push_back(Note::Synced {
                            by_snapshot: false,
                            at_ms: now_ms,
                        });
                    }
                } else {
                    self.seq.clear();
                    // A resync already under way collected another stream's events
                    // (perhaps another incarnation's, numbered in another log): start
                    // over with this stream's.
                    if let Stream::Resyncing { buffer } = &mut self.stream {
                        buffer.clear();
                        self.actions.push_back(Action::FetchSnapshot);
                    }
                    self.start_resync();
                }
            }
            ServerMsg::RealtimeEvent {
                seq: Some(seq),
                event,
            } => self.logged(seq, event, now_ms),
            ServerMsg::RealtimeEvent { seq: None, event } => {
                self.notes.push_back(Note::Ephemeral(Box::new(event)))
            }
            ServerMsg::Ack(ack) => self.ack(ack, now_ms),
            ServerMsg::ConflictDetected(c) => self.conflict(c, now_ms),
            ServerMsg::Error(e) => self.error(e, now_ms),
            ServerMsg::PresenceUpdate(p) => self.notes.push_back(Note::Presence(p)),
            ServerMsg::PresenceDiff(d) => self.notes.push_back(Note::PresenceDiff(d)),
            ServerMsg::Heartbeat(_) | ServerMsg::HeartbeatAck(_) => {}
        }
    }

    /// Whether an answer's epoch (absent from servers that do not send it) is the one
    /// our stream position is in.
    fn same_epoch(&self, epoch: Option<u64>) -> bool {
        match (epoch, self.seq.epoch().or(self.stream_epoch)) {
            (Some(theirs), Some(ours)) => theirs == ours,
            _ => true,
        }
    }

    fn start_resync(&mut self) {
        if !self.is_resyncing() {
            self.resyncs += 1;
            self.stream = Stream::Resyncing { buffer: Vec::new() };
            self.actions.push_back(Action::FetchSnapshot);
        }
    }

    /// A seq the stream carries (another session's event, or our own write's seq in
    /// its answer) and what it changes. Applied once, in the live stream; buffered
    /// during a resync. Returns true if it was applied now.
    pub(super) fn advance(&mut self, seq: u64, change: Change, now_ms: u64) -> bool {
        if let Stream::Resyncing { buffer } = &mut self.stream {
            if buffer.len() >= self.buffer_max {
                // Too much arrived while the snapshot was on its way: fetch again.
                buffer.clear();
                self.actions.push_back(Action::FetchSnapshot);
            }
            buffer.push((seq, change));
            return false;
        }
        if let Change::Ack(op, version) = change {
            if self.ack_ahead(&op, version) {
                self.park(seq, op, version, now_ms);
                return false;
            }
            return self.advance_now(seq, Change::Ack(op, version), now_ms);
        }
        self.advance_now(seq, change, now_ms)
    }

    /// Applies a change whose turn it is (unless its seq was seen), then any parked ack
    /// it was the missing version for.
    fn advance_now(&mut self, seq: u64, change: Change, now_ms: u64) -> bool {
        let entity = match &change {
            Change::Event(e, _) | Change::Entity(e) if !self.parked.is_empty() => {
                Some((e.entity, e.id.clone()))
            }
            _ => None,
        };
        match self.seq.observe(seq, now_ms) {
            SeqVerdict::Apply => {
                let note = match &change {
                    Change::Event(e, event) => Some(Note::Applied {
                        seq,
                        event: *event,
                        kind: e.entity,
                        id: e.id.clone(),
                        version: e.version,
                        op_id: e.op_id.clone(),
                        deleted: e.deleted,
                    }),
                    Change::Entity(e) => Some(Note::Confirmed {
                        kind: e.entity,
                        id: e.id.clone(),
                    }),
                    Change::Ack(op, _) => op.kind.entity_kind().map(|kind| Note::Confirmed {
                        kind,
                        id: op.entity_id.clone(),
                    }),
                };
                self.apply(change, now_ms);
                self.conn.set_resume(self.seq.resume_point());
                self.notes.extend(note);
                if let Some((kind, id)) = entity {
                    self.unpark(kind, &id, now_ms);
                }
                true
            }
            SeqVerdict::Duplicate => {
                self.notes.push_back(Note::Duplicate { seq });
                false
            }
        }
    }

    /// An ack more than one version ahead of our copy: versions in between have not
    /// reached us (an SSE POST answer overtaking the stream, or an event lost). Our
    /// change on the stale copy would hide them for good — versions only move forward —
    /// so the ack is parked until they land; if they do not within `gap_timeout_ms`, the
    /// stream is replayed (its seq was left unseen, so the replay brings our own event).
    fn ack_ahead(&self, op: &PendingOp, version: u64) -> bool {
        op.kind
            .entity_kind()
            .is_some_and(|kind| version > self.version_of(kind, &op.entity_id) + 1)
    }

    fn version_of(&self, kind: EntityKind, id: &str) -> u64 {
        self.replica.get(kind, id).map_or(0, |e| e.version)
    }

    fn park(&mut self, seq: u64, op: Box<PendingOp>, version: u64, now_ms: u64) {
        if self.parked.len() >= self.buffer_max {
            // Too many waiting: stop waiting and have everything replayed.
            self.parked.clear();
            self.resume_stream(now_ms);
            return;
        }
        self.parked.push(Parked {
            seq,
            op,
            version,
            since_ms: now_ms,
        });
    }

    /// The entity `(kind, id)` moved: parked acks on it whose turn has come are applied
    /// (one whose version is already here is included in it: its seq is just seen).
    fn unpark(&mut self, kind: EntityKind, id: &str, now_ms: u64) {
        let on_it = |p: &Parked| p.op.entity_id == id && p.op.kind.entity_kind() == Some(kind);
        while let Some(i) = self
            .parked
            .iter()
            .position(|p| on_it(p) && p.version <= self.version_of(kind, id) + 1)
        {
            let p = self.parked.swap_remove(i);
            self.advance_now(p.seq, Change::Ack(p.op, p.version), now_ms);
        }
    }

    /// After a snapshot: every parked ack is checked against the new state.
    pub(super) fn unpark_all(&mut self, now_ms: u64) {
        let entities: Vec<(EntityKind, String)> = self
            .parked
            .iter()
            .filter_map(|p| Some((p.op.kind.entity_kind()?, p.op.entity_id.clone())))
            .collect();
        for (kind, id) in entities {
            self.unpark(kind, &id, now_ms);
        }
    }

    pub(super) fn park_expired(&self, now_ms: u64) -> bool {
        self.parked
            .iter()
            .any(|p| now_ms >= p.since_ms + self.gap_timeout_ms)
    }

    /// A seq with nothing to apply (skipped in the buffer by the watermark check).
    fn advance_seq_only(&mut self, seq: u64, now_ms: u64) -> bool {
        match &mut self.stream {
            Stream::Resyncing { .. } => false,
            Stream::Live => self.seq.observe(seq, now_ms) == SeqVerdict::Apply,
        }
    }

    pub(super) fn apply(&mut self, change: Change, now_ms: u64) {
        match change {
            Change::Event(e, _) | Change::Entity(e) => {
                self.replica.apply_event(e);
            }
            Change::Ack(op, version) => {
                self.replica
                    .apply_ack(&op, version, &self.user_id, Timestamp(now_ms))
            }
        }
    }

    fn logged(&mut self, seq: u64, event: RealtimeEvent, now_ms: u64) {
        // Taken apart, not copied: this runs for every delivery.
        let entity = match event.payload {
            Value::Object(fields) => Entity::from_fields(fields).ok(),
            _ => None,
        };
        let Some(e) = entity else {
            // Not an entity we understand: still a seq we saw.
            self.advance_seq_only(seq, now_ms);
            return;
        };
        self.advance(seq, Change::Event(e, event.kind), now_ms);
    }

    fn ack(&mut self, ack: Ack, now_ms: u64) {
        if let Some((op, _)) = self.outbox.answer(&ack.op_id, false) {
            self.actions.push_back(Action::PersistQueue);
            // Without a seq nothing changed (a delete of a tombstone). A seq of another
            // epoch (a POST answered by a server incarnation the stream has not reached
            // yet) is not a position in our log: the reconnect's resync brings its effect.
            if let Some(seq) = ack.seq
                && self.same_epoch(ack.epoch)
            {
                self.advance(seq, Change::Ack(Box::new(op.clone()), ack.version), now_ms);
            }
            self.notes.push_back(Note::Acked {
                op: Box::new(op),
                ack,
                at_ms: now_ms,
            });
        } else if self.outbox.was_answered(&ack.op_id) {
            // A second answer to an op already answered (sent twice: replayed after an
            // OUT_OF_ORDER while the first send was on its way): nothing new.
        } else if let Some(seq) = ack.seq {
            // An answer to an op we no longer hold (a legacy op rolled back on timeout
            // that did apply): the change is on the server; its event never comes to us.
            self.advance_seq_only(seq, now_ms);
            self.start_resync();
        }
    }

    fn conflict(&mut self, c: Box<ConflictDetected>, now_ms: u64) {
        // With a seq, part of our write was applied (MERGE) and no event will bring it:
        // `current` is that version. Without one, `current` is only information: the
        // events that made it reach us on the stream, in order, and applying it here
        // could resurrect an entity a later snapshot no longer has.
        if let Some(seq) = c.seq
            && self.same_epoch(c.epoch)
        {
            self.advance(seq, Change::Entity(c.current.clone()), now_ms);
        }
        self.note_server_version(c.current.entity, &c.current.id.clone(), c.current.version);
        self.roll_back(&c.op_id, RollbackReason::Conflict);
        self.notes.push_back(Note::Conflict(c));
    }

    fn error(&mut self, e: ErrorPayload, now_ms: u64) {
        let Some(op_id) = e.op_id.clone() else {
            self.notes.push_back(Note::Error(e));
            return;
        };
        match e.code {
            ErrorCode::OutOfOrder => {
                if let Some(n) = e.expected_n {
                    self.outbox.rewind_to(n);
                }
            }
            ErrorCode::RateLimited | ErrorCode::Unavailable => {
                // Nothing was applied: send it again when the server says, not roll back.
                let wait_ms = e.retry_after_ms.unwrap_or(RATE_LIMITED_WAIT_MS);
                self.outbox.retry_later(&op_id, now_ms + wait_ms);
                self.pump(now_ms);
            }
            ErrorCode::StaleOp => {
                // Applied long ago, answer lost: drop it and refetch to learn the result.
                self.outbox.answer(&op_id, false);
                self.start_resync();
                self.pump(now_ms);
            }
            code => self.roll_back(&op_id, RollbackReason::Error(code)),
        }
        self.notes.push_back(Note::Error(e));
    }

    fn roll_back(&mut self, op_id: &str, reason: RollbackReason) {
        if let Some((op, cascaded)) = self.outbox.answer(op_id, true) {
            self.actions.push_back(Action::PersistQueue);
            let root = op.op_id.clone();
            self.notes.push_back(Note::RolledBack {
                op: Box::new(op),
                reason,
            });
            for o in cascaded {
                self.notes.push_back(Note::RolledBack {
                    op: Box::new(o),
                    reason: RollbackReason::Dependency(root.clone()),
                });
            }
        }
    }

    /// The stream has a hole: WebSocket asks for a replay; SSE reconnects with Last-Event-ID.
    pub(super) fn resume_stream(&mut self, now_ms: u64) {
        match (self.conn.transport(), self.seq.resume_point()) {
            (Transport::WebSocket, Some(r)) => {
                self.actions.push_back(Action::Send(ClientMsg::Resume(r)))
            }
            _ => self.conn.suspect(now_ms),
        }
    }
}
