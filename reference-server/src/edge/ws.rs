//! `GET /ws`: a WebSocket session. Authenticated and admitted before the upgrade;
//! after it, a reader (rate limit, decode, dispatch into the core) and a writer
//! (outbound queue, heartbeats, the close) run side by side.

use super::auth::{ConnPermit, admit, authenticate};
use super::outbound::{CloseReason, Next, OutboundRx};
use super::{ApiError, Server, Shard, outbound};
use crate::core::ratelimit::TokenBucket;
use crate::core::{ConnId, Frame, SessionInfo};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rtsync_protocol::event::ID_BYTES_MAX;
use rtsync_protocol::{
    ClientMsg, Device, DeviceType, ErrorCode, ErrorPayload, Heartbeat, Resume, ServerMsg,
    Timestamp, close,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsQuery {
    token: Option<String>,
    session_id: Option<String>,
    /// The seed sends it; it must equal the token's `sub`.
    user_id: Option<String>,
    /// Read as text: resume points are opaque, an unreadable one is `complete: false`.
    epoch: Option<String>,
    last_seq: Option<String>,
    /// Read as text: an unknown device kind is the default one, not a refusal.
    device: Option<String>,
}

/// The `device` parameter; anything unknown is the default kind.
pub fn device_kind(given: Option<&str>) -> DeviceType {
    given
        .and_then(|d| serde_json::from_value(serde_json::Value::String(d.to_owned())).ok())
        .unwrap_or_default()
}

/// A session id from the client, or one made from the connection id.
pub fn session_id(given: Option<String>, conn: ConnId) -> Result<String, ApiError> {
    match given {
        Some(s) if s.is_empty() || s.len() > ID_BYTES_MAX => Err(ApiError::bad_request(format!(
            "sessionId must be 1 to {ID_BYTES_MAX} bytes"
        ))),
        Some(s) => Ok(s),
        None => Ok(format!("s{conn}")),
    }
}

pub async fn upgrade(
    State(server): State<Arc<Server>>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let claims = authenticate(&server, q.token.as_deref(), &headers, q.user_id.as_deref())?;
    let conn = server.next_conn_id();
    let session_id = session_id(q.session_id, conn)?;
    let permit = admit(&server, &claims.sub)?;
    let shard = match server.route(&claims.ws).await? {
        super::Route::Local(shard) => shard,
        super::Route::Remote(owner) => {
            let pq = uri.path_and_query().map_or("/ws", |p| p.as_str());
            let auth = headers.get(axum::http::header::AUTHORIZATION);
            let ask = super::owner::Ask::Ws {
                path_and_query: pq,
                authorization: auth,
            };
            use super::owner::{Answer, Reached};
            match server.to_owner(&claims.ws, owner, ask).await {
                Ok(Reached::Here(shard)) => shard,
                Ok(Reached::Owner(Answer::Ws(Ok(up)))) => {
                    let ws = ws
                        .read_buffer_size(server.cfg.ws_read_buffer_bytes)
                        .write_buffer_size(server.cfg.ws_write_buffer_bytes)
                        .max_message_size(server.cfg.frame_bytes_max)
                        .max_frame_size(server.cfg.frame_bytes_max);
                    return Ok(ws.on_upgrade(move |socket| {
                        super::proxy::relay(socket, *up, server, permit)
                    }));
                }
                Ok(Reached::Owner(Answer::Ws(Err(refused)) | Answer::Http(refused)))
                | Err(refused) => return Ok(refused),
            }
        }
    };
    let resume = Resume::from_query(q.epoch.as_deref(), q.last_seq.as_deref());
    let info = SessionInfo {
        user_id: claims.sub,
        session_id,
        device: Device {
            kind: device_kind(q.device.as_deref()),
            browser: String::new(),
        },
    };
    let cfg = &server.cfg;
    let ws = ws
        .read_buffer_size(cfg.ws_read_buffer_bytes)
        .write_buffer_size(cfg.ws_write_buffer_bytes)
        .max_message_size(cfg.frame_bytes_max)
        .max_frame_size(cfg.frame_bytes_max);
    let server2 = server.clone();
    let start = Start {
        conn,
        shard,
        info,
        resume,
        expires: Expiry::at_s(claims.exp),
    };
    Ok(ws.on_upgrade(move |socket| session(socket, server2, start, permit)))
}

/// When a session's token expires, on the server's clock: the session ends then
/// (WebSocket: close 4001; SSE: the stream ends), and nothing it sends later is applied.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    at_ms: u64,
}

