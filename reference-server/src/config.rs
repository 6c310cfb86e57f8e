//! Every bound and policy of the server, with its default. Nothing in the server is
//! unbounded: each queue, map and rate below has a limit, and each breach an answer.
//!
//! This is the one place a limit is written: the doc comment of a field is its
//! `reference-server serve --help` text (clap flattens [`ServerConfig`] into the CLI, one
//! `--flag-name` per field) and its documentation in a scenario's `[server]` table (serde,
//! the same names); `Default` holds the values both start from.

use crate::core::CoreConfig;
use crate::storage::{DiskHandle, Durability};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

fn d() -> ServerConfig {
    ServerConfig::default()
}

/// Server configuration. `Default` gives the documented defaults (docs/protocol.md,
/// Limits).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Bounds and policies of the domain core (history, presence grace, cursor
    /// throttle, default conflict strategies, op-answer window, entity cap, heartbeat).
    #[command(flatten)]
    #[serde(flatten)]
    pub core: CoreConfig,
    /// HS256 secret for JWTs. Empty is refused by `serve`. Not a flag or a scenario key:
    /// the binary reads it from `--jwt-secret` / `RTSYNC_JWT_SECRET` / `--dev`.
    #[arg(skip)]
    #[serde(skip)]
    pub jwt_secret: Vec<u8>,
    /// Inbound WebSocket message size; larger closes the connection with 1009.
    /// Also the body limit of `POST /api/events` and the analytics endpoint (413).
    #[arg(long, default_value_t = d().frame_bytes_max)]
    pub frame_bytes_max: usize,
    /// Inbound messages per second per connection (token bucket)…
    #[arg(long, default_value_t = d().inbound_rate_per_s)]
    pub inbound_rate_per_s: f64,
    /// …with this burst. A message over the rate is answered `ERROR RATE_LIMITED` and not processed.
    #[arg(long, default_value_t = d().inbound_burst)]
    pub inbound_burst: u32,
    /// More rate-limited messages than this within one second closes with 1008.
    #[arg(long, default_value_t = d().rate_strikes_per_s_max)]
    pub rate_strikes_per_s_max: u32,
    /// Outbound queue per connection, in messages…; a connection whose queue is full
    /// is a slow consumer and is closed with 1013 (it resumes from lastSeq).
    #[arg(long, default_value_t = d().outbound_messages_max)]
    pub outbound_messages_max: usize,
    /// …and in bytes of backlog (a single larger frame still goes to a reader that
    /// keeps up).
    #[arg(long, default_value_t = d().outbound_bytes_max)]
    pub outbound_bytes_max: usize,
    /// Open connections (WebSocket + SSE) on this server; past it: 503 + Retry-After.
    #[arg(long, default_value_t = d().connections_max)]
    pub connections_max: usize,
    /// Open connections per user; past it: 429 + Retry-After.
    #[arg(long, default_value_t = d().connections_per_user_max)]
    pub connections_per_user_max: usize,
    /// New connections per second, server-wide (token bucket), to flatten reconnect
    /// storms; past it: 503 + Retry-After.
    #[arg(long, default_value_t = d().admission_rate_per_s)]
    pub admission_rate_per_s: f64,
    /// …with this burst.
    #[arg(long, default_value_t = d().admission_burst)]
    pub admission_burst: u32,
    /// A connection must send a request's complete headers within this long of its
    /// accept, and again of the end of each response (the idle timeout of a kept-alive
    /// connection); else it is closed. Bounds slowloris.
    #[arg(long, default_value_t = d().header_read_timeout_ms)]
    pub header_read_timeout_ms: u64,
    /// Connections waiting for their first request's headers; one more evicts the
    /// oldest of them. With `connections_max`, bounds the file descriptors in use.
    #[arg(long, default_value_t = d().handshakes_max)]
    pub handshakes_max: usize,
    /// A WebSocket that sends nothing (not even `HEARTBEAT_ACK`) for this long is
    /// closed with 4000, so a half-open connection cannot keep a ghost online.
    #[arg(long, default_value_t = d().heartbeat_timeout_ms)]
    pub heartbeat_timeout_ms: u64,
    /// How often presence diffs, throttled cursors and history age are processed.
    #[arg(long, default_value_t = d().tick_ms)]
    pub tick_ms: u64,
    /// After shutdown starts (every client gets 1001), how long to wait for
    /// connections to finish before `serve` returns anyway.
    #[arg(long, default_value_t = d().drain_timeout_ms)]
    pub drain_timeout_ms: u64,
    /// tungstenite buffers. The read buffer is allocated up front for every
    /// connection and zero-filled on every read: tungstenite's 128 KiB default cost 5×
    /// in simulation throughput (docs/performance.md, "Simulator speed"); 2 KiB holds
    /// any usual client frame in one read and keeps an idle connection at ≈ 15 KB
    /// (4 KiB: ≈ 17 KB; a larger frame only takes more reads). docs/performance.md,
    /// "Side by side", has the figures.
    #[arg(long, default_value_t = d().ws_read_buffer_bytes)]
    pub ws_read_buffer_bytes: usize,
    /// tungstenite's write buffer per connection: frames are batched up to this before
    /// a write to the socket.
    #[arg(long, default_value_t = d().ws_write_buffer_bytes)]
    pub ws_write_buffer_bytes: usize,
    /// `retry:` sent once on every SSE stream.
    #[arg(long, default_value_t = d().sse_retry_ms)]
    pub sse_retry_ms: u64,
    /// Origins allowed by CORS on the HTTP endpoints (repeat the flag for more); empty =
    /// none, `*` = any (the default with `--dev`). Not a scenario key.
    #[arg(long = "cors-origin")]
    #[serde(skip)]
    pub cors_origins: Vec<String>,
    /// `/metrics` labels series with workspace ids (tenant names) only when this is on;
    /// by default it shows server-wide totals.
    #[arg(long)]
    pub metrics_per_workspace: bool,
    /// What an ACK promises (docs/durability.md): `memory` keeps nothing on disk (a
    /// restart loses every workspace); `process` writes each change to the OS before
    /// its ACK (survives a killed process); `fsync` syncs it to disk first (survives
    /// power loss).
    #[arg(long, value_enum, default_value_t = d().durability)]
    pub durability: Durability,
    /// With `--durability group`: how often the writes waiting are synced together
    /// (their ACKs wait up to this long plus one sync).
    #[arg(long, default_value_t = d().group_commit_ms)]
    pub group_commit_ms: u64,
    /// Where the workspaces' logs are kept (created if missing). Not a scenario key.
    #[arg(long, default_value_os_t = d().data_dir)]
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// A workspace's log larger than this is rewritten as a snapshot of its state, which
    /// bounds the disk it takes and the time a start spends replaying it.
    #[arg(long, default_value_t = d().compact_bytes)]
    pub compact_bytes: u64,
    /// Start even when a log is damaged in the middle: keep the records before the
    /// damage, give up the rest, and begin a new epoch for that workspace (its clients
    /// reload). Without it such a start is refused, naming the file and the byte.
    #[arg(long)]
    pub accept_damage: bool,
    /// Several nodes sharing workspaces through Redis (docs/cluster.md).
    #[command(flatten)]
    #[serde(flatten)]
    pub cluster: crate::cluster::ClusterConfig,
    /// The file system the logs are on: the real one, or the simulator's.
    #[arg(skip)]
    #[serde(skip)]
    pub disk: DiskHandle,
    /// The epoch of every workspace log of this incarnation; `None` = the clock's
    /// now at start (unique per restart, deterministic under simulation).
    #[arg(skip)]
    #[serde(skip)]
    pub epoch: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            core: CoreConfig::default(),
            jwt_secret: Vec::new(),
            frame_bytes_max: 64 * 1024,
            inbound_rate_per_s: 50.0,
            inbound_burst: 100,
            rate_strikes_per_s_max: 20,
            outbound_messages_max: 1024,
            outbound_bytes_max: 1024 * 1024,
            connections_max: 20_000,
            connections_per_user_max: 32,
            admission_rate_per_s: 1000.0,
            admission_burst: 2000,
            header_read_timeout_ms: 10_000,
            handshakes_max: 512,
            heartbeat_timeout_ms: 75_000,
            tick_ms: 50,
            drain_timeout_ms: 5_000,
            ws_read_buffer_bytes: 2048,
            ws_write_buffer_bytes: 4096,
            sse_retry_ms: 3000,
            cors_origins: Vec::new(),
            metrics_per_workspace: false,
            durability: Durability::default(),
            group_commit_ms: 2,
            data_dir: PathBuf::from("rtsync-data"),
            compact_bytes: 64 << 20,
            accept_damage: false,
            disk: DiskHandle::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            epoch: None,
        }
    }
}

