//! Who may connect: the token (JWT HS256), the seed's `userId` parameter, and
//! admission — the connection limits and the admission rate that flattens a
//! reconnect storm. A [`ConnPermit`] holds a connection's place until it drops.

use super::{ApiError, Server};
use crate::config::ServerConfig;
use crate::core::ratelimit::TokenBucket;
use axum::http::{HeaderMap, StatusCode, header};
use rtsync_protocol::auth::{self, AuthError, Claims};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Admission {
    bucket: TokenBucket,
    total: usize,
    per_user: BTreeMap<String, usize>,
}

impl Admission {
    pub fn new(cfg: &ServerConfig) -> Self {
        Admission {
            bucket: TokenBucket::new(cfg.admission_rate_per_s, cfg.admission_burst),
            total: 0,
            per_user: BTreeMap::new(),
        }
    }
}

/// The token from `?token=` or `Authorization: Bearer`, verified.
pub fn authenticate(
    server: &Server,
    query_token: Option<&str>,
    headers: &HeaderMap,
    user_param: Option<&str>,
) -> Result<Claims, ApiError> {
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let token = match (query_token, bearer) {
        // Two different tokens: which one the caller meant is a guess, so refuse.
        (Some(q), Some(b)) if q != b => Err(AuthError::Ambiguous),
        (q, b) => Ok(q.or(b).unwrap_or_default()),
    };
    let result = token
        .and_then(|token| auth::verify(token, &server.cfg.jwt_secret, server.now_ms() / 1000))
        .and_then(|c| match user_param {
            Some(u) if u != c.sub => Err(AuthError::UserMismatch {
                given: u.chars().take(64).collect(),
            }),
            _ => Ok(c),
        });
    result.map_err(|e| {
        server.metrics.auth_failures_total.inc();
        super::log::warn_limited!(server, super::log::Kind::AuthFailure, reason = %e, "auth refused");
        ApiError::from(e)
    })
}

/// A connection's place in the limits; released on drop.
#[derive(Debug)]
pub struct ConnPermit {
    server: Arc<Server>,
    user: String,
}

/// Admits a new connection for `user` or says when to try again.
pub fn admit(server: &Arc<Server>, user: &str) -> Result<ConnPermit, ApiError> {
    let refuse = |e: ApiError| {
        server.metrics.admission_refused_total.inc();
        super::log::warn_limited!(
            server,
            super::log::Kind::Refused,
            code = e.code,
            "connection refused"
        );
        Err(e)
    };
    if server.shutting_down() {
        return refuse(ApiError::unavailable(
            "SHUTTING_DOWN",
            "server is shutting down",
            1,
        ));
    }
    let cfg = &server.cfg;
    let mut a = server.limits.lock().unwrap_or_else(|p| p.into_inner());
    if a.total >= cfg.connections_max {
        return refuse(ApiError::unavailable(
            "OVERLOADED",
            format!(
                "server holds its most connections ({})",
                cfg.connections_max
            ),
            1,
        ));
    }
    let mine = a.per_user.get(user).copied().unwrap_or(0);
    if mine >= cfg.connections_per_user_max {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_CONNECTIONS",
            format!(
                "user holds its most connections ({})",
                cfg.connections_per_user_max
            ),
        );
        e.retry_after_s = Some(1);
        return refuse(e);
    }
    if !a.bucket.try_take(server.now_ms()) {
        let wait_s = a.bucket.wait_ms().div_ceil(1000);
        return refuse(ApiError::unavailable(
            "ADMISSION_RATE",
            "too many new connections; retry later",
            wait_s,
        ));
    }
    a.total += 1;
    *a.per_user.entry(user.to_owned()).or_insert(0) += 1;
    server.metrics.connections_active.inc();
    Ok(ConnPermit {
        server: server.clone(),
        user: user.to_owned(),
    })
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut a = self.server.limits.lock().unwrap_or_else(|p| p.into_inner());
        a.total = a.total.saturating_sub(1);
        if let Some(n) = a.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                a.per_user.remove(&self.user);
            }
        }
        drop(a);
        self.server.metrics.connections_active.dec();
        self.server.idle.notify_waiters();
    }
}
