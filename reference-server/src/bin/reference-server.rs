//! `reference-server serve` runs the rtsync reference realtime server;
//! `reference-server token` mints a JWT for it.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rtsync_protocol::Strategy;
use rtsync_protocol::auth::{Claims, mint};
use rtsync_server::{ServerConfig, SystemClock, fdlimit, serve};
use std::sync::Arc;

/// The secret `--dev` uses. Public by design: anyone can mint tokens for a dev server.
const DEV_SECRET: &str = "rtsync-dev-secret-NOT-FOR-PRODUCTION";

#[derive(Parser, Debug)]
#[command(
    name = "reference-server",
    version,
    about = "rtsync reference realtime server (WebSocket + SSE, protocol v1)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve /ws, /api/events/subscribe, /api/events, /api/entities, /metrics ...
    Serve(Box<ServeArgs>),
    /// Print a JWT for a user and workspace, signed with the same secret rules as serve.
    Token(TokenArgs),
}

#[derive(Args, Debug)]
struct SecretArgs {
    /// HS256 secret for tokens.
    #[arg(long, env = "RTSYNC_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Development mode: a public, built-in secret and CORS for any origin. Never in production.
    #[arg(long)]
    dev: bool,
}

impl SecretArgs {
    fn secret(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.jwt_secret, self.dev) {
            (Some(s), _) if s.is_empty() => bail!("the JWT secret is empty"),
            (Some(s), _) => Ok(s.clone().into_bytes()),
            (None, true) => {
                eprintln!(
                    "WARNING: --dev: using the PUBLIC development JWT secret; anyone can mint tokens. Do not expose this server."
                );
                Ok(DEV_SECRET.as_bytes().to_vec())
            }
            (None, false) => bail!(
                "no JWT secret: pass --jwt-secret, set RTSYNC_JWT_SECRET, or use --dev for local development"
            ),
        }
    }
}

fn d() -> ServerConfig {
    ServerConfig::default()
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Allowed CORS origin; repeat for more; "*" for any (the default with --dev).
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Label /metrics series with workspace ids. Off by default: ids name tenants, and
    /// anyone who reaches the port could list them.
    #[arg(long)]
    metrics_per_workspace: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,

    /// Inbound frame size; larger closes with 1009 (bytes).
    #[arg(long, default_value_t = d().frame_bytes_max)]
    frame_bytes_max: usize,
    /// Inbound messages per second per connection.
    #[arg(long, default_value_t = d().inbound_rate_per_s)]
    inbound_rate_per_s: f64,
    #[arg(long, default_value_t = d().inbound_burst)]
    inbound_burst: u32,
    /// Rate-limited messages within one second before closing with 1008.
    #[arg(long, default_value_t = d().rate_strikes_per_s_max)]
    rate_strikes_per_s_max: u32,
    /// Outbound queue per connection (messages); full closes with 1013.
    #[arg(long, default_value_t = d().outbound_messages_max)]
    outbound_messages_max: usize,
    /// Outbound queue per connection (bytes); full closes with 1013.
    #[arg(long, default_value_t = d().outbound_bytes_max)]
    outbound_bytes_max: usize,
    #[arg(long, default_value_t = d().connections_max)]
    connections_max: usize,
    #[arg(long, default_value_t = d().connections_per_user_max)]
    connections_per_user_max: usize,
    /// A connection must send complete request headers within this long (from its
    /// accept, and from the end of each response when kept alive).
    #[arg(long, default_value_t = d().header_read_timeout_ms)]
    header_read_timeout_ms: u64,
    /// Connections waiting for their first request; one more evicts the oldest.
    #[arg(long, default_value_t = d().handshakes_max)]
    handshakes_max: usize,
    /// New connections per second (reconnect storms get 503 + Retry-After past it).
    #[arg(long, default_value_t = d().admission_rate_per_s)]
    admission_rate_per_s: f64,
    #[arg(long, default_value_t = d().admission_burst)]
    admission_burst: u32,
    #[arg(long, default_value_t = d().core.heartbeat_ms)]
    heartbeat_ms: u64,
    /// Silence longer than this closes a WebSocket with 4000.
    #[arg(long, default_value_t = d().heartbeat_timeout_ms)]
    heartbeat_timeout_ms: u64,
    /// Events kept per workspace for resume.
    #[arg(long, default_value_t = d().core.history_events_max)]
    history_events_max: usize,
    #[arg(long, default_value_t = d().core.history_age_ms)]
    history_age_ms: u64,
    /// A user leaves this long after its last session went.
    #[arg(long, default_value_t = d().core.presence_grace_ms)]
    presence_grace_ms: u64,
    #[arg(long, default_value_t = d().core.cursor_interval_ms)]
    cursor_interval_ms: u64,
    /// Default conflict strategy for tasks: LAST_WRITE_WINS, MERGE or MANUAL.
    #[arg(long, default_value_t = d().core.strategy_task.as_str().to_owned())]
    strategy_task: String,
    #[arg(long, default_value_t = d().core.strategy_project.as_str().to_owned())]
    strategy_project: String,
    #[arg(long, default_value_t = d().core.strategy_note.as_str().to_owned())]
    strategy_note: String,
    #[arg(long, default_value_t = d().core.entities_max)]
    entities_max: usize,
    /// An entity's fields, encoded, at most this many bytes (a larger write: TOO_LARGE).
    #[arg(long, default_value_t = d().core.entity_bytes_max)]
    entity_bytes_max: usize,
    /// Each presence string (currentPage, currentTask, currentProject) at most this long.
    #[arg(long, default_value_t = d().core.presence_field_bytes_max)]
    presence_field_bytes_max: usize,
    /// Answers kept per client for duplicate ops.
    #[arg(long, default_value_t = d().core.op_answers_per_client)]
    op_answers_per_client: usize,
    #[arg(long, default_value_t = d().core.op_clients_max)]
    op_clients_max: usize,
    /// Bytes of kept op answers per workspace; past it the least recently used clients
    /// are forgotten.
    #[arg(long, default_value_t = d().core.op_answers_bytes_max)]
    op_answers_bytes_max: usize,
    #[arg(long, default_value_t = d().core.replay_batch_events)]
    replay_batch_events: usize,
    /// Bytes of events per replay batch at most (at least one event per batch); the next
    /// batch is sent when the connection's queue has drained.
    #[arg(long, default_value_t = d().core.replay_batch_bytes)]
    replay_batch_bytes: usize,
    #[arg(long, default_value_t = d().tick_ms)]
    tick_ms: u64,
    /// After SIGINT/SIGTERM: how long to wait for connections to close.
    #[arg(long, default_value_t = d().drain_timeout_ms)]
    drain_timeout_ms: u64,
    #[arg(long, default_value_t = d().ws_read_buffer_bytes)]
    ws_read_buffer_bytes: usize,
    #[arg(long, default_value_t = d().ws_write_buffer_bytes)]
    ws_write_buffer_bytes: usize,
    #[arg(long, default_value_t = d().sse_retry_ms)]
    sse_retry_ms: u64,
}

