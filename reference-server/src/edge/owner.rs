//! Several nodes: which node serves a workspace, and the owner's round trips to Redis
//! (docs/cluster.md).
//!
//! - [`Server::route`] — a workspace's shard on this node (taking the lease and
//!   replaying the stream when it is free), or the address of the node that owns it;
//!   [`Server::here_or_relay`] — the same for an HTTP request, relayed to the owner;
//!   [`Server::to_owner`] — a relay's handshake; one whose owner does not answer waits
//!   (one lease at most) for the workspace to move, instead of refusing the client.
//! - [`flush_loop`] — sends the owned workspaces' unconfirmed steps to their streams
//!   (several at once), fenced by the lease, and releases the frames that waited.
//! - [`renew_loop`] — keeps the leases; a lease lost or unreachable for too long
//!   closes the workspace's connections here (1012) so its clients move.

use super::{ApiError, Server, Shard, ShardInner};
use crate::cluster::{ClusterConfig, Lease, Redis, RedisUrl, StreamLog, stream_log::Job};
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A node's part in a cluster.
#[derive(Debug)]
pub struct Cluster {
    pub redis: Redis,
    /// This node's advertised address: the lease holder's name.
    pub node: String,
    pub cfg: ClusterConfig,
    /// Each workspace is opened once at a time on this node, so two first connections
    /// to it cannot take its lease twice (the second token would fence the first). Per
    /// workspace: with Redis slow or away, one workspace's open must not queue every
    /// other's behind its timeouts (found in 35-swarm-cluster: 8 s queues on a node
    /// held away from Redis). Entries go when nobody is opening.
    opening: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// A commit left steps to send.
    flush: tokio::sync::Notify,
}

impl Cluster {
    /// `round_trips`: the node's histogram of Redis round trips.
    pub fn new(
        cfg: &ClusterConfig,
        node: String,
        round_trips: prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(url) = &cfg.redis else {
            return Ok(None);
        };
        let url: RedisUrl = url.parse()?;
        let mut redis = Redis::new(
            url,
            cfg.net.clone(),
            Duration::from_millis(cfg.redis_timeout_ms),
        );
        redis.unfenced = cfg.canary_unfenced;
        redis.round_trips = Some(round_trips);
        Ok(Some(Arc::new(Cluster {
            redis,
            node,
            cfg: cfg.clone(),
            opening: std::sync::Mutex::new(BTreeMap::new()),
            flush: tokio::sync::Notify::new(),
        })))
    }

    /// A commit appended steps: the flusher sends them now rather than at its next tick.
    pub fn wake(&self) {
        self.flush.notify_one();
    }
}

/// Where a workspace is served.
#[derive(Debug)]
pub enum Route {
    Local(Arc<Shard>),
    /// Owned by the node at this address.
    Remote(String),
}

impl Server {
    fn backplane_down(&self, e: &std::io::Error) -> ApiError {
        self.metrics.redis_errors_total.inc();
        tracing::warn!(error = %e, "Redis unavailable");
        ApiError::unavailable(
            "UNAVAILABLE",
            "the cluster's Redis is unavailable; retry later",
            1,
        )
    }

    fn live_shard(&self, workspace: &str) -> Option<Arc<Shard>> {
        let map = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        map.get(workspace).filter(|s| !s.lock().failed).cloned()
    }