impl ServerConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.core.heartbeat_ms.max(1))
    }
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms.max(1))
    }

    /// Refuses configurations that cannot work, with the field to fix.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("jwt secret", self.jwt_secret.len()),
            ("frame_bytes_max", self.frame_bytes_max),
            ("outbound_messages_max", self.outbound_messages_max),
            ("outbound_bytes_max", self.outbound_bytes_max),
            ("connections_max", self.connections_max),
            ("connections_per_user_max", self.connections_per_user_max),
            ("handshakes_max", self.handshakes_max),
            ("history_events_max", self.core.history_events_max),
            ("entities_max", self.core.entities_max),
            ("entity_bytes_max", self.core.entity_bytes_max),
            ("snapshot_page_entities", self.core.snapshot_page_entities),
            ("snapshot_page_bytes", self.core.snapshot_page_bytes),
            (
                "presence_field_bytes_max",
                self.core.presence_field_bytes_max,
            ),
            // A zero period would make the ping timer panic in every connection task.
            ("heartbeat_ms", self.core.heartbeat_ms as usize),
            ("replay_batch_bytes", self.core.replay_batch_bytes),
            // A bucket that never holds a whole token refuses every message.
            ("inbound_burst", self.inbound_burst as usize),
            ("admission_burst", self.admission_burst as usize),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.heartbeat_timeout_ms <= self.core.heartbeat_ms {
            return Err(format!(
                "heartbeat_timeout_ms ({}) must exceed heartbeat_ms ({}): clients answer pings",
                self.heartbeat_timeout_ms, self.core.heartbeat_ms
            ));
        }
        if self.header_read_timeout_ms == 0 {
            return Err("header_read_timeout_ms must be greater than 0".into());
        }
        self.cluster.validate()?;
        if self.tick_ms == 0 {
            return Err("tick_ms must be greater than 0".into());
        }
        if !(self.inbound_rate_per_s > 0.0 && self.admission_rate_per_s > 0.0) {
            return Err("rates must be greater than 0".into());
        }
        Ok(())
    }
}
