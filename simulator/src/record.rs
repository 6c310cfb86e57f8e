//! The recorder: every metric of docs/metrics.md as an HDR histogram or a counter, tagged by
//! phase and group, plus the history the checkers read after the run. One per
//! simulation, shared by every task (turmoil runs all hosts on one thread).

use hdrhistogram::Histogram;
use rtsync_client::rollup::{Counts, Progress};
use rtsync_protocol::{Entity, EntityKind};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher};

/// A `HashMap` with a fixed (unkeyed) hasher: the same layout every run, so even an
/// accidental iteration would be reproducible; still, iterate it only to sort.
pub type FixedHashMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// A broken invariant, with what the checker saw: recorded during the run (a replay
/// batch that skips) or found by the checkers afterwards.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Anomaly {
    pub invariant: String,
    pub explanation: String,
}

impl Anomaly {
    pub fn new(invariant: &str, explanation: impl Into<String>) -> Self {
        Anomaly {
            invariant: invariant.to_owned(),
            explanation: explanation.into(),
        }
    }
}

/// Phase boundaries, in simulated ms.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub warmup_end_ms: u64,
    /// First fault … last fault; `None` without faults.
    pub faults_ms: Option<(u64, u64)>,
    pub workload_end_ms: u64,
}

impl Phases {
    pub fn at(&self, t_ms: u64) -> &'static str {
        if t_ms < self.warmup_end_ms {
            "warmup"
        } else if t_ms >= self.workload_end_ms {
            "liveness"
        } else {
            match self.faults_ms {
                Some((a, _)) if t_ms < a => "steady",
                Some((_, b)) if t_ms <= b => "fault",
                Some(_) => "recovery",
                None => "steady",
            }
        }
    }
}

pub const PHASES: [&str; 5] = ["warmup", "steady", "fault", "recovery", "liveness"];

/// What became of an op.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pending,
    /// Applied at `version` (seq in `epoch`); `fields` are the ones it wrote.
    Applied {
        epoch: u64,
        seq: Option<u64>,
        version: u64,
        fields: Map<String, Value>,
        delete: bool,
    },
    RolledBack,
}

#[derive(Debug, Clone)]
pub struct OpRecord {
    pub client: String,
    pub n: u64,
    pub workspace: String,
    pub kind: EntityKind,
    pub entity_id: String,
    pub enqueued_ms: u64,
    pub first_sent_ms: Option<u64>,
    /// How late the op started against its intended time; latencies count from the
    /// intended time (coordinated-omission correction).
    pub late_ms: u64,
    pub outcome: Outcome,
    /// When the ack came, for the client's own order check.
    pub answered_ms: Option<u64>,
    /// The version the acknowledged op was based on (what its writer had seen).
    pub base: Option<u64>,
}

/// What a tab reports at the end of the run.
#[derive(Debug, Clone)]
pub struct TabFinal {
    pub tab: String,
    pub user: String,
    pub workspace: String,
    pub open: bool,
    /// Closed on purpose by a `tab_close` fault: not expected to be open.
    pub closed: bool,
    pub settled: bool,
    pub outbox_len: usize,
    pub live: Vec<Entity>,
    pub presence: BTreeSet<String>,
    pub dropped_silently: u64,
    /// The dashboard's counters (projects left out), when the scenario keeps one.
    pub dashboard: Option<Counts>,
    /// Project progress as the tab shows it, when the scenario derives it.
    pub progress: Option<BTreeMap<String, Progress>>,
    /// The user's focus session as the tab knows it, when the scenario runs one.
    pub focus: Option<crate::tab::FocusState>,
}

