//! A fault proxy on loopback for live mode: one per host group, between that group's
//! tabs and the server, forwarding bytes both ways and applying the scenario's network
//! faults for real — added latency, a hold (stall: nothing moves until released), and a
//! partition (every connection cut, new ones refused until repaired). A spawned
//! cluster also puts one between each node and Redis, for the backplane's faults.
//!
//! Upstream is a list tried in order for each connection: a group's home node first,
//! then the next ones (a load balancer moving on from a node that is down).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

#[derive(Debug)]
struct Ctl {
    latency_ms: AtomicU64,
    partitioned: AtomicBool,
    /// `true` while held; watched so held pumps resume the moment it is released.
    held: watch::Sender<bool>,
    /// Every pump task, to cut them all on a partition (bounded by the group's connections).
    pumps: Mutex<Vec<AbortHandle>>,
}

/// A running proxy; `addr` is where the group's tabs connect.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    ctl: Arc<Ctl>,
}

/// Bytes read from one side, waiting out the link's latency.
const CHUNK_BYTES: usize = 16 * 1024;

impl FaultProxy {
    pub async fn start(upstreams: Vec<SocketAddr>, latency_ms: u64) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (held, _) = watch::channel(false);
        let ctl = Arc::new(Ctl {
            latency_ms: AtomicU64::new(latency_ms),
            partitioned: AtomicBool::new(false),
            held,
            pumps: Mutex::new(Vec::new()),
        });
        let c = ctl.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if c.partitioned.load(Ordering::Relaxed) {
                    drop(client); // refused: the group is cut off
                    continue;
                }
                let Some(server) = connect_first(&upstreams).await else {
                    continue; // every node down: the client sees its connection close
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = tokio::spawn(pump(cr, sw, c.clone()));
                let down = tokio::spawn(pump(sr, cw, c.clone()));
                let mut pumps = c.pumps.lock().unwrap_or_else(|p| p.into_inner());
                pumps.retain(|h| !h.is_finished());
                pumps.push(up.abort_handle());
                pumps.push(down.abort_handle());
            }
        });
        Ok(FaultProxy { addr, ctl })
    }

    pub fn set_latency(&self, ms: u64) {
        self.ctl.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn hold(&self, on: bool) {
        let _ = self.ctl.held.send(on);
    }

    /// Cuts every connection and refuses new ones (`on`), or lets them through again.
    pub fn partition(&self, on: bool) {
        self.ctl.partitioned.store(on, Ordering::Relaxed);
        if on {
            for h in self
                .ctl
                .pumps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                h.abort();
            }
        }
    }
}

/// The first upstream that accepts a connection, in order.
async fn connect_first(upstreams: &[SocketAddr]) -> Option<TcpStream> {
    for &at in upstreams {
        if let Ok(s) = TcpStream::connect(at).await {
            return Some(s);
        }
    }
    None
}

/// Waits while the link is held; `false` if the proxy is gone.
async fn released(held: &mut watch::Receiver<bool>) -> bool {
    while *held.borrow_and_update() {
        if held.changed().await.is_err() {
            return false;
        }
    }
    true
}

/// One direction: read, hold back for the latency (order kept), write.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    ctl: Arc<Ctl>,
) {
    let mut held = ctl.held.subscribe();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut queue: VecDeque<(tokio::time::Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let due = queue.front().map(|(t, _)| *t);
        tokio::select! {
            biased;
            () = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() && !*held.borrow() => {
                if let Some((_, bytes)) = queue.pop_front()
                    && to.write_all(&bytes).await.is_err()
                {
                    return;
                }
            }
            r = held.changed() => if r.is_err() { return },
            n = from.read(&mut buf), if queue.len() < 1024 => match n {
                Ok(0) | Err(_) => {
                    // Flush what is queued, then close this direction; a held link
                    // delivers it on release (a paused node's last words arrive late).
                    while let Some((t, bytes)) = queue.pop_front() {
                        tokio::time::sleep_until(t).await;
                        if !released(&mut held).await || to.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    let at = tokio::time::Instant::now() + Duration::from_millis(ctl.latency_ms.load(Ordering::Relaxed));
                    queue.push_back((at, buf[..n].to_vec()));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(c: &mut TcpStream) -> Option<Duration> {
        let t = tokio::time::Instant::now();
        c.write_all(b"ping").await.ok()?;
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .ok()?
            .ok()?;
        Some(t.elapsed())
    }

    #[tokio::test]
    async fn adds_latency_holds_and_partitions() {
        let proxy = FaultProxy::start(vec![echo_server().await], 0)
            .await
            .unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(round_trip(&mut c).await.unwrap() < Duration::from_millis(50));
        proxy.set_latency(60);
        assert!(
            round_trip(&mut c).await.unwrap() >= Duration::from_millis(120),
            "60 ms each way"
        );
        proxy.set_latency(0);
        proxy.hold(true);
        let p = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            p.hold(false);
        });
        assert!(
            round_trip(&mut c).await.unwrap() >= Duration::from_millis(140),
            "held, then delivered"
        );
        proxy.partition(true);
        assert!(round_trip(&mut c).await.is_none(), "cut");
        let mut again = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(
            round_trip(&mut again).await.is_none(),
            "refused while partitioned"
        );
        proxy.partition(false);
        let mut healed = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(round_trip(&mut healed).await.is_some());
    }

    #[tokio::test]
    async fn moves_on_to_the_next_upstream() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap(); // dropped: nothing listens there now
        let proxy = FaultProxy::start(vec![dead, echo_server().await], 0)
            .await
            .unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(
            round_trip(&mut c).await.is_some(),
            "the second one answered"
        );
    }

    /// A client that writes and hangs up while held: its bytes arrive on release, not at
    /// the hang-up (the paused node's late append that fencing must refuse).
    #[tokio::test]
    async fn a_held_link_delivers_a_closed_clients_bytes_on_release() {
        let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = sink.local_addr().unwrap();
        let (got_tx, got) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = sink.accept().await.unwrap();
            let mut b = Vec::new();
            let _ = s.read_to_end(&mut b).await;
            let _ = got_tx.send((tokio::time::Instant::now(), b));
        });
        let proxy = FaultProxy::start(vec![at], 0).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // the upstream is connected
        proxy.hold(true);
        c.write_all(b"late").await.unwrap();
        drop(c);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let released = tokio::time::Instant::now();
        proxy.hold(false);
        let (when, bytes) = got.await.unwrap();
        assert_eq!(bytes, b"late");
        assert!(when >= released, "delivered only once released");
    }
}