impl Expiry {
    pub fn at_s(exp_s: u64) -> Self {
        Expiry {
            at_ms: exp_s.saturating_mul(1000),
        }
    }

    pub fn passed(self, now_ms: u64) -> bool {
        now_ms >= self.at_ms
    }

    /// Resolves when the token expires (tokio time, so simulated under turmoil).
    pub async fn wait(self, server: &Server) {
        let left = self.at_ms.saturating_sub(server.now_ms());
        tokio::time::sleep(Duration::from_millis(left)).await;
    }
}

/// What a WebSocket session starts from.
struct Start {
    conn: ConnId,
    shard: Arc<Shard>,
    info: SessionInfo,
    resume: Option<Resume>,
    expires: Expiry,
}

async fn session(socket: WebSocket, server: Arc<Server>, start: Start, _permit: ConnPermit) {
    let Start {
        conn,
        shard,
        info,
        resume,
        expires,
    } = start;
    server.metrics.connections_ws_opened_total.inc();
    let cfg = server.cfg.clone();
    let (out, mut rx) = outbound::channel(
        cfg.outbound_messages_max,
        cfg.outbound_bytes_max,
        server.shutdown_rx(),
    );
    {
        let now = server.now_ms();
        let mut s = shard.lock();
        s.attach(conn, out.clone());
        let hello = s.core.connect(conn, info, resume, now);
        s.deliver(hello, &server.metrics);
        s.note_replay(conn);
        rx.set_durable(s.durable_rx());
    }
    rx.set_refill(super::replay_refill(shard.clone(), conn));
    let (mut sink, mut stream) = socket.split();
    let reader = Reader {
        server: &server,
        shard: &shard,
        conn,
        bucket: TokenBucket::new(cfg.inbound_rate_per_s, cfg.inbound_burst),
        strikes: (0, 0),
        expires,
        out: out.clone(),
    };
    let writer = write_loop(&mut sink, &mut rx, &server);
    tokio::pin!(writer);
    let reading = reader.run(&mut stream);
    tokio::pin!(reading);
    tokio::select! {
        biased;
        _ = &mut writer => {
            // A slow consumer (1013) gets nothing more, but may still be sending:
            // dropping the socket now would reset it and lose what it sends next. What
            // it sends is applied until it closes or goes quiet (heartbeat timeout); its
            // answers come again when it resends after reconnecting (ops are idempotent).
            // Any other close the reader asked for: it is draining the socket, so that
            // what it still sends does not turn the close into a reset.
            let wait = if out.close_code() == Some(rtsync_protocol::close::TRY_AGAIN_LATER) {
                cfg.heartbeat_timeout()
            } else {
                GRACE
            };
            let _ = tokio::time::timeout(wait, &mut reading).await;
        }
        reason = &mut reading => {
            out.close(reason);
            // Give the writer a moment to send the close frame.
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        }
        () = expires.wait(&server) => {
            out.close(reason(close::TOKEN_EXPIRED, "token expired"));
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        }
    }
    shard.lock().detach(conn, server.now_ms());
}

async fn write_loop(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut OutboundRx,
    server: &Server,
) {
    let mut heartbeat = tokio::time::interval(server.cfg.heartbeat());
    heartbeat.tick().await; // the first tick is immediate; CONNECTED says when to expect pings
    let mut batch = Vec::new();
    loop {
        let msg = tokio::select! {
            biased;
            next = rx.next() => match next {
                Next::Frame(frame, waited) => sent_frame(server, frame, waited),
                Next::Close(r) => {
                    count_close(server, &r);
                    let frame = CloseFrame { code: r.code, reason: r.reason.into() };
                    let _ = tokio::time::timeout(GRACE, sink.send(Message::Close(Some(frame)))).await;
                    return;
                }
            },
            _ = heartbeat.tick() => {
                let hb = ServerMsg::Heartbeat(Heartbeat { timestamp: Timestamp(server.now_ms()) });
                Message::Text(hb.encode().into())
            }
        };
        // Frames queued behind this one go out in the same socket write (a burst of
        // events costs one write and one wake-up of the peer, not one per frame).
        // `batch` holds at most the outbound queue's bound.
        batch.push(msg);
        while let Some((frame, waited)) = rx.try_next() {
            batch.push(sent_frame(server, frame, waited));
        }
        let send = async {
            for m in batch.drain(..) {
                sink.feed(m).await?;
            }
            sink.flush().await
        };
        // A blocked send (the peer stopped reading) must not outlive a close request
        // for long: the connection gets GRACE to drain, then it is dropped.
        tokio::pin!(send);
        let sent = tokio::select! {
            biased;
            r = &mut send => r.is_ok(),
            () = rx.close_requested() => {
                tokio::time::timeout(GRACE, &mut send).await.is_ok_and(|r| r.is_ok())
            }
        };
        if !sent {
            return;
        }
    }
}

