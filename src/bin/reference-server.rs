//! `reference-server serve` runs the rtsync reference realtime server;
//! `reference-server token` mints a JWT for it.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rtsync_protocol::auth::{Claims, mint};
use rtsync_server::{ServerConfig, SystemClock, fdlimit, serve};
use std::io::Write as _;
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

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Keep nothing on disk (same as `--durability memory`): a restart loses every
    /// workspace. For tests and benchmarks.
    #[arg(long, conflicts_with = "durability")]
    memory: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Every bound and policy: one flag per field of `ServerConfig` (config.rs).
    #[command(flatten)]
    config: ServerConfig,
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

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = ServerConfig {
            jwt_secret: self.secret.secret()?,
            ..self.config.clone()
        };
        if self.memory {
            c.durability = rtsync_server::storage::Durability::Memory;
        }
        if self.secret.dev && c.cors_origins.is_empty() {
            c.cors_origins = vec!["*".into()];
        }
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
                // Whoever started us may read the first line and close the pipe (a
                // closed stdout must not take the server down: no `println!`).
                let mut out = std::io::stdout();
                let _ = writeln!(
                    out,
                    "rtsync reference-server listening on http://{addr} (WebSocket: ws://{addr}/ws)"
                );
                let mut config = config;
                if let Some(redis) = &config.cluster.redis {
                    // Printed without its password.
                    let redis = redis
                        .parse::<rtsync_server::cluster::RedisUrl>()
                        .map_or_else(|_| "redis".to_owned(), |u| format!("redis://{}", u.addr));
                    // Other nodes reach this one where it listens, unless told otherwise.
                    let node = config
                        .cluster
                        .advertise
                        .get_or_insert_with(|| addr.to_string());
                    let _ = writeln!(
                        out,
                        "cluster: node {node}, workspaces shared through {redis} (lease {} ms)",
                        config.cluster.lease_ms
                    );
                }
                let _ = match config.durability {
                    _ if config.cluster.redis.is_some() => writeln!(
                        out,
                        "durability: the Redis streams (as durable as that Redis's persistence)"
                    ),
                    rtsync_server::storage::Durability::Memory => {
                        writeln!(out, "durability: memory (nothing is kept across a restart)")
                    }
                    d => writeln!(
                        out,
                        "durability: {d}, data dir: {}",
                        config.data_dir.display()
                    ),
                };
                let _ = out.flush();
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