    /// Where `workspace` is served: here (opened on first use), or on its owner node.
    pub async fn route(&self, workspace: &str) -> Result<Route, ApiError> {
        let Some(c) = &self.cluster else {
            return self.shard(workspace).map(Route::Local);
        };
        if let Some(s) = self.live_shard(workspace) {
            return Ok(Route::Local(s));
        }
        let lock = c
            .opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(workspace.to_owned())
            .or_default()
            .clone();
        let one = lock.clone().lock_owned().await;
        let route = self.open(c, workspace).await;
        drop(one);
        drop(lock);
        let mut opening = c.opening.lock().unwrap_or_else(|p| p.into_inner());
        if opening
            .get(workspace)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            opening.remove(workspace);
        }
        route
    }

    /// Takes `workspace`'s lease, or says who holds it; with the lease, replays its stream
    /// into a new shard. The caller holds the workspace's opening lock.
    async fn open(&self, c: &Cluster, workspace: &str) -> Result<Route, ApiError> {
        if let Some(s) = self.live_shard(workspace) {
            return Ok(Route::Local(s));
        }
        // The lease holds from when it was asked for (Redis sets it after).
        let asked_ms = self.now_ms();
        let lease = c
            .redis
            .acquire(workspace, &c.node, c.cfg.lease_ms)
            .await
            .map_err(|e| self.backplane_down(&e))?;
        let (token, value) = match lease {
            Lease::Held { owner } => return Ok(Route::Remote(owner)),
            Lease::Mine { token, value } => (token, value),
        };
        let entries = c
            .redis
            .read(workspace)
            .await
            .map_err(|e| self.backplane_down(&e))?;
        let core_cfg = super::durable::core_config(&self.cfg);
        let mut core = match crate::cluster::replay(&entries, &core_cfg, self.epoch) {
            Ok(Some(core)) => core,
            Ok(None) => crate::core::Workspace::new(workspace, self.epoch, core_cfg),
            Err(e) => {
                self.metrics.storage_errors_total.inc();
                tracing::error!(workspace, error = %e, "workspace stream unreadable");
                return Err(ApiError::unavailable(
                    "UNAVAILABLE",
                    "this workspace's stream is unreadable; retry later",
                    1,
                ));
            }
        };
        core.enable_journal();
        let mut stream = StreamLog::new(
            value,
            token,
            entries.len() as u64,
            c.cfg.stream_compact_steps,
            asked_ms,
        );
        if entries.is_empty() {
            // A new workspace's stream starts with its epoch, like a new file log.
            stream.append(&core.snapshot_records());
            c.wake();
        }
        self.metrics.takeovers_total.inc();
        tracing::info!(
            workspace,
            token,
            steps = entries.len(),
            "took over workspace"
        );
        let shard = self.new_shard(core, None);
        shard.lock().stream = Some(stream);
        self.workspaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(workspace.to_owned(), shard.clone());
        Ok(Route::Local(shard))
    }

    /// The shard when this node serves `workspace`; else the owner's answer to the same
    /// HTTP request (`path_and_query`, the headers that matter, `body`), relayed.
    pub async fn here_or_relay(
        &self,
        workspace: &str,
        request: Relayable<'_>,
    ) -> Result<Here, ApiError> {
        let owner = match self.route(workspace).await? {
            Route::Local(s) => return Ok(Here::Shard(s)),
            Route::Remote(owner) => owner,
        };
        Ok(
            match self.to_owner(workspace, owner, Ask::Http(&request)).await {
                Ok(Reached::Here(s)) => Here::Shard(s),
                Ok(Reached::Owner(Answer::Http(r) | Answer::Ws(Err(r)))) | Err(r) => {
                    Here::Relayed(r)
                }
                // Not asked for: an HTTP request gets an HTTP answer.
                Ok(Reached::Owner(Answer::Ws(Ok(_)))) => Here::Relayed(
                    ApiError::unavailable("UNAVAILABLE", "relay mixed up", 1).into_response(),
                ),
            },
        )
    }

    /// `ask` the owner (a relay's handshake with it); when the owner does not answer,
    /// waits for its workspace to move (`route_past`) and asks wherever it went, once.
    /// `Err`: the owner stays lost (503, retry shortly).
    ///
    /// Why wait rather than answer 503 at once: every refusal grows a client's backoff,
    /// and a killed owner's lease takes up to `lease_ms` to lapse. Live, a tab refused
    /// in two failovers in a row waited out a 20 s backoff long after the cluster had
    /// recovered; a handshake that waits for the takeover is just slower.
    pub async fn to_owner(
        &self,
        workspace: &str,
        mut owner: String,
        ask: Ask<'_>,
    ) -> Result<Reached, axum::response::Response> {
        let mut waited = false;
        loop {
            let answer = match &ask {
                Ask::Ws {
                    path_and_query,
                    authorization,
                } => super::proxy::connect(self, &owner, path_and_query, *authorization)
                    .await
                    .map(|r| Answer::Ws(r.map(Box::new))),
                Ask::Http(r) => super::proxy::forward(
                    self,
                    &owner,
                    r.method.clone(),
                    r.path_and_query,
                    r.headers,
                    r.body.clone(),
                )
                .await
                .map(Answer::Http),
            };
            let OwnerLost(refusal) = match answer {
                Ok(a) => return Ok(Reached::Owner(a)),
                Err(lost) => lost,
            };
            self.metrics.relays_owner_lost_total.inc();
            if waited {
                return Err(refusal);
            }
            waited = true;
            match self.route_past(workspace, &owner).await {
                Some(Route::Local(s)) => return Ok(Reached::Here(s)),
                Some(Route::Remote(next)) => owner = next,
                None => return Err(refusal),
            }
        }
    }

    /// Routes `workspace` again until it is no longer `owner`'s, for at most one lease
    /// (by then a dead owner's has lapsed; a live one out of reach keeps renewing it,
    /// and the answer is `None`). Each wait lasts until the lease would lapse (`PTTL`),
    /// so every node's relays for the workspace route again within a round trip of
    /// that instant, not up to a poll apart: clients released a poll apart miss each
    /// other's first events (live, 01 on three nodes with two kills: reconnects spread
    /// over 0.9 s, delivery p99 400 ms). Only `owner`'s time is waited for: a lease
    /// that moved (while the handshake with the lost owner timed out, say) is routed
    /// to at once.
    /// A few Redis round trips per relay (`Redis` bounds its connections).
    async fn route_past(&self, workspace: &str, owner: &str) -> Option<Route> {
        let c = self.cluster.as_ref()?;
        let lease = Duration::from_millis(c.cfg.lease_ms);
        let poll = Duration::from_millis((c.cfg.lease_ms / 6).max(10));
        let deadline = tokio::time::Instant::now() + lease + poll;
        loop {
            match self.route(workspace).await.ok()? {
                Route::Remote(o) if o == owner => {}
                moved => return Some(moved),
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let wait = match c.redis.lease_left(workspace, owner).await {
                // 1 ms past the lapse: Redis expires a key at its PX instant.
                Ok(Some(ms)) => Duration::from_millis(ms.saturating_add(1)),
                Ok(None) => Duration::ZERO,
                Err(e) => {
                    self.backplane_down(&e);
                    poll
                }
            };
            tokio::time::sleep(wait.min(left)).await;
        }
    }
}

