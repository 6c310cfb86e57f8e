//! Structured `tracing` events for what an operator must see — auth failures, refused
//! connections, policy and slow-consumer closes, storage failures — rate-limited per kind, so that an
//! attack cannot flood the log: past `EVENTS_PER_S` (burst `BURST`) events of one kind
//! are counted, and the next event that gets through says how many were suppressed.

use crate::core::ratelimit::TokenBucket;
use std::sync::Mutex;

/// Events of one kind logged per second at most, after a burst.
const EVENTS_PER_S: f64 = 5.0;
const BURST: u32 = 20;

/// What is logged. Each kind has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AuthFailure,
    Refused,
    Close,
    SlowConsumer,
    /// A failed append, sync, compaction or reload of a workspace's log.
    Storage,
}

const KINDS: usize = 5;

#[derive(Debug)]
pub struct Limiter {
    /// Per kind: its budget and the events suppressed since the last one logged.
    budgets: Mutex<[(TokenBucket, u64); KINDS]>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            budgets: Mutex::new(std::array::from_fn(|_| {
                (TokenBucket::new(EVENTS_PER_S, BURST), 0)
            })),
        }
    }
}

impl Limiter {
    /// `Some(suppressed since the last logged one)` if this event may be logged now.
    pub fn admit(&self, kind: Kind, now_ms: u64) -> Option<u64> {
        let mut b = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let (bucket, suppressed) = &mut b[kind as usize];
        if bucket.try_take(now_ms) {
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// Logs a warning of `kind` through the server's limiter.
macro_rules! warn_limited {
    ($server:expr, $kind:expr, $($field:tt)+) => {
        if let Some(suppressed) = $server.log.admit($kind, $server.now_ms()) {
            tracing::warn!(suppressed, $($field)+);
        }
    };
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_next_event_counts_what_was_suppressed() {
        let l = Limiter::default();
        let logged = (0..1000)
            .filter(|_| l.admit(Kind::AuthFailure, 0).is_some())
            .count();
        assert_eq!(logged, BURST as usize);
        // Other kinds have their own budget.
        assert_eq!(l.admit(Kind::Close, 0), Some(0));
        // A second later, five more: the first says how many were dropped.
        assert_eq!(l.admit(Kind::AuthFailure, 1000), Some(1000 - BURST as u64));
        assert_eq!(l.admit(Kind::AuthFailure, 1000), Some(0));
    }
}
