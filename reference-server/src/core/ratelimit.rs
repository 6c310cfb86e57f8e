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
}

#[cfg(test)]
mod tests {
    use super::*;

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
