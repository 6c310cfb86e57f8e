//! The network: [`Net`] (turmoil's or real TCP, chosen per run), the three client
//! transports over it (WebSocket, SSE, plain HTTP with keep-alive), and the server's
//! side on turmoil (a clock on simulated time). The bytes on these
//! streams are the real protocol; under simulation only the network is simulated.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rtsync_protocol::ServerMsg;
use rtsync_protocol::sse::SseParser;
use rtsync_server::Clock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use turmoil::net::TcpStream;

/// The simulated wall clock starts here (2026-11-18T…Z), so timestamps look real.
pub const SIM_EPOCH_MS: u64 = 1_795_000_000_000;

/// The server's port on its simulated host.
pub const SERVER_PORT: u16 = 8080;
/// Small buffers: tungstenite zero-fills its read buffer on every read
/// (docs/performance.md, "Simulator speed").
const WS_BUFFER_BYTES: usize = 4096;

/// The network a run's tabs speak over, chosen when the run is built: turmoil's
/// simulated TCP, or real TCP (`simulate live`). Every connect and every timestamp a tab
/// takes goes through it, so the same tab code runs both ways and a simulated tab can
/// never reach a real socket or the wall clock.
#[derive(Debug, Clone)]
pub enum Net {
    Sim(Arc<SimRoutes>),
    Live(Arc<LiveNet>),
}

/// Where a simulated route connects: its home node first, then each next one (a client
/// with every node's address, or a load balancer, moving on from one that is down).
#[derive(Debug, Default)]
pub struct SimRoutes {
    /// Server nodes (hosts `server`, `node1`, …).
    pub nodes: usize,
    /// Route → its home node (0 when absent).
    pub home: BTreeMap<String, usize>,
}

/// Live mode's network: where each route (a group's tabs, the probe) connects.
#[derive(Debug)]
pub struct LiveNet {
    /// Where a route without its own list connects (the final probe), tried in order: the
    /// server, or a cluster's nodes.
    servers: Vec<SocketAddr>,
    /// Route → where it connects, tried in order: its group's fault proxy, or (no
    /// proxy, a cluster) the nodes from the group's home node on.
    routes: BTreeMap<String, Vec<SocketAddr>>,
    /// The run's common time origin: every live thread measures from it. Wall clock,
    /// and live only: a simulated run is `Net::Sim` and never builds a `LiveNet`.
    start: std::time::Instant,
}