/// A relay could not reach the owner (refused, reset, timed out); what the client
/// gets if it stays lost.
#[derive(Debug)]
pub struct OwnerLost(pub axum::response::Response);

/// What a relay asks a workspace's owner for.
#[derive(Debug)]
pub enum Ask<'a> {
    /// A WebSocket handshake.
    Ws {
        path_and_query: &'a str,
        authorization: Option<&'a axum::http::HeaderValue>,
    },
    Http(&'a Relayable<'a>),
}

/// The owner's answer: its upgraded socket or refusal, or its HTTP response.
pub enum Answer {
    /// Boxed: a socket is large beside a response.
    Ws(Result<Box<super::proxy::Upstream>, axum::response::Response>),
    Http(axum::response::Response),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ws(Ok(_)) => f.write_str("Ws(upgraded)"),
            Answer::Ws(Err(r)) | Answer::Http(r) => write!(f, "{}", r.status()),
        }
    }
}

/// Where a relayed request ended up.
#[derive(Debug)]
pub enum Reached {
    /// The workspace moved here while the owner was lost.
    Here(Arc<Shard>),
    Owner(Answer),
}

/// An HTTP request as it would be relayed to the workspace's owner.
#[derive(Debug)]
pub struct Relayable<'a> {
    pub method: axum::http::Method,
    pub path_and_query: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    pub body: axum::body::Bytes,
}

/// Where an HTTP request is answered.
#[derive(Debug)]
pub enum Here {
    Shard(Arc<Shard>),
    /// The owner's answer.
    Relayed(axum::response::Response),
}

impl ShardInner {
    /// This node no longer owns the workspace: every connection closes with 1012 and
    /// reconnects (to whichever node; the owner's stream has every confirmed write).
    fn step_down(&mut self, metrics: &super::metrics::Metrics, why: &'static str) {
        metrics.step_downs_total.inc();
        tracing::warn!(workspace = self.core.id(), why, "stepping down");
        self.stream = None;
        self.close_all(rtsync_protocol::close::SERVICE_RESTART, why);
    }
}

/// The owned workspaces: shard, id, lease value, token.
fn owned(server: &Server) -> Vec<(Arc<Shard>, String, String, u64)> {
    server
        .shards()
        .into_iter()
        .filter_map(|shard| {
            let s = shard.lock();
            let st = s.stream.as_ref()?;
            let x = (s.core.id().to_owned(), st.lease.clone(), st.token);
            drop(s);
            Some((shard, x.0, x.1, x.2))
        })
        .collect()
}

/// Round trips to Redis a flush round has in flight at most: one connection each.
pub const FLUSH_IN_FLIGHT_MAX: usize = 8;

