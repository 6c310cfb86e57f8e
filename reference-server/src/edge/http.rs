//! The plain HTTP endpoints: mutations from SSE clients, snapshot reads, the seed's
//! performance analytics, health and Prometheus metrics; CORS for browsers.

use super::auth::authenticate;
use super::{ApiError, Server};
use crate::core::{FrameKind, Sender};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rtsync_protocol::auth::Claims;
use rtsync_protocol::event::ID_BYTES_MAX;
use rtsync_protocol::{
    ClientEvent, ClientMsg, DecodeError, EntityKind, ErrorCode, ErrorPayload, PerformanceMetrics,
    ServerMsg,
};
use serde::Deserialize;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthQuery {
    token: Option<String>,
    session_id: Option<String>,
    project_id: Option<String>,
    /// Snapshot paging: continue after this id (the previous page's `next`)…
    after: Option<String>,
    /// …with at most this many entities (capped by `snapshot_page_entities`).
    limit: Option<usize>,
}

/// A body whose `Content-Length` is over the limit is refused (413) before a byte of it
/// is read: waiting for 10 GB that never come would hold the connection.
pub async fn refuse_announced_oversize(
    State(server): State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = server.cfg.frame_bytes_max as u64;
    match announced {
        Some(n) if n > max => {
            let mut resp = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "TOO_LARGE",
                format!("body of {n} bytes announced; the limit is {max}"),
            )
            .into_response();
            // The unread body makes the connection unusable for another request.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        _ => next.run(req).await,
    }
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| ApiError::new(e.status(), "TOO_LARGE", e.body_text()))
}

/// Who calls an HTTP endpoint: the query read (400 if malformed) and the token — from
/// `?token=` or `Authorization: Bearer` — verified (401) before the handler runs.
pub struct Caller {
    claims: Claims,
    q: AuthQuery,
    /// This request's method, path and query, and headers: what is relayed to the
    /// workspace's owner when another node owns it.
    method: axum::http::Method,
    pq: String,
    headers: axum::http::HeaderMap,
}

impl Caller {
    /// The workspace's shard here, or the owner's answer to this request.
    async fn here(&self, server: &Server, body: Bytes) -> Result<super::Here, ApiError> {
        let request = super::owner::Relayable {
            method: self.method.clone(),
            path_and_query: &self.pq,
            headers: &self.headers,
            body,
        };
        server.here_or_relay(&self.claims.ws, request).await
    }
}

impl FromRequestParts<Arc<Server>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, ApiError> {
        let Query(q) = Query::<AuthQuery>::from_request_parts(parts, server)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let claims = authenticate(server, q.token.as_deref(), &parts.headers, None)?;
        let pq = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        Ok(Caller {
            claims,
            q,
            method: parts.method.clone(),
            pq,
            headers: parts.headers.clone(),
        })
    }
}

/// `POST /api/events`: a mutation from a client without a WebSocket. The body is the
/// same envelope a WebSocket client sends (or the bare `RealtimeEvent`); the answer is
/// the frame a WebSocket client would get: `ACK` 200, `CONFLICT_DETECTED` 409, `ERROR` 4xx.
pub async fn post_event(
    State(server): State<Arc<Server>>,
    caller: Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let ev = mutation_of(&raw)?;
    let shard = match caller.here(&server, raw).await? {
        super::Here::Shard(s) => s,
        super::Here::Relayed(answer) => return Ok(answer),
    };
    let Caller { claims, q, .. } = caller;
    let session = q.session_id.unwrap_or_else(|| "http".to_owned());
    if session.len() > ID_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "sessionId must be at most {ID_BYTES_MAX} bytes"
        )));
    }
    server.metrics.messages_in_total.inc();
    server.metrics.mutations_total.inc();
    let now = server.now_ms();
    let refused = || {
        let op_id = ev.payload.get("opId").and_then(|v| v.as_str());
        let frame = ServerMsg::Error(super::durable::unavailable(op_id.map(str::to_owned)));
        server.metrics.errors_sent_total.inc();
        unavailable(&frame)
    };
    let (answer, rx, gate) = {
        let mut s = shard.lock();
        // Without a budget one user could write thousands of times a second, each
        // fanned out to every session (`PostBudgets`).
        if let Err(wait_ms) = s.posts.take(&claims.sub, &session, now) {
            drop(s);
            server.metrics.rate_limited_total.inc();
            return Ok(rate_limited(&server, &ev, wait_ms));
        }
        let (answer, out) = s.core.mutate(
            &Sender {
                user_id: &claims.sub,
                session_id: &session,
            },
            &ev,
            now,
        );
        if !s.commit(out, &server) {
            drop(s);
            return Ok(refused());
        }
        (answer, s.durable_rx(), s.durable_gate())
    };
    // Group commit: the answer waits for its sync. If the sync fails the write may or
    // may not be on disk: the client sends it again, and a duplicate gets its answer.
    if super::durable(rx, gate).await.is_err() {
        return Ok(refused());
    }
    let status = match answer.kind {
        FrameKind::Ack => StatusCode::OK,
        FrameKind::Conflict => StatusCode::CONFLICT,
        FrameKind::Error(code) => {
            server.metrics.errors_sent_total.inc();
            status_of(code)
        }
        FrameKind::Event | FrameKind::Other => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.text.to_string(),
    )
        .into_response())
}

