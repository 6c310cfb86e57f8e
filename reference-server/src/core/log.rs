//! The per-workspace event log: a monotonically increasing `seq` within an `epoch`,
//! bounded by count and by age, answering resumes with `complete: true` (exactly the
//! missed events) or `complete: false` (continuity lost: refetch snapshots).

use super::Frame;
use std::collections::VecDeque;

#[derive(Debug)]
struct Logged {
    seq: u64,
    at_ms: u64,
    frame: Frame,
}

#[derive(Debug)]
pub struct EventLog {
    epoch: u64,
    head: u64,
    /// Highest seq removed by trimming; a resume from below it has lost continuity.
    trimmed_through: u64,
    events: VecDeque<Logged>,
    events_max: usize,
    age_ms_max: u64,
}

/// The answer to a resume.
#[derive(Debug, PartialEq)]
pub enum Replay<'a> {
    /// Continuity holds: these frames follow `last_seq` without a gap.
    Complete(Vec<&'a Frame>),
    /// Another epoch, trimmed history, or a lastSeq from the future.
    Lost,
}

impl EventLog {
    pub fn new(epoch: u64, events_max: usize, age_ms_max: u64) -> Self {
        EventLog {
            epoch,
            head: 0,
            trimmed_through: 0,
            events: VecDeque::new(),
            events_max: events_max.max(1),
            age_ms_max,
        }
    }

    /// A log restored from a durable file: `head` is the seq its kept history starts
    /// after, and a resume from before it has lost continuity.
    pub fn restored(epoch: u64, head: u64, events_max: usize, age_ms_max: u64) -> Self {
        EventLog {
            head,
            trimmed_through: head,
            ..EventLog::new(epoch, events_max, age_ms_max)
        }
    }

    /// The seq the kept history starts after (the head when none is kept).
    pub fn history_base(&self) -> u64 {
        self.events.front().map_or(self.head, |e| e.seq - 1)
    }

    /// The kept events: seq, when logged, frame.
    pub fn kept(&self) -> impl Iterator<Item = (u64, u64, &Frame)> {
        self.events.iter().map(|e| (e.seq, e.at_ms, &e.frame))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The seq the next appended event will get.
    pub fn next_seq(&self) -> u64 {
        self.head + 1
    }

    /// Appends the frame of event `next_seq()`, trimming by count.
    pub fn append(&mut self, frame: Frame, now_ms: u64) -> u64 {
        self.head += 1;
        debug_assert_eq!(frame.seq, Some(self.head));
        self.events.push_back(Logged {
            seq: self.head,
            at_ms: now_ms,
            frame,
        });
        while self.events.len() > self.events_max {
            self.pop();
        }
        self.head
    }

    /// Trims events older than the age bound.
    pub fn trim_by_age(&mut self, now_ms: u64) {
        while self
            .events
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.at_ms) > self.age_ms_max)
        {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.trimmed_through = e.seq;
        }
    }

    pub fn replay(&self, epoch: u64, last_seq: u64) -> Replay<'_> {
        if epoch != self.epoch || last_seq < self.trimmed_through || last_seq > self.head {
            return Replay::Lost;
        }
        let skip = self.events.partition_point(|e| e.seq <= last_seq);
        Replay::Complete(self.events.range(skip..).map(|e| &e.frame).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: u64, max: usize) -> EventLog {
        let mut log = EventLog::new(7, max, 1000);
        for seq in 1..=n {
            log.append(Frame::new(format!("e{seq}"), Some(seq)), seq * 10);
        }
        log
    }

    fn seqs(r: Replay<'_>) -> Vec<u64> {
        match r {
            Replay::Complete(f) => f.iter().map(|f| f.seq.unwrap()).collect(),
            Replay::Lost => panic!("lost"),
        }
    }

    #[test]
    fn replays_exactly_the_missed_events() {
        let log = log_with(5, 10);
        assert_eq!(seqs(log.replay(7, 2)), vec![3, 4, 5]);
        assert_eq!(seqs(log.replay(7, 5)), Vec::<u64>::new());
        assert_eq!(seqs(log.replay(7, 0)), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn loses_continuity_on_trim_epoch_or_future() {
        let log = log_with(5, 3); // keeps 3..=5, trimmed through 2
        assert_eq!(seqs(log.replay(7, 2)), vec![3, 4, 5]);
        assert_eq!(log.replay(7, 1), Replay::Lost);
        assert_eq!(log.replay(8, 4), Replay::Lost);
        assert_eq!(log.replay(7, 6), Replay::Lost);
    }

    #[test]
    fn trims_by_age() {
        let mut log = log_with(5, 10); // appended at 10..=50 ms
        log.trim_by_age(1030); // older than 1000 ms: seq 1 and 2
        assert_eq!(log.len(), 3);
        assert_eq!(log.replay(7, 1), Replay::Lost);
        assert_eq!(seqs(log.replay(7, 2)), vec![3, 4, 5]);
    }
}
