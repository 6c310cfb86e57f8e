//! The edge's side of durability: open every workspace's log at start, and write a
//! step's records before any of its frames leave (docs/durability.md).
//!
//! Write-before-ack holds because the append happens under the workspace's lock,
//! after the core's step and before `deliver`: nothing the step produced — ACK,
//! fan-out, a replay reading the new events — can be seen until it is written (and,
//! with `fsync`, synced). When the write fails, the step's frames are dropped, the
//! writer is answered `UNAVAILABLE` (nothing applied: resend later), and the core is
//! rebuilt from the log, so it holds exactly what is on disk.

use super::{Server, ShardInner};
use crate::config::ServerConfig;
use crate::core::{CoreConfig, Delivery, Workspace};
use crate::storage::{Durability, LogOptions, OpenError, WorkspaceLog, path_of};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Group commit: how far a workspace's log is synced, for the frames and answers that
/// wait on it. Not a `tokio::sync::watch`: its receivers park on one of eight `Notify`s
/// picked at random, so waiters woke in a different order each run and the simulation
/// stopped being a function of its seed (found by comparing two runs). One `Notify`
/// wakes in the order they came.
#[derive(Debug, Default)]
pub struct Watermark {
    synced: std::sync::atomic::AtomicU64,
    /// The workspace failed: what waits will never be synced.
    closed: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// The workspace's storage failed while a frame or an answer waited for its sync.
#[derive(Debug, Clone, Copy)]
pub struct StorageFailed;

impl Watermark {
    pub fn new(synced: u64) -> Arc<Self> {
        let w = Watermark::default();
        w.synced.store(synced, std::sync::atomic::Ordering::Release);
        Arc::new(w)
    }

    pub fn get(&self) -> u64 {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn advance(&self, to: u64) {
        self.synced
            .fetch_max(to, std::sync::atomic::Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once synced through `gate` (at once for 0).
    pub async fn wait(&self, gate: u64) -> Result<(), StorageFailed> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the checks, so an advance between them is not missed.
            notified.as_mut().enable();
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(StorageFailed);
            }
            if self.get() >= gate {
                return Ok(());
            }
            notified.await;
        }
    }
}

/// How long a writer refused `UNAVAILABLE` is told to wait.
pub const UNAVAILABLE_RETRY_MS: u64 = 1000;

/// The answer to a write that could not be made durable: nothing applied, resend.
pub fn unavailable(op_id: Option<String>) -> rtsync_protocol::ErrorPayload {
    rtsync_protocol::ErrorPayload {
        code: rtsync_protocol::ErrorCode::Unavailable,
        message: "the server could not store this write (disk full or I/O error); nothing was applied: send it again later".into(),
        op_id,
        expected_n: None,
        retry_after_ms: Some(UNAVAILABLE_RETRY_MS),
    }
}

/// The core config of every workspace of this server.
pub fn core_config(cfg: &ServerConfig) -> Arc<CoreConfig> {
    let mut core = cfg.core.clone();
    // A quarter of the outbound queue for answers to a client's own writes leaves the
    // rest for fan-out, presence and heartbeats.
    core.inflight_max = (cfg.outbound_messages_max / 4).max(1);
    Arc::new(core)
}

fn options(cfg: &ServerConfig) -> LogOptions {
    LogOptions {
        mode: cfg.durability,
        compact_bytes: cfg.compact_bytes,
        accept_damage: cfg.accept_damage,
    }
}

/// Opens every log in the data directory (creating it). A damaged log stops the start
/// unless `accept_damage`; a torn tail is cut and said so.
pub fn open_all(
    cfg: &ServerConfig,
    epoch: u64,
) -> Result<BTreeMap<String, (Workspace, WorkspaceLog)>, String> {
    let mut out = BTreeMap::new();
    if cfg.durability == Durability::Memory {
        return Ok(out);
    }
    let dir = &cfg.data_dir;
    let disk = &*cfg.disk;
    disk.create_dir_all(dir)
        .map_err(|e| format!("data dir {}: {e}", dir.display()))?;
    let files = disk
        .list(dir, ".log")
        .map_err(|e| format!("data dir {}: {e}", dir.display()))?;
    let core = core_config(cfg);
    for path in files {
        let (ws, log, rec) =
            match WorkspaceLog::open(disk, &path, None, epoch, &core, &options(cfg)) {
                Ok(x) => x,
                // Created by a start that crashed before its first record was synced: no
                // write was ever acknowledged from it; the next connection recreates it.
                Err(OpenError::Empty { .. }) => continue,
                Err(e) => return Err(e.to_string()),
            };
        if rec.torn_bytes > 0 || rec.damaged_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = rec.torn_bytes,
                damaged_bytes = rec.damaged_bytes,
                "log recovered: a torn tail was cut or damage accepted (new epoch)"
            );
        }
        out.insert(ws.id().to_owned(), (ws, log));
    }
    Ok(out)
}

