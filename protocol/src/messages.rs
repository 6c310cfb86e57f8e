//! Payloads of the protocol's own frames (the ones the seed does not define).

use crate::{RealtimeEvent, Timestamp};
use serde::{Deserialize, Serialize};

/// `CONNECTED`: the first frame of every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    /// The token's user.
    pub user_id: String,
    /// The tab's session: the one it asked for, or one the server made (`s<connectionId>`).
    pub session_id: String,
    /// The server's number for this connection (logs, metrics).
    pub connection_id: u64,
    /// The token's workspace: events never cross it.
    pub workspace_id: String,
    /// Names this incarnation of the workspace's event log.
    pub epoch: u64,
    /// The log's head when this session was registered.
    pub seq: u64,
    /// How often the server sends `HEARTBEAT`, ms.
    pub heartbeat_ms: u64,
    /// The server's clock when it sent this frame.
    pub server_time: Timestamp,
    /// The most unanswered mutations a connection should have in flight: their
    /// answers must fit the server's outbound queue, or a client resending a long
    /// queue makes itself a slow consumer on every reconnect. Clients send at most
    /// the smaller of this and their own window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflight_max: Option<u64>,
}

/// Only frame type a logged event is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventFrameType {
    /// `"REALTIME_EVENT"`.
    #[serde(rename = "REALTIME_EVENT")]
    RealtimeEvent,
}

/// A logged event exactly as it was streamed: `{"type":"REALTIME_EVENT","seq":N,"payload":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    /// Always `REALTIME_EVENT`.
    #[serde(rename = "type")]
    pub frame_type: EventFrameType,
    /// The event's position in the log.
    pub seq: u64,
    /// The event.
    pub payload: RealtimeEvent,
}

/// `RECENT_EVENTS`: the answer to a resume. A long replay comes in several frames,
/// each at most the server's batch size, in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvents {
    /// This batch's events, in seq order.
    pub events: Vec<EventFrame>,
    /// The first seq of this batch (`lastSeq + 1` when it is empty).
    pub from_seq: u64,
    /// The last seq of this batch; the log head when continuity was lost.
    pub to_seq: u64,
    /// `false`: continuity was lost (another epoch, or history trimmed past the
    /// client's lastSeq). `events` is then empty; refetch snapshots.
    pub complete: bool,
}

/// `RESUME` (or the `epoch`/`lastSeq` query parameters of `/ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resume {
    /// The log incarnation `last_seq` counts in.
    pub epoch: u64,
    /// The last seq the client applied, with nothing missing below it.
    pub last_seq: u64,
}

impl Resume {
    /// A resume point the server cannot read (garbage, negative, overflowing, half
    /// missing). Resume points are opaque: such a point is not refused but answered like
    /// any unknown position, `complete: false` (its seq lies beyond every log's head).
    /// A browser's `EventSource` gives up for good on a non-200, and a client whose
    /// stored position was damaged must still be able to connect.
    pub const UNUSABLE: Resume = Resume {
        epoch: 0,
        last_seq: u64::MAX,
    };

    /// The resume point of query parameters (`/ws`): none when neither is given, and
    /// [`Resume::UNUSABLE`] when either is given but the pair cannot be read.
    pub fn from_query(epoch: Option<&str>, last_seq: Option<&str>) -> Option<Resume> {
        if epoch.is_none() && last_seq.is_none() {
            return None;
        }
        let parse = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u64>().ok());
        Some(match (parse(epoch), parse(last_seq)) {
            (Some(epoch), Some(last_seq)) => Resume { epoch, last_seq },
            _ => Resume::UNUSABLE,
        })
    }

    /// The resume point of a `RESUME` payload, read as leniently as the query: any
    /// payload is a resume request, and one that cannot be read is [`Resume::UNUSABLE`].
    pub fn from_payload(text: &str) -> Resume {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let field = |k: &str| match v.get(k) {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        match (field("epoch"), field("lastSeq")) {
            (Some(epoch), Some(last_seq)) => Resume { epoch, last_seq },
            _ => Resume::UNUSABLE,
        }
    }
}

/// `HEARTBEAT` / `HEARTBEAT_ACK`. The seed's client puts `timestamp` beside `type`
/// instead of in a payload; both are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Heartbeat {
    /// The sender's clock (0 when absent).
    #[serde(default)]
    pub timestamp: Timestamp,
}

/// `ERROR` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The frame is not JSON, or has no string `type`.
    BadJson,
    /// The frame's `type` does not exist in this direction.
    UnknownType,
    /// The payload does not fit its type; an op with a valid opId consumes its n.
    InvalidPayload,
    /// A frame, an entity or a presence field passed its byte bound; nothing applied.
    TooLarge,
    /// Over the rate limit: nothing applied; resend after `retryAfterMs`.
    RateLimited,
    /// A type only the server may send (`COLLABORATION_CURSOR`, `SYSTEM_NOTIFICATION`),
    /// or a presence `userId` that is not the token's.
    Forbidden,
    /// An update of an entity id that never existed.
    NotFound,
    /// An op's n skipped ahead: resend from `expectedN`.
    OutOfOrder,
    /// A repeat of an op older than the answers the server keeps per client: it was
    /// applied once; its answer is gone (docs/protocol.md).
    StaleOp,
    /// A store bound (entities per workspace) is reached; nothing was applied.
    LimitExceeded,
    /// The session's token expired: the last frame of an SSE stream before it ends
    /// (a WebSocket is closed 4001 instead). Reconnect with a fresh token.
    TokenExpired,
    /// The server could not make the write durable (disk full, I/O error): nothing was
    /// applied; resend after `retryAfterMs`, as after `RATE_LIMITED`.
    Unavailable,
}

impl ErrorCode {
    /// The wire name, e.g. `"OUT_OF_ORDER"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "BAD_JSON",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::OutOfOrder => "OUT_OF_ORDER",
            ErrorCode::StaleOp => "STALE_OP",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }
}

/// `ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    /// What went wrong, for code to act on.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The op this refuses, when the frame was a mutation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
    /// With `OUT_OF_ORDER`: the n the server expects next from that client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_n: Option<u64>,
    /// With `RATE_LIMITED`: send this op (and what followed it) again after this long;
    /// nothing was applied. (Over HTTP also as the `Retry-After` header, in seconds.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// WebSocket close codes (docs/protocol.md).
pub mod close {
    /// Normal close (the seed's client disconnect).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame: not part of the protocol (JSON text only).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Policy violation: sustained abuse (e.g. rate limit) or a protocol error.
    pub const POLICY: u16 = 1008;
    /// An inbound message over the frame bound.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed internally.
    pub const INTERNAL: u16 = 1011;
    /// Several nodes: this node no longer serves the workspace (its owner moved or is
    /// unreachable); reconnect to any node and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Slow consumer: the outbound queue filled; reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Nothing received within the heartbeat timeout (a half-open connection).
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The session's token expired (its `exp` passed): reconnect with a fresh token.
    pub const TOKEN_EXPIRED: u16 = 4001;
}
