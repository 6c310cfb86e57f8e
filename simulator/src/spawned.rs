//! The reference server that `simulate live --spawn-server` starts on 127.0.0.1 with the
//! scenario's settings, and kills and restarts on the timeline's server faults.
//!
//! Two ways to run it, one interface ([`SpawnedServer`]):
//! - a child process (`simulate serve-child`, [`SpawnedServer::start_child`]): what the
//!   CLI does; `server_crash` is a real `kill -9`, and a restart replays the logs on the
//!   same data dir;
//! - a thread with its own runtime ([`SpawnedServer::start`]): for library callers that
//!   have no `simulate` binary to run (the simulator's own tests); a crash drops the
//!   runtime mid-flight (what it wrote to the OS stays, as with a kill).

use crate::scenario::Scenario;
use crate::timeline::Link;
use crate::world::RunError;
use std::net::SocketAddr;

/// Servers this process started, so the timeline's server faults reach them: one
/// reference server, or a cluster of nodes over Redis (`spawned_cluster.rs`).
pub trait Spawned: std::fmt::Debug {
    /// Where clients connect: node 0's address first.
    fn addrs(&self) -> Vec<SocketAddr>;
    /// Kills node `node` (SIGKILL for a child process).
    fn crash(&mut self, node: usize);
    /// Starts a killed node again on its port.
    fn restart(&mut self, node: usize) -> Result<(), RunError>;
    /// A cluster: node `node`'s link to Redis drops or holds everything while `on`.
    fn backplane(&mut self, _node: usize, _link: Link, _on: bool) {}
    /// A cluster: Redis is killed and started again on its port and directory.
    fn restart_redis(&mut self) -> Result<(), RunError> {
        Ok(())
    }
}

impl Spawned for SpawnedServer {
    fn addrs(&self) -> Vec<SocketAddr> {
        vec![self.addr]
    }
    fn crash(&mut self, _node: usize) {
        SpawnedServer::crash(self);
    }
    fn restart(&mut self, _node: usize) -> Result<(), RunError> {
        SpawnedServer::restart(self)
    }
}

/// A cluster node told nothing else advertises the address it bound: the one its
/// spawner gave it a free port for.
fn advertise_bound(cfg: &mut rtsync_server::ServerConfig, addr: SocketAddr) {
    if cfg.cluster.redis.is_some() && cfg.cluster.advertise.is_none() {
        cfg.cluster.advertise = Some(addr.to_string());
    }
}

/// A reference server this process started; killed when dropped (the run is over by
/// then), its data dir removed.
#[derive(Debug)]
pub struct SpawnedServer {
    pub addr: SocketAddr,
    cfg: rtsync_server::ServerConfig,
    /// The `simulate` binary to run `serve-child` from; `None`: in-process.
    exe: Option<std::path::PathBuf>,
    running: Option<Running>,
}

#[derive(Debug)]
enum Running {
    Child(std::process::Child),
    Thread {
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    },
}

/// Numbers the data directories of the servers this process spawns.
static LIVE_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fail(e: impl std::fmt::Display) -> RunError {
    RunError::Sim(format!("could not start the reference server: {e}"))
}

impl SpawnedServer {
    /// In-process, on its own runtime thread.
    pub fn start(sc: &Scenario) -> Result<Self, RunError> {
        Self::new(sc, None)
    }

    /// A child process: `exe serve-child` (`exe` is the `simulate` binary).
    pub fn start_child(sc: &Scenario, exe: std::path::PathBuf) -> Result<Self, RunError> {
        Self::new(sc, Some(exe))
    }

    fn new(sc: &Scenario, exe: Option<std::path::PathBuf>) -> Result<Self, RunError> {
        Self::with_config(sc.server.config.clone(), exe)
    }

