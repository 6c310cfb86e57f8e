//! The server's listener on turmoil, and the order its sockets close in when the host
//! dies.
//!
//! A crash or bounce drops the server's tokio runtime, and with it every connection
//! task. tokio drops those tasks shard by shard, the shard being the task's id modulo
//! four, and task ids come from one process-wide counter — so the order depends on how
//! many tasks *other* threads spawned before (a parallel sweep), not on the seed. Each
//! dropped socket sends its FIN or RST then, and a group's tabs share a client host
//! that handles those segments in arrival order: in a sweep, `server-kill-group`'s
//! outcome changed with another thread's task count (one dummy task spawned before the
//! run changed it; four did not).
//!
//! So the sockets outlive their tasks during a crash: while [`Crashing`] is set, a
//! dropped [`HeldStream`] parks its socket in a map ordered by accept, which the
//! listener owns; the listener lives in the host's root future, which turmoil drops
//! after the runtime's tasks, so the sockets then close in accept order — as a kernel
//! closes a killed process's descriptors in descriptor order. Outside a crash a stream
//! closes when dropped, as before.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use turmoil::net::{TcpListener, TcpStream};

/// Set by the timeline around a crash or bounce of the server host (shared with the
/// host's listeners).
#[derive(Debug, Clone, Default)]
pub struct Crashing(Arc<AtomicBool>);

impl Crashing {
    /// Runs `kill` (turmoil's `crash` or `bounce`, which drop the host's tasks) with the
    /// flag set.
    pub fn during(&self, kill: impl FnOnce()) {
        self.0.store(true, Ordering::Relaxed);
        kill();
        self.0.store(false, Ordering::Relaxed);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sockets whose tasks died in a crash, by accept order, waiting for the listener to
/// drop.
type Parked = Arc<Mutex<BTreeMap<u64, TcpStream>>>;

/// turmoil's listener as an `axum::serve::Listener`; `accept` retries on error as
/// axum requires.
pub struct SimListener {
    listener: TcpListener,
    crashing: Crashing,
    parked: Parked,
    /// Sockets opened so far, accepted or dialled: the order they close in at a crash.
    opened: Arc<std::sync::atomic::AtomicU64>,
}

impl SimListener {
    pub fn new(listener: TcpListener, crashing: Crashing) -> Self {
        SimListener {
            listener,
            crashing,
            parked: Parked::default(),
            opened: Arc::default(),
        }
    }

    /// The outbound side of the same host (a cluster node dialling Redis and the other
    /// nodes): its sockets close in the same order as the accepted ones at a crash.
    pub fn dialer(&self) -> SimDialer {
        SimDialer {
            crashing: self.crashing.clone(),
            parked: self.parked.clone(),
            opened: self.opened.clone(),
        }
    }
}

/// Dials out on turmoil's network with the crash behaviour of [`HeldStream`].
#[derive(Debug, Clone)]
pub struct SimDialer {
    crashing: Crashing,
    parked: Parked,
    opened: Arc<std::sync::atomic::AtomicU64>,
}

impl rtsync_server::cluster::Net for SimDialer {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<rtsync_server::cluster::BoxIo>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            let held = HeldStream {
                stream: Some(stream),
                order: self.opened.fetch_add(1, Ordering::Relaxed) + 1,
                crashing: self.crashing.clone(),
                parked: self.parked.clone(),
            };
            Ok(Box::new(held) as rtsync_server::cluster::BoxIo)
        })
    }
}

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimListener")
    }
}

impl axum::serve::Listener for SimListener {
    type Io = HeldStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let held = HeldStream {
                        stream: Some(stream),
                        order: self.opened.fetch_add(1, Ordering::Relaxed) + 1,
                        crashing: self.crashing.clone(),
                        parked: self.parked.clone(),
                    };
                    return (held, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted socket; see the module's docs for what its drop does during a crash.
#[derive(Debug)]
pub struct HeldStream {
    /// `Some` until dropped.
    stream: Option<TcpStream>,
    order: u64,
    crashing: Crashing,
    parked: Parked,
}

impl HeldStream {
    fn pinned(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("a HeldStream holds its socket until dropped"),
        )
    }
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        if self.crashing.is_set()
            && let Some(s) = self.stream.take()
        {
            let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
            parked.insert(self.order, s);
        }
    }
}

impl tokio::io::AsyncRead for HeldStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.get_mut().pinned().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for HeldStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().pinned().poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().pinned().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().pinned().poll_shutdown(cx)
    }
}