/// Counts a frame on its way out and makes it a message.
fn sent_frame(server: &Server, frame: Frame, waited: Duration) -> Message {
    let m = &server.metrics;
    m.observe_queue_wait(waited);
    m.messages_out_total.inc();
    m.bytes_out_total.inc_by(frame.len() as u64);
    Message::Text(ws_text(frame))
}

/// The frame's text as axum's `Utf8Bytes` without copying it: a `Bytes` that owns a
/// reference to the shared `Arc<str>`. axum re-checks that it is UTF-8 (≈ 1 ns per 10
/// bytes, once per delivery) — the price of keeping axum's type out of the core without
/// `unsafe`; it cannot fail (the text is a `str`), and if it ever did the frame is copied.
fn ws_text(frame: Frame) -> Utf8Bytes {
    struct Shared(Arc<str>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    let text = frame.text;
    Utf8Bytes::try_from(Bytes::from_owner(Shared(text.clone())))
        .unwrap_or_else(|_| Utf8Bytes::from(&*text))
}

/// How long a connection being closed may take to flush a frame or its close frame.
const GRACE: Duration = Duration::from_secs(1);

fn count_close(server: &Server, r: &CloseReason) {
    let m = &server.metrics;
    use super::log::{Kind, warn_limited};
    if r.code == close::TRY_AGAIN_LATER {
        warn_limited!(server, Kind::SlowConsumer, "slow consumer closed 1013");
    } else if r.flush && r.code != close::NORMAL {
        warn_limited!(
            server,
            Kind::Close,
            code = r.code,
            reason = r.reason,
            "closing a session"
        );
    }
    let counter = match r.code {
        close::POLICY => Some(&m.closes_policy_total),
        close::TOO_BIG => Some(&m.closes_too_big_total),
        close::HEARTBEAT_TIMEOUT => Some(&m.closes_heartbeat_timeout_total),
        close::TOKEN_EXPIRED => Some(&m.closes_token_expired_total),
        close::UNSUPPORTED_DATA => Some(&m.closes_unsupported_total),
        _ => None, // 1013 is counted where the queue overflowed
    };
    if let Some(c) = counter {
        c.inc();
    }
}

struct Reader<'a> {
    server: &'a Server,
    shard: &'a Shard,
    conn: ConnId,
    bucket: TokenBucket,
    /// (second, rate-limited messages in it)
    strikes: (u64, u32),
    expires: Expiry,
    /// The connection's queue, to ask for a close while the reader keeps draining.
    out: outbound::Outbound,
}

/// A close the reader decided on: queued answers (the errors that explain it) go first.
fn reason(code: u16, reason: &'static str) -> CloseReason {
    CloseReason {
        code,
        reason,
        flush: true,
    }
}

