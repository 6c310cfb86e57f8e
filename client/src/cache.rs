//! A query cache with TanStack Query v5 semantics: array keys; `staleTime` (default 0:
//! data is stale at once) and `gcTime` (default 5 min: unobserved entries are removed
//! after it); invalidation by exact key, prefix or predicate; concurrent identical
//! fetches deduplicated; refetch of observed queries on reconnect; unchanged data keeps
//! its identity (structural sharing); `setQueryData` (`patch`) for changes the app
//! learns from its realtime stream; the seed's cleanup of old, rarely hit entries.
//! Bounded by `entries_max`: past it the least recently used unobserved entry goes;
//! and, once the memory manager sets one, by a byte budget that every fetch keeps.

use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// TanStack's array key, e.g. `["tasks", "project-7"]`; prefixes group related queries.
pub type QueryKey = Vec<String>;

/// The cache's settings; the defaults are in `Default`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Data younger than this is fresh: served without a fetch (default 0: always stale).
    pub stale_time_ms: u64,
    /// An unobserved entry unused this long is removed by `gc` (default 5 min).
    pub gc_time_ms: u64,
    /// The most entries kept; past it the least recently used unobserved one goes
    /// (default 10 000).
    pub entries_max: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            stale_time_ms: 0,
            gc_time_ms: 5 * 60 * 1000,
            entries_max: 10_000,
        }
    }
}

#[derive(Clone)]
struct Entry {
    data: Option<Arc<Value>>,
    bytes: usize,
    updated_at_ms: u64,
    invalidated: bool,
    fetching: bool,
    /// Invalidated while a fetch was in flight (or more patches came than `replay`
    /// holds): that fetch's answer may predate the change, so it is kept stale and the
    /// next query refetches.
    answer_stale: bool,
    /// Patches made while a fetch was in flight, replayed onto its answer (which may
    /// predate them).
    replay: Vec<Patch>,
    observers: u32,
    hits: u64,
    last_used_ms: u64,
}

/// A change written into cached data: returns the new data, or `None` when the data
/// already shows it. Must be idempotent: it may be replayed onto a fetch's answer that
/// already includes the change.
pub type Patch = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

/// Patches kept for replay onto one in-flight fetch's answer; past this the answer is
/// refetched instead.
pub const REPLAY_MAX: usize = 256;

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("data", &self.data)
            .field("updated_at_ms", &self.updated_at_ms)
            .field("invalidated", &self.invalidated)
            .field("fetching", &self.fetching)
            .field("replay", &self.replay.len())
            .finish_non_exhaustive()
    }
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Fresh data from the cache: no network.
    Fresh(Arc<Value>),
    /// Stale data to show now; `fetch` says whether this call must start the refetch
    /// (false: one is already in flight).
    Stale {
        /// The cached data.
        data: Arc<Value>,
        /// This call must fetch, then `resolve` or `fail`.
        fetch: bool,
    },
    /// Nothing cached; `fetch` as above.
    Miss {
        /// This call must fetch, then `resolve` or `fail`.
        fetch: bool,
    },
}

/// Counters for reports (hit ratio, false positives, requests per query).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// `query` calls.
    pub queries: u64,
    /// Queries answered fresh, without a fetch.
    pub hits: u64,
    /// Fetches started.
    pub fetches: u64,
    /// Queries that joined a fetch already in flight instead of starting one.
    pub deduplicated: u64,
    /// Entries marked stale by `invalidate`.
    pub invalidated: u64,
    /// Entries changed in place by `patch` (no fetch).
    pub patched: u64,
    /// Invalidated entries whose refetched data turned out unchanged.
    pub false_positives: u64,
    /// Invalidated entries refetched unchanged because the change that invalidated them
    /// was undone before the refetch: needed when made, not false positives.
    pub superseded: u64,
    /// Invalidated entries refetched (the denominator of the false-positive ratio).
    pub invalidated_refetched: u64,
    /// Entries removed by `gc`.
    pub gc_removed: u64,
    /// Entries (or their data) evicted by a bound: `entries_max` or the byte budget.
    pub evicted: u64,
    /// Entries removed by the seed's `cleanup`.
    pub cleaned: u64,
}

impl CacheStats {
    /// Hits over queries (0 with no queries).
    pub fn hit_ratio(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.hits as f64 / self.queries as f64
        }
    }
    /// False positives over invalidated entries refetched (0 with none).
    pub fn false_positive_ratio(&self) -> f64 {
        if self.invalidated_refetched == 0 {
            0.0
        } else {
            self.false_positives as f64 / self.invalidated_refetched as f64
        }
    }
    /// Fetches over queries (0 with no queries).
    pub fn requests_per_query(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.fetches as f64 / self.queries as f64
        }
    }
}