/// A new workspace's log (its first record written and synced), or `None` in memory.
pub fn create(server: &Server, id: &str) -> Result<(Workspace, Option<WorkspaceLog>), OpenError> {
    let cfg = &server.cfg;
    let core = core_config(cfg);
    if cfg.durability == Durability::Memory {
        return Ok((Workspace::new(id, server.epoch, core), None));
    }
    let path = path_of(&cfg.data_dir, id);
    let (ws, log, _) = WorkspaceLog::open(
        &*cfg.disk,
        &path,
        Some(id),
        server.epoch,
        &core,
        &options(cfg),
    )?;
    Ok((ws, Some(log)))
}

/// Group commit: every `group_commit_ms`, each workspace with unsynced records is
/// synced once — outside its lock, on a duplicated handle (on a real disk in the
/// blocking pool) — and its frames waiting on that are released. A failed sync fails
/// the workspace: its connections close (1011) and no frame that waited is sent.
pub async fn group_commit_loop(server: Arc<Server>) {
    let period = std::time::Duration::from_millis(server.cfg.group_commit_ms.max(1));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for shard in server.shards() {
            let job = shard.lock().log.as_ref().and_then(|l| l.sync_job());
            let result = match job {
                None => continue,
                Some(Err(e)) => Err(e),
                Some(Ok(mut job)) => {
                    if server.cfg.disk.blocks() {
                        tokio::task::spawn_blocking(move || job.file.sync().map(|()| job))
                            .await
                            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    } else {
                        job.file.sync().map(|()| job)
                    }
                }
            };
            let mut s = shard.lock();
            match result {
                Ok(job) => {
                    if let Some(log) = s.log.as_mut() {
                        log.mark_synced(&job);
                        let synced = log.synced_total();
                        s.durable.advance(synced);
                    }
                }
                Err(e) => {
                    server.metrics.storage_errors_total.inc();
                    super::log::warn_limited!(server, super::log::Kind::Storage, error = %e, "group sync failed: workspace closed");
                    s.fail();
                }
            }
        }
    }
}

impl ShardInner {
    /// Persists what the core's last step changed, then delivers its frames. `false`:
    /// the write failed, nothing was delivered and the core is back to what the log
    /// holds; the caller answers the writer `UNAVAILABLE`.
    pub fn commit(&mut self, out: Vec<Delivery>, server: &Server) -> bool {
        let records = self.core.take_journal();
        // Several nodes: the step goes to the workspace's Redis stream; its frames wait
        // (`durable_at`) until Redis confirms it (edge/owner.rs).
        if let Some(stream) = self.stream.as_mut()
            && !records.is_empty()
        {
            stream.append(&records);
            if let Some(c) = &server.cluster {
                c.wake();
            }
        }
        if let Some(log) = self.log.as_mut()
            && !records.is_empty()
        {
            if let Err(e) = log.append(&records) {
                server.metrics.storage_errors_total.inc();
                if let Err(e) = log.roll_back(&*server.cfg.disk) {
                    let path = log.path().display().to_string();
                    super::log::warn_limited!(server, super::log::Kind::Storage, %path, error = %e, "cutting a failed write back failed: workspace closed");
                    self.fail();
                    return false;
                }
                let path = log.path().display().to_string();
                super::log::warn_limited!(server, super::log::Kind::Storage, %path, error = %e, "append failed: write refused, core reloaded from the log");
                self.reload(server);
                return false;
            }
            if log.wants_compaction()
                && let Err(e) = log.compact(&*server.cfg.disk, &self.core)
            {
                // The old file is intact (the new one replaces it atomically or not at
                // all): only the disk it takes keeps growing.
                server.metrics.storage_errors_total.inc();
                let path = log.path().display().to_string();
                super::log::warn_limited!(server, super::log::Kind::Storage, %path, error = %e, "compaction failed");
            }
        }
        // The file was replaced (this step in it, synced) but not reopened: reopen it
        // before anything else is appended through a handle on the old one.
        if self.log.as_ref().is_some_and(|l| l.is_broken()) {
            self.reload(server);
        }
        self.deliver(out, &server.metrics);
        true
    }

    /// Rebuilds the core from the log after a failed write, keeping the sessions. If
    /// the log cannot even be read, the workspace closes every connection (1011) and
    /// is opened afresh by the next one.
    fn reload(&mut self, server: &Server) {
        let Some(path) = self.log.as_ref().map(|l| l.path().to_owned()) else {
            return;
        };
        let core = core_config(&server.cfg);
        match WorkspaceLog::open(
            &*server.cfg.disk,
            &path,
            None,
            self.core.epoch(),
            &core,
            &options(&server.cfg),
        ) {
            Ok((mut fresh, mut log, _)) => {
                if let Some(old) = self.log.as_ref() {
                    log.carry_totals(old);
                }
                fresh.adopt_sessions(&mut self.core);
                self.core = fresh;
                self.log = Some(log);
            }
            Err(e) => {
                super::log::warn_limited!(server, super::log::Kind::Storage, error = %e, "reload failed: workspace closed");
                self.fail();
            }
        }
    }
}
