//! Accepting connections. Our own loop over hyper's HTTP/1 connection rather than
//! `axum::serve`, which installs no timer: hyper's header-read timeout then never runs
//! and a peer sending one header byte a second (slowloris) holds its socket forever.
//!
//! - Every connection has `header_read_timeout_ms` to send a request's headers, counted
//!   from the accept and again from the end of each response (hyper 1.12: the same timer
//!   is the idle timeout of a kept-alive connection). Past it the socket is closed.
//! - At most `handshakes_max` connections may be waiting for their first request's
//!   headers; one more evicts the oldest of them. An attacker's sockets are the old
//!   ones — a browser's request follows its connect within milliseconds — so new
//!   clients, `/healthz` included, still get through during a flood.
//! - Upgraded WebSockets leave hyper at the upgrade (`ws` tracks them); SSE streams end
//!   on shutdown themselves; everything else gets hyper's graceful shutdown.
//! - [`tcp`]: real TCP with `TCP_NODELAY`, accept errors (`EMFILE` when file
//!   descriptors run out) logged and retried with backoff instead of spinning.

use super::Server;
use super::log::{Kind, warn_limited};
use super::metrics::Metrics;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Connections that have not sent their first request's headers, oldest first.
#[derive(Debug, Default)]
pub struct Handshakes {
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next: AtomicU64,
}

impl Handshakes {
    /// Registers a new connection; past `max` the oldest waiting one is told to go.
    fn admit(&self, max: usize, metrics: &Metrics) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while w.len() >= max.max(1) {
            let Some((_, oldest)) = w.pop_first() else {
                break;
            };
            // A stored permit: the connection sees it even if not yet waiting for it.
            oldest.notify_one();
            metrics.handshakes_evicted_total.inc();
        }
        w.insert(id, evict.clone());
        (id, evict)
    }

    fn done(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// How many connections are waiting for their first request (`/metrics`).
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Lets a handler cut its connection's socket at once: an SSE body that hyper no
/// longer polls (its socket is blocked) cannot end the connection itself. In every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct Abort(Arc<Notify>);

impl Abort {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// The router as hyper's service: leaves the handshake registry at the first request
/// and hands every request its connection's [`Abort`].
#[derive(Clone)]
struct FirstRequest {
    app: TowerToHyperService<Router>,
    server: Arc<Server>,
    id: u64,
    seen: Arc<AtomicBool>,
    abort: Abort,
}

impl<B> hyper::service::Service<hyper::Request<B>> for FirstRequest
where
    TowerToHyperService<Router>: hyper::service::Service<hyper::Request<B>>,
{
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<B>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<B>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<B>>>::Future;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.server.handshakes.done(self.id);
        }
        req.extensions_mut().insert(self.abort.clone());
        self.app.call(req)
    }
}

/// Accepts until shutdown. Returns a receiver whose `recv` yields `None` once every
/// HTTP connection has finished (each task holds a sender).
pub async fn accept_loop<L>(mut listener: L, app: Router, server: Arc<Server>) -> mpsc::Receiver<()>
where
    L: axum::serve::Listener,
{
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    let mut stop = server.shutdown_rx();
    loop {
        let (io, _) = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
        };
        let (app, server, done) = (app.clone(), server.clone(), done_tx.clone());
        tokio::spawn(async move {
            connection(io, app, server).await;
            drop(done);
        });
    }
    drop((listener, done_tx));
    done_rx
}

/// Resolves once shutdown has begun (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection<I>(io: I, app: Router, server: Arc<Server>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (id, evict) = server
        .handshakes
        .admit(server.cfg.handshakes_max, &server.metrics);
    let abort = Arc::new(Notify::new());
    let svc = FirstRequest {
        app: TowerToHyperService::new(app),
        server: server.clone(),
        id,
        seen: Arc::new(AtomicBool::new(false)),
        abort: Abort(abort.clone()),
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server.cfg.header_read_timeout_ms));
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stop = server.shutdown_rx();
    let result = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = evict.notified() => {
            warn_limited!(server, Kind::Refused, "connection closed: too many waiting for their first request (handshakes_max)");
            None
        }
        () = abort.notified() => None,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => Some(r),
                () = abort.notified() => None,
            }
        }
    };
    server.handshakes.done(id);
    if let Some(Err(e)) = result {
        if e.is_timeout() {
            server.metrics.header_timeouts_total.inc();
            warn_limited!(
                server,
                Kind::Refused,
                "connection closed: no complete request headers within header_read_timeout_ms"
            );
        } else {
            tracing::debug!("connection ended: {e}");
        }
    }
}

/// A real TCP listener. Accepted sockets set
/// - `TCP_NODELAY`: without it Nagle's algorithm and the peer's delayed ACK hold small
///   frames, a ~40 ms floor under p90 of fan-out at any load, measured against a Node +
///   `ws` server on this machine (turmoil models no Nagle);
/// - `TCP_USER_TIMEOUT` (Linux): data unacknowledged this long fails the socket. A
///   vanished SSE client cannot answer heartbeats; its next `: keep-alive` comment then
///   goes unacknowledged and its stream ends, so its presence converges like a silent
///   WebSocket's. Default: heartbeat timeout minus heartbeat interval (75 − 30 = 45 s).
///
/// Accept errors are retried with backoff (10 ms doubling to 1 s), logged once when they
/// start and once when accepting works again.
pub fn tcp(listener: tokio::net::TcpListener) -> Tcp {
    let d = crate::ServerConfig::default();
    Tcp {
        inner: listener,
        user_timeout: d.heartbeat_timeout().saturating_sub(d.heartbeat()),
    }
}

#[derive(Debug)]
pub struct Tcp {
    inner: tokio::net::TcpListener,
    user_timeout: Duration,
}

impl Tcp {
    /// Sets `TCP_USER_TIMEOUT` for accepted sockets (see [`tcp`]).
    pub fn user_timeout(mut self, d: Duration) -> Self {
        self.user_timeout = d;
        self
    }

    fn configure(&self, tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
        tcp.set_nodelay(true)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(self.user_timeout))?;
        Ok(())
    }
}

impl axum::serve::Listener for Tcp {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (mut failures, mut backoff) = (0u64, Duration::from_millis(10));
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    if failures > 0 {
                        tracing::warn!(failures, "accepting connections again");
                    }
                    if let Err(e) = self.configure(&tcp) {
                        tracing::debug!("socket options not set on an accepted socket: {e}");
                    }
                    return (tcp, addr);
                }
                // The peer gave up between SYN and accept: nothing to wait for.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!("accept failed, retrying with backoff: {e}");
                    }
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    #[tokio::test]
    async fn accepted_sockets_set_nodelay_and_the_user_timeout() {
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = tcp(inner).user_timeout(Duration::from_secs(7));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = l.accept().await;
        assert!(server_side.nodelay().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket2::SockRef::from(&server_side)
                .tcp_user_timeout()
                .unwrap(),
            Some(Duration::from_secs(7))
        );
    }
}