/// Simulated milliseconds since the run began, the same on every host (tokio's
/// `Instant` differs per host under turmoil).
pub fn sim_now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl Net {
    /// Real TCP: to the first of the route's addresses in `routes` that accepts, else
    /// to the first of `servers` that does.
    pub fn live(
        servers: Vec<SocketAddr>,
        routes: BTreeMap<String, Vec<SocketAddr>>,
        start: std::time::Instant,
    ) -> Net {
        Net::Live(Arc::new(LiveNet {
            servers,
            routes,
            start,
        }))
    }

    /// Milliseconds since the run began, the same on every host: simulated time under
    /// turmoil, real time live. Every timestamp compared across hosts comes from here.
    pub fn now_ms(&self) -> u64 {
        match self {
            Net::Sim(_) => sim_now_ms(),
            Net::Live(l) => l.start.elapsed().as_millis() as u64,
        }
    }

    /// Seconds since the Unix epoch on the server's clock, for token expiry: the
    /// simulated epoch plus simulated time, or the wall clock live.
    pub fn epoch_now_s(&self) -> u64 {
        match self {
            Net::Sim(_) => (SIM_EPOCH_MS + sim_now_ms()) / 1000,
            // Live only: a real server checks tokens against the real clock.
            Net::Live(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Live: where `route` connects, in order.
    fn addrs(&self, route: &str) -> &[SocketAddr] {
        match self {
            Net::Sim(_) => &[],
            Net::Live(l) => l.routes.get(route).unwrap_or(&l.servers),
        }
    }
}

/// A tab's socket: turmoil's simulated TCP, or real TCP in live mode.
#[derive(Debug)]
pub enum Conn {
    Sim(TcpStream),
    Live(tokio::net::TcpStream),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Live(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Live(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Live(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Live(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The server's clock: a fixed simulated epoch plus simulated time, so its timestamps
/// and log epochs are a function of the seed (a restart gets a later epoch).
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    pub epoch_ms: u64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.epoch_ms + sim_now_ms()
    }
}

/// Why a connect failed, as the client state machine wants to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFail {
    Unauthorized,
    Refused { retry_after_ms: u64 },
    Network,
}

pub type Ws = WebSocketStream<Conn>;

fn refusal(status: u16, headers: &hyper::HeaderMap) -> ConnectFail {
    let retry_after_ms = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(1000, |s| s * 1000);
    match status {
        401 => ConnectFail::Unauthorized,
        429 | 503 => ConnectFail::Refused { retry_after_ms },
        _ => ConnectFail::Network,
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A tab's idle HTTP/1.1 connections, reused for its POSTs as a browser reuses them
/// (keep-alive): a POST on a warm connection costs one round trip, not a connect and
/// then one. Dropped when the tab's stream is lost (the server may have gone with it).
#[derive(Debug, Default)]
pub struct KeepAlive {
    idle: Vec<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, u64)>,
}

/// Idle connections a tab keeps: a browser's six per origin, minus the stream.
const KEEP_ALIVE_IDLE_MAX: usize = 5;
/// An idle connection older than this is not reused (a browser closes unused sockets).
/// A server may close one sooner (the reference server after `header_read_timeout_ms`,
/// 10 s; Node after `keepAliveTimeout`, 5 s): a request that fails on a reused
/// connection is sent again on a new one, as browsers do (ops are idempotent by opId).
const KEEP_ALIVE_IDLE_MS: u64 = 30_000;
/// How long a request may take before the app gives up on it (a `fetch` with an
/// AbortController): a POST's op stays queued and is resent after the client's ack
/// timeout; a read is retried. A request to a crashed server would otherwise hang.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl KeepAlive {
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    fn take(
        &mut self,
        now_ms: u64,
    ) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        while let Some((sender, since)) = self.idle.pop() {
            if sender.is_ready() && now_ms.saturating_sub(since) < KEEP_ALIVE_IDLE_MS {
                return Some(sender);
            }
        }
        None
    }
}

fn build(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> Option<hyper::Request<Full<Bytes>>> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.body(Full::new(Bytes::from(body.unwrap_or_default())))
        .ok()
}

/// An open SSE stream, parsed.
#[derive(Debug)]
pub struct Sse {
    body: Incoming,
    parser: SseParser,
    pending: std::collections::VecDeque<ServerMsg>,
}

/// What an SSE read gave.
#[derive(Debug)]
pub enum SseRead {
    Frame(ServerMsg),
    /// Bytes arrived that completed no event (a keep-alive comment): still alive.
    Activity,
    Ended,
}

impl Sse {
    pub async fn next(&mut self) -> SseRead {
        if let Some(m) = self.pending.pop_front() {
            return SseRead::Frame(m);
        }
        match self.body.frame().await {
            Some(Ok(f)) => {
                let Some(data) = f.data_ref() else {
                    return SseRead::Activity;
                };
                match self.parser.feed(data) {
                    Ok(events) => {
                        self.pending.extend(
                            events
                                .iter()
                                .filter_map(|e| ServerMsg::decode(&e.data).ok()),
                        );
                        self.pending
                            .pop_front()
                            .map_or(SseRead::Activity, SseRead::Frame)
                    }
                    Err(_) => SseRead::Ended,
                }
            }
            _ => SseRead::Ended,
        }
    }
}

/// The client side: every request a tab makes, over this run's network.
impl Net {
    /// Connects to the server for `route` (a group's name, or "probe"): on turmoil's
    /// network the route's home node, else the next one up; live, the first of the
    /// route's addresses that accepts (its group's fault proxy, or the nodes in order).
    async fn connect(&self, route: &str) -> Result<(Conn, String), ConnectFail> {
        match self {
            Net::Live(_) => {
                for &addr in self.addrs(route) {
                    if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                        let _ = s.set_nodelay(true);
                        return Ok((Conn::Live(s), addr.to_string()));
                    }
                }
                Err(ConnectFail::Network)
            }
            Net::Sim(routes) => {
                let nodes = routes.nodes.max(1);
                let home = routes.home.get(route).copied().unwrap_or(0);
                for k in 0..nodes {
                    let host = crate::world::node_host((home + k) % nodes);
                    if let Ok(s) = TcpStream::connect((host.as_str(), SERVER_PORT)).await {
                        return Ok((Conn::Sim(s), format!("{host}:{SERVER_PORT}")));
                    }
                }
                Err(ConnectFail::Network)
            }
        }
    }

    pub async fn ws_connect(&self, route: &str, query: &str) -> Result<Ws, ConnectFail> {
        let (stream, authority) = self.connect(route).await?;
        let url = format!("ws://{authority}/ws?{query}");
        let cfg = WebSocketConfig::default()
            .read_buffer_size(WS_BUFFER_BYTES)
            .write_buffer_size(WS_BUFFER_BYTES);
        match tokio_tungstenite::client_async_with_config(url, stream, Some(cfg)).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                Err(refusal(resp.status().as_u16(), resp.headers()))
            }
            Err(_) => Err(ConnectFail::Network),
        }
    }

    /// `GET path` with a bearer token; the JSON body of a 200, else `None`.
    pub async fn get_json(
        &self,
        route: &str,
        token: &str,
        path: &str,
    ) -> Option<serde_json::Value> {
        let headers = [("authorization", format!("Bearer {token}"))];
        let read = self.http(route, "GET", path, &headers, None);
        match tokio::time::timeout(FETCH_TIMEOUT, read).await {
            Ok(Ok((200, body))) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }

    /// An entity list read page by page (`next` → `after=`): (epoch, the first page's
    /// watermark, every entity). Each page has its own watermark, and streaming from the
    /// first one's brings every change made while paging. `None` on any failure, or when
    /// the server restarted between two pages. A server that does not page answers once.
    pub async fn get_pages(
        &self,
        route: &str,
        token: &str,
        path: &str,
    ) -> Option<(u64, u64, Vec<serde_json::Value>)> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (mut first, mut all, mut after) = (None, Vec::new(), None::<String>);
        loop {
            let page = match &after {
                None => self.get_json(route, token, path).await?,
                Some(a) => {
                    let a = query_escape(a);
                    self.get_json(route, token, &format!("{path}{sep}after={a}"))
                        .await?
                }
            };
            let (epoch, seq) = (page.get("epoch")?.as_u64()?, page.get("seq")?.as_u64()?);
            match first {
                None => first = Some((epoch, seq)),
                Some((e, _)) if e != epoch => return None,
                Some(_) => {}
            }
            all.extend(page.get("entities")?.as_array()?.iter().cloned());
            match page.get("next").and_then(|n| n.as_str()) {
                Some(n) if after.as_deref() != Some(n) => after = Some(n.to_owned()),
                Some(_) => return None, // a server that does not move on: give up
                None => break,
            }
        }
        let (epoch, seq) = first?;
        Some((epoch, seq, all))
    }

    /// One HTTP/1 request on a fresh connection: (status, body).
    pub async fn http(
        &self,
        route: &str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(u16, Vec<u8>), ConnectFail> {
        let resp = self.request(route, method, path, headers, body).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| ConnectFail::Network)?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }

    /// POSTs `body` on one of the tab's idle connections, or a new one; the connection goes
    /// back to the pool once its answer is read. `None`: no answer (network, timeout).
    pub async fn post(
        &self,
        pool: &std::rc::Rc<std::cell::RefCell<KeepAlive>>,
        route: &str,
        path: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Option<(u16, Vec<u8>)> {
        let exchange = async {
            let warm = pool.borrow_mut().take(self.now_ms());
            let reused = warm.is_some();
            let (mut sender, authority) = match warm {
                Some(s) => (s, self.authority(route)),
                None => self.handshake(route).await.ok()?,
            };
            let req = build(&authority, "POST", path, headers, Some(body.clone()))?;
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                // Closed by the server while idle: once more, on a new connection.
                Err(_) if reused => {
                    let (s, authority) = self.handshake(route).await.ok()?;
                    sender = s;
                    let req = build(&authority, "POST", path, headers, Some(body))?;
                    sender.send_request(req).await.ok()?
                }
                Err(_) => return None,
            };
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.ok()?.to_bytes();
            let mut pool = pool.borrow_mut();
            if !sender.is_closed() && pool.idle.len() < KEEP_ALIVE_IDLE_MAX {
                pool.idle.push((sender, self.now_ms()));
            }
            Some((status, bytes.to_vec()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }

    /// The `host` header for `route`'s server.
    fn authority(&self, route: &str) -> String {
        match self.addrs(route).first() {
            Some(addr) => addr.to_string(),
            None => format!("server:{SERVER_PORT}"),
        }
    }

    async fn handshake(
        &self,
        route: &str,
    ) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String), ConnectFail> {
        let (stream, authority) = self.connect(route).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ConnectFail::Network)?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok((sender, authority))
    }

    async fn request(
        &self,
        route: &str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<hyper::Response<Incoming>, ConnectFail> {
        let (mut sender, authority) = self.handshake(route).await?;
        let req = build(&authority, method, path, headers, body).ok_or(ConnectFail::Network)?;
        sender
            .send_request(req)
            .await
            .map_err(|_| ConnectFail::Network)
    }

    pub async fn sse_connect(
        &self,
        route: &str,
        path: &str,
        last_event_id: Option<String>,
    ) -> Result<Sse, ConnectFail> {
        let mut headers = vec![("accept", "text/event-stream".to_owned())];
        if let Some(id) = last_event_id {
            headers.push(("last-event-id", id));
        }
        let resp = self.request(route, "GET", path, &headers, None).await?;
        if resp.status() != 200 {
            return Err(refusal(resp.status().as_u16(), resp.headers()));
        }
        Ok(Sse {
            body: resp.into_body(),
            parser: SseParser::new(1 << 20),
            pending: Default::default(),
        })
    }
}
