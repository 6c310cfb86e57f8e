//! Where the server gets "now". Real time in the binary; the simulator supplies a
//! clock on simulated time (a simulated epoch plus `turmoil::sim_elapsed()`), so a
//! run's timestamps are a function of the seed.

use std::fmt::Debug;

/// Milliseconds since the Unix epoch, never going backwards.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now_ms(&self) -> u64;
}

/// Wall-clock time read once at start, then advanced by a monotonic clock, so the
/// server's timestamps are wall-like yet never jump back with NTP.
#[derive(Debug)]
pub struct SystemClock {
    base_ms: u64,
    start: std::time::Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        // The only std::time wall read in the server; the simulator never constructs this.
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        SystemClock {
            base_ms,
            start: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}
