//! What a case talks to the target with: WebSocket, SSE and plain HTTP over real TCP,
//! every frame written into the case's transcript, every wait bounded.
//!
//! Conformance runs only against real servers over real TCP, never inside the
//! simulation, so the wall clock here (transcript times, waits) is the right clock.
//!
//! Frames are handled as JSON values, not the protocol crate's types: a server that gets
//! a field wrong should fail the case that checks that field, not every case that reads
//! the frame.

use super::Verdict;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rtsync_protocol::sse::SseParser;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long a case waits for one expected answer.
pub const REPLY_WAIT: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is watched for.
pub const QUIET_WAIT: Duration = Duration::from_millis(600);
/// A frame longer than this is cut in the transcript.
const TRANSCRIPT_TEXT_MAX: usize = 2000;

/// One line of a case's transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    /// Milliseconds since the case started.
    pub at_ms: u64,
    /// `>` sent, `<` received, `#` what the case noted (a connect, a close, a status).
    pub dir: &'static str,
    /// Which connection (`ws alice/a`, `sse bob`, `http`).
    pub on: String,
    pub text: String,
}

/// A case's transcript, shared by its connections.
#[derive(Debug, Clone)]
pub struct Transcript {
    start: Instant,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Transcript {
    pub fn new() -> Self {
        Transcript {
            start: Instant::now(),
            lines: Arc::default(),
        }
    }

    pub fn add(&self, dir: &'static str, on: &str, text: &str) {
        let mut text = text.to_owned();
        if text.len() > TRANSCRIPT_TEXT_MAX {
            let mut cut = TRANSCRIPT_TEXT_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = format!("{}… ({} bytes)", &text[..cut], text.len());
        }
        let at_ms = self.start.elapsed().as_millis() as u64;
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(Line {
            at_ms,
            dir,
            on: on.to_owned(),
            text,
        });
    }

    pub fn take(&self) -> Vec<Line> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

/// A failed expectation: what was expected, what came instead.
pub fn fail(expected: impl Into<String>, got: impl Into<String>) -> Verdict {
    Verdict::Fail {
        expected: expected.into(),
        got: got.into(),
    }
}

/// `Ok` when `ok`, else the failure.
pub fn expect(
    ok: bool,
    expected: impl Into<String>,
    got: impl Into<String>,
) -> Result<(), Verdict> {
    if ok { Ok(()) } else { Err(fail(expected, got)) }
}

/// A frame's `type`.
pub fn kind(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

/// An `ERROR` frame's code.
pub fn error_code(v: &Value) -> Option<&str> {
    (kind(v) == "ERROR").then(|| v["payload"]["code"].as_str().unwrap_or(""))
}

/// What a WebSocket connect got instead of a connection.
#[derive(Debug)]
pub enum Refused {
    /// The HTTP status of the refused upgrade.
    Status(u16),
    /// No TCP connection, or no HTTP answer.
    Network(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Status(s) => write!(f, "HTTP {s}"),
            Refused::Network(e) => write!(f, "no connection: {e}"),
        }
    }
}

/// What a read from a WebSocket gave.
#[derive(Debug)]
pub enum Got {
    Frame(Value),
    /// A close frame (its code), or the connection ending without one (`None`).
    Closed(Option<u16>),
    /// Nothing within the wait.
    Nothing,
}

/// An open WebSocket.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    pub name: String,
    log: Transcript,
}

impl std::fmt::Debug for Ws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ws({})", self.name)
    }
}

