//! What the session tells the tab, turned into metrics and history for the checkers,
//! and the cross-tab STATE_UPDATE it sends its device's other tabs.

use super::*;
use rtsync_client::outbox::PendingOp;
use rtsync_protocol::Ack;

/// When things began, for the metrics measured from them.
#[derive(Default)]
pub(super) struct Marks {
    /// The stream went: the start of an outage (reconnect time).
    pub(super) lost_at: Option<u64>,
    /// The stream came back: the start of a resync.
    pub(super) reopened_at: Option<u64>,
    /// The outbox began draining after an outage (offline drain time).
    pub(super) drain_from: Option<u64>,
    /// When the tab started, until its first sync (start-up time).
    pub(super) starting_since: Option<u64>,
    /// The seq a resume asked to continue from, to check the replay.
    pub(super) resumed_from: Option<u64>,
}

impl Tab {
    /// One note from the session, turned into metrics and history.
    pub(super) fn note(&mut self, n: Note) {
        let g = self.spec.group.clone();
        let now = self.net.now_ms();
        match n {
            Note::Opened { at_ms, .. } => {
                let mut rec = self.rec.borrow_mut();
                rec.count("connections_opened", &g, 1);
                // No refetch on reconnect: the cached lists are patched from the stream,
                // and a resume either replays what was missed (patched in turn) or
                // answers `complete: false`, whose snapshot resync invalidates the lists
                // it left unlike the replica (`Synced` below).
                if let Some(lost) = self.marks.lost_at.take() {
                    rec.sample("reconnect_ms", &g, at_ms, at_ms - lost);
                    self.marks.reopened_at = Some(at_ms);
                }
            }
            Note::Lost { at_ms, .. } => {
                self.rec.borrow_mut().count("connection_losses", &g, 1);
                self.marks.lost_at.get_or_insert(at_ms);
            }
            Note::Synced { by_snapshot, at_ms } => self.synced(by_snapshot, at_ms, now),
            Note::Applied {
                seq,
                event: _,
                kind,
                id,
                version,
                op_id,
                deleted,
            } => {
                self.applied(seq, kind, &id, version, op_id.as_deref(), deleted, now);
                self.roll(kind, &id, op_id.as_deref(), now);
                self.focus_from_replica(&id, now);
                self.patch_lists(kind, &id, now);
                self.cross_tab(now, op_id.map(Value::String));
            }
            Note::Acked { op, ack, at_ms } => self.acked(&op, &ack, at_ms),
            Note::RolledBack { op, .. } => {
                let mut rec = self.rec.borrow_mut();
                rec.count("ops_rolled_back", &g, 1);
                rec.timeline_add("queued_ops", now, -1);
                if let Some(r) = rec.ops.get_mut(&op.op_id) {
                    r.outcome = Outcome::RolledBack;
                    r.answered_ms = Some(now);
                }
                self.user.resolving.remove(&op.op_id);
            }
            Note::Conflict(c) => self.conflicted(c, now),
            Note::Presence(list) => {
                self.app.presence = list.into_iter().map(|p| p.user_id).collect();
            }
            Note::PresenceDiff(d) => {
                for p in d.joins {
                    self.app.presence.insert(p.user_id);
                }
                for p in d.leaves {
                    self.app.presence.remove(&p.user_id);
                }
            }
            Note::Confirmed { kind, id } => {
                self.roll(kind, &id, None, now);
                self.focus_from_replica(&id, now);
                self.patch_lists(kind, &id, now);
            }
            Note::Error(e) if e.code == rtsync_protocol::ErrorCode::Unavailable => {
                let g = &self.spec.group;
                self.rec.borrow_mut().count("writes_unavailable", g, 1);
            }
            Note::Duplicate { .. } | Note::Ephemeral(_) | Note::Error(_) | Note::GaveUp => {}
            Note::NeedsAuth => {
                // The app asks its auth server for a fresh token: one round trip away.
                self.reauth_at = Some(now + TOKEN_REFRESH_MS);
            }
        }
    }

