//! A throwaway `redis-server` on a free port with its own temporary directory, stopped
//! (and its directory removed) when dropped: for tests, `simulate live` and a local
//! cluster. Installed with `scripts/install-redis.sh` when it is not on the machine.
//!
//! Its persistence is what the cluster's ACKs promise: append-only file, synced on
//! every write (`appendfsync always`), no RDB snapshots.

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

/// `redis-server` from `RTSYNC_REDIS_SERVER`, the `PATH`, or installed now.
pub fn redis_server() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("RTSYNC_REDIS_SERVER") {
        return Ok(p.into());
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = on_path("redis-server") {
        return Ok(p);
    }
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = on_path("redis-server") {
        return Ok(p);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install-redis.sh");
    let status = Command::new("bash").arg(script).status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "redis-server is not installed and {script} could not install it ({status}); install Redis 7 or set RTSYNC_REDIS_SERVER"
        )));
    }
    on_path("redis-server")
        .ok_or_else(|| io::Error::other("redis-server still not on PATH after installing it"))
}

impl LocalRedis {
    /// Starts it and waits until it accepts commands (at most 10 s).
    pub fn start() -> io::Result<Self> {
        let exe = redis_server()?;
        let dir = std::env::temp_dir().join(format!(
            "rtsync-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        // A free port: bind 0, read it, let go. Another process could take it in between;
        // then redis-server fails to bind and says so, and we try again.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            if let Some(child) = spawn(&exe, port, &dir)? {
                return Ok(LocalRedis {
                    child: Some(child),
                    port,
                    dir,
                });
            }
        }
        Err(io::Error::other("redis-server did not start (5 tries)"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash: what it synced (every write) is on disk for `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (after `kill`).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.child = spawn(&redis_server()?, self.port, &self.dir)?;
        if self.child.is_none() {
            return Err(io::Error::other("redis-server did not restart"));
        }
        Ok(())
    }
}

/// One `redis-server`, once it accepts commands; `None` if it did not come up.
fn spawn(exe: &std::path::Path, port: u16, dir: &std::path::Path) -> io::Result<Option<Child>> {
    let mut child = Command::new(exe)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--protected-mode", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().map(BufReader::new);
    if ready(&mut child, out, Instant::now() + Duration::from_secs(10)) {
        return Ok(Some(child));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads its log until it says it accepts connections (or exits, or the deadline).
fn ready(
    child: &mut Child,
    out: Option<BufReader<std::process::ChildStdout>>,
    deadline: Instant,
) -> bool {
    let Some(mut out) = out else { return false };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match out.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(false);
                    return;
                }
                Ok(_) if line.contains("Ready to accept connections") => {
                    let _ = tx.send(true);
                    // Keep draining so a full pipe never blocks the server.
                    while out.read_line(&mut line).is_ok_and(|n| n > 0) {
                        line.clear();
                    }
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let ok = rx.recv_timeout(left).unwrap_or(false);
    ok && child.try_wait().ok().flatten().is_none()
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
