//! The axum edge: sockets, locks and time around the sans-IO core.
//!
//! - [`serve`] — runs the server on any `axum::serve::Listener` until `shutdown`;
//!   `listen` — the accept loop (header-read timeout, handshake bound) and [`tcp`].
//! - `ws` / `sse` / `http` — the endpoints; `auth` — tokens and admission;
//!   `durable` — each workspace's log opened at start and written before frames leave;
//!   `outbound` — bounded per-connection queues; `metrics` — `/metrics`; `error` — HTTP errors.
//!
//! Locking: one `std::sync::Mutex` per workspace (a [`Shard`]) guards its core and its
//! connections' outbound queues; the core's outputs are pushed into those queues while
//! the lock is held, which is what keeps every session's stream in seq order. Nothing
//! awaits while a lock is held.

mod auth;
mod durable;
mod error;
mod http;
mod listen;
mod log;
pub mod metrics;
pub mod outbound;
mod owner;
mod proxy;
mod sse;
mod ws;

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::core::{ConnId, Delivery, Frame, FrameKind, Workspace};
use axum::Router;
use axum::routing::{get, post};
use metrics::Metrics;
use outbound::Outbound;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};

pub use error::ApiError;
pub use listen::{Abort, Tcp, tcp};
pub use owner::{Cluster, Here, Route};

/// One workspace: its core and the outbound queues of its connections.
#[derive(Debug)]
pub struct ShardInner {
    pub core: Workspace,
    /// The workspace's durable log (`None`: durability `memory`).
    log: Option<crate::storage::WorkspaceLog>,
    /// Several nodes: this node owns the workspace, and these are its steps on their
    /// way to its Redis stream (`None`: not clustered, or stepped down).
    stream: Option<crate::cluster::StreamLog>,
    /// Its log could not be read back after a failed write: every connection was
    /// closed, and the next `Server::shard` opens it afresh.
    failed: bool,
    /// Group commit: how far the log is synced (`WorkspaceLog::synced_total`). Frames
    /// carrying a larger `durable_at` wait for it in their connection's writer; HTTP
    /// answers wait too. Replaced (old receivers see it gone) when the workspace fails.
    durable: Arc<durable::Watermark>,
    outs: BTreeMap<ConnId, Outbound>,
    /// Budgets of `POST /api/events`: per session (`user` + `sessionId`), as one
    /// WebSocket connection's, and per user, as its most connections' together.
    posts: PostBudgets,
}

/// A POST takes a token from its session's bucket and from its user's. Per session,
/// because every tab of a user writes over its own connection; per user too, because
/// `sessionId` is the client's to choose and must not multiply a flooder's budget.
#[derive(Debug)]
pub struct PostBudgets {
    session: crate::core::ratelimit::PerUser,
    user: crate::core::ratelimit::PerUser,
}

impl PostBudgets {
    fn new(cfg: &ServerConfig) -> Self {
        let per_user = cfg.connections_per_user_max.max(1) as f64;
        PostBudgets {
            session: crate::core::ratelimit::PerUser::new(
                cfg.inbound_rate_per_s,
                cfg.inbound_burst,
                POST_BUDGET_KEYS_MAX,
            ),
            user: crate::core::ratelimit::PerUser::new(
                cfg.inbound_rate_per_s * per_user,
                cfg.inbound_burst.saturating_mul(per_user as u32),
                POST_BUDGET_KEYS_MAX,
            ),
        }
    }

    /// Ok, or the milliseconds to wait.
    pub fn take(&mut self, user: &str, session: &str, now_ms: u64) -> Result<(), u64> {
        self.session
            .take(&format!("{user}\u{0}{session}"), now_ms)?;
        self.user.take(user, now_ms)
    }
}

#[derive(Debug)]
pub struct Shard {
    inner: Mutex<ShardInner>,
}

/// The refill of a connection's writer: the next replay batch of `conn` from the core,
/// and whether more will follow.
pub fn replay_refill(shard: Arc<Shard>, conn: ConnId) -> outbound::Refill {
    Box::new(move || {
        let mut s = shard.lock();
        // A replay reads the log as it is now: it waits for what is not yet synced.
        let gate = s.durable_gate();
        let frames = s
            .core
            .continue_replay(conn)
            .into_iter()
            .map(|d| Frame {
                durable_at: gate,
                ..d.frame
            })
            .collect();
        (frames, s.core.is_replaying(conn))
    })
}