    /// The replica is in sync: start-up, recovery and resync times end here.
    fn synced(&mut self, by_snapshot: bool, at_ms: u64, now: u64) {
        let g = &self.spec.group;
        let mut rec = self.rec.borrow_mut();
        if let Some(start) = self.marks.starting_since.take() {
            rec.sample("startup_sync_ms", g, at_ms, at_ms - start);
        }
        if by_snapshot {
            rec.count("resyncs_by_snapshot", g, 1);
            if let Some(since) = self.app.recovering_since.take() {
                rec.sample("recovery_ms", g, at_ms, at_ms - since);
            }
        }
        if let Some(open) = self.marks.reopened_at.take() {
            rec.sample("resync_ms", g, at_ms, at_ms - open);
        }
        drop(rec);
        self.focus_synced(now);
        if by_snapshot {
            // The replica was replaced wholesale, not event by event.
            self.invalidate_unlike_replica(now);
            self.rebuild_rollup();
        }
    }

    /// An event reached the replica: a delivery, timed from its op's intended send.
    #[allow(clippy::too_many_arguments)] // the note's fields, named
    fn applied(
        &mut self,
        seq: u64,
        kind: EntityKind,
        id: &str,
        version: u64,
        op_id: Option<&str>,
        deleted: bool,
        now: u64,
    ) {
        let g = &self.spec.group;
        let mut rec = self.rec.borrow_mut();
        rec.count("deliveries", g, 1);
        if crate::check::leaked(&self.spec.workspace, id) {
            rec.anomaly(Anomaly::new(
                "cross_workspace_leaks",
                format!(
                    "tab {} of {} received {id} from another workspace",
                    self.spec.id, self.spec.workspace
                ),
            ));
        }
        if let Some(op) = op_id {
            rec.applied(self.epoch, op, seq);
            if let Some(sent) = rec
                .ops
                .get(op)
                .and_then(|o| o.first_sent_ms.map(|t| t.saturating_sub(o.late_ms)))
            {
                // By the transport the event came over, not the one the tab
                // started on: a WebSocket tab may have fallen back to SSE.
                let metric = match self.wire.link {
                    Some(Link::Sse(_)) => "sse_delivery_ms",
                    _ => "ws_delivery_ms",
                };
                rec.sample(metric, g, now, now.saturating_sub(sent));
            }
        }
        if deleted {
            rec.deletes_seen.insert(
                (self.epoch, self.spec.workspace.clone(), kind, id.to_owned()),
                version,
            );
        }
    }

    /// The server acknowledged one of this tab's ops: its outcome, the ACK time, and
    /// the end of a conflict's resolution if the op resolved one.
    fn acked(&mut self, op: &PendingOp, ack: &Ack, at_ms: u64) {
        let g = &self.spec.group;
        // The answer's own epoch: in SSE mode it is a POST answer, which may come
        // from a server incarnation the stream has not yet reconnected to.
        let epoch = ack.epoch.unwrap_or(self.epoch);
        let deleted = op.kind == EventType::TaskDeleted;
        let mut rec = self.rec.borrow_mut();
        rec.count("ops_acked", g, 1);
        rec.timeline_add("queued_ops", at_ms, -1);
        if let Some(r) = rec.ops.get_mut(&op.op_id) {
            r.outcome = Outcome::Applied {
                epoch,
                seq: ack.seq,
                version: ack.version,
                fields: op.changes.clone(),
                delete: deleted,
            };
            r.base = Some(op.base);
            if let Some(sent) = r.first_sent_ms {
                let v = at_ms.saturating_sub(sent.saturating_sub(r.late_ms));
                r.answered_ms = Some(at_ms);
                rec.sample("ack_ms", g, at_ms, v);
            }
        }
        if let Some(seq) = ack.seq {
            rec.applied(epoch, &op.op_id, seq);
            if deleted {
                let key = (
                    epoch,
                    self.spec.workspace.clone(),
                    EntityKind::Task,
                    op.entity_id.clone(),
                );
                rec.deletes_seen.insert(key, ack.version);
            }
        }
        if let Some(received) = self.user.resolving.remove(&op.op_id) {
            rec.sample(
                "conflict_resolution_ms",
                g,
                at_ms,
                at_ms.saturating_sub(received),
            );
        }
    }