/// Statistics of several caches (the simulator sums every tab's).
impl std::ops::AddAssign for CacheStats {
    fn add_assign(&mut self, o: CacheStats) {
        let CacheStats {
            queries,
            hits,
            fetches,
            deduplicated,
            invalidated,
            patched,
            false_positives,
            superseded,
            invalidated_refetched,
            gc_removed,
            evicted,
            cleaned,
        } = o;
        self.queries += queries;
        self.hits += hits;
        self.fetches += fetches;
        self.deduplicated += deduplicated;
        self.invalidated += invalidated;
        self.patched += patched;
        self.false_positives += false_positives;
        self.superseded += superseded;
        self.invalidated_refetched += invalidated_refetched;
        self.gc_removed += gc_removed;
        self.evicted += evicted;
        self.cleaned += cleaned;
    }
}

/// Which entries an invalidation hits.
pub enum Filter<'a> {
    /// The entry with this key.
    Exact(&'a [String]),
    /// Every entry whose key starts with this (TanStack's default matching).
    Prefix(&'a [String]),
    /// Every entry whose key the function accepts (a full scan).
    Predicate(&'a dyn Fn(&[String]) -> bool),
}

impl std::fmt::Debug for Filter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::Exact(k) => write!(f, "Exact({k:?})"),
            Filter::Prefix(k) => write!(f, "Prefix({k:?})"),
            Filter::Predicate(_) => write!(f, "Predicate(..)"),
        }
    }
}

impl Filter<'_> {
    fn matches(&self, key: &[String]) -> bool {
        match self {
            Filter::Exact(k) => key == *k,
            Filter::Prefix(p) => key.starts_with(p),
            Filter::Predicate(f) => f(key),
        }
    }
}

/// One tab's query cache: entries by key, each with its data, freshness, observers
/// and any fetch in flight. The caller does the fetching: `query` says when.
#[derive(Debug)]
pub struct QueryCache {
    cfg: CacheConfig,
    entries: BTreeMap<QueryKey, Entry>,
    bytes: usize,
    /// The byte budget the memory manager set (None: bounded by `entries_max` only).
    bytes_max: Option<usize>,
    /// Counters for reports.
    pub stats: CacheStats,
}

impl QueryCache {
    /// An empty cache with no byte budget.
    pub fn new(cfg: CacheConfig) -> Self {
        QueryCache {
            cfg,
            entries: BTreeMap::new(),
            bytes: 0,
            bytes_max: None,
            stats: CacheStats::default(),
        }
    }

    /// Entries held (with or without data).
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Approximate bytes retained by cached data.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// The byte budget the memory manager set, if any.
    pub fn bytes_max(&self) -> Option<usize> {
        self.bytes_max
    }

    /// Sets (or lifts) the byte budget and keeps it now and after every fetch. Returns
    /// the bytes freed.
    pub fn set_bytes_max(&mut self, bytes_max: Option<usize>) -> usize {
        self.bytes_max = bytes_max;
        self.enforce_bytes_max()
    }

