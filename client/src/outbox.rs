//! The offline queue. Every mutation gets an opId and waits here — persisted with the
//! client's state — until the server answers it; it is (re)sent in order after every
//! reconnect. Bounded, and a full queue refuses with an error the app sees: nothing
//! is dropped silently. The seed's queue (drop the oldest of 100, no ids, no retry)
//! exists only as [`OutboxPolicy::Legacy`], so a scenario can show what it loses.

use rtsync_protocol::{ClientEvent, ClientMsg, EventType, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;

/// How the queue numbers, bounds and retries ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxPolicy {
    /// opIds `clientId:n`, n contiguous from 1, assigned at enqueue; at most `capacity`
    /// ops, past which `enqueue` fails; every op is resent until answered.
    Sequenced {
        /// The most ops queued at once (default 1 000).
        capacity: usize,
    },
    /// The seed's WebSocketManager queue: a fresh id per op (no ordering, no
    /// deduplication), at most 100 ops with the oldest dropped silently, an op sent on a
    /// connection that dies is never retried, and an op unanswered for the ack timeout
    /// is rolled back.
    Legacy,
}

impl std::str::FromStr for OutboxPolicy {
    type Err = String;
    /// `sequenced` (1 000 ops; [`OutboxPolicy::with_capacity`] changes it) or `legacy`:
    /// how a scenario names one.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sequenced" => Ok(OutboxConfig::default().policy),
            "legacy" => Ok(OutboxPolicy::Legacy),
            _ => Err(format!(
                "unknown outbox policy {s:?}: expected sequenced or legacy"
            )),
        }
    }
}

impl OutboxPolicy {
    /// This policy with `capacity` ops at most, where it has a bound to set (the
    /// legacy queue's is the seed's, fixed).
    pub fn with_capacity(self, capacity: usize) -> Self {
        match self {
            OutboxPolicy::Sequenced { .. } => OutboxPolicy::Sequenced { capacity },
            OutboxPolicy::Legacy => OutboxPolicy::Legacy,
        }
    }
}

/// The seed's queue length.
pub const LEGACY_CAPACITY: usize = 100;

/// The queue's settings; the defaults are in `Default`.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Sequenced (default, 1 000 ops) or the seed's legacy queue.
    pub policy: OutboxPolicy,
    /// Ops sent and not yet answered, at most (default 64; the server's
    /// `inflightMax` may lower it).
    pub inflight_max: usize,
    /// Seed: 10 s. Sequenced: an op unanswered this long on an open connection makes
    /// the connection suspect (reconnect and replay). Legacy: the op is rolled back.
    pub ack_timeout_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            policy: OutboxPolicy::Sequenced { capacity: 1000 },
            inflight_max: 64,
            ack_timeout_ms: 10_000,
        }
    }
}

/// One queued mutation. Serialisable: the session has it persisted before it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingOp {
    /// `clientId:n` (sequenced) or `clientId-n:1` (legacy: each op its own client).
    pub op_id: String,
    /// The mutation type.
    pub kind: EventType,
    /// The entity it changes.
    pub entity_id: String,
    /// The version the change was made on (0 = create).
    pub base: u64,
    /// Field name → new value (empty for a delete).
    pub changes: Map<String, Value>,
    /// A conflict strategy other than the server's default, if asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// opIds that must be answered before this one is sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// When the app queued it.
    pub enqueued_at_ms: u64,
    /// When it was last sent on the current connection; `None`: waiting to be sent.
    /// Not persisted: after a reload nothing counts as sent.
    #[serde(skip)]
    pub sent_at_ms: Option<u64>,
}

impl PendingOp {
    /// The `REALTIME_EVENT` frame that carries this op (`version` = `base`).
    pub fn message(&self) -> ClientMsg {
        let mut payload =
            json!({"opId": self.op_id, "id": self.entity_id, "changes": self.changes});
        if let Some(s) = self.strategy {
            payload["strategy"] = json!(s);
        }
        ClientMsg::RealtimeEvent(ClientEvent {
            id: None,
            kind: self.kind,
            payload,
            user_id: None,
            session_id: None,
            timestamp: None,
            version: self.base,
        })
    }
}

/// Why `enqueue` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The sequenced queue holds `capacity` ops: the app must tell the user.
    #[error("offline queue is full ({capacity} ops); the change was not queued")]
    Full {
        /// The queue's bound.
        capacity: usize,
    },
    /// The event type changes no entity (presence, cursor, notification).
    #[error("{0} is not a mutation type")]
    NotAMutation(&'static str),
}