/// Sends every owned workspace's unconfirmed steps on each commit's wake-up (or every
/// 50 ms): one job per workspace per round, up to [`FLUSH_IN_FLIGHT_MAX`] workspaces at
/// once, so Redis takes them in one event-loop turn and one `fsync` (with `appendfsync
/// always`) covers them all. One at a time, each workspace paid its own `fsync`: side by
/// side at 97 200 deliveries/s on one node, best of three, p50 6.8 ms and p90 26 ms
/// against 3.8 and 8.5 ms now (docs/performance.md, "Several nodes"). A workspace's
/// jobs stay in order: its next is taken only in the next round. Redis confirms: the frames waiting are released.
/// Fenced off: the workspace steps down. Redis unreachable: the workspace's
/// connections close (1011) and nothing that waited is sent.
pub async fn flush_loop(server: Arc<Server>, c: Arc<Cluster>) {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            () = c.flush.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let jobs: Vec<_> = server
            .shards()
            .into_iter()
            .filter_map(|shard| {
                let mut s = shard.lock();
                let ShardInner { stream, core, .. } = &mut *s;
                let st = stream.as_mut()?;
                let (job, through) = st.take_job(core)?;
                let (ws, lease, token) = (core.id().to_owned(), st.lease.clone(), st.token);
                drop(s);
                Some((shard, job, through, ws, lease, token))
            })
            .collect();
        futures_util::stream::iter(jobs)
            .for_each_concurrent(
                FLUSH_IN_FLIGHT_MAX,
                |(shard, job, through, ws, lease, token)| {
                    let (server, c) = (&server, &c);
                    async move {
                        let result = match &job {
                            Job::Append(steps) => c.redis.append(&ws, &lease, token, steps).await,
                            Job::Replace(step) => c.redis.replace(&ws, &lease, token, step).await,
                        };
                        flushed(server, &shard, &ws, token, through, result);
                    }
                },
            )
            .await;
    }
}

/// What became of one workspace's flush job.
fn flushed(
    server: &Server,
    shard: &Shard,
    ws: &str,
    token: u64,
    through: u64,
    result: std::io::Result<bool>,
) {
    let mut s = shard.lock();
    // Stepped down meanwhile (a renewal found the lease gone).
    if s.stream.as_ref().map(|st| st.token) != Some(token) {
        return;
    }
    match result {
        Ok(true) => {
            if let Some(st) = s.stream.as_mut() {
                st.mark_synced(through);
                let synced = st.synced_total();
                s.durable.advance(synced);
            }
        }
        Ok(false) => s.step_down(
            &server.metrics,
            "lease lost: another node owns this workspace now; reconnect",
        ),
        Err(e) => {
            server.metrics.storage_errors_total.inc();
            server.metrics.redis_errors_total.inc();
            tracing::warn!(workspace = ws, error = %e, "append to Redis failed: workspace closed");
            s.stream = None;
            s.fail();
        }
    }
}

/// Renews every owned lease each third of its length, `RENEW_BATCH` leases per round
/// trip. Lost: step down. Unreachable: step down once the lease may lapse before the
/// next try could succeed.
pub async fn renew_loop(server: Arc<Server>, c: Arc<Cluster>) {
    let lease_ms = c.cfg.lease_ms;
    let mut every = tokio::time::interval(Duration::from_millis(lease_ms / 3));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for batch in owned(&server).chunks(crate::cluster::redis::RENEW_BATCH) {
            let sent_ms = server.now_ms();
            let leases: Vec<(&str, &str)> = batch
                .iter()
                .map(|(_, ws, lease, _)| (ws.as_str(), lease.as_str()))
                .collect();
            let result = c.redis.renew_all(&leases, lease_ms).await;
            if let Err(e) = &result {
                server.metrics.redis_errors_total.inc();
                tracing::warn!(error = %e, leases = batch.len(), "lease renewal failed");
            }
            for (i, (shard, _, _, token)) in batch.iter().enumerate() {
                let mut s = shard.lock();
                let Some(st) = s.stream.as_mut().filter(|st| st.token == *token) else {
                    continue;
                };
                match result.as_ref().map(|r| r[i]) {
                    Ok(true) => st.renewed_at_ms = sent_ms,
                    Ok(false) => s.step_down(
                        &server.metrics,
                        "lease lost: another node owns this workspace now; reconnect",
                    ),
                    Err(_) => {
                        let held_ms = server.now_ms().saturating_sub(st.renewed_at_ms);
                        if held_ms + lease_ms / 3 >= lease_ms {
                            s.step_down(&server.metrics, "this node lost Redis; reconnect");
                        }
                    }
                }
            }
        }
    }
}

/// At shutdown: gives up every lease still held, so another node takes the
/// workspaces at once instead of after `lease_ms`.
pub async fn release_all(server: &Server, c: &Cluster) {
    for (_, ws, lease, _) in owned(server) {
        let _ = c.redis.release(&ws, &lease).await;
    }
}
