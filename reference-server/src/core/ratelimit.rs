//! A token bucket, fed the current time by its caller (no clock inside).

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last_ms: Option<u64>,
}

impl TokenBucket {
    pub fn new(rate_per_s: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate_per_s,
            burst,
            tokens: burst,
            last_ms: None,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        let elapsed_ms = self.last_ms.map_or(0, |l| now_ms.saturating_sub(l));
        self.last_ms = Some(now_ms);
        self.tokens = (self.tokens + elapsed_ms as f64 * self.rate_per_s / 1000.0).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Milliseconds until a token will be there (for `Retry-After`).
    pub fn wait_ms(&self) -> u64 {
        if self.tokens >= 1.0 || self.rate_per_s <= 0.0 {
            return 0;
        }
        ((1.0 - self.tokens) * 1000.0 / self.rate_per_s).ceil() as u64
    }

    /// Refilled to its burst by `now_ms`: as good as a new bucket.
    fn is_full(&self, now_ms: u64) -> bool {
        let elapsed_ms = self.last_ms.map_or(u64::MAX, |l| now_ms.saturating_sub(l));
        self.tokens + elapsed_ms as f64 * self.rate_per_s / 1000.0 >= self.burst
    }
}

/// A token bucket per user, for writes that arrive without a connection to count them
/// on (`POST /api/events`). At most `users_max` buckets: a new user past it first
/// forgets the buckets that have refilled (nothing is lost: a full bucket is a new
/// one), else the first user in id order.
#[derive(Debug, Clone)]
pub struct PerUser {
    buckets: std::collections::BTreeMap<String, TokenBucket>,
    rate_per_s: f64,
    burst: u32,
    users_max: usize,
}

impl PerUser {
    pub fn new(rate_per_s: f64, burst: u32, users_max: usize) -> Self {
        PerUser {
            buckets: Default::default(),
            rate_per_s,
            burst,
            users_max: users_max.max(1),
        }
    }

    /// Takes one of `user`'s tokens, or says how many ms until there is one.
    pub fn take(&mut self, user: &str, now_ms: u64) -> Result<(), u64> {
        if !self.buckets.contains_key(user) && self.buckets.len() >= self.users_max {
            self.buckets.retain(|_, b| !b.is_full(now_ms));
            if self.buckets.len() >= self.users_max {
                self.buckets.pop_first();
            }
        }
        let (rate, burst) = (self.rate_per_s, self.burst);
        let b = self
            .buckets
            .entry(user.to_owned())
            .or_insert_with(|| TokenBucket::new(rate, burst));
        if b.try_take(now_ms) {
            Ok(())
        } else {
            Err(b.wait_ms().max(1))
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_a_budget_and_the_map_stays_bounded() {
        let mut p = PerUser::new(10.0, 2, 3);
        assert_eq!((p.take("a", 0), p.take("a", 0)), (Ok(()), Ok(())));
        assert_eq!(p.take("a", 0), Err(100));
        assert_eq!(p.take("b", 0), Ok(()), "another user is not charged");
        p.take("c", 0).unwrap();
        // A fourth user: nobody has refilled yet, so the first in id order goes.
        p.take("d", 0).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.take("a", 0), Ok(()), "a was forgotten: a new bucket");
        // Much later every bucket is full again: a newcomer clears them all.
        p.take("e", 10_000).unwrap();
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10.0, 3);
        assert!((0..3).all(|_| b.try_take(0)));
        assert!(!b.try_take(0));
        assert_eq!(b.wait_ms(), 100);
        assert!(!b.try_take(50));
        assert!(b.try_take(100));
        assert!(b.try_take(10_000) && b.try_take(10_000) && b.try_take(10_000));
        assert!(!b.try_take(10_000)); // refill is capped at the burst
    }
}