impl Shard {
    pub fn lock(&self) -> MutexGuard<'_, ShardInner> {
        // A panic while holding the lock is a bug; the state is still consistent
        // enough to serve (every core method finishes its writes before returning).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Group commit: resolves once the log is synced through `gate` (at once for 0); an
/// error when the workspace's storage failed meanwhile (the write may be lost).
pub async fn durable(synced: Arc<durable::Watermark>, gate: u64) -> Result<(), ApiError> {
    synced.wait(gate).await.map_err(|_| {
        ApiError::unavailable(
            "UNAVAILABLE",
            "this workspace's storage failed; retry later",
            1,
        )
    })
}

impl ShardInner {
    /// Pushes the core's outputs into the connections' queues. A queue that is full
    /// closes its connection (1013) and is fed nothing more.
    pub fn deliver(&mut self, out: Vec<Delivery>, metrics: &Metrics) {
        let mut slow = Vec::new();
        let gate = self.durable_gate();
        for mut d in out {
            d.frame.durable_at = gate;
            if let FrameKind::Error(_) = d.frame.kind {
                metrics.errors_sent_total.inc();
            }
            if let Some(o) = self.outs.get(&d.to)
                && o.push(d.frame).is_err()
            {
                o.close(outbound::CloseReason {
                    code: rtsync_protocol::close::TRY_AGAIN_LATER,
                    reason: "slow consumer: outbound queue full",
                    flush: false,
                });
                slow.push(d.to);
            }
        }
        // A slow consumer is fed nothing more, but its session stays in the workspace
        // until its socket is gone (`detach`): what the client sends meanwhile is still
        // applied and answered, never read and silently dropped.
        for conn in slow {
            if self.outs.remove(&conn).is_some() {
                metrics.closes_slow_consumer_total.inc();
            }
        }
    }

    /// After a connect or a `RESUME`: if the core is replaying to `conn` in batches,
    /// its writer pulls the next batch each time its queue drains (`OutboundRx::next`).
    pub fn note_replay(&self, conn: ConnId) {
        if self.core.is_replaying(conn)
            && let Some(o) = self.outs.get(&conn)
        {
            o.set_replaying();
        }
    }

    /// Group commit: what a frame produced now must wait for (0: nothing unsynced).
    /// Every frame produced while the log has unsynced records waits, whether or not
    /// it shows them (a `CONNECTED`'s seq does), which also keeps each connection's
    /// frames in order.
    pub fn durable_gate(&self) -> u64 {
        let file = self.log.as_ref().map_or(0, |l| l.unsynced_through());
        file.max(self.stream.as_ref().map_or(0, |s| s.unsynced_through()))
    }

    /// The group-commit watermark, for a connection's writer or an HTTP answer.
    pub fn durable_rx(&self) -> Arc<durable::Watermark> {
        self.durable.clone()
    }

    /// Closes every connection (1011): the workspace's storage failed.
    fn fail(&mut self) {
        self.close_all(
            rtsync_protocol::close::INTERNAL,
            "workspace storage failed; reconnect",
        );
    }

    /// Closes every connection with `code`; the next `Server::shard`/`route` opens
    /// the workspace afresh. Frames still waiting for a sync are never sent.
    fn close_all(&mut self, code: u16, reason: &'static str) {
        self.failed = true;
        // Whoever waits for a sync that will not come is told so.
        self.durable.close();
        for o in self.outs.values() {
            o.close(outbound::CloseReason {
                code,
                reason,
                flush: true,
            });
        }
        self.outs.clear();
    }

    pub fn attach(&mut self, conn: ConnId, out: Outbound) {
        self.outs.insert(conn, out);
    }

    pub fn detach(&mut self, conn: ConnId, now_ms: u64) {
        self.outs.remove(&conn);
        self.core.disconnect(conn, now_ms);
    }
}

/// Sessions (and users) per workspace whose `POST /api/events` budget is kept.
const POST_BUDGET_KEYS_MAX: usize = 4096;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Server {
    pub cfg: Arc<ServerConfig>,
    pub clock: Arc<dyn Clock>,
    pub epoch: u64,
    pub metrics: Metrics,
    /// Rate-limited warnings for operators (auth failures, refusals, closes).
    log: log::Limiter,
    workspaces: Mutex<BTreeMap<String, Arc<Shard>>>,
    next_conn: AtomicU64,
    limits: Mutex<auth::Admission>,
    /// Connections that have not sent their first request yet (slowloris bound).
    handshakes: listen::Handshakes,
    shutdown: watch::Receiver<bool>,
    idle: Notify,
    /// Several nodes over Redis (`None`: this node serves every workspace itself).
    cluster: Option<Arc<Cluster>>,
}

impl Server {
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The workspace's shard, opened (its log created) on first use. An error: its
    /// log cannot be created or read (answered 503; nothing else is affected).
    pub fn shard(&self, workspace: &str) -> Result<Arc<Shard>, ApiError> {
        let mut map = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(workspace)
            && !s.lock().failed
        {
            return Ok(s.clone());
        }
        let (core, log) = durable::create(self, workspace).map_err(|e| {
            self.metrics.storage_errors_total.inc();
            log::warn_limited!(self, log::Kind::Storage, error = %e, "workspace log unavailable");
            ApiError::unavailable(
                "UNAVAILABLE",
                "this workspace's storage is unavailable; retry later",
                1,
            )
        })?;
        let shard = self.new_shard(core, log);
        map.insert(workspace.to_owned(), shard.clone());
        Ok(shard)
    }

