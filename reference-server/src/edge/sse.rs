//! `GET /api/events/subscribe`: Server-Sent Events. The same session as a WebSocket
//! (same core, same fan-out, same outbound bound) written as `data:` events with
//! `id: E:N` on every logged event, `retry:` once, and keep-alive comments.
//! Resume comes from the browser's own `Last-Event-ID` header (or `?lastEventId=`).

use super::auth::{ConnPermit, admit, authenticate};
use super::outbound::{Next, OutboundRx};
use super::ws::{Expiry, session_id};
use super::{Abort, ApiError, Server, Shard, outbound};
use crate::core::{ConnId, Frame, SessionInfo};
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rtsync_protocol::{Device, ErrorCode, ErrorPayload, Resume, ServerMsg, sse};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SseQuery {
    token: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
    /// For clients that cannot set the header (curl users, tests): same as `Last-Event-ID`.
    last_event_id: Option<String>,
    device: Option<String>,
}

/// Leaves the workspace and frees the connection's place when dropped.
struct Guard {
    server: Arc<Server>,
    shard: Arc<Shard>,
    conn: ConnId,
    _permit: ConnPermit,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let now = self.server.now_ms();
        self.shard.lock().detach(self.conn, now);
    }
}

/// The session's place, freed by whichever comes first: the stream ending (the client
/// went away, its token expired, shutdown) or its slow-consumer close. hyper stops
/// polling the body while the socket is blocked — exactly a slow consumer's state — so
/// the body alone would hold the place until the client read again or went away.
type Slot = Arc<Mutex<Option<Guard>>>;

fn free(slot: &Slot) {
    let guard = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(guard);
}

struct StreamState {
    rx: OutboundRx,
    server: Arc<Server>,
    slot: Slot,
    /// Dropped with the stream: the slow-consumer watcher stops.
    _gone: oneshot::Sender<()>,
    retry: Option<Duration>,
    expires: Expiry,
    /// The token expired: its `ERROR` was the last event.
    ended: bool,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        free(&self.slot);
    }
}

pub async fn subscribe(
    State(server): State<Arc<Server>>,
    query: Result<Query<SseQuery>, axum::extract::rejection::QueryRejection>,
    abort: Option<Extension<Abort>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let claims = authenticate(&server, q.token.as_deref(), &headers, q.user_id.as_deref())?;
    let resume = resume_point(&headers, q.last_event_id);
    let conn = server.next_conn_id();
    let session_id = session_id(q.session_id, conn)?;
    let permit = admit(&server, &claims.sub)?;
    let relayable = super::owner::Relayable {
        method: axum::http::Method::GET,
        path_and_query: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        headers: &headers,
        body: axum::body::Bytes::new(),
    };
    let shard = match server.here_or_relay(&claims.ws, relayable).await? {
        super::Here::Shard(s) => s,
        super::Here::Relayed(stream) => return Ok(stream),
    };
    // The workspace's epoch, which a restored or taken-over workspace keeps: not this
    // process's (a resume point with the process's would be answered `complete: false`).
    let epoch = shard.lock().core.epoch();
    server.metrics.connections_sse_opened_total.inc();
    let info = SessionInfo {
        user_id: claims.sub,
        session_id,
        device: Device {
            kind: super::ws::device_kind(q.device.as_deref()),
            browser: String::new(),
        },
    };
    let (watched, rx) = join(&server, &shard, conn, info, resume);
    let slot: Slot = Arc::new(Mutex::new(Some(Guard {
        server: server.clone(),
        shard,
        conn,
        _permit: permit,
    })));
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    tokio::spawn(slow_consumer_watch(
        watched,
        slot.clone(),
        abort.map(|a| a.0),
        gone_rx,
    ));
    let cfg = &server.cfg;
    let state = StreamState {
        rx,
        server: server.clone(),
        slot,
        _gone: gone_tx,
        retry: Some(Duration::from_millis(cfg.sse_retry_ms)),
        expires: Expiry::at_s(claims.exp),
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, move |st| next_event(st, epoch));
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(cfg.heartbeat())
                .text("keep-alive"),
        )
        .into_response())
}