/// Counters for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Ops queued.
    pub enqueued: u64,
    /// Ops the server answered (ACK, conflict or error).
    pub answered: u64,
    /// `enqueue` calls refused because the queue was full.
    pub refused_full: u64,
    /// Legacy only: ops dropped without telling anyone.
    pub dropped_silently: u64,
    /// Ops failed because an op they depend on failed.
    pub cascaded: u64,
    /// Sends, first or repeated.
    pub sent: u64,
    /// Ops marked to be sent again (reconnect, `OUT_OF_ORDER`, `RATE_LIMITED`).
    pub resent: u64,
    /// Ack timeouts: sequenced, checks that found an op overdue; legacy, ops rolled back.
    pub timed_out: u64,
}

/// One tab's queue of mutations not yet answered, oldest first.
#[derive(Debug)]
pub struct Outbox {
    client_id: String,
    cfg: OutboxConfig,
    next_n: u64,
    ops: VecDeque<PendingOp>,
    /// The opIds of the last ops dropped silently (legacy), for the checker's report.
    pub dropped_ids: VecDeque<String>,
    /// The opIds of the last ops the server answered, so a second answer to one (it
    /// was sent twice: replayed after an `OUT_OF_ORDER` while its first send was still
    /// on its way, as concurrent POSTs arrive) is known for a duplicate.
    answered_ids: VecDeque<String>,
    /// Counters for reports.
    pub stats: OutboxStats,
    /// The server's window: `INITIAL_WINDOW` until its `CONNECTED` says (`inflightMax`;
    /// unlimited when it does not advertise one).
    server_window: usize,
    /// The `n` an `OUT_OF_ORDER` made us replay from on this connection (one replay
    /// per gap, however many answers report it).
    replaying_from: Option<u64>,
    /// The server said `RATE_LIMITED`: nothing is sent before this time.
    hold_until_ms: Option<u64>,
    /// After a `RATE_LIMITED`, ops in flight at most: 1, and one more per answer until
    /// the usual window (additive increase). Resending the whole window at once after
    /// the hold would be refused again, and a burst of refusals is a 1008 close.
    rate_window: Option<usize>,
}

const DROPPED_IDS_KEPT: usize = 64;
/// Answered opIds remembered: more than a window of ops in flight (64).
const ANSWERED_IDS_KEPT: usize = 256;

/// Ops sent before the server's `CONNECTED` has said how many it takes in flight: a
/// reconnect with a long queue must not send more answers' worth than a small server
/// queue holds (it would be closed as a slow consumer on every reconnect).
pub const INITIAL_WINDOW: usize = 8;

impl Outbox {
    /// An empty queue whose opIds start with `client_id` and count from 1.
    pub fn new(client_id: impl Into<String>, cfg: OutboxConfig) -> Self {
        Outbox {
            client_id: client_id.into(),
            cfg,
            next_n: 1,
            ops: VecDeque::new(),
            dropped_ids: VecDeque::new(),
            answered_ids: VecDeque::new(),
            stats: OutboxStats::default(),
            server_window: INITIAL_WINDOW,
            replaying_from: None,
            hold_until_ms: None,
            rate_window: None,
        }
    }

    /// The prefix of this queue's opIds.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// Ops queued and not yet answered.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Nothing waits for an answer.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// The queued ops, oldest first (the order the view replays them in).
    pub fn ops(&self) -> impl Iterator<Item = &PendingOp> {
        self.ops.iter()
    }
    /// The queued op `op_id`, if it is still waiting.
    pub fn get(&self, op_id: &str) -> Option<&PendingOp> {
        self.ops.iter().find(|o| o.op_id == op_id)
    }
    /// The n the next op will get (persisted, so a reload never reuses one).
    pub fn next_n(&self) -> u64 {
        self.next_n
    }
    /// Ops sent on the current connection and not yet answered.
    pub fn inflight(&self) -> usize {
        self.ops.iter().filter(|o| o.sent_at_ms.is_some()).count()
    }
    /// The configured policy.
    pub fn policy(&self) -> OutboxPolicy {
        self.cfg.policy
    }