    /// Least recently used idle unobserved entries go first (`trim_to`); if what is left
    /// (observed or in-flight entries) still exceeds the budget, their data is dropped
    /// too, keeping the entry, its observers and any fetch in flight: the seed's cleanup
    /// under pressure clears the whole QueryClient, active queries included, and an
    /// observer's next query refetches (a miss).
    fn enforce_bytes_max(&mut self) -> usize {
        let max = self.bytes_max.unwrap_or(usize::MAX);
        let before = self.bytes;
        self.trim_to(max);
        while self.bytes > max {
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| e.data.is_some())
                .min_by_key(|(_, e)| e.last_used_ms)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { break };
            if let Some(e) = self.entries.get_mut(&k) {
                self.bytes -= std::mem::take(&mut e.bytes);
                e.data = None;
                e.invalidated = false;
            }
            self.stats.evicted += 1;
        }
        before - self.bytes
    }

    /// The cached data of `key`, without counting a query or touching the entry: for
    /// an app that checks whether the cache already holds a change before invalidating.
    pub fn data(&self, key: &[String]) -> Option<&Value> {
        self.entries.get(key).and_then(|e| e.data.as_deref())
    }

    /// `useQuery`: what the cache holds for `key` at `now_ms`, and whether this call
    /// must fetch (then answer with `resolve` or `fail`). Counted in the statistics.
    pub fn query(&mut self, key: &[String], now_ms: u64) -> Lookup {
        self.stats.queries += 1;
        let stale_time = self.cfg.stale_time_ms;
        let e = self.entry(key, now_ms);
        e.last_used_ms = now_ms;
        let fresh = !e.invalidated && now_ms.saturating_sub(e.updated_at_ms) < stale_time;
        let lookup = match (&e.data, fresh) {
            (Some(d), true) => {
                e.hits += 1;
                let fresh = Lookup::Fresh(d.clone());
                self.stats.hits += 1;
                return fresh;
            }
            (Some(d), false) => Lookup::Stale {
                data: d.clone(),
                fetch: !e.fetching,
            },
            (None, _) => Lookup::Miss { fetch: !e.fetching },
        };
        if e.fetching {
            self.stats.deduplicated += 1;
        } else {
            e.fetching = true;
            self.stats.fetches += 1;
        }
        lookup
    }

    fn entry(&mut self, key: &[String], now_ms: u64) -> &mut Entry {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.cfg.entries_max {
                self.evict_one();
            }
            self.entries.insert(
                key.to_vec(),
                Entry {
                    data: None,
                    bytes: 0,
                    updated_at_ms: 0,
                    invalidated: false,
                    fetching: false,
                    answer_stale: false,
                    replay: Vec::new(),
                    observers: 0,
                    hits: 0,
                    last_used_ms: now_ms,
                },
            );
        }
        self.entries
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn evict_one(&mut self) {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.observers == 0 && !e.fetching)
            .min_by_key(|(_, e)| e.last_used_ms)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.remove(&k);
            self.stats.evicted += 1;
        }
    }

    fn remove(&mut self, key: &[String]) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
        }
    }

    /// A fetch finished. Returns the data to use: the old `Arc` when nothing changed
    /// (structural sharing — observers need not re-render).
    pub fn resolve(&mut self, key: &[String], data: Value, now_ms: u64) -> Arc<Value> {
        self.resolve_with(key, data, now_ms, false)
    }

    /// [`resolve`](Self::resolve), told whether the change that invalidated the entry
    /// has been changed again since (the app knows, the cache does not): an unchanged
    /// answer is then counted `superseded`, not a false positive.
    pub fn resolve_with(
        &mut self,
        key: &[String],
        data: Value,
        now_ms: u64,
        superseded: bool,
    ) -> Arc<Value> {
        let e = self.entry(key, now_ms);
        e.fetching = false;
        e.updated_at_ms = now_ms;
        let was_invalidated = std::mem::take(&mut e.invalidated);
        e.invalidated = std::mem::take(&mut e.answer_stale);
        let mut data = data;
        for p in std::mem::take(&mut e.replay) {
            if let Some(d) = p(&data) {
                data = d;
            }
        }
        let unchanged = e.data.as_deref() == Some(&data);
        let (out, new_bytes) = match (&e.data, unchanged) {
            (Some(old), true) => (old.clone(), e.bytes),
            _ => (Arc::new(data), 0),
        };
        let new_bytes = if unchanged {
            new_bytes
        } else {
            entry_bytes(key, &out)
        };
        let old_bytes = std::mem::replace(&mut e.bytes, new_bytes);
        e.data = Some(out.clone());
        self.bytes = self.bytes - old_bytes + new_bytes;
        if was_invalidated {
            self.stats.invalidated_refetched += 1;
            if unchanged && superseded {
                self.stats.superseded += 1;
            } else if unchanged {
                self.stats.false_positives += 1;
            }
        }
        self.enforce_bytes_max();
        out
    }

    /// A fetch failed: the next query may try again.
    pub fn fail(&mut self, key: &[String]) {
        if let Some(e) = self.entries.get_mut(key) {
            e.fetching = false;
            e.answer_stale = false;
            e.replay.clear();
        }
    }

    /// TanStack's `setQueryData(key, updater)`: the app writes a change it learned (a
    /// realtime event) into the cached data, which is then as fresh as a fetch's answer
    /// (TanStack sets `dataUpdatedAt` too). `update` returns the new data, or `None`
    /// when nothing changes. A fetch in flight may answer with data from before the
    /// change: the patch is replayed onto its answer. Returns whether cached data
    /// changed (nothing cached: nothing to patch).
    pub fn patch(&mut self, key: &[String], now_ms: u64, update: Patch) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        if e.fetching {
            if e.replay.len() < REPLAY_MAX {
                e.replay.push(update.clone());
            } else {
                e.answer_stale = true;
            }
        }
        let Some(new) = e.data.as_deref().and_then(|d| update(d)) else {
            return false;
        };
        let new_bytes = entry_bytes(key, &new);
        self.bytes = self.bytes - std::mem::replace(&mut e.bytes, new_bytes) + new_bytes;
        e.data = Some(Arc::new(new));
        e.updated_at_ms = now_ms;
        self.stats.patched += 1;
        self.enforce_bytes_max();
        true
    }

    /// Entries a query would answer from the cache at `now_ms` without fetching.
    pub fn fresh(&self, now_ms: u64) -> impl Iterator<Item = (&QueryKey, &Value)> {
        let stale_time = self.cfg.stale_time_ms;
        self.entries.iter().filter_map(move |(k, e)| {
            let fresh = !e.invalidated && now_ms.saturating_sub(e.updated_at_ms) < stale_time;
            e.data.as_deref().filter(|_| fresh).map(|d| (k, d))
        })
    }

    /// Marks matching entries that hold data stale; returns their keys. Observed ones
    /// need a refetch.
    pub fn invalidate(&mut self, filter: Filter<'_>) -> Vec<QueryKey> {
        let mut hit = Vec::new();
        let mut mark = |k: &QueryKey, e: &mut Entry| {
            if !filter.matches(k) {
                return;
            }
            e.answer_stale |= e.fetching;
            if e.data.is_some() {
                e.invalidated = true;
                hit.push(k.clone());
            }
        };
        match filter {
            // Looked up by the borrowed key: this runs for every delivery a tab applies.
            Filter::Exact(p) => {
                if let Some(e) = self.entries.get_mut(p) {
                    mark(&p.to_vec(), e);
                }
            }
            // Keys are sorted, so a prefix is one contiguous range: no full scan.
            Filter::Prefix(p) => {
                let from: (Bound<&[String]>, _) = (Bound::Included(p), Bound::Unbounded);
                for (k, e) in self
                    .entries
                    .range_mut::<[String], _>(from)
                    .take_while(|(k, _)| k.starts_with(p))
                {
                    mark(k, e);
                }
            }
            Filter::Predicate(_) => {
                for (k, e) in self.entries.iter_mut() {
                    mark(k, e);
                }
            }
        }
        self.stats.invalidated += hit.len() as u64;
        hit
    }

    /// A component starts observing `key`: observed entries are refetched on reconnect
    /// and never removed by `gc`, `trim_to` or `entries_max`. An entry stays observed
    /// for good: the simulator's tabs observe their home query and never navigate away.
    pub fn subscribe(&mut self, key: &[String], now_ms: u64) {
        self.entry(key, now_ms).observers += 1;
    }

    /// `refetchOnReconnect: 'always'`: observed queries are marked stale, to refetch
    /// after a reconnect. (TanStack's default, `true`, refetches only stale ones, which
    /// the next query does anyway.) Returns their keys.
    pub fn on_reconnect(&mut self) -> Vec<QueryKey> {
        let keys: Vec<QueryKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.observers > 0 && e.data.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            if let Some(e) = self.entries.get_mut(k) {
                e.invalidated = true;
            }
        }
        keys
    }

    /// `queryClient.clear()`: every entry goes (a page reload loses the in-memory
    /// cache); statistics and configuration stay.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Removes unobserved entries unused for `gcTime`.
    pub fn gc(&mut self, now_ms: u64) -> usize {
        let gc = self.cfg.gc_time_ms;
        let dead: Vec<QueryKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.observers == 0 && !e.fetching && now_ms.saturating_sub(e.last_used_ms) >= gc
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.remove(k);
        }
        self.stats.gc_removed += dead.len() as u64;
        dead.len()
    }

    /// Evicts least recently used unobserved entries until the cache holds at most
    /// `bytes_max`. Returns the bytes freed.
    pub fn trim_to(&mut self, bytes_max: usize) -> usize {
        let before = self.bytes;
        while self.bytes > bytes_max {
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| e.observers == 0 && !e.fetching && e.data.is_some())
                .min_by_key(|(_, e)| e.last_used_ms)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { break };
            self.remove(&k);
            self.stats.evicted += 1;
        }
        before - self.bytes
    }

    /// The seed's SmartCacheManager cleanup: drop unobserved entries older than
    /// `max_age_ms` that were hit fewer than `min_hits` times. Returns how many.
    pub fn cleanup(&mut self, now_ms: u64, max_age_ms: u64, min_hits: u64) -> usize {
        let dead: Vec<QueryKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.observers == 0
                    && !e.fetching
                    && e.hits < min_hits
                    && now_ms.saturating_sub(e.updated_at_ms) >= max_age_ms
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.remove(k);
        }
        self.stats.cleaned += dead.len() as u64;
        dead.len()
    }
}

/// What an entry's data is counted as retaining.
fn entry_bytes(key: &[String], data: &Value) -> usize {
    crate::value_bytes(data) + key.iter().map(|k| k.len() + 24).sum::<usize>()
}

#[cfg(test)]
mod tests;