/// Where the client resumes from: the browser's own `Last-Event-ID` header, else
/// `?lastEventId=`. Opaque, like every resume point: one that cannot be read is
/// answered `complete: false` (a non-200 would make a browser's EventSource give up
/// for good).
fn resume_point(headers: &HeaderMap, from_query: Option<String>) -> Option<Resume> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(from_query);
    last_event_id.map(|id| {
        sse::parse_event_id(&id).map_or(Resume::UNUSABLE, |(epoch, last_seq)| Resume {
            epoch,
            last_seq,
        })
    })
}

/// Opens the session in its workspace: attaches its bounded outbound queue and queues
/// the hello (`CONNECTED`, then a resume's replay) under the shard's lock, so nothing
/// fanned out later can overtake it. Returns a handle on the queue for the
/// slow-consumer watch, and the queue's receiving end for the stream.
fn join(
    server: &Arc<Server>,
    shard: &Arc<Shard>,
    conn: ConnId,
    info: SessionInfo,
    resume: Option<Resume>,
) -> (outbound::Outbound, OutboundRx) {
    let cfg = &server.cfg;
    let (out, mut rx) = outbound::channel(
        cfg.outbound_messages_max,
        cfg.outbound_bytes_max,
        server.shutdown_rx(),
    );
    let watched = out.clone();
    {
        let now = server.now_ms();
        let mut s = shard.lock();
        s.attach(conn, out);
        let hello = s.core.connect(conn, info, resume, now);
        s.deliver(hello, &server.metrics);
        s.note_replay(conn);
        rx.set_durable(s.durable_rx());
    }
    rx.set_refill(super::replay_refill(shard.clone(), conn));
    (watched, rx)
}

/// The stream's next event: the next queued frame, or — once the token expires — one
/// last `ERROR TOKEN_EXPIRED`, after which the stream ends.
async fn next_event(
    mut st: StreamState,
    epoch: u64,
) -> Option<(Result<Event, Infallible>, StreamState)> {
    if st.ended {
        return None;
    }
    let next = tokio::select! {
        biased;
        next = st.rx.next() => next,
        () = st.expires.wait(&st.server) => {
            st.server.metrics.closes_token_expired_total.inc();
            st.ended = true;
            return Some((Ok(token_expired_event()), st));
        }
    };
    match next {
        Next::Frame(frame, waited) => {
            let m = &st.server.metrics;
            m.observe_queue_wait(waited);
            m.messages_out_total.inc();
            m.bytes_out_total.inc_by(frame.len() as u64);
            let mut ev = Event::default().data(&*frame.text);
            if let Some(seq) = frame.seq {
                ev = ev.id(sse::event_id(epoch, seq));
            }
            // `retry:` goes once, on the first event.
            if let Some(r) = st.retry.take() {
                ev = ev.retry(r);
            }
            Some((Ok(ev), st))
        }
        // Slow consumer or shutdown: end the stream; the client reconnects with
        // Last-Event-ID and loses nothing.
        Next::Close(_) => None,
    }
}

/// The last event of a session whose token expired (a WebSocket gets close 4001).
fn token_expired_event() -> Event {
    let frame = Frame::of(&ServerMsg::Error(ErrorPayload {
        code: ErrorCode::TokenExpired,
        message: "token expired; reconnect with a fresh token".into(),
        op_id: None,
        expected_n: None,
        retry_after_ms: None,
    }));
    Event::default().data(&*frame.text)
}

/// Frees a slow consumer's place the moment its queue overflows and cuts its socket
/// (the client reconnects with `Last-Event-ID` and loses nothing); ends with the stream.
async fn slow_consumer_watch(
    out: outbound::Outbound,
    slot: Slot,
    abort: Option<Abort>,
    gone: oneshot::Receiver<()>,
) {
    tokio::select! {
        () = out.closed() => {
            free(&slot);
            if let Some(a) = abort {
                a.now();
            }
        }
        _ = gone => {}
    }
}
