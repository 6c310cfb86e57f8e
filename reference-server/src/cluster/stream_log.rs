//! The owner's side of a workspace's stream, sans-IO: the steps the core made that are
//! not yet in Redis, and how far Redis has them. The edge's group-commit machinery
//! does the rest — every frame produced while a step is unconfirmed carries
//! `durable_at` and leaves only once the flusher has Redis's answer — so an ACK, an
//! event or a replay never shows a write Redis does not hold.

use crate::core::{Record, Workspace};

/// One round trip to Redis, taken under the workspace's lock.
#[derive(Debug)]
pub enum Job {
    /// Append these steps (in order).
    Append(Vec<String>),
    /// Replace the stream by this one step: the whole state (compaction).
    Replace(String),
}

#[derive(Debug)]
pub struct StreamLog {
    /// The lease key's value while it is ours (`token|node`), and the token.
    pub lease: String,
    pub token: u64,
    /// Encoded steps not yet sent.
    pending: Vec<String>,
    /// Steps given so far (this owner's count), and how many Redis confirmed.
    appended_total: u64,
    synced_total: u64,
    /// Steps in the stream since its last snapshot (what a takeover replays).
    stream_steps: u64,
    compact_steps: u64,
    /// When the last renewal that succeeded was sent (server clock): the lease holds
    /// at least until then plus its length.
    pub renewed_at_ms: u64,
}

/// A step as the stream holds it: the same JSON array of records as one entry of the
/// file log (storage/frame.rs), so both replay the same way.
pub fn encode(records: &[Record]) -> String {
    serde_json::to_string(records).unwrap_or_else(|_| "[]".into())
}

impl StreamLog {
    /// `stream_steps`: what the stream held when this owner replayed it.
    pub fn new(
        lease: String,
        token: u64,
        stream_steps: u64,
        compact_steps: u64,
        now_ms: u64,
    ) -> Self {
        StreamLog {
            lease,
            token,
            pending: Vec::new(),
            appended_total: 0,
            synced_total: 0,
            stream_steps,
            compact_steps: compact_steps.max(1),
            renewed_at_ms: now_ms,
        }
    }

    pub fn append(&mut self, records: &[Record]) {
        self.pending.push(encode(records));
        self.appended_total += 1;
    }

    /// What a frame produced now must wait for (0: nothing unconfirmed). Steps already
    /// sent but not yet answered count: a frame may show their effects.
    pub fn unsynced_through(&self) -> u64 {
        if self.appended_total > self.synced_total {
            self.appended_total
        } else {
            0
        }
    }

    pub fn synced_total(&self) -> u64 {
        self.synced_total
    }

    /// The next round trip, and the count it confirms once Redis answers. `core` is the
    /// workspace as it is now (its state includes every pending step): past
    /// `compact_steps` the stream is replaced by its snapshot instead of appended to.
    pub fn take_job(&mut self, core: &Workspace) -> Option<(Job, u64)> {
        if self.pending.is_empty() {
            return None;
        }
        let through = self.appended_total;
        let steps = std::mem::take(&mut self.pending);
        if self.stream_steps + steps.len() as u64 > self.compact_steps {
            self.stream_steps = 1;
            return Some((Job::Replace(encode(&core.snapshot_records())), through));
        }
        self.stream_steps += steps.len() as u64;
        Some((Job::Append(steps), through))
    }

    pub fn mark_synced(&mut self, through: u64) {
        self.synced_total = self.synced_total.max(through);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn core() -> Workspace {
        Workspace::new("w", 7, Arc::new(crate::core::CoreConfig::default()))
    }

    #[test]
    fn frames_wait_until_redis_confirms_what_was_sent() {
        let ws = core();
        let mut log = StreamLog::new("1|n".into(), 1, 0, 100, 0);
        assert_eq!(log.unsynced_through(), 0);
        log.append(&ws.snapshot_records());
        assert_eq!(log.unsynced_through(), 1);
        let (job, through) = log.take_job(&ws).unwrap();
        assert!(matches!(job, Job::Append(ref s) if s.len() == 1));
        // Sent, not answered: still unconfirmed.
        assert_eq!(log.unsynced_through(), 1);
        assert!(log.take_job(&ws).is_none());
        log.mark_synced(through);
        assert_eq!(log.unsynced_through(), 0);
    }

    #[test]
    fn a_long_stream_is_replaced_by_a_snapshot() {
        let ws = core();
        let mut log = StreamLog::new("1|n".into(), 1, 2, 3, 0);
        log.append(&[]);
        assert!(matches!(log.take_job(&ws), Some((Job::Append(_), 1))));
        log.append(&[]);
        let Some((Job::Replace(step), 2)) = log.take_job(&ws) else {
            panic!("expected a snapshot")
        };
        let records: Vec<Record> = serde_json::from_str(&step).unwrap();
        assert!(matches!(records[0], Record::Epoch { epoch: 7, .. }));
    }
}
