//! Tracks which logged events (by seq) a client has applied, so it can resume from
//! the right place, skip duplicates and notice gaps.
//!
//! The watermark is the highest seq below which nothing is missing. Events can arrive
//! above it out of order — an SSE client's own write is acknowledged over HTTP, which
//! races the stream — so seqs above the watermark are remembered (bounded) until the
//! hole fills. A hole that stays open past `gap_timeout_ms` means a real gap: resync.

use rtsync_protocol::Resume;
use std::collections::BTreeSet;

/// What to do with an arriving seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// New: apply it.
    Apply,
    /// Seen before (a replay overlapping the live stream): skip it.
    Duplicate,
}

/// Counters for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqStats {
    /// Seqs seen again (replays overlapping the stream) and skipped.
    pub duplicates: u64,
    /// Times a hole stayed open too long (or too many seqs waited above it).
    pub gaps: u64,
}

/// The stream position of one tab: epoch, watermark and the seqs seen above it.
#[derive(Debug)]
pub struct SeqTracker {
    epoch: Option<u64>,
    watermark: u64,
    above: BTreeSet<u64>,
    above_max: usize,
    hole_since_ms: Option<u64>,
    gap_timeout_ms: u64,
    /// Duplicates and gaps so far.
    pub stats: SeqStats,
}

impl SeqTracker {
    /// No position yet. Remembers at most `above_max` seqs above the watermark; a
    /// hole open `gap_timeout_ms` asks for a resync.
    pub fn new(above_max: usize, gap_timeout_ms: u64) -> Self {
        SeqTracker {
            epoch: None,
            watermark: 0,
            above: BTreeSet::new(),
            above_max: above_max.max(1),
            hole_since_ms: None,
            gap_timeout_ms,
            stats: SeqStats::default(),
        }
    }

    /// The log incarnation the position counts in; `None` before the first position.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The highest seq with nothing missing at or below it.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Where to resume from, once a snapshot or a first event set the position.
    pub fn resume_point(&self) -> Option<Resume> {
        self.epoch.map(|epoch| Resume {
            epoch,
            last_seq: self.watermark,
        })
    }

    /// Starts over at a snapshot's watermark (or a new epoch).
    pub fn reset(&mut self, epoch: u64, seq: u64) {
        self.epoch = Some(epoch);
        self.watermark = seq;
        self.above.retain(|s| *s > seq);
        self.advance();
    }

    /// Forgets the position entirely (corrupted state, or continuity lost).
    pub fn clear(&mut self) {
        self.epoch = None;
        self.watermark = 0;
        self.above.clear();
        self.hole_since_ms = None;
    }

    /// Marks `seq` seen and says whether to apply it; a seq above a hole starts the
    /// hole's timer at `now_ms`.
    pub fn observe(&mut self, seq: u64, now_ms: u64) -> SeqVerdict {
        if seq <= self.watermark || self.above.contains(&seq) {
            self.stats.duplicates += 1;
            return SeqVerdict::Duplicate;
        }
        if seq == self.watermark + 1 {
            self.watermark = seq;
            self.advance();
        } else {
            self.above.insert(seq);
            self.hole_since_ms.get_or_insert(now_ms);
        }
        SeqVerdict::Apply
    }

    fn advance(&mut self) {
        while self.above.first() == Some(&(self.watermark + 1)) {
            self.above.pop_first();
            self.watermark += 1;
        }
        if self.above.is_empty() {
            self.hole_since_ms = None;
        }
    }

    /// A hole stayed open too long, or too many seqs wait above it: the stream lost
    /// something and the client must resume from the watermark.
    pub fn needs_resync(&mut self, now_ms: u64) -> bool {
        let stuck = self
            .hole_since_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.gap_timeout_ms)
            || self.above.len() > self.above_max;
        if stuck {
            self.stats.gaps += 1;
            self.hole_since_ms = Some(now_ms);
        }
        stuck
    }

    /// When (ms) an open hole times out: call `needs_resync` then. `None`: no hole.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.hole_since_ms.map(|t| t + self.gap_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_skips_duplicates_and_fills_holes() {
        let mut t = SeqTracker::new(100, 1000);
        t.reset(7, 10);
        assert_eq!(t.observe(11, 0), SeqVerdict::Apply);
        assert_eq!(t.observe(13, 0), SeqVerdict::Apply); // 12 is our own write, acked over HTTP
        assert_eq!(t.watermark(), 11);
        assert_eq!(t.observe(12, 5), SeqVerdict::Apply);
        assert_eq!(t.watermark(), 13);
        assert_eq!(t.observe(12, 6), SeqVerdict::Duplicate);
        assert_eq!(t.observe(9, 6), SeqVerdict::Duplicate);
        assert_eq!(
            t.resume_point(),
            Some(Resume {
                epoch: 7,
                last_seq: 13
            })
        );
        assert!(!t.needs_resync(10_000));
    }

    #[test]
    fn a_hole_that_stays_open_asks_for_a_resync() {
        let mut t = SeqTracker::new(100, 1000);
        t.reset(1, 0);
        t.observe(2, 100);
        assert_eq!(t.poll_timeout(), Some(1100));
        assert!(!t.needs_resync(1099));
        assert!(t.needs_resync(1100));
        assert_eq!(t.stats.gaps, 1);
        // The replay fills it.
        t.observe(1, 1200);
        assert_eq!(t.watermark(), 2);
        assert_eq!(t.poll_timeout(), None);
    }
}
