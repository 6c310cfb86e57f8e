//! Real clients for the real server on 127.0.0.1: tokio-tungstenite WebSockets, an SSE
//! reader over a hyper HTTP/1 connection, and plain HTTP requests.

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rtsync_protocol::auth::{Claims, mint};
use rtsync_protocol::sse::{SseEvent, SseParser};
use rtsync_protocol::{ClientEvent, ClientMsg, EventType, ServerMsg};
use rtsync_server::{ServerConfig, SystemClock, serve, tcp};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &[u8] = b"test-secret";
pub const WAIT: Duration = Duration::from_secs(3);

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), rtsync_server::ServeError>>,
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::run(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            Self::config(tweak),
        )
    }

    /// The tests' configuration: `tweak` on top of memory durability, a short presence
    /// grace and a fast tick.
    pub fn config(tweak: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
        let mut cfg = ServerConfig {
            jwt_secret: SECRET.to_vec(),
            // Tests that need a disk set a data dir of their own.
            durability: rtsync_server::storage::Durability::Memory,
            ..ServerConfig::default()
        };
        cfg.core.presence_grace_ms = 300;
        cfg.tick_ms = 20;
        tweak(&mut cfg);
        cfg
    }

    /// A node of a cluster over `redis`, advertised where it listens (short leases,
    /// so a test sees a lease lapse).
    pub async fn node(redis: &str, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = Self::config(|c| {
            c.cluster.redis = Some(redis.to_owned());
            c.cluster.advertise = Some(addr.to_string());
            c.cluster.lease_ms = 600;
            c.cluster.redis_timeout_ms = 500;
            tweak(c);
        });
        Self::run(listener, cfg)
    }

    fn run(listener: tokio::net::TcpListener, cfg: ServerConfig) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            tcp(listener),
            cfg,
            Arc::new(SystemClock::new()),
            async {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub async fn ws(&self, user: &str, workspace: &str, session: &str) -> Ws {
        self.ws_query(&format!(
            "token={}&sessionId={session}",
            token(user, workspace)
        ))
        .await
    }

    pub async fn ws_query(&self, query: &str) -> Ws {
        let url = format!("ws://{}/ws?{query}", self.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Ws { stream }
    }

    /// The HTTP status of a refused WebSocket upgrade, and its body.
    pub async fn ws_refused(&self, query: &str) -> (u16, String) {
        let url = format!("ws://{}/ws?{query}", self.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                (resp.status().as_u16(), body)
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("upgrade was accepted"),
        }
    }

    pub async fn sse(
        &self,
        user: &str,
        workspace: &str,
        session: &str,
        last_event_id: Option<&str>,
    ) -> Sse {
        let path = format!(
            "/api/events/subscribe?token={}&sessionId={session}",
            token(user, workspace)
        );
        let mut headers = vec![("accept", "text/event-stream".to_owned())];
        if let Some(id) = last_event_id {
            headers.push(("last-event-id", id.to_owned()));
        }
        let resp = self.request("GET", &path, &headers, None).await;
        assert_eq!(resp.status(), 200, "SSE subscribe");
        Sse {
            body: resp.into_body(),
            parser: SseParser::new(1 << 20),
            pending: Vec::new(),
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> hyper::Response<Incoming> {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        sender.send_request(req).await.unwrap()
    }

    /// A whole request: status and body text.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> (u16, String) {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(t) = bearer {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let resp = self.request(method, path, &headers, body).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn token(user: &str, workspace: &str) -> String {
    token_exp(user, workspace, 4_000_000_000)
}

/// A token that expires at `exp` (seconds since the Unix epoch).
pub fn token_exp(user: &str, workspace: &str, exp: u64) -> String {
    mint(
        &Claims {
            sub: user.into(),
            ws: workspace.into(),
            exp,
        },
        SECRET,
    )
}

/// Seconds since the Unix epoch, as the server's `SystemClock` reads them.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn mutation(kind: EventType, op: &str, id: &str, base: u64, changes: Value) -> ClientMsg {
    ClientMsg::RealtimeEvent(ClientEvent {
        id: None,
        kind,
        payload: json!({"opId": op, "id": id, "changes": changes}),
        user_id: None,
        session_id: None,
        timestamp: None,
        version: base,
    })
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a WebSocket read gave.
#[derive(Debug)]
pub enum Got {
    Msg(ServerMsg),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn send(&mut self, m: &ClientMsg) {
        self.send_text(&m.encode()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("ws send");
    }

    /// The next frame (heartbeats included), or the close.
    pub async fn next(&mut self) -> Got {
        loop {
            let m = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a frame");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Got::Msg(ServerMsg::decode(t.as_str()).expect("server frame decodes"));
                }
                Some(Ok(Message::Close(c))) => return Got::Closed(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Closed(None),
            }
        }
    }

    /// The next frame that is not a heartbeat or presence frame.
    pub async fn recv(&mut self) -> ServerMsg {
        loop {
            match self.next().await {
                Got::Msg(
                    ServerMsg::Heartbeat(_)
                    | ServerMsg::PresenceUpdate(_)
                    | ServerMsg::PresenceDiff(_),
                ) => continue,
                Got::Msg(ServerMsg::RealtimeEvent { event, .. })
                    if matches!(
                        event.kind,
                        EventType::UserPresenceChanged | EventType::CollaborationCursor
                    ) =>
                {
                    continue;
                }
                Got::Msg(m) => return m,
                Got::Closed(c) => panic!("connection closed ({c:?}) while waiting for a frame"),
            }
        }
    }

    /// Skips frames until `pick` returns something.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> T {
        loop {
            match self.next().await {
                Got::Msg(m) => {
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
                Got::Closed(c) => panic!("connection closed ({c:?}) while waiting"),
            }
        }
    }

    /// Reads and discards every frame in the background until the connection ends, so
    /// a client that is only there to be present is never a slow consumer.
    pub fn drain_in_background(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { while let Some(Ok(_)) = self.stream.next().await {} })
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Got::Closed(c) = self.next().await {
                return c;
            }
        }
    }

    /// Asserts that nothing but heartbeats/presence arrives for `d`.
    pub async fn quiet_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let m = ServerMsg::decode(t.as_str()).unwrap();
                    assert!(
                        matches!(
                            m,
                            ServerMsg::Heartbeat(_)
                                | ServerMsg::PresenceUpdate(_)
                                | ServerMsg::PresenceDiff(_)
                        ),
                        "unexpected frame {m:?}"
                    );
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

pub struct Sse {
    body: Incoming,
    parser: SseParser,
    pending: Vec<SseEvent>,
}

impl Sse {
    pub async fn event(&mut self) -> SseEvent {
        loop {
            if !self.pending.is_empty() {
                return self.pending.remove(0);
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("timed out waiting for SSE");
            match frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        self.pending.extend(self.parser.feed(data).unwrap());
                    }
                }
                other => panic!("SSE stream ended: {other:?}"),
            }
        }
    }

    /// The next event's frame, decoded, skipping presence frames.
    pub async fn recv(&mut self) -> (SseEvent, ServerMsg) {
        loop {
            let ev = self.event().await;
            let m = ServerMsg::decode(&ev.data).expect("SSE data is a server frame");
            if !matches!(m, ServerMsg::PresenceUpdate(_) | ServerMsg::PresenceDiff(_)) {
                return (ev, m);
            }
        }
    }

    /// Reads until the stream ends; true if it ended within the wait.
    pub async fn ended(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.body.frame()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// A server with a strict rate limit (5/s, burst 5, closed past 10 refusals a second)
/// and a connected WebSocket to flood it with.
pub async fn flooder() -> (TestServer, Ws) {
    let server = TestServer::start(|c| {
        c.inbound_rate_per_s = 5.0;
        c.inbound_burst = 5;
        c.rate_strikes_per_s_max = 10;
    })
    .await;
    let mut ws = server.ws("mallory", "w1", "m").await;
    connected(&mut ws).await;
    (server, ws)
}

/// Reads `CONNECTED` (the first frame) and returns (epoch, seq).
pub async fn connected(ws: &mut Ws) -> (u64, u64) {
    match ws.next().await {
        Got::Msg(ServerMsg::Connected(c)) => (c.epoch, c.seq),
        other => panic!("expected CONNECTED, got {other:?}"),
    }
}
