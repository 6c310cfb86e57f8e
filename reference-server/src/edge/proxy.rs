//! Several nodes: a WebSocket whose workspace another node owns is relayed to that
//! owner, frame for frame (docs/cluster.md, "Why a relay").
//!
//! The owner's handshake comes first: its refusal (401, 429, 503, a 307 because the
//! workspace moved again) is this request's answer, status and body, and the client
//! is upgraded only once the owner accepted. Then text goes both ways unchanged, and a
//! close frame from either side is passed on. The owner lost without a close frame
//! (killed, partitioned) closes the client with 1012: it reconnects to any node and
//! resumes from the owner's stream.

use super::auth::ConnPermit;
use super::owner::OwnerLost;
use super::{ApiError, Server};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use rtsync_protocol::close;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self as ts, protocol::frame::coding::CloseCode};

pub type Upstream = WebSocketStream<crate::cluster::BoxIo>;

/// The answer when the owner cannot be reached (and stays so: `Server::to_owner`):
/// 503, retry in a second.
fn owner_lost(owner: &str, why: &str) -> OwnerLost {
    tracing::warn!(owner, why, "owner node unreachable");
    OwnerLost(
        ApiError::unavailable(
            "UNAVAILABLE",
            "the node that owns this workspace is unreachable; retry shortly",
            1,
        )
        .into_response(),
    )
}

/// The owner's handshake for this request (`path_and_query` as the client sent it):
/// the upstream socket, or the owner's refusal to pass on as it is; `Err` when the
/// owner did not answer.
pub async fn connect(
    server: &Server,
    owner: &str,
    path_and_query: &str,
    authorization: Option<&HeaderValue>,
) -> Result<Result<Upstream, Response>, OwnerLost> {
    let Some(c) = server.cluster.as_ref() else {
        return Err(owner_lost(owner, "not clustered"));
    };
    let lost = |why: String| owner_lost(owner, &why);
    let mut req = format!("ws://{owner}{path_and_query}")
        .into_client_request()
        .map_err(|e| lost(e.to_string()))?;
    if let Some(a) = authorization {
        req.headers_mut().insert(header::AUTHORIZATION, a.clone());
    }
    let cfg = &server.cfg;
    let ws_cfg = WebSocketConfig::default()
        .max_message_size(Some(cfg.frame_bytes_max.max(1 << 20) * 16))
        .max_frame_size(Some(cfg.frame_bytes_max.max(1 << 20) * 16));
    let handshake = async {
        let io = c.cfg.net.connect(owner).await.map_err(ts::Error::Io)?;
        tokio_tungstenite::client_async_with_config(req, io, Some(ws_cfg)).await
    };
    match tokio::time::timeout(Duration::from_millis(c.cfg.redis_timeout_ms), handshake).await {
        Err(_) => Err(lost("handshake timed out".into())),
        Ok(Ok((ws, _))) => Ok(Ok(ws)),
        // The owner's own answer: passed on as it is.
        Ok(Err(ts::Error::Http(resp))) => {
            let status = StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut out = (status, resp.body().clone().unwrap_or_default()).into_response();
            for name in [header::CONTENT_TYPE, header::RETRY_AFTER, header::LOCATION] {
                if let Some(v) = resp.headers().get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            Ok(Err(out))
        }
        Ok(Err(e)) => Err(lost(e.to_string())),
    }
}

/// Relays until either side closes (or this node shuts down: 1001 to the client).
pub async fn relay(
    client: WebSocket,
    upstream: Upstream,
    server: Arc<Server>,
    _permit: ConnPermit,
) {
    server.metrics.relays_ws_opened_total.inc();
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let mut shutdown = server.shutdown_rx();
    // Each side's close, when the relay ends: (to the client, to the owner).
    let (to_client, to_owner) = {
        // What the client gets when the relay ends other than by a close frame it was given.
        let client_close = async {
            loop {
                let closing = match u_rx.next().await {
                    Some(Ok(ts::Message::Text(t))) => {
                        if c_tx.send(Message::Text(t.as_str().into())).await.is_err() {
                            return None;
                        }
                        continue;
                    }
                    Some(Ok(ts::Message::Close(f))) => {
                        f.map(|f| (u16::from(f.code), f.reason.to_string()))
                    }
                    Some(Ok(_)) => continue,
                    // Gone without a close frame: killed, reset, partitioned.
                    Some(Err(_)) | None => Some((
                        close::SERVICE_RESTART,
                        "owner node lost; reconnect".to_owned(),
                    )),
                };
                return Some(closing.unwrap_or((close::NORMAL, String::new())));
            }
        };
        let owner_close = async {
            while let Some(Ok(m)) = c_rx.next().await {
                let m = match m {
                    Message::Text(t) => ts::Message::text(t.as_str()),
                    Message::Binary(b) => ts::Message::Binary(b),
                    Message::Close(f) => {
                        return f.map(|f| (f.code, f.reason.to_string()));
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if u_tx.send(m).await.is_err() {
                    break;
                }
            }
            None
        };
        tokio::pin!(client_close, owner_close);
        tokio::select! {
            c = &mut client_close => (c, None),
            o = &mut owner_close => (None, Some(o.unwrap_or((close::NORMAL, String::new())))),
            _ = shutdown.wait_for(|s| *s) => (
                Some((close::GOING_AWAY, "server shutting down".to_owned())),
                Some((close::GOING_AWAY, String::new())),
            ),
        }
    };
    if let Some((code, reason)) = to_client {
        let f = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(1), c_tx.send(Message::Close(Some(f)))).await;
    }
    let (code, reason) = to_owner.unwrap_or((close::NORMAL, String::new()));
    let f = ts::protocol::CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        u_tx.send(ts::Message::Close(Some(f))),
    )
    .await;
}

/// An HTTP request (a POST, a read, an SSE stream) for a workspace another node owns:
/// sent on to the owner with the headers that matter to it, and its answer streamed
/// back as it comes (an SSE stream stays open through the relay). A relay rather than a
/// redirect: a browser drops `Authorization` on a cross-origin redirect, and a client
/// should not have to know the cluster's layout.
pub async fn forward(
    server: &Server,
    owner: &str,
    method: axum::http::Method,
    path_and_query: &str,
    headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OwnerLost> {
    let lost = |why: String| owner_lost(owner, &why);
    let Some(c) = server.cluster.as_ref() else {
        return Err(lost("not clustered".into()));
    };
    let bound = Duration::from_millis(c.cfg.redis_timeout_ms);
    let exchange = async {
        let io = c.cfg.net.connect(owner).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, owner);
        for name in [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("last-event-id"),
        ] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        let req = req
            .body(axum::body::Body::from(body))
            .map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(bound, exchange).await {
        Ok(Ok(resp)) => {
            server.metrics.relays_http_total.inc();
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(parts, axum::body::Body::new(body)))
        }
        Ok(Err(why)) => Err(lost(why)),
        Err(_) => Err(lost("no answer in time".into())),
    }
}