    fn new_shard(&self, core: Workspace, log: Option<crate::storage::WorkspaceLog>) -> Arc<Shard> {
        Arc::new(Shard {
            inner: Mutex::new(ShardInner {
                durable: durable::Watermark::new(log.as_ref().map_or(0, |l| l.synced_total())),
                core,
                log,
                stream: None,
                failed: false,
                outs: BTreeMap::new(),
                posts: PostBudgets::new(&self.cfg),
            }),
        })
    }

    fn shards(&self) -> Vec<Arc<Shard>> {
        self.workspaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn active(&self) -> u64 {
        self.metrics.active()
    }
}

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/events/subscribe", get(sse::subscribe))
        .route("/api/events", post(http::post_event))
        .route("/api/entities/{kind}", get(http::list_entities))
        .route("/api/entities/{kind}/{id}", get(http::get_entity))
        .route("/api/analytics/performance", post(http::analytics))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            http::refuse_announced_oversize,
        ))
        .layer(http::cors(&server.cfg.cors_origins))
        .layer(axum::extract::DefaultBodyLimit::max(
            server.cfg.frame_bytes_max,
        ))
        .with_state(server)
}

/// Why `serve` did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
}

/// Runs the server on `listener` until `shutdown` resolves; then every client gets
/// 1001, and this returns once all connections are gone or `drain_timeout_ms` passed.
/// Holds no global state: it can run several times in one process (turmoil restarts).
pub async fn serve<L>(
    listener: L,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: axum::serve::Listener,
{
    config.validate().map_err(ServeError::Config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Held here and by the signal, so receivers see `true` rather than a dropped sender.
    let stop_tx = Arc::new(stop_tx);
    let epoch = config.epoch.unwrap_or_else(|| clock.now_ms());
    let metrics = Metrics::default();
    // Several nodes: the workspaces live in Redis streams, not in the data directory.
    let cluster = match (&config.cluster.redis, config.cluster.advertise.clone()) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ServeError::Config(
                "--redis needs --advertise HOST:PORT: the address other nodes reach this one at"
                    .into(),
            ));
        }
        (Some(_), Some(node)) => {
            Cluster::new(&config.cluster, node, metrics.redis_round_trip.clone())
                .map_err(ServeError::Config)?
        }
    };
    let logs = if cluster.is_some() {
        BTreeMap::new()
    } else {
        durable::open_all(&config, epoch).map_err(ServeError::Storage)?
    };
    let server = Arc::new(Server {
        limits: Mutex::new(auth::Admission::new(&config)),
        handshakes: listen::Handshakes::default(),
        cfg: Arc::new(config),
        clock,
        epoch,
        metrics,
        log: log::Limiter::default(),
        workspaces: Mutex::new(BTreeMap::new()),
        next_conn: AtomicU64::new(0),
        shutdown: stop_rx,
        idle: Notify::new(),
        cluster: cluster.clone(),
    });
    {
        let mut map = server.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        for (id, (core, log)) in logs {
            map.insert(id, server.new_shard(core, Some(log)));
        }
    }
    let ticker = tokio::spawn(tick_loop(server.clone()));
    let syncer = (server.cfg.durability == crate::storage::Durability::Group)
        .then(|| tokio::spawn(durable::group_commit_loop(server.clone())));
    let cluster_tasks = cluster.as_ref().map(|c| {
        [
            tokio::spawn(owner::flush_loop(server.clone(), c.clone())),
            tokio::spawn(owner::renew_loop(server.clone(), c.clone())),
        ]
    });
    let app = router(server.clone());
    let drain = Duration::from_millis(server.cfg.drain_timeout_ms);
    let stop = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut http = listen::accept_loop(listener, app, server.clone()).await;
    // One drain time for everything: the HTTP connections (SSE streams end themselves
    // at shutdown), then the WebSockets, which left hyper at their upgrade.
    let _ = tokio::time::timeout(drain, async {
        let _ = http.recv().await;
        while server.active() > 0 {
            let idle = server.idle.notified();
            if server.active() == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), idle).await;
        }
    })
    .await;
    ticker.abort();
    if let Some(s) = syncer {
        s.abort();
    }
    if let (Some(tasks), Some(c)) = (cluster_tasks, &cluster) {
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        owner::release_all(&server, c).await;
    }
    drop(stop_tx);
    Ok(())
}

/// Periodic work of every workspace: presence diffs, throttled cursors, history age.
async fn tick_loop(server: Arc<Server>) {
    let mut every = tokio::time::interval(Duration::from_millis(server.cfg.tick_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = server.now_ms();
        for shard in server.shards() {
            let mut s = shard.lock();
            let out = s.core.tick(now);
            s.deliver(out, &server.metrics);
        }
    }
}