    /// The server answered a conflict: what MERGE applied is recorded, and the user
    /// starts thinking about the rest.
    fn conflicted(&mut self, c: Box<ConflictDetected>, now: u64) {
        let mut rec = self.rec.borrow_mut();
        rec.count("conflicts", &self.spec.group, 1);
        if let Some(seq) = c.seq {
            let epoch = c.epoch.unwrap_or(self.epoch);
            // MERGE applied the fields nobody else had changed: the entity at
            // that version is `current`, which the final state must show if it
            // is still at that version.
            if let Some(r) = rec.ops.get_mut(&c.op_id) {
                r.outcome = Outcome::Applied {
                    epoch,
                    seq: Some(seq),
                    version: c.current.version,
                    fields: c.current.fields.clone(),
                    delete: false,
                };
            }
            rec.applied(epoch, &c.op_id, seq);
        }
        drop(rec);
        let due = now + self.spec.workload.think_time_ms;
        self.user.thinking.push((due, c, now));
    }

    /// Tells the device's other tabs about a change (BroadcastChannel STATE_UPDATE).
    pub(super) fn cross_tab(&mut self, now: u64, op: Option<Value>) {
        let Some(dev) = &self.device else { return };
        if dev.borrow().bus.members().nth(1).is_none() {
            return; // the only tab of its device: nobody to tell
        }
        let msg = CrossTabMessage {
            kind: CrossTabType::StateUpdate,
            payload: json!({"appliedAt": now, "opId": op}),
            source: self.spec.id.clone(),
            timestamp: Timestamp(now),
        };
        self.post_cross_tab(msg, now);
    }

    /// Posts `msg` to the device's other tabs, each delivery delayed by the bus model.
    pub(super) fn post_cross_tab(&mut self, msg: CrossTabMessage, now: u64) {
        let Some(dev) = &self.device else { return };
        let w = &self.spec.workload;
        let (mean, lo, hi) = (w.cross_tab_ms_mean, w.cross_tab_ms_min, w.cross_tab_ms_max);
        let rng = &mut self.user.rng;
        let mut d = dev.borrow_mut();
        let _ = d.bus.post(&self.spec.id, msg, now, |_| {
            cross_tab_delay_ms(rng, mean, lo, hi)
        });
        d.wake.notify_one();
    }
}

/// One draw of the bus's delay model (`WorkloadSpec::cross_tab_ms_mean`): exponential,
/// rounded to the millisecond, clamped into `lo..=hi`. One random draw per delivery.
pub fn cross_tab_delay_ms(rng: &mut Rng, mean_ms: f64, lo: u64, hi: u64) -> u64 {
    // A mean of 0 (validated 0..=60000) is a bus without delay.
    let x: f64 = match Exp::new(1.0 / mean_ms) {
        Ok(exp) if mean_ms > 0.0 => rng.sample(&exp),
        _ => 0.0,
    };
    (x.round() as u64).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cross_tab_delay_model_has_chromiums_percentiles_at_millisecond_resolution() {
        let mut rng = Rng::new(7);
        let mut d: Vec<u64> = (0..100_000)
            .map(|_| cross_tab_delay_ms(&mut rng, 0.58, 0, 5))
            .collect();
        d.sort_unstable();
        let q = |p: f64| d[((d.len() - 1) as f64 * p) as usize];
        // Chromium: p50 0.4 ms, p99 2.1–3.3 ms, max 4.3 ms; whole milliseconds here.
        assert_eq!(q(0.5), 0, "p50");
        assert!((2..=3).contains(&q(0.99)), "p99 {}", q(0.99));
        assert!(*d.last().unwrap() <= 5 && *d.last().unwrap() >= 4, "max");
        assert!(
            (0..1000).all(|_| cross_tab_delay_ms(&mut rng, 0.58, 2, 3) >= 2),
            "clamped into min..=max"
        );
    }
}