impl Reader<'_> {
    /// Reads until the session must end; returns how to close it. A close the server
    /// decides (abuse, a protocol error, expiry) is asked for at once, and the socket is
    /// read and discarded for up to `GRACE` meanwhile: a socket closed with unread bytes
    /// makes the kernel send a reset, and the client would see 1006 instead of the
    /// queued errors and close frame that explain the close.
    async fn run(self, stream: &mut SplitStream<WebSocket>) -> CloseReason {
        let out = self.out.clone();
        let r = self.read(stream).await;
        if r.flush && r.code != close::NORMAL {
            out.close(r.clone());
            let drain = async {
                while let Some(Ok(m)) = stream.next().await {
                    if let Message::Close(_) = m {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(GRACE, drain).await;
        }
        r
    }

    async fn read(mut self, stream: &mut SplitStream<WebSocket>) -> CloseReason {
        let timeout = self.server.cfg.heartbeat_timeout();
        loop {
            let msg = match tokio::time::timeout(timeout, stream.next()).await {
                Err(_) => return reason(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"),
                Ok(None) => return reason(close::NORMAL, "closed by client"),
                Ok(Some(Err(e))) => return read_error(e),
                Ok(Some(Ok(m))) => m,
            };
            if let Message::Close(_) = msg {
                return reason(close::NORMAL, "closed by client");
            }
            // Every frame a client sends counts against its rate, pings and garbage too.
            self.server.metrics.messages_in_total.inc();
            let now = self.server.now_ms();
            if self.expires.passed(now) {
                return reason(close::TOKEN_EXPIRED, "token expired");
            }
            if let Message::Binary(_) = msg {
                return reason(
                    close::UNSUPPORTED_DATA,
                    "binary frames are not part of the protocol; send JSON text",
                );
            }
            if !self.bucket.try_take(now) {
                self.server.metrics.rate_limited_total.inc();
                let second = now / 1000;
                self.strikes = if self.strikes.0 == second {
                    (second, self.strikes.1 + 1)
                } else {
                    (second, 1)
                };
                if self.strikes.1 > self.server.cfg.rate_strikes_per_s_max {
                    return reason(close::POLICY, "sustained rate-limit abuse");
                }
                // The op it refused, when it was one: the client sends it again after
                // `retryAfterMs` instead of waiting for an answer that never comes.
                let op_id = match &msg {
                    Message::Text(t) => match ClientMsg::decode(t.as_str()) {
                        Ok(ClientMsg::RealtimeEvent(ev)) if ev.kind.is_mutation() => ev
                            .payload
                            .get("opId")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned),
                        _ => None,
                    },
                    _ => None,
                };
                self.send_error(ErrorPayload {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "over {} messages/s; this one was not processed",
                        self.server.cfg.inbound_rate_per_s
                    ),
                    op_id,
                    expected_n: None,
                    retry_after_ms: Some(self.bucket.wait_ms().max(1)),
                });
                continue;
            }
            // Pings and pongs (tungstenite answers pings itself) count, then are done.
            let Message::Text(text) = msg else { continue };
            match ClientMsg::decode(text.as_str()) {
                Ok(m) => self.dispatch(m, now),
                Err(e) => self.reply_error(e.code(), e.to_string()),
            }
        }
    }

    fn dispatch(&mut self, msg: ClientMsg, now: u64) {
        if let ClientMsg::RealtimeEvent(ev) = &msg
            && ev.kind.is_mutation()
        {
            self.server.metrics.mutations_total.inc();
        }
        let mut s = self.shard.lock();
        let out = s.core.handle_msg(self.conn, &msg, now);
        if !s.commit(out, self.server) {
            drop(s);
            let op_id = match &msg {
                ClientMsg::RealtimeEvent(ev) => ev
                    .payload
                    .get("opId")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                _ => None,
            };
            self.send_error(super::durable::unavailable(op_id));
            return;
        }
        if let ClientMsg::Resume(_) = msg {
            s.note_replay(self.conn);
        }
    }

    fn reply_error(&self, code: ErrorCode, message: String) {
        self.send_error(ErrorPayload {
            code,
            message,
            op_id: None,
            expected_n: None,
            retry_after_ms: None,
        });
    }

    fn send_error(&self, e: ErrorPayload) {
        let frame = Frame::of(&ServerMsg::Error(e));
        let mut s = self.shard.lock();
        s.deliver(
            vec![crate::core::Delivery {
                to: self.conn,
                frame,
            }],
            &self.server.metrics,
        );
    }
}

fn read_error(e: axum::Error) -> CloseReason {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.into_inner().downcast::<WsError>() {
        Ok(e) if matches!(*e, WsError::Capacity(_)) => reason(close::TOO_BIG, "frame too large"),
        // A peer that drops its TCP connection without a close frame is gone, not
        // abusive (it was counted as a 1008 policy close).
        Ok(e)
            if matches!(
            *e,
            WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            )
        ) =>
        {
            reason(close::NORMAL, "connection lost")
        }
        Ok(e) if matches!(*e, WsError::Protocol(_) | WsError::Utf8(_)) => {
            reason(close::POLICY, "protocol error")
        }
        _ => reason(close::NORMAL, "connection lost"),
    }
}
