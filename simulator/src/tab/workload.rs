//! The tab's workload: Poisson-timed mutations on Zipf-chosen entities, and conflicts
//! resolved the way a user would (after a think time, keeping theirs or mine).

use super::*;

/// The simulated user: when it acts next, what it is thinking about, its randomness.
pub(super) struct User {
    pub(super) rng: Rng,
    /// The Zipf distribution its entity keys are drawn from (ranks 1..=keys).
    pub(super) zipf: Zipf<f64>,
    /// Conflicts waiting for the user's think time: (due, conflict, received_at).
    pub(super) thinking: Vec<(u64, Box<ConflictDetected>, u64)>,
    /// Resolving op → when its conflict arrived.
    pub(super) resolving: std::collections::BTreeMap<String, u64>,
    pub(super) next_op_ms: Option<u64>,
    pub(super) next_cursor_ms: Option<u64>,
    pub(super) next_query_ms: Option<u64>,
    /// How far down the task list the user has scrolled.
    pub(super) scroll_px: u64,
}

impl Tab {
    pub(super) fn draw_next(&mut self, now: u64, rate_per_s: f64) -> Option<u64> {
        if rate_per_s <= 0.0 {
            return None;
        }
        // Exponential inter-arrival (Poisson process), in seconds.
        let exp = Exp::new(rate_per_s).expect("a positive rate");
        let gap_s: f64 = self.user.rng.sample(&exp);
        Some(now + (gap_s * 1000.0).round().max(1.0) as u64)
    }

    pub(super) fn key(&mut self) -> String {
        // Ranks 1..=keys; key 0 is the most popular.
        let rank: f64 = self.user.rng.sample(&self.user.zipf);
        let k = rank as u64 - 1;
        format!("{}-t{k}", self.spec.workspace)
    }

    pub(super) fn workload_op(&mut self, now: u64, late_ms: u64) {
        let notes = self.spec.workload.notes;
        if notes > 0 && self.user.rng.chance(self.spec.workload.note_p) {
            return self.note_edit(notes, now, late_ms);
        }
        let w = &self.spec.workload;
        let total = w.create + w.update + w.status + w.delete;
        let (create, update, status) = (w.create, w.update, w.status);
        let id = self.key();
        let exists = self.s.view(EntityKind::Task, &id).is_some();
        let pick = self.user.rng.unit() * total;
        let n = self.user.rng.below(1_000_000);
        let (kind, mut changes) = if !exists || pick < create {
            if exists {
                (
                    EventType::TaskUpdated,
                    json!({"title": format!("title {n}")}),
                )
            } else {
                (
                    EventType::TaskCreated,
                    json!({"title": format!("task {n}"), "status": "todo", "priority": n % 5, "projectId": format!("p{}", n % self.spec.workload.projects.max(1))}),
                )
            }
        } else if pick < create + update {
            (
                EventType::TaskUpdated,
                json!({"title": format!("title {n}"), "priority": n % 5}),
            )
        } else if pick < create + update + status {
            let status = ["todo", "doing", "done"][(n % 3) as usize];
            let mut changes = json!({ "status": status });
            if self.spec.workload.rolls_up() {
                // The dashboard's completions per minute count done tasks by this.
                changes["completedAt"] = if status == "done" {
                    json!(now)
                } else {
                    Value::Null
                };
            }
            (EventType::TaskStatusChanged, changes)
        } else {
            (EventType::TaskDeleted, json!({}))
        };
        let bytes = self.spec.workload.payload_bytes;
        if bytes > 0 && matches!(kind, EventType::TaskCreated | EventType::TaskUpdated) {
            changes["description"] = Value::String(filler(n, bytes));
        }
        let queued = self.enqueue(
            kind,
            &id,
            changes.as_object().cloned().unwrap_or_default(),
            now,
            late_ms,
        );
        if queued.is_some() && kind == EventType::TaskStatusChanged {
            self.broadcast_progress(&id, now);
        }
    }