#[derive(Args, Debug)]
struct TokenArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// The user id (`sub`).
    #[arg(long)]
    user: String,
    /// The workspace id (`ws`).
    #[arg(long)]
    workspace: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_s: u64,
}

fn strategy(s: &str, flag: &str) -> anyhow::Result<Strategy> {
    s.parse()
        .map_err(|e: String| anyhow::anyhow!("{flag}: {e}"))
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = ServerConfig {
            jwt_secret: self.secret.secret()?,
            frame_bytes_max: self.frame_bytes_max,
            inbound_rate_per_s: self.inbound_rate_per_s,
            inbound_burst: self.inbound_burst,
            rate_strikes_per_s_max: self.rate_strikes_per_s_max,
            outbound_messages_max: self.outbound_messages_max,
            outbound_bytes_max: self.outbound_bytes_max,
            connections_max: self.connections_max,
            connections_per_user_max: self.connections_per_user_max,
            header_read_timeout_ms: self.header_read_timeout_ms,
            handshakes_max: self.handshakes_max,
            admission_rate_per_s: self.admission_rate_per_s,
            admission_burst: self.admission_burst,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            tick_ms: self.tick_ms,
            drain_timeout_ms: self.drain_timeout_ms,
            ws_read_buffer_bytes: self.ws_read_buffer_bytes,
            ws_write_buffer_bytes: self.ws_write_buffer_bytes,
            sse_retry_ms: self.sse_retry_ms,
            cors_origins: self.cors_origins.clone(),
            metrics_per_workspace: self.metrics_per_workspace,
            ..ServerConfig::default()
        };
        if self.secret.dev && c.cors_origins.is_empty() {
            c.cors_origins = vec!["*".into()];
        }
        let core = &mut c.core;
        core.heartbeat_ms = self.heartbeat_ms;
        core.history_events_max = self.history_events_max;
        core.history_age_ms = self.history_age_ms;
        core.presence_grace_ms = self.presence_grace_ms;
        core.cursor_interval_ms = self.cursor_interval_ms;
        core.strategy_task = strategy(&self.strategy_task, "--strategy-task")?;
        core.strategy_project = strategy(&self.strategy_project, "--strategy-project")?;
        core.strategy_note = strategy(&self.strategy_note, "--strategy-note")?;
        core.entities_max = self.entities_max;
        core.entity_bytes_max = self.entity_bytes_max;
        core.presence_field_bytes_max = self.presence_field_bytes_max;
        core.op_answers_per_client = self.op_answers_per_client;
        core.op_clients_max = self.op_clients_max;
        core.op_answers_bytes_max = self.op_answers_bytes_max;
        core.replay_batch_events = self.replay_batch_events;
        core.replay_batch_bytes = self.replay_batch_bytes;
        c.validate().map_err(|e| anyhow::anyhow!(e))?;
        Ok(c)
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("shutting down: closing every connection with 1001");
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Token(t) => {
            let secret = t.secret.secret()?;
            let claims = Claims {
                sub: t.user,
                ws: t.workspace,
                exp: now_s() + t.ttl_s,
            };
            println!("{}", mint(&claims, &secret));
            Ok(())
        }
        Cmd::Serve(args) => {
            let config = args.config()?;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?,
                )
                .with_writer(std::io::stderr)
                .init();
            let need = fdlimit::needed(config.connections_max, config.handshakes_max);
            if let Some(limit) = fdlimit::raise(need) {
                if limit.soft > limit.was {
                    tracing::info!(
                        "open-file limit raised from {} to {}",
                        limit.was,
                        limit.soft
                    );
                }
                if let Some(w) =
                    fdlimit::check(limit, config.connections_max, config.handshakes_max)
                {
                    tracing::warn!("{w}");
                }
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&args.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?;
                let addr = listener.local_addr()?;
                println!(
                    "rtsync reference-server listening on http://{addr} (WebSocket: ws://{addr}/ws)"
                );
                let user_timeout = config
                    .heartbeat_timeout()
                    .saturating_sub(config.heartbeat());
                serve(
                    rtsync_server::tcp(listener).user_timeout(user_timeout),
                    config,
                    Arc::new(SystemClock::new()),
                    shutdown_signal(),
                )
                .await?;
                eprintln!("stopped");
                Ok(())
            })
        }
    }
}
