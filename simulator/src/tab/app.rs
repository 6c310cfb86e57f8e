//! The app around the sync engine: list queries through the query cache, memory
//! sampling and cleanup, the virtual list, reloads through persistence, and the final
//! report of the tab.

use super::*;
use rtsync_client::cache::Patch;
use std::sync::Arc;

/// The app around the sync engine: query cache, memory, storage, presence, list.
pub(super) struct App {
    pub(super) cache: QueryCache,
    pub(super) memory: MemoryManager,
    /// Simulated storage: what the tab last persisted (its queue and position).
    pub(super) stored_queue: Option<String>,
    /// The users the tab shows online.
    pub(super) presence: BTreeSet<String>,
    /// The most rows the virtual list ever rendered at once.
    pub(super) list_rows_max: u64,
    pub(super) next_sample_ms: Option<u64>,
    pub(super) snapshot_retry_at: Option<u64>,
    /// A reset (corrupted storage) is being recovered since this time.
    pub(super) recovering_since: Option<u64>,
    /// The dashboard's counters and project progress (`tab/dashboard.rs`), when the
    /// scenario keeps them.
    pub(super) rollup: Option<Rollup>,
}

/// The query cache's share of a tab's retained bytes once memory pressure was seen.
const CACHE_SHARE_PCT: usize = 15;

impl Tab {
    pub(super) fn query_key(&self, project: u64) -> Vec<String> {
        vec![
            "tasks".to_owned(),
            self.spec.workspace.clone(),
            format!("p{project}"),
        ]
    }

    /// A list query through the cache; a miss or a stale entry fetches over HTTP
    /// (deduplicated by the cache while one fetch is in flight).
    pub(super) fn query(&mut self, key: Vec<String>, now: u64) {
        self.rec.borrow_mut().count("queries", &self.spec.group, 1);
        let fetch = match self.app.cache.query(&key, now) {
            Lookup::Fresh(_) => false,
            Lookup::Stale { fetch, .. } | Lookup::Miss { fetch } => fetch,
        };
        if !fetch {
            return;
        }
        let (route, net) = (self.spec.group.clone(), self.net.clone());
        let (tx, token, project) = (self.io_tx.clone(), self.spec.token.clone(), key[2].clone());
        tokio::task::spawn_local(async move {
            let path = format!("/api/entities/tasks?projectId={project}");
            let data = net
                .get_pages(&route, &token, &path)
                .await
                .map(|(_, _, entities)| Value::Array(entities));
            let _ = tx.send(Input::Io(Io::Query(key, data)));
        });
    }

    /// The confirmed copy of `(kind, id)` changed: every cached task list of the
    /// workspace is patched to match (TanStack's `setQueryData` from a realtime event,
    /// as the seed's task store does with `TASK_CREATED` / `TASK_UPDATED`): the task
    /// goes into its project's list and out of any other, without a refetch.
    pub(super) fn patch_lists(&mut self, kind: EntityKind, id: &str, now: u64) {
        if kind != EntityKind::Task || self.app.cache.is_empty() {
            return;
        }
        let Some(e) = self.s.replica().get(kind, id) else {
            return;
        };
        let e = Arc::new(serde_json::to_value(e).unwrap_or_default());
        for p in 0..self.spec.workload.projects {
            let key = self.query_key(p);
            let (e, project) = (e.clone(), key[2].clone());
            let patch: Patch = Arc::new(move |list| patched(list, &e, &project));
            self.app.cache.patch(&key, now, patch);
        }
    }