    /// One user typing into a shared note: one or two of its fields, rewritten.
    fn note_edit(&mut self, notes: u64, now: u64, late_ms: u64) {
        let rng = &mut self.user.rng;
        let id = format!("{}-n{}", self.spec.workspace, rng.below(notes));
        let first = rng.below(3) as usize;
        let second = rng
            .chance(0.3)
            .then(|| (first + 1 + rng.below(2) as usize) % 3);
        let n = rng.below(1_000_000);
        let mut changes = Map::new();
        for f in std::iter::once(first).chain(second) {
            let field = NOTE_FIELDS[f];
            changes.insert(field.to_owned(), Value::String(format!("{field} {n}")));
        }
        self.rec
            .borrow_mut()
            .count("note_edits", &self.spec.group, 1);
        self.enqueue(EventType::NoteUpdated, &id, changes, now, late_ms);
    }

    pub(super) fn enqueue(
        &mut self,
        kind: EventType,
        id: &str,
        changes: Map<String, Value>,
        now: u64,
        late_ms: u64,
    ) -> Option<String> {
        let entity = kind.entity_kind()?;
        let dropped_before = self.s.outbox().stats.dropped_silently;
        // optimistic_apply_us is CPU time: measured with the wall clock, reported in the
        // measured section only (never in the deterministic one).
        let wall = std::time::Instant::now(); // measured section only (CPU cost)
        let result = self.s.mutate(kind, id, changes, None, vec![], now);
        let _ = self.s.view(entity, id);
        let apply_us = wall.elapsed().as_micros() as u64;
        self.rec.borrow_mut().measured_apply_us.push(apply_us);
        match result {
            Ok(op_id) => {
                let dropped = self.s.outbox().stats.dropped_silently - dropped_before;
                self.rec
                    .borrow_mut()
                    .timeline_add("queued_ops", now, 1 - dropped as i64);
                let n = op_id
                    .rsplit_once(':')
                    .and_then(|(_, n)| n.parse().ok())
                    .unwrap_or(0);
                let mut rec = self.rec.borrow_mut();
                rec.count("ops_enqueued", &self.spec.group, 1);
                rec.ops.insert(
                    op_id.clone(),
                    OpRecord {
                        client: self.spec.id.clone(),
                        n,
                        workspace: self.spec.workspace.clone(),
                        kind: entity,
                        entity_id: id.to_owned(),
                        enqueued_ms: now,
                        first_sent_ms: None,
                        late_ms,
                        outcome: Outcome::Pending,
                        answered_ms: None,
                        base: None,
                    },
                );
                Some(op_id)
            }
            Err(_) => {
                // Refused loudly (queue full): the app knows; nothing is lost silently.
                self.rec
                    .borrow_mut()
                    .count("ops_refused_full", &self.spec.group, 1);
                None
            }
        }
    }

    pub(super) fn resolve_conflict(&mut self, c: &ConflictDetected, received: u64, now: u64) {
        // After the workload stops, users stop writing: they accept the server's value, so
        // two users keeping their own values cannot edit-war through the liveness phase.
        let keep =
            self.user.rng.chance(self.spec.workload.keep_local_p) && self.user.next_op_ms.is_some();
        let choice = if keep {
            ConflictChoice::KeepLocal
        } else {
            ConflictChoice::TakeRemote
        };
        match resolve(c, choice) {
            Some(r) => {
                let kind = match r.kind {
                    EntityKind::Task => EventType::TaskUpdated,
                    EntityKind::Project => EventType::ProjectUpdated,
                    EntityKind::Note => EventType::NoteUpdated,
                };
                if let Some(op) = self.enqueue(kind, &r.entity_id, r.changes, now, 0) {
                    self.user.resolving.insert(op, received);
                }
            }
            None => self.rec.borrow_mut().sample(
                "conflict_resolution_ms",
                &self.spec.group,
                now,
                now.saturating_sub(received),
            ),
        }
    }
}

/// The fields a note edit rewrites.
const NOTE_FIELDS: [&str; 3] = ["title", "body", "tags"];

/// `bytes` bytes of text that differ with `n` (so an update really changes the field).
fn filler(n: u64, bytes: usize) -> String {
    let unit = format!("{n:06} lorem ipsum ");
    unit.chars().cycle().take(bytes).collect()
}