/// The server's state at the end, per workspace, read over HTTP by the probe.
#[derive(Debug, Clone, Default)]
pub struct ServerFinal {
    pub epoch: u64,
    pub entities: Vec<Entity>,
    pub presence: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Recorder {
    /// metric → phase → group → histogram. Nested so a sample looks its histogram up
    /// by `&str` without allocating (this is the hottest path of a large run).
    pub histograms: BTreeMap<String, BTreeMap<&'static str, BTreeMap<String, Histogram<u64>>>>,
    /// name → group → count.
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// opId → what became of it. Looked up on every delivery, so hashed; nothing
    /// iterates it into output without sorting (the checkers sort their anomalies).
    pub ops: FixedHashMap<String, OpRecord>,
    /// epoch → opId → the distinct seqs it was seen applied at (one, unless duplicated).
    pub applied_at: BTreeMap<u64, FixedHashMap<String, Vec<u64>>>,
    /// (epoch, workspace, kind, id) → versions seen deleted at.
    pub deletes_seen: BTreeMap<(u64, String, EntityKind, String), u64>,
    pub anomalies: Vec<Anomaly>,
    /// (workspace, user, session) of every focus session a driving tab completed.
    pub focus_completed: BTreeSet<(String, String, u64)>,
    pub tabs: Vec<TabFinal>,
    pub server: BTreeMap<String, ServerFinal>,
    /// Per-second timelines: name → (second, value).
    pub timelines: BTreeMap<String, BTreeMap<u64, i64>>,
    /// Faults as they happened, for the charts: (at_ms, label).
    pub fault_marks: Vec<(u64, String)>,
    pub phases: Option<Phases>,
    /// End-of-run gauges (ratios, growth, rows), by name.
    pub gauges: BTreeMap<String, f64>,
    /// Per-tab end-of-run figures the gauges are computed from.
    pub cache: rtsync_client::cache::CacheStats,
    pub cache_bytes: u64,
    pub retained_bytes: u64,
    pub cleanups: rtsync_client::memory::CleanupStats,
    /// Per tab: least-squares growth of retained bytes, per hour.
    pub growth_bytes_per_hour: Vec<f64>,
    pub list_rows_max: u64,
    /// Wall-clock µs of each reload's dehydrate + hydrate (measured, not deterministic).
    pub measured_persist_us: Vec<u64>,
    /// Wall-clock µs of each optimistic apply (queue the change, read the view back).
    pub measured_apply_us: Vec<u64>,
    /// Per metric, one histogram per interval of `interval_ms` (for `.hlog` files and the
    /// latency-over-time charts). Coarser (2 significant figures) to stay small.
    pub intervals: BTreeMap<String, BTreeMap<u64, Histogram<u64>>>,
    pub interval_ms: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 ms .. 1 h at 3 significant figures.
    Histogram::new_with_bounds(1, 3_600_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

impl Recorder {
    /// Computes the end-of-run gauges from the tabs' figures. A gauge with nothing to
    /// measure (no queries, no cleanups, fewer than two memory samples) is absent.
    pub fn finalize_gauges(&mut self) {
        let c = self.cache;
        let mut g = BTreeMap::new();
        if c.queries > 0 {
            g.insert("cache_hit_ratio", round3(c.hit_ratio()));
            g.insert("requests_per_query_ratio", round3(c.requests_per_query()));
        }
        if c.invalidated_refetched > 0 {
            g.insert(
                "invalidation_false_positive_ratio",
                round3(c.false_positive_ratio()),
            );
        }
        if self.retained_bytes > 0 {
            g.insert(
                "cache_memory_ratio",
                round3(self.cache_bytes as f64 / self.retained_bytes as f64),
            );
        }
        if self.cleanups.runs > 0 {
            g.insert(
                "cleanup_success_ratio",
                round3(self.cleanups.success_ratio()),
            );
        }
        if !self.growth_bytes_per_hour.is_empty() {
            let worst = self
                .growth_bytes_per_hour
                .iter()
                .copied()
                .fold(f64::MIN, f64::max);
            g.insert("memory_growth_bytes_per_hour", round3(worst));
        }
        if self.list_rows_max > 0 {
            g.insert("virtual_list_rows", self.list_rows_max as f64);
        }
        self.gauges = g.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    }

    pub fn phase(&self, t_ms: u64) -> &'static str {
        self.phases.map_or("steady", |p| p.at(t_ms))
    }

    /// One latency sample at time `t_ms` (it is tagged with that time's phase).
    pub fn sample(&mut self, metric: &str, group: &str, t_ms: u64, value_ms: u64) {
        let slot = t_ms / self.interval_ms.max(1);
        if !self.intervals.contains_key(metric) {
            self.intervals.insert(metric.to_owned(), BTreeMap::new());
        }
        if let Some(by_slot) = self.intervals.get_mut(metric) {
            by_slot
                .entry(slot)
                .or_insert_with(|| {
                    Histogram::new_with_bounds(1, 3_600_000, 2)
                        .unwrap_or_else(|_| unreachable!("valid bounds"))
                })
                .saturating_record(value_ms.max(1));
        }
        let phase = self.phase(t_ms);
        if !self.histograms.contains_key(metric) {
            self.histograms.insert(metric.to_owned(), BTreeMap::new());
        }
        let by_group = self
            .histograms
            .get_mut(metric)
            .map(|m| m.entry(phase).or_default());
        let Some(by_group) = by_group else { return };
        if !by_group.contains_key(group) {
            by_group.insert(group.to_owned(), histogram());
        }
        if let Some(h) = by_group.get_mut(group) {
            h.saturating_record(value_ms.max(1));
        }
    }

    pub fn count(&mut self, name: &str, group: &str, by: u64) {
        if !self.counters.contains_key(name) {
            self.counters.insert(name.to_owned(), BTreeMap::new());
        }
        if let Some(by_group) = self.counters.get_mut(name) {
            match by_group.get_mut(group) {
                Some(n) => *n += by,
                None => {
                    by_group.insert(group.to_owned(), by);
                }
            }
        }
    }

    /// `op` was seen applied at `seq` in `epoch`.
    pub fn applied(&mut self, epoch: u64, op: &str, seq: u64) {
        let ops = self.applied_at.entry(epoch).or_default();
        match ops.get_mut(op) {
            Some(seqs) if !seqs.contains(&seq) => seqs.push(seq),
            Some(_) => {}
            None => {
                ops.insert(op.to_owned(), vec![seq]);
            }
        }
    }

    pub fn anomaly(&mut self, a: Anomaly) {
        self.anomalies.push(a);
    }

    pub fn timeline_add(&mut self, name: &str, t_ms: u64, delta: i64) {
        if !self.timelines.contains_key(name) {
            self.timelines.insert(name.to_owned(), BTreeMap::new());
        }
        if let Some(line) = self.timelines.get_mut(name) {
            *line.entry(t_ms / 1000).or_insert(0) += delta;
        }
    }

    /// All histograms of a metric merged, filtered by tags.
    pub fn merged(
        &self,
        metric: &str,
        phase: Option<&str>,
        group: Option<&str>,
    ) -> Option<Histogram<u64>> {
        let mut out: Option<Histogram<u64>> = None;
        for (p, by_group) in self.histograms.get(metric)? {
            if phase.is_some_and(|x| x != *p) {
                continue;
            }
            for (g, h) in by_group {
                if group.is_some_and(|x| x != g) {
                    continue;
                }
                match &mut out {
                    None => out = Some(h.clone()),
                    Some(acc) => {
                        let _ = acc.add(h);
                    }
                }
            }
        }
        out
    }

    pub fn counter(&self, name: &str, group: Option<&str>) -> u64 {
        self.counters.get(name).map_or(0, |by_group| {
            by_group
                .iter()
                .filter(|(g, _)| group.is_none_or(|x| x == g.as_str()))
                .map(|(_, v)| v)
                .sum()
        })
    }

    /// Folds another recorder (a live worker thread's) into this one.
    pub fn absorb(&mut self, o: Recorder) {
        for (m, by_phase) in o.histograms {
            let mine = self.histograms.entry(m).or_default();
            for (p, by_group) in by_phase {
                let mine = mine.entry(p).or_default();
                for (g, h) in by_group {
                    match mine.get_mut(&g) {
                        Some(acc) => {
                            let _ = acc.add(&h);
                        }
                        None => {
                            mine.insert(g, h);
                        }
                    }
                }
            }
        }
        for (n, by_group) in o.counters {
            let mine = self.counters.entry(n).or_default();
            for (g, v) in by_group {
                *mine.entry(g).or_insert(0) += v;
            }
        }
        for (m, slots) in o.intervals {
            let mine = self.intervals.entry(m).or_default();
            for (slot, h) in slots {
                match mine.get_mut(&slot) {
                    Some(acc) => {
                        let _ = acc.add(&h);
                    }
                    None => {
                        mine.insert(slot, h);
                    }
                }
            }
        }
        for (name, line) in o.timelines {
            let mine = self.timelines.entry(name).or_default();
            for (sec, d) in line {
                *mine.entry(sec).or_insert(0) += d;
            }
        }
        for (epoch, ops) in o.applied_at {
            let mine = self.applied_at.entry(epoch).or_default();
            for (op, seqs) in ops {
                let e = mine.entry(op).or_default();
                for s in seqs {
                    if !e.contains(&s) {
                        e.push(s);
                    }
                }
            }
        }
        self.ops.extend(o.ops);
        self.deletes_seen.extend(o.deletes_seen);
        self.anomalies.extend(o.anomalies);
        self.tabs.extend(o.tabs);
        self.server.extend(o.server);
        self.fault_marks.extend(o.fault_marks);
        self.cache += o.cache;
        self.cache_bytes += o.cache_bytes;
        self.retained_bytes += o.retained_bytes;
        self.cleanups.runs += o.cleanups.runs;
        self.cleanups.succeeded += o.cleanups.succeeded;
        self.growth_bytes_per_hour.extend(o.growth_bytes_per_hour);
        self.list_rows_max = self.list_rows_max.max(o.list_rows_max);
        self.measured_persist_us.extend(o.measured_persist_us);
        self.measured_apply_us.extend(o.measured_apply_us);
    }

    pub fn invariant(&self, name: &str) -> u64 {
        self.anomalies
            .iter()
            .filter(|a| a.invariant == name)
            .count() as u64
    }
}

/// Rounds to three decimals, as every ratio and mean in a report is written.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