    /// Cached lists a query would serve without fetching whose tasks (ids and
    /// versions) differ from what the replica says the project holds, with both sides.
    fn unlike_replica(&self, now: u64) -> Vec<(QueryKey, Tasks<'_>, Tasks<'_>)> {
        let mut want: BTreeMap<&str, Tasks<'_>> = BTreeMap::new();
        for e in self
            .s
            .replica()
            .live()
            .filter(|e| e.entity == EntityKind::Task)
        {
            if let Some(p) = e.fields.get("projectId").and_then(Value::as_str) {
                want.entry(p).or_default().push((e.id.as_str(), e.version));
            }
        }
        self.app
            .cache
            .fresh(now)
            .filter_map(|(key, list)| {
                let want = want.get(key.get(2)?.as_str()).cloned().unwrap_or_default();
                let have: Tasks<'_> = list
                    .as_array()?
                    .iter()
                    .map(|e| {
                        (
                            e["id"].as_str().unwrap_or(""),
                            e["version"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect();
                (have != want).then(|| (key.clone(), have, want))
            })
            .collect()
    }

    /// After a snapshot resync the lists missed the events the snapshot stood in for:
    /// those that no longer match the replica are invalidated (refetched on use).
    pub(super) fn invalidate_unlike_replica(&mut self, now: u64) {
        let keys: Vec<QueryKey> = self
            .unlike_replica(now)
            .into_iter()
            .map(|(k, ..)| k)
            .collect();
        for k in keys {
            self.app.cache.invalidate(Filter::Exact(&k));
        }
    }

    /// Stale data served as fresh: checked at quiescence, when the replica equals the
    /// server's state, so every fresh list must match it.
    fn stale_cache_entries(&self, now: u64) -> Vec<String> {
        self.unlike_replica(now)
            .into_iter()
            .map(|(key, have, want)| {
                format!(
                    "tab {} serves {key:?} as fresh with {} tasks where its replica has {} \
                     (first only cached: {:?}; first only in the replica: {:?})",
                    self.spec.id,
                    have.len(),
                    want.len(),
                    have.iter().find(|h| !want.contains(h)),
                    want.iter().find(|w| !have.contains(w)),
                )
            })
            .collect()
    }

    /// Samples retained bytes per store; under pressure, runs the cleanup tasks. Also
    /// scrolls the virtual task list and notes how many rows it materialises.
    pub(super) fn sample_memory(&mut self, now: u64) {
        let outbox: usize = self
            .s
            .outbox()
            .ops()
            .map(|o| {
                96 + o.entity_id.len()
                    + rtsync_client::value_bytes(&Value::Object(o.changes.clone()))
            })
            .sum();
        let stores = [
            ("replica", self.s.replica().bytes()),
            ("cache", self.app.cache.bytes()),
            ("outbox", outbox),
        ];
        let before = self.app.memory.current() as i64;
        let total = self.app.memory.sample(now, &stores) as i64;
        self.rec
            .borrow_mut()
            .timeline_add("retained_bytes", now, total - before);
        // The cache's budget: 15% of retained bytes (the SLO's 20% with a margin), taken
        // from the other stores so that it still holds after the trim.
        let budget = self.app.memory.share_budget("cache", CACHE_SHARE_PCT);
        if self.app.memory.under_pressure() {
            // The cleanup task: the seed's removal of old, rarely hit entries, then the
            // cache bounded to its budget. It succeeded if the cache is within budget
            // afterwards. The bound stays (unbounded, the list queries' copies of the
            // tasks grow to ~3x the replica): the trim takes the tab out of pressure, and
            // every later fetch must keep the share too.
            self.app.cache.cleanup(now, 30_000, 2);
            self.app.cache.gc(now);
            self.app.cache.set_bytes_max(Some(budget));
            let within = self.app.cache.bytes() <= budget;
            self.app.memory.record_cleanup("cache", within);
        } else if self.app.cache.bytes_max().is_some() {
            // Follow the other stores as they grow or shrink.
            self.app.cache.set_bytes_max(Some(budget));
        }
        let rows = self.spec.workload.list_rows;
        if rows > 0 {
            let g = ListGeometry::default();
            self.user.scroll_px = (self.user.scroll_px + 4_321 * u64::from(g.item_px))
                % (rows * u64::from(g.item_px));
            self.app.list_rows_max = self
                .app
                .list_rows_max
                .max(window(&g, rows, self.user.scroll_px).materialised());
        }
    }

    /// Reloads the tab from its storage: the state snapshot goes through the real
    /// dehydrate/hydrate path (corrupted or old-schema on request); the queue comes from
    /// its own key. A failure resets the state and refetches: nothing queued is lost.
    pub(super) fn reload(&mut self, corrupt: bool, old_schema: bool, now: u64) {
        self.reload_as(corrupt, old_schema, false, now);
    }

    /// A reload whose stored resume point is wrong: another incarnation's epoch (one
    /// that started a second earlier) or a seq far ahead of the server's head, one or the
    /// other per reload. The entities stored with it are right, so the server's
    /// `complete: false` and a resync must repair everything.
    pub(super) fn reload_with_bad_resume(&mut self, now: u64) {
        self.reload_as(false, false, true, now);
    }

    fn reload_as(&mut self, corrupt: bool, old_schema: bool, bad_resume: bool, now: u64) {
        if self.closed {
            return;
        }
        let wall = std::time::Instant::now(); // measured section only (CPU cost)
        let mut blob = if old_schema {
            storage::save_v1(&self.s, &self.spec.user, now)
        } else {
            storage::save(&self.s, &self.spec.user, now)
        };
        if corrupt {
            blob = storage::corrupt(&blob, &mut self.user.rng).0;
        }
        let restored = storage::load(&blob, self.app.stored_queue.as_deref(), now);
        let measured_us = wall.elapsed().as_micros() as u64;
        self.s.close(now);
        let mut cfg = self.spec.session.clone();
        cfg.connection.start_transport = if self.spec.sse {
            Transport::Sse
        } else {
            Transport::WebSocket
        };
        let salt = self.user.rng.next_u64();
        let mut fresh = Session::new(
            &self.spec.user,
            &self.spec.id,
            cfg,
            self.user.rng.fork(salt),
        );
        {
            let mut rec = self.rec.borrow_mut();
            rec.count("reloads", &self.spec.group, 1);
            rec.measured_persist_us.push(measured_us);
            match restored {
                Ok(mut r) => {
                    if r.migrated {
                        rec.count("migrations", &self.spec.group, 1);
                    }
                    if bad_resume && let Some(epoch) = r.sync.epoch {
                        if self.user.rng.chance(0.5) {
                            r.sync.epoch = Some(epoch.saturating_sub(1000));
                        } else {
                            r.sync.seq += 1_000_000;
                        }
                    }
                    fresh.restore(r.entities, r.sync);
                }
                Err(_) => {
                    rec.count("state_resets", &self.spec.group, 1);
                    self.app.recovering_since = Some(now);
                    let q = storage::queue_of(self.app.stored_queue.as_deref());
                    fresh.restore(
                        Vec::new(),
                        SyncState {
                            epoch: None,
                            seq: 0,
                            ..q
                        },
                    );
                }
            }
        }
        // The old session's socket goes; the new one starts over, and so does the
        // in-memory query cache (the seed persists its stores, not the QueryClient).
        self.app.cache.clear();
        self.app.cache.subscribe(&self.query_key(0), now);
        self.set_link(None);
        self.wire.connecting = None;
        self.s = fresh;
        self.epoch = 0;
        self.announce_presence();
        self.s.start(now);
    }

    /// With `presence_bytes`, the tab announces a presence whose `currentPage` is that
    /// large (every WebSocket connect sends it again).
    pub(super) fn announce_presence(&mut self) {
        let bytes = self.spec.workload.presence_bytes;
        if bytes == 0 {
            return;
        }
        let page: String = format!("/tasks/{}/", self.spec.id)
            .chars()
            .cycle()
            .take(bytes)
            .collect();
        self.s.set_presence(rtsync_protocol::PresenceChange {
            user_id: None,
            status: rtsync_protocol::PresenceStatus::Online,
            current_page: Some(page),
            current_task: None,
            current_project: None,
            device: None,
        });
    }

    pub(super) fn finish(&mut self) {
        let trend = self.app.memory.trend();
        let stale = if self.closed {
            Vec::new() // a closed tab shows nothing; reopening starts with an empty cache
        } else {
            self.stale_cache_entries(self.net.now_ms())
        };
        {
            let mut rec = self.rec.borrow_mut();
            for s in stale {
                rec.anomaly(Anomaly::new("stale_cache_entries", s));
            }
            rec.cache += self.app.cache.stats;
            rec.cache_bytes += self.app.cache.bytes() as u64;
            rec.retained_bytes += self.app.memory.current() as u64;
            let cl = self.app.memory.cleanup_total();
            rec.cleanups.runs += cl.runs;
            rec.cleanups.succeeded += cl.succeeded;
            if trend.samples >= 2 {
                rec.growth_bytes_per_hour.push(trend.growth_bytes_per_hour);
            }
            rec.list_rows_max = rec.list_rows_max.max(self.app.list_rows_max);
        }
        let (dashboard, progress) = self.final_rollup();
        let t = TabFinal {
            tab: self.spec.id.clone(),
            user: self.spec.user.clone(),
            workspace: self.spec.workspace.clone(),
            open: self.s.connection().is_open() && !self.closed,
            closed: self.closed,
            settled: self.s.is_settled(),
            outbox_len: self.s.outbox().len(),
            // The tab is done: its replica moves into the record (1 000 tabs' copies
            // were a visible share of a large run's end).
            live: self.s.take_replica().into_live().collect(),
            presence: self.app.presence.clone(),
            dropped_silently: self.s.outbox().stats.dropped_silently,
            dashboard,
            progress,
            focus: self.focus.view.clone(),
        };
        self.rec.borrow_mut().tabs.push(t);
    }
}

/// A list's tasks as (id, version), in id order.
type Tasks<'a> = Vec<(&'a str, u64)>;

/// `list` (a project's tasks in id order, as the server answers) with task `e` as the
/// replica now has it: replaced, inserted, or removed (deleted, or moved to another
/// project). None when the list already shows that version or a later one (its answer
/// overtook the event), or the task is neither in the list nor belongs there.
fn patched(list: &Value, e: &Value, project: &str) -> Option<Value> {
    let l = list.as_array()?;
    let id = e["id"].as_str()?;
    let version = e["version"].as_u64()?;
    let belongs = e.get("deleted").and_then(Value::as_bool) != Some(true)
        && e.get("projectId").and_then(Value::as_str) == Some(project);
    let at = l.binary_search_by(|x| x["id"].as_str().unwrap_or("").cmp(id));
    match at {
        Ok(i) if l[i]["version"].as_u64() >= Some(version) => return None,
        Err(_) if !belongs => return None,
        _ => {}
    }
    let mut l = l.clone();
    match at {
        Ok(i) if belongs => l[i] = e.clone(),
        Ok(i) => drop(l.remove(i)),
        Err(i) => l.insert(i, e.clone()),
    }
    Some(Value::Array(l))
}