    /// With this configuration (its secret: the simulations' one), as a child process of
    /// `exe` or, with `None`, in-process.
    pub fn with_config(
        mut cfg: rtsync_server::ServerConfig,
        exe: Option<std::path::PathBuf>,
    ) -> Result<Self, RunError> {
        cfg.jwt_secret = crate::auth::SECRET.to_vec();
        // Its logs live as long as this run: a directory of its own, removed on drop.
        cfg.data_dir = std::env::temp_dir().join(format!(
            "rtsync-live-{}-{}",
            std::process::id(),
            LIVE_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut s = SpawnedServer {
            addr: ([127, 0, 0, 1], 0).into(),
            cfg,
            exe,
            running: None,
        };
        let (addr, running) = s.launch()?;
        s.addr = addr;
        s.running = Some(running);
        Ok(s)
    }

    fn launch(&self) -> Result<(SocketAddr, Running), RunError> {
        match &self.exe {
            Some(exe) => launch_child(exe, &self.cfg, self.addr),
            None => launch_thread(self.cfg.clone(), self.addr),
        }
    }

    /// Kills the server: clients' connections drop and new ones are refused.
    pub fn crash(&mut self) {
        match self.running.take() {
            Some(Running::Child(mut c)) => {
                let _ = c.kill(); // SIGKILL
                let _ = c.wait();
            }
            Some(Running::Thread { stop, thread }) => {
                drop(stop); // the runtime is dropped where it stands
                let _ = thread.join();
            }
            None => {}
        }
    }

    /// Starts it again on the same port and data dir: it replays its logs (durability
    /// `memory`: empty, a new epoch).
    pub fn restart(&mut self) -> Result<(), RunError> {
        if self.running.is_none() {
            let (_, running) = self.launch()?;
            self.running = Some(running);
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        self.crash();
        let _ = std::fs::remove_dir_all(&self.cfg.data_dir);
    }
}

/// Spawns `exe serve-child` listening on `at` and waits for the address it bound.
fn launch_child(
    exe: &std::path::Path,
    cfg: &rtsync_server::ServerConfig,
    at: SocketAddr,
) -> Result<(SocketAddr, Running), RunError> {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let json = serde_json::to_string(cfg).map_err(fail)?;
    let mut child = Command::new(exe)
        .args(["serve-child", "--listen", &at.to_string(), "--data-dir"])
        .arg(&cfg.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(fail)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(json.as_bytes()).map_err(fail)?;
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    match line.trim().strip_prefix("listening ").map(str::parse) {
        Some(Ok(addr)) => Ok((addr, Running::Child(child))),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(fail(format!("it said {line:?}")))
        }
    }
}

/// Binds `at`, retrying for a second: a restart rebinds the port a killed server may
/// still be letting go of.
async fn bind(at: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(at).await {
            Ok(l) => return Ok(l),
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The server on a thread with its own runtime; dropping `stop` drops the runtime.
fn launch_thread(
    mut cfg: rtsync_server::ServerConfig,
    at: SocketAddr,
) -> Result<(SocketAddr, Running), RunError> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        else {
            let _ = addr_tx.send(None);
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = bind(at).await else {
                let _ = addr_tx.send(None);
                return;
            };
            let addr = listener.local_addr().ok();
            if let Some(addr) = addr {
                advertise_bound(&mut cfg, addr);
            }
            let _ = addr_tx.send(addr);
            let clock = std::sync::Arc::new(rtsync_server::SystemClock::new());
            let listener = rtsync_server::tcp(listener);
            tokio::spawn(rtsync_server::serve(
                listener,
                cfg,
                clock,
                std::future::pending(),
            ));
            let _ = stopped.await;
        });
        // Every task dropped where it stands: connections cut without a close frame,
        // memory gone — as a killed process (its writes to the OS stay).
        rt.shutdown_background();
    });
    let addr = addr_rx
        .recv()
        .ok()
        .flatten()
        .ok_or_else(|| fail(format!("nothing listening on {at}")))?;
    Ok((addr, Running::Thread { stop, thread }))
}

/// What `simulate serve-child` runs: the reference server with the config on stdin
/// (JSON), the simulations' secret, listening on `listen`, printing `listening ADDR`.
pub fn serve_child(listen: SocketAddr, data_dir: std::path::PathBuf) -> Result<(), RunError> {
    use std::io::{Read, Write};
    let fail = |e: String| RunError::Sim(format!("serve-child: {e}"));
    let mut json = String::new();
    std::io::stdin()
        .read_to_string(&mut json)
        .map_err(|e| fail(e.to_string()))?;
    let mut cfg: rtsync_server::ServerConfig =
        serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
    cfg.jwt_secret = crate::auth::SECRET.to_vec();
    cfg.data_dir = data_dir;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async move {
        let listener = bind(listen)
            .await
            .map_err(|e| fail(format!("bind {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        advertise_bound(&mut cfg, addr);
        // The parent reads this line, then closes the pipe: nothing more is written.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening {addr}");
        let _ = out.flush();
        let clock = std::sync::Arc::new(rtsync_server::SystemClock::new());
        rtsync_server::serve(
            rtsync_server::tcp(listener),
            cfg,
            clock,
            std::future::pending(),
        )
        .await
        .map_err(|e| fail(e.to_string()))
    })
}