/// The mutation a POST body carries: the WebSocket envelope or the bare
/// `RealtimeEvent`. A body that decodes as neither is a 400 carrying the code a
/// WebSocket client would get in its `ERROR`; any other frame, or an event that is not
/// a mutation, is a 400 too: POST only writes.
fn mutation_of(raw: &[u8]) -> Result<ClientEvent, ApiError> {
    let text = std::str::from_utf8(raw).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    let ev = match ClientMsg::decode(text) {
        Ok(ClientMsg::RealtimeEvent(ev)) => ev,
        Ok(other) => {
            return Err(ApiError::bad_request(format!(
                "{} is not accepted over POST; send a mutation",
                other.frame_type()
            )));
        }
        Err(DecodeError::BadJson(_) | DecodeError::UnknownType(_))
            if serde_json::from_str::<ClientEvent>(text).is_ok() =>
        {
            serde_json::from_str::<ClientEvent>(text)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code().as_str(),
                e.to_string(),
            ));
        }
    };
    if !ev.kind.is_mutation() {
        return Err(ApiError::bad_request(format!(
            "{} is not a mutation",
            ev.kind.as_str()
        )));
    }
    Ok(ev)
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the `ERROR RATE_LIMITED`
/// frame, whose `retryAfterMs` is exact; nothing was applied.
fn rate_limited(server: &Server, ev: &ClientEvent, wait_ms: u64) -> Response {
    let frame = ServerMsg::Error(ErrorPayload {
        code: ErrorCode::RateLimited,
        message: format!(
            "over the write rate of this session ({}/s) or user; send it again after {wait_ms} ms",
            server.cfg.inbound_rate_per_s
        ),
        op_id: ev
            .payload
            .get("opId")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        expected_n: None,
        retry_after_ms: Some(wait_ms),
    });
    server.metrics.errors_sent_total.inc();
    retry_later(StatusCode::TOO_MANY_REQUESTS, &frame, wait_ms)
}

/// 503 with `Retry-After` and the `ERROR UNAVAILABLE` frame: the write could not be
/// stored; nothing was applied.
fn unavailable(frame: &ServerMsg) -> Response {
    let wait_ms = super::durable::UNAVAILABLE_RETRY_MS;
    retry_later(StatusCode::SERVICE_UNAVAILABLE, frame, wait_ms)
}

fn retry_later(status: StatusCode, frame: &ServerMsg, wait_ms: u64) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::RETRY_AFTER, wait_ms.div_ceil(1000).to_string()),
        ],
        frame.encode(),
    )
        .into_response()
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadJson | ErrorCode::UnknownType | ErrorCode::InvalidPayload => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::OutOfOrder | ErrorCode::StaleOp => StatusCode::CONFLICT,
        ErrorCode::LimitExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn kind_of(plural: &str) -> Result<EntityKind, ApiError> {
    EntityKind::from_plural(plural).ok_or_else(|| {
        ApiError::not_found(format!(
            "no entity kind {plural:?}: use tasks, projects or notes"
        ))
    })
}