impl Ws {
    pub async fn connect(
        addr: &str,
        query: &str,
        name: &str,
        log: &Transcript,
    ) -> Result<Ws, Refused> {
        log.add("#", name, &format!("GET /ws?{query}"));
        let tcp = tokio::time::timeout(REPLY_WAIT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| Refused::Network("connect timed out".into()))?
            .map_err(|e| Refused::Network(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://{addr}/ws?{query}");
        let upgrade = tokio_tungstenite::client_async(url, tcp);
        match tokio::time::timeout(REPLY_WAIT, upgrade).await {
            Err(_) => Err(Refused::Network("no answer to the upgrade".into())),
            Ok(Ok((stream, _))) => {
                log.add("#", name, "upgraded");
                Ok(Ws {
                    stream,
                    name: name.to_owned(),
                    log: log.clone(),
                })
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                log.add("#", name, &format!("refused: HTTP {status} {body}"));
                Err(Refused::Status(status))
            }
            Ok(Err(e)) => Err(Refused::Network(e.to_string())),
        }
    }

    pub async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.log.add(">", &self.name, text);
        let _ = self.stream.send(Message::text(text.to_owned())).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.log
            .add(">", &self.name, &format!("(binary, {} bytes)", bytes.len()));
        let _ = self.stream.send(Message::binary(bytes)).await;
    }

    /// The next frame (text parsed as JSON; pings answered by tungstenite), a close,
    /// or nothing within `wait`.
    pub async fn read(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match next {
                Err(_) => return Got::Nothing,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.log
                        .add("#", &self.name, "connection ended (no close frame)");
                    return Got::Closed(None);
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    self.log.add("<", &self.name, &t);
                    let v = serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()));
                    return Got::Frame(v);
                }
                Ok(Some(Ok(Message::Close(c)))) => {
                    let code = c.as_ref().map(|c| u16::from(c.code));
                    let reason = c.as_ref().map(|c| c.reason.to_string()).unwrap_or_default();
                    self.log
                        .add("<", &self.name, &format!("close {code:?} {reason}"));
                    return Got::Closed(code);
                }
                Ok(Some(Ok(Message::Binary(b)))) => {
                    self.log
                        .add("<", &self.name, &format!("(binary, {} bytes)", b.len()));
                }
                Ok(Some(Ok(_))) => {} // ping, pong, raw frames
            }
        }
    }

    /// The first frame `pick` accepts within `wait`, skipping others (presence,
    /// heartbeats); the failure names what was awaited and what the connection did.
    pub async fn until<T>(
        &mut self,
        what: &str,
        wait: Duration,
        mut pick: impl FnMut(&Value) -> Option<T>,
    ) -> Result<T, Verdict> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Got::Frame(v) => {
                    if let Some(t) = pick(&v) {
                        return Ok(t);
                    }
                }
                Got::Closed(code) => {
                    return Err(fail(
                        what,
                        format!("{}: closed ({code:?}) first", self.name),
                    ));
                }
                Got::Nothing => {
                    return Err(fail(
                        what,
                        format!("{}: nothing within {} ms", self.name, wait.as_millis()),
                    ));
                }
            }
        }
    }

    /// The first frame of type `t`.
    pub async fn frame(&mut self, t: &str) -> Result<Value, Verdict> {
        let what = format!("{t} on {}", self.name);
        self.until(&what, REPLY_WAIT, |v| (kind(v) == t).then(|| v.clone()))
            .await
    }

    /// The answer to a mutation `op`: its `ACK`, `CONFLICT_DETECTED` or `ERROR`.
    pub async fn answer(&mut self, op: &str) -> Result<Value, Verdict> {
        let what = format!("an answer (ACK, CONFLICT_DETECTED or ERROR) to {op}");
        self.until(&what, REPLY_WAIT, |v| {
            let p = &v["payload"];
            (p["opId"].as_str() == Some(op)
                && matches!(kind(v), "ACK" | "CONFLICT_DETECTED" | "ERROR"))
            .then(|| v.clone())
        })
        .await
    }

    /// Creates task `t{n}` as op `{client}:{n}` (title `task t{n}`); its answer.
    pub async fn create_task(&mut self, client: &str, n: u64) -> Result<Value, Verdict> {
        let (op, id) = (format!("{client}:{n}"), format!("t{n}"));
        let title = serde_json::json!({"title": format!("task {id}")});
        self.send(&super::mutation("TASK_CREATED", &op, &id, 0, title))
            .await;
        self.answer(&op).await
    }

    /// As [`Ws::create_task`], answered by an `ACK` naming its epoch and seq: those.
    pub async fn create_acked(&mut self, client: &str, n: u64) -> Result<(u64, u64), Verdict> {
        let ack = self.create_task(client, n).await?;
        let p = &ack["payload"];
        match (kind(&ack), p["epoch"].as_u64(), p["seq"].as_u64()) {
            ("ACK", Some(epoch), Some(seq)) => Ok((epoch, seq)),
            _ => Err(fail(
                format!("an ACK to {client}:{n} with epoch and seq"),
                ack.to_string(),
            )),
        }
    }

    /// The logged event that carries entity `id`, skipping everything else.
    pub async fn event_for(&mut self, id: &str) -> Result<Value, Verdict> {
        let what = format!("a REALTIME_EVENT for {id} on {}", self.name);
        self.until(&what, REPLY_WAIT, |v| {
            (kind(v) == "REALTIME_EVENT" && v["payload"]["payload"]["id"].as_str() == Some(id))
                .then(|| v.clone())
        })
        .await
    }

    /// The frames of type `t` that arrive within `wait` (others skipped); a close ends
    /// the watch early.
    pub async fn collect(&mut self, t: &str, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Got::Frame(v) if kind(&v) == t => out.push(v),
                Got::Frame(_) => {}
                Got::Closed(_) | Got::Nothing => return out,
            }
        }
    }

    /// The close code the server ends with within `wait`, skipping frames.
    pub async fn closed_within(&mut self, wait: Duration) -> Result<Option<u16>, Verdict> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Got::Frame(_) => {}
                Got::Closed(code) => return Ok(code),
                Got::Nothing => {
                    return Err(fail(
                        format!("{} closed by the server", self.name),
                        format!("still open after {} ms", wait.as_millis()),
                    ));
                }
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

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn open(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> Result<hyper::Response<Incoming>, String> {
    let tcp = tokio::time::timeout(REPLY_WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(REPLY_WAIT, sender.send_request(req))
        .await
        .map_err(|_| format!("no answer within {} ms", REPLY_WAIT.as_millis()))?
        .map_err(|e| e.to_string())
}

/// One request on a fresh connection, its whole answer.
pub async fn http(
    addr: &str,
    log: &Transcript,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> Result<Answer, Verdict> {
    log.add(
        ">",
        "http",
        &format!("{method} {path} {}", body.as_deref().unwrap_or("")),
    );
    let resp = open(addr, method, path, headers, body)
        .await
        .map_err(|e| fail(format!("an answer to {method} {path}"), e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let read = resp.into_body().collect();
    let body = match tokio::time::timeout(REPLY_WAIT, read).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        _ => {
            return Err(fail(
                format!("the body of {method} {path}"),
                "it did not end",
            ));
        }
    };
    log.add("<", "http", &format!("{status} {body}"));
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// An open SSE stream.
pub struct Sse {
    body: Incoming,
    parser: SseParser,
    pending: std::collections::VecDeque<(Option<String>, Value)>,
    name: String,
    log: Transcript,
}

impl std::fmt::Debug for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sse({})", self.name)
    }
}

impl Sse {
    /// `GET path` as an `EventSource` would; the status when it is not a 200 stream.
    pub async fn open(
        addr: &str,
        path: &str,
        headers: &[(&str, String)],
        name: &str,
        log: &Transcript,
    ) -> Result<Result<Sse, Answer>, Verdict> {
        log.add(">", name, &format!("GET {path}"));
        let mut h = vec![("accept", "text/event-stream".to_owned())];
        h.extend(headers.iter().cloned());
        let resp = open(addr, "GET", path, &h, None)
            .await
            .map_err(|e| fail(format!("an answer to GET {path}"), e))?;
        let status = resp.status().as_u16();
        let is_stream = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status != 200 || !is_stream {
            let headers = resp.headers().clone();
            let body = match tokio::time::timeout(REPLY_WAIT, resp.into_body().collect()).await {
                Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                _ => String::new(),
            };
            log.add("<", name, &format!("{status} {body}"));
            return Ok(Err(Answer {
                status,
                headers,
                body,
            }));
        }
        log.add("<", name, "200 text/event-stream");
        Ok(Ok(Sse {
            body: resp.into_body(),
            parser: SseParser::new(1 << 20),
            pending: Default::default(),
            name: name.to_owned(),
            log: log.clone(),
        }))
    }

    /// The next event (`id:`, parsed `data:`) within `wait`; `None` on silence or end.
    pub async fn next(&mut self, wait: Duration) -> Option<(Option<String>, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            let Ok(Some(Ok(f))) = frame else {
                return None;
            };
            let Some(data) = f.data_ref() else { continue };
            let Ok(events) = self.parser.feed(data) else {
                self.log.add("#", &self.name, "not a valid event stream");
                return None;
            };
            for e in events {
                let id =
                    e.id.as_deref()
                        .map(|i| format!("id: {i} "))
                        .unwrap_or_default();
                self.log.add("<", &self.name, &format!("{id}{}", e.data));
                let v = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone()));
                self.pending.push_back((e.id, v));
            }
        }
    }

    /// The first event `pick` accepts (with its `id:`), skipping others.
    pub async fn until<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Value) -> Option<T>,
    ) -> Result<(Option<String>, T), Verdict> {
        let deadline = tokio::time::Instant::now() + REPLY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((id, v)) = self.next(left).await else {
                return Err(fail(
                    what,
                    format!("{}: nothing (or the stream ended)", self.name),
                ));
            };
            if let Some(t) = pick(&v) {
                return Ok((id, t));
            }
        }
    }
}
