//! Memory accounting: every store reports its retained bytes; a manager keeps the
//! seed's 100-sample history, detects pressure, runs cleanup tasks and counts how many
//! succeed, and reports the trend (least-squares growth per hour).

use std::collections::{BTreeMap, VecDeque};

/// The seed keeps the last 100 samples.
pub const HISTORY_SAMPLES: usize = 100;

/// One measurement of the total retained bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was taken, ms.
    pub at_ms: u64,
    /// Retained bytes, all stores together.
    pub bytes: usize,
}

/// The seed's trend report.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// Samples in the history (at most [`HISTORY_SAMPLES`]).
    pub samples: usize,
    /// The latest sample's bytes.
    pub current_bytes: usize,
    /// The largest sample still in the history.
    pub peak_bytes: usize,
    /// Least-squares slope over the history.
    pub growth_bytes_per_hour: f64,
    /// The latest sample is at or over the pressure threshold.
    pub under_pressure: bool,
}

/// How often a cleanup task reached its goal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupStats {
    /// Times it ran.
    pub runs: u64,
    /// Times it reached its goal.
    pub succeeded: u64,
}

impl CleanupStats {
    /// Succeeded over runs (1 when it never ran: nothing failed).
    pub fn success_ratio(&self) -> f64 {
        if self.runs == 0 {
            1.0
        } else {
            self.succeeded as f64 / self.runs as f64
        }
    }
}

/// The seed's `MemoryManager`: samples, pressure, cleanup outcomes and the trend.
#[derive(Debug)]
pub struct MemoryManager {
    history: VecDeque<Sample>,
    by_store: BTreeMap<String, usize>,
    pressure_bytes: usize,
    /// Per cleanup task (by name).
    pub cleanups: BTreeMap<String, CleanupStats>,
}

impl MemoryManager {
    /// An empty history; at or over `pressure_bytes` retained, the tab is under pressure.
    pub fn new(pressure_bytes: usize) -> Self {
        MemoryManager {
            history: VecDeque::new(),
            by_store: BTreeMap::new(),
            pressure_bytes,
            cleanups: BTreeMap::new(),
        }
    }

    /// Records each store's retained bytes and their total as one sample; returns the
    /// total. The history keeps the last [`HISTORY_SAMPLES`].
    pub fn sample(&mut self, now_ms: u64, stores: &[(&str, usize)]) -> usize {
        self.by_store.clear();
        for (name, b) in stores {
            self.by_store.insert((*name).to_owned(), *b);
        }
        let total = stores.iter().map(|(_, b)| b).sum();
        self.history.push_back(Sample {
            at_ms: now_ms,
            bytes: total,
        });
        while self.history.len() > HISTORY_SAMPLES {
            self.history.pop_front();
        }
        total
    }

    /// The latest sample's total bytes (0 before the first).
    pub fn current(&self) -> usize {
        self.history.back().map_or(0, |s| s.bytes)
    }

    /// Store `name`'s bytes in the latest sample (0 if it was not in it).
    pub fn store_bytes(&self, name: &str) -> usize {
        self.by_store.get(name).copied().unwrap_or(0)
    }

    /// The bytes `store` may hold to be at most `share_pct`% of the retained total
    /// *after* it is trimmed to them, the other stores as last sampled. (A share of the
    /// sampled total, which counts the store itself, shrinks with the trim: 15% of a
    /// total where the store is as large as the rest is 23% of the total after.)
    pub fn share_budget(&self, store: &str, share_pct: usize) -> usize {
        debug_assert!(share_pct < 100);
        let others = self.current().saturating_sub(self.store_bytes(store));
        others * share_pct / (100 - share_pct)
    }

    /// The latest sample is at or over the pressure threshold: time to clean up.
    pub fn under_pressure(&self) -> bool {
        self.current() >= self.pressure_bytes
    }

    /// Records one cleanup task's outcome (what "succeeded" means is the task's own
    /// goal, e.g. a store back within its budget).
    pub fn record_cleanup(&mut self, task: &str, succeeded: bool) {
        let s = self.cleanups.entry(task.to_owned()).or_default();
        s.runs += 1;
        if succeeded {
            s.succeeded += 1;
        }
    }

    /// Every task's outcomes together.
    pub fn cleanup_total(&self) -> CleanupStats {
        self.cleanups
            .values()
            .fold(CleanupStats::default(), |a, s| CleanupStats {
                runs: a.runs + s.runs,
                succeeded: a.succeeded + s.succeeded,
            })
    }

    /// The samples kept, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Sample> {
        self.history.iter()
    }

    /// The seed's trend report over the history.
    pub fn trend(&self) -> Trend {
        let pts: Vec<(f64, f64)> = self
            .history
            .iter()
            .map(|s| (s.at_ms as f64, s.bytes as f64))
            .collect();
        Trend {
            samples: pts.len(),
            current_bytes: self.current(),
            peak_bytes: self.history.iter().map(|s| s.bytes).max().unwrap_or(0),
            growth_bytes_per_hour: slope_per_ms(&pts) * 3_600_000.0,
            under_pressure: self.under_pressure(),
        }
    }
}

/// Least-squares slope of y over x; 0 with fewer than two distinct x.
pub fn slope_per_ms(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_100_samples_and_fits_the_growth() {
        let mut m = MemoryManager::new(10_000);
        for i in 0..150u64 {
            // 1 000 bytes per simulated minute = 60 000 bytes per hour.
            m.sample(
                i * 60_000,
                &[("store", 1000 + i as usize * 1000), ("cache", 0)],
            );
        }
        let t = m.trend();
        assert_eq!(t.samples, HISTORY_SAMPLES);
        assert!(
            (t.growth_bytes_per_hour - 60_000.0).abs() < 1e-6,
            "{}",
            t.growth_bytes_per_hour
        );
        assert!(t.under_pressure);
        assert_eq!(m.store_bytes("store"), 150_000);
    }

    #[test]
    fn a_store_trimmed_to_its_share_budget_is_within_its_share_after_the_trim() {
        let mut m = MemoryManager::new(20_000);
        // Scenario 12, seed 0, the average tab before its last cleanup.
        m.sample(0, &[("replica", 13_092), ("cache", 11_530)]);
        let b = m.share_budget("cache", 15);
        assert_eq!(b, 13_092 * 15 / 85);
        assert!(b as f64 / (13_092 + b) as f64 <= 0.15);
        // The old budget, 15% of the sampled total, leaves the cache above 20%.
        let old = m.current() * 15 / 100;
        assert!(old as f64 / (13_092 + old) as f64 > 0.2);
    }

    #[test]
    fn counts_cleanup_success() {
        let mut m = MemoryManager::new(0);
        m.record_cleanup("cache", true);
        m.record_cleanup("cache", false);
        m.record_cleanup("events", true);
        let total = m.cleanup_total();
        assert_eq!((total.runs, total.succeeded), (3, 2));
        assert!((total.success_ratio() - 2.0 / 3.0).abs() < 1e-9);
    }
}