/// `GET /api/entities/{kind}[?projectId=][&after=][&limit=]`: one page of live entities
/// in id order, the `seq` watermark a client streams from (resume with `epoch` and
/// `lastSeq = seq`: no gap, no overlap), and `next` when more pages follow.
pub async fn list_entities(
    State(server): State<Arc<Server>>,
    Path(kind): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    let shard = match caller.here(&server, Bytes::new()).await? {
        super::Here::Shard(s) => s,
        super::Here::Relayed(answer) => return Ok(answer),
    };
    let q = caller.q;
    let (snap, rx, gate) = {
        let s = shard.lock();
        let snap = s
            .core
            .snapshot_page(kind, q.project_id.as_deref(), q.after.as_deref(), q.limit);
        (snap, s.durable_rx(), s.durable_gate())
    };
    // Group commit: a read shows nothing that is not yet synced.
    super::durable(rx, gate).await?;
    Ok(Json(snap).into_response())
}

/// `GET /api/entities/{kind}/{id}`.
pub async fn get_entity(
    State(server): State<Arc<Server>>,
    Path((kind, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    let shard = match caller.here(&server, Bytes::new()).await? {
        super::Here::Shard(s) => s,
        super::Here::Relayed(answer) => return Ok(answer),
    };
    let (found, rx, gate) = {
        let s = shard.lock();
        let found = match s.core.entity(kind, &id) {
            Some(e) if !e.deleted => Ok(serde_json::json!({
                "workspaceId": s.core.id(), "epoch": s.core.epoch(), "seq": s.core.head(), "entity": e,
            })),
            _ => Err(ApiError::not_found(format!("no {} {id:?}", kind.plural()))),
        };
        (found, s.durable_rx(), s.durable_gate())
    };
    super::durable(rx, gate).await?;
    Ok(Json(found?).into_response())
}

/// `POST /api/analytics/performance`: the seed's `PerformanceMetrics`, validated; 202.
pub async fn analytics(
    State(server): State<Arc<Server>>,
    Caller { claims, .. }: Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let m: PerformanceMetrics = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("not PerformanceMetrics: {e}")))?;
    m.validate().map_err(ApiError::bad_request)?;
    if m.user_id != claims.sub {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "userId does not match the token's user",
        ));
    }
    server.metrics.analytics_reports_total.inc();
    tracing::debug!(user = %m.user_id, lcp = m.lcp, cache_hit_rate = m.cache_hit_rate, "performance report");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"accepted": true, "id": m.id})),
    )
        .into_response())
}

pub async fn healthz(State(server): State<Arc<Server>>) -> Response {
    let active = server.active();
    let status = if server.shutting_down() {
        "draining"
    } else {
        "ok"
    };
    Json(serde_json::json!({
        "status": status,
        "epoch": server.epoch,
        "connections": active,
        "durability": server.cfg.durability.as_str(),
    }))
    .into_response()
}

pub async fn metrics(State(server): State<Arc<Server>>) -> Response {
    // Workspace ids name tenants: by default only server-wide totals are shown, so
    // whoever reaches the port cannot list the tenants and their activity.
    let per_workspace = server.cfg.metrics_per_workspace;
    let mut gauges: [Vec<(Option<String>, u64)>; 4] = Default::default();
    if !per_workspace {
        gauges = std::array::from_fn(|_| vec![(None, 0)]);
    }
    let mut workspaces = 0;
    for shard in server.shards() {
        let s = shard.lock();
        workspaces += 1;
        let values = [
            s.core.sessions() as u64,
            s.core.history_len() as u64,
            s.core.entities() as u64,
            s.core.op_clients_evicted(),
        ];
        for (g, v) in gauges.iter_mut().zip(values) {
            if per_workspace {
                g.push((Some(s.core.id().to_owned()), v));
            } else {
                g[0].1 += v;
            }
        }
    }
    let [sessions, history, entities, evicted] = gauges;
    let text = server.metrics.render(&[
        (
            "workspaces",
            "Workspaces this server holds.",
            vec![(None, workspaces)],
        ),
        (
            "handshakes_waiting",
            "Connections waiting for their first request's headers (bound: handshakes_max).",
            vec![(None, server.handshakes.waiting() as u64)],
        ),
        ("workspace_sessions", "Sessions in workspaces.", sessions),
        (
            "workspace_history_events",
            "Events kept for resume.",
            history,
        ),
        (
            "workspace_entities",
            "Entities stored, tombstones included.",
            entities,
        ),
        (
            "workspace_op_clients_evicted",
            "Clients whose op answers were forgotten (bound reached).",
            evicted,
        ),
    ]);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

/// CORS for the HTTP endpoints, so a web app on another origin can use `EventSource`
/// and `fetch`. `["*"]` allows any origin (dev mode); an empty list allows none.
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            header::HeaderName::from_static("last-event-id"),
        ])
}
