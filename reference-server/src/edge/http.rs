//! The plain HTTP endpoints: mutations from SSE clients, snapshot reads, the seed's
//! performance analytics, health and Prometheus metrics; CORS for browsers.

use super::auth::authenticate;
use super::{ApiError, Metrics, Server};
use crate::core::Sender;
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
    ClientEvent, ClientMsg, DecodeError, EntityKind, ErrorCode, PerformanceMetrics, ServerMsg,
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
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| ApiError::new(e.status(), "TOO_LARGE", e.body_text()))
}

/// Who calls an HTTP endpoint: the query read (400 if malformed) and the token — from
/// `?token=` or `Authorization: Bearer` — verified (401) before the handler runs.
pub struct Caller {
    claims: Claims,
    q: AuthQuery,
}

impl FromRequestParts<Arc<Server>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, ApiError> {
        let Query(q) = Query::<AuthQuery>::from_request_parts(parts, server)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let claims = authenticate(server, q.token.as_deref(), &parts.headers, None)?;
        Ok(Caller { claims, q })
    }
}

/// `POST /api/events`: a mutation from a client without a WebSocket. The body is the
/// same envelope a WebSocket client sends (or the bare `RealtimeEvent`); the answer is
/// the frame a WebSocket client would get: `ACK` 200, `CONFLICT_DETECTED` 409, `ERROR` 4xx.
pub async fn post_event(
    State(server): State<Arc<Server>>,
    Caller { claims, q }: Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let text = std::str::from_utf8(&raw).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
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
    let session = q.session_id.unwrap_or_else(|| "http".to_owned());
    if session.len() > ID_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "sessionId must be at most {ID_BYTES_MAX} bytes"
        )));
    }
    Metrics::inc(&server.metrics.messages_in_total);
    Metrics::inc(&server.metrics.mutations_total);
    let shard = server.shard(&claims.ws);
    let now = server.now_ms();
    let answer = {
        let mut s = shard.lock();
        let (answer, out) = s.core.mutate(
            &Sender {
                user_id: &claims.sub,
                session_id: &session,
            },
            &ev,
            now,
        );
        s.deliver(out, &server.metrics);
        answer
    };
    let status = match ServerMsg::decode(&answer.text) {
        Ok(ServerMsg::Ack(_)) => StatusCode::OK,
        Ok(ServerMsg::ConflictDetected(_)) => StatusCode::CONFLICT,
        Ok(ServerMsg::Error(e)) => {
            Metrics::inc(&server.metrics.errors_sent_total);
            status_of(e.code)
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.text.to_string(),
    )
        .into_response())
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
    }
}

fn kind_of(plural: &str) -> Result<EntityKind, ApiError> {
    EntityKind::from_plural(plural).ok_or_else(|| {
        ApiError::not_found(format!(
            "no entity kind {plural:?}: use tasks, projects or notes"
        ))
    })
}

/// `GET /api/entities/{kind}[?projectId=]`: live entities plus the `seq` watermark a
/// client streams from (resume with `epoch` and `lastSeq = seq`: no gap, no overlap).
pub async fn list_entities(
    State(server): State<Arc<Server>>,
    Path(kind): Path<String>,
    Caller { claims, q }: Caller,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    let snap = server
        .shard(&claims.ws)
        .lock()
        .core
        .snapshot(kind, q.project_id.as_deref());
    Ok(Json(snap).into_response())
}

/// `GET /api/entities/{kind}/{id}`.
pub async fn get_entity(
    State(server): State<Arc<Server>>,
    Path((kind, id)): Path<(String, String)>,
    Caller { claims, .. }: Caller,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    let shard = server.shard(&claims.ws);
    let s = shard.lock();
    match s.core.entity(kind, &id) {
        Some(e) if !e.deleted => Ok(Json(serde_json::json!({
            "workspaceId": s.core.id(), "epoch": s.core.epoch(), "seq": s.core.head(), "entity": e,
        }))
        .into_response()),
        _ => Err(ApiError::not_found(format!("no {} {id:?}", kind.plural()))),
    }
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
    Metrics::inc(&server.metrics.analytics_reports_total);
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
    Json(serde_json::json!({"status": status, "epoch": server.epoch, "connections": active}))
        .into_response()
}

pub async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let shards = server.shards();
    let mut sessions = Vec::new();
    let mut history = Vec::new();
    let mut entities = Vec::new();
    let mut evicted = Vec::new();
    for shard in shards {
        let s = shard.lock();
        let id = s.core.id().to_owned();
        sessions.push((id.clone(), s.core.sessions() as u64));
        history.push((id.clone(), s.core.history_len() as u64));
        entities.push((id.clone(), s.core.entities() as u64));
        evicted.push((id, s.core.op_clients_evicted()));
    }
    let text = server.metrics.render(&[
        ("workspace_sessions", "Sessions in the workspace.", sessions),
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
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
