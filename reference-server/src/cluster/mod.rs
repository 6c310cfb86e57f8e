//! Several server nodes sharing workspaces through Redis (docs/cluster.md).
//!
//! Each workspace has one owner node at a time, holding a lease with a fencing token;
//! the owner runs the unchanged sans-IO core and appends its steps to the workspace's
//! Redis Stream, each append refused by Redis unless the lease is still the owner's.
//! Another node proxies its clients' WebSockets to the owner. A new owner rebuilds the
//! core by replaying the stream (the same records as the file log) and keeps the epoch,
//! so clients resume.
//!
//! - [`resp`] — a minimal RESP2 client over any byte stream (real or simulated TCP).
//! - [`redis`] — the backplane operations (lease, renew, fenced append, compaction, read)
//!   as Lua scripts.
//! - [`stream_log`] — the owner's unconfirmed steps, sans-IO.
//! - [`replay`] — a stream's steps back into a core.
//! - [`local`] — a throwaway `redis-server` for tests, live mode and a local cluster.
//!
//! The edge's side (ownership, the flusher, renewals, the proxy) is in
//! `edge/owner.rs` and `edge/proxy.rs`.

pub mod local;
pub mod redis;
pub mod resp;
pub mod stream_log;

use crate::core::{CoreConfig, Record, Workspace};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

pub use local::LocalRedis;
pub use redis::{Lease, Redis, RedisUrl, StreamEntry};
pub use stream_log::StreamLog;

/// A connected byte stream to another node or to Redis.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// How a node dials out (Redis, other nodes): real TCP, or turmoil's in the simulator.
pub trait Net: Send + Sync + std::fmt::Debug {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'a>>;
}

/// Real TCP, with `TCP_NODELAY` (small frames must not wait for delayed ACKs).
#[derive(Debug)]
pub struct RealNet;

impl Net for RealNet {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'a>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxIo)
        })
    }
}

#[derive(Debug, Clone)]
pub struct NetHandle(pub Arc<dyn Net>);

impl Default for NetHandle {
    fn default() -> Self {
        NetHandle(Arc::new(RealNet))
    }
}

impl std::ops::Deref for NetHandle {
    type Target = dyn Net;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

fn d() -> ClusterConfig {
    ClusterConfig::default()
}

/// Several nodes: off unless `redis` is set.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Share workspaces with other nodes through this Redis
    /// (`redis://[:password@]host[:port][/db]`). Workspaces then live in Redis Streams,
    /// not in `data_dir`: an ACK promises what that Redis's persistence promises
    /// (docs/cluster.md, "Durability").
    #[arg(long)]
    pub redis: Option<String>,
    /// The address other nodes reach this node at (`host:port`); default: the address
    /// it listens on. Must be unique per live node: it names the lease's holder.
    #[arg(long)]
    pub advertise: Option<String>,
    /// A workspace's owner holds its lease this long past each renewal (every third of
    /// it). A dead owner's workspaces move after at most this long.
    #[arg(long, default_value_t = d().lease_ms)]
    pub lease_ms: u64,
    /// A workspace's stream is replaced by a snapshot of its state past this many steps,
    /// bounding Redis's memory and a takeover's replay.
    #[arg(long, default_value_t = d().stream_compact_steps)]
    pub stream_compact_steps: u64,
    /// Each Redis call must answer within this long, else it is an error (the
    /// workspace's connections close and its clients reconnect).
    #[arg(long, default_value_t = d().redis_timeout_ms)]
    pub redis_timeout_ms: u64,
    /// A deliberately broken cluster for the simulator's canary: appends skip the
    /// fencing check, so a deposed owner's late write lands. Only a scenario key.
    #[arg(skip)]
    pub canary_unfenced: bool,
    /// How nodes dial out: real TCP, or the simulator's.
    #[arg(skip)]
    #[serde(skip)]
    pub net: NetHandle,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            advertise: None,
            lease_ms: 3000,
            stream_compact_steps: 10_000,
            redis_timeout_ms: 2000,
            canary_unfenced: false,
            net: NetHandle::default(),
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.redis else {
            return Ok(());
        };
        url.parse::<RedisUrl>()?;
        if self.lease_ms < 300 {
            return Err(format!(
                "lease_ms ({}) must be at least 300: renewals go every third of it",
                self.lease_ms
            ));
        }
        if self.redis_timeout_ms == 0 || self.redis_timeout_ms >= self.lease_ms {
            return Err(format!(
                "redis_timeout_ms ({}) must be above 0 and below lease_ms ({})",
                self.redis_timeout_ms, self.lease_ms
            ));
        }
        Ok(())
    }
}

/// Why a stream could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("stream entry {index}: {why}")]
    Bad { index: usize, why: String },
    #[error(
        "stream entry {index} was written with fencing token {token}, after token {before}: two owners wrote"
    )]
    Fencing {
        index: usize,
        token: u64,
        before: u64,
    },
}

/// Rebuilds a workspace from its stream (`None` when the stream is empty: a new
/// workspace). The same records and the same `restore` as the file log's replay.
/// Tokens must not go down along the stream: a lower one after a higher one would
/// mean a deposed owner's write got in.
pub fn replay(
    entries: &[StreamEntry],
    cfg: &Arc<CoreConfig>,
    new_epoch: u64,
) -> Result<Option<Workspace>, ReplayError> {
    let mut core: Option<Workspace> = None;
    let mut restored = false;
    let mut token = 0;
    for (index, e) in entries.iter().enumerate() {
        if e.token < token {
            return Err(ReplayError::Fencing {
                index,
                token: e.token,
                before: token,
            });
        }
        token = e.token;
        let bad = |why: String| ReplayError::Bad { index, why };
        let step: Vec<Record> = serde_json::from_str(&e.step).map_err(|e| bad(e.to_string()))?;
        for r in step {
            let ws = core.get_or_insert_with(|| {
                let id = match &r {
                    Record::Epoch { workspace, .. } => workspace.clone(),
                    _ => String::new(),
                };
                Workspace::new(id, new_epoch, cfg.clone())
            });
            ws.restore(r, &mut restored)
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    Ok(core)
}