    /// Queues a mutation. Returns the op (to persist, and for the optimistic view).
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &mut self,
        kind: EventType,
        entity_id: &str,
        base: u64,
        changes: Map<String, Value>,
        strategy: Option<Strategy>,
        dependencies: Vec<String>,
        now_ms: u64,
    ) -> Result<&PendingOp, OutboxError> {
        if !kind.is_mutation() {
            return Err(OutboxError::NotAMutation(kind.as_str()));
        }
        let op_id = match self.cfg.policy {
            OutboxPolicy::Sequenced { capacity } => {
                if self.ops.len() >= capacity {
                    self.stats.refused_full += 1;
                    return Err(OutboxError::Full { capacity });
                }
                format!("{}:{}", self.client_id, self.next_n)
            }
            OutboxPolicy::Legacy => {
                if self.ops.len() >= LEGACY_CAPACITY
                    && let Some(dropped) = self.ops.pop_front()
                {
                    self.stats.dropped_silently += 1;
                    self.dropped_ids.push_back(dropped.op_id);
                    if self.dropped_ids.len() > DROPPED_IDS_KEPT {
                        self.dropped_ids.pop_front();
                    }
                }
                // Each op its own client with n = 1: the server neither orders nor
                // deduplicates them, as with the seed's random UUIDs.
                format!("{}-{}:1", self.client_id, self.next_n)
            }
        };
        self.next_n += 1;
        self.stats.enqueued += 1;
        self.ops.push_back(PendingOp {
            op_id,
            kind,
            entity_id: entity_id.to_owned(),
            base,
            changes,
            strategy,
            dependencies,
            enqueued_at_ms: now_ms,
            sent_at_ms: None,
        });
        Ok(self
            .ops
            .back()
            .unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// Adopts the server's window (`CONNECTED.inflightMax`): at most the smaller of it
    /// and our own ops are sent unanswered.
    pub fn set_server_window(&mut self, inflight_max: Option<u64>) {
        self.server_window =
            inflight_max.map_or(usize::MAX, |n| n.clamp(1, usize::MAX as u64) as usize);
    }

    /// The next op to send on an open connection, in order; `None` when the window is
    /// full, the queue is drained, the next op waits for a dependency, or a
    /// `RATE_LIMITED` hold has not ended at `now_ms`.
    pub fn poll_send(&mut self, now_ms: u64) -> Option<ClientMsg> {
        if self.hold_until_ms.is_some_and(|t| now_ms < t) {
            return None;
        }
        self.hold_until_ms = None;
        let window = self
            .cfg
            .inflight_max
            .min(self.server_window)
            .min(self.rate_window.unwrap_or(usize::MAX))
            .max(1);
        if self.inflight() >= window {
            return None;
        }
        let idx = self.ops.iter().position(|o| o.sent_at_ms.is_none())?;
        let waiting = self.ops[idx]
            .dependencies
            .iter()
            .any(|d| self.ops.iter().take(idx).any(|o| &o.op_id == d));
        if waiting {
            return None;
        }
        let op = &mut self.ops[idx];
        op.sent_at_ms = Some(now_ms);
        self.stats.sent += 1;
        Some(op.message())
    }

    /// The server answered `op_id` (ACK, CONFLICT_DETECTED or ERROR). Returns the op,
    /// and — when `failed` — every queued op that depended on it, which fail too.
    pub fn answer(&mut self, op_id: &str, failed: bool) -> Option<(PendingOp, Vec<PendingOp>)> {
        let idx = self.ops.iter().position(|o| o.op_id == op_id)?;
        let op = self.ops.remove(idx)?;
        self.stats.answered += 1;
        if self.answered_ids.len() == ANSWERED_IDS_KEPT {
            self.answered_ids.pop_front();
        }
        self.answered_ids.push_back(op.op_id.clone());
        self.rate_window = self
            .rate_window
            .map(|w| w + 1)
            .filter(|&w| w < self.cfg.inflight_max);
        let mut cascaded = Vec::new();
        if failed {
            let mut dead = vec![op.op_id.clone()];
            while let Some(d) = dead.pop() {
                while let Some(i) = self.ops.iter().position(|o| o.dependencies.contains(&d)) {
                    if let Some(o) = self.ops.remove(i) {
                        dead.push(o.op_id.clone());
                        cascaded.push(o);
                    }
                }
            }
            self.stats.cascaded += cascaded.len() as u64;
        }
        Some((op, cascaded))
    }

    /// Whether the server already answered `op_id` (a later answer is a duplicate).
    /// Ops rolled back without an answer (a dependency failed; legacy timeouts) are
    /// not: an answer to one of those says it applied after all.
    pub fn was_answered(&self, op_id: &str) -> bool {
        self.answered_ids.iter().any(|a| a == op_id)
    }

    /// `OUT_OF_ORDER`: the server expects n; resend from there, once per gap. Every op
    /// sent after the missing one is answered `OUT_OF_ORDER` with the same n; replaying
    /// on each answer resent the whole window once per answer (k answers: k × window
    /// sends at once), which the server's rate limit turns into new gaps. A replay that
    /// is lost too is recovered by the ack timeout (reconnect: `on_disconnect`).
    pub fn rewind_to(&mut self, expected_n: u64) {
        if self.replaying_from == Some(expected_n) {
            return;
        }
        self.replaying_from = Some(expected_n);
        let client = self.client_id.clone();
        for op in &mut self.ops {
            let n = op
                .op_id
                .strip_prefix(&client)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|n| n.parse::<u64>().ok());
            if n.is_some_and(|n| n >= expected_n) && op.sent_at_ms.take().is_some() {
                self.stats.resent += 1;
            }
        }
    }

    /// The server refused `op_id` with `RATE_LIMITED` (nothing applied): it and every op
    /// sent after it go again, in order, once `until_ms` has come. Ops sent after it may
    /// have been refused too, or answered `OUT_OF_ORDER`; one that did apply gets its
    /// answer again from the server's op table.
    pub fn retry_later(&mut self, op_id: &str, until_ms: u64) {
        let Some(from) = self.ops.iter().position(|o| o.op_id == op_id) else {
            return;
        };
        for op in self.ops.iter_mut().skip(from) {
            if op.sent_at_ms.take().is_some() {
                self.stats.resent += 1;
            }
        }
        self.replaying_from = None;
        self.hold_until_ms = Some(self.hold_until_ms.map_or(until_ms, |t| t.max(until_ms)));
        self.rate_window = Some(1);
    }

    /// The connection is gone. Sequenced: everything unanswered is sent again after
    /// the reconnect. Legacy: sent ops are not retried (the seed forgets them).
    pub fn on_disconnect(&mut self) {
        self.replaying_from = None;
        if let OutboxPolicy::Sequenced { .. } = self.cfg.policy {
            for op in &mut self.ops {
                if op.sent_at_ms.take().is_some() {
                    self.stats.resent += 1;
                }
            }
        }
    }

    /// Sequenced: true when an in-flight op is overdue at `now_ms` (the session then
    /// suspects the connection; the reconnect resends the op). Legacy: overdue ops are
    /// removed and returned for rollback.
    pub fn handle_timeout(&mut self, now_ms: u64) -> (bool, Vec<PendingOp>) {
        let overdue = |o: &PendingOp| {
            o.sent_at_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.cfg.ack_timeout_ms)
        };
        match self.cfg.policy {
            OutboxPolicy::Sequenced { .. } => {
                let any = self.ops.iter().any(overdue);
                if any {
                    self.stats.timed_out += 1;
                }
                (any, Vec::new())
            }
            OutboxPolicy::Legacy => {
                let (late, keep): (Vec<_>, Vec<_>) = self.ops.drain(..).partition(overdue);
                self.ops = keep.into();
                self.stats.timed_out += late.len() as u64;
                (false, late)
            }
        }
    }

    /// When (ms) something is due: the oldest in-flight op's ack deadline (call
    /// `handle_timeout`), or the end of a `RATE_LIMITED` hold with ops waiting (call
    /// `poll_send`). `None`: nothing to wait for.
    pub fn poll_timeout(&self) -> Option<u64> {
        let ack = self
            .ops
            .iter()
            .filter_map(|o| o.sent_at_ms)
            .min()
            .map(|t| t + self.cfg.ack_timeout_ms);
        // A hold ends with ops to send: the shell must come back then.
        let hold = self
            .hold_until_ms
            .filter(|_| self.ops.iter().any(|o| o.sent_at_ms.is_none()));
        [ack, hold].into_iter().flatten().min()
    }

    /// Restores a persisted queue (after a reload); nothing counts as sent.
    pub fn restore(&mut self, ops: Vec<PendingOp>, next_n: u64) {
        self.ops = ops
            .into_iter()
            .map(|mut o| {
                o.sent_at_ms = None;
                o
            })
            .collect();
        self.next_n = next_n.max(1);
    }
}

#[cfg(test)]
mod tests;
