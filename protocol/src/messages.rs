//! Payloads of the protocol's own frames (the ones the seed does not define).

use crate::{RealtimeEvent, Timestamp};
use serde::{Deserialize, Serialize};

/// `CONNECTED`: the first frame of every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    pub user_id: String,
    pub session_id: String,
    pub connection_id: u64,
    pub workspace_id: String,
    /// Names this incarnation of the workspace's event log.
    pub epoch: u64,
    /// The log's head when this session was registered.
    pub seq: u64,
    pub heartbeat_ms: u64,
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
    #[serde(rename = "REALTIME_EVENT")]
    RealtimeEvent,
}

/// A logged event exactly as it was streamed: `{"type":"REALTIME_EVENT","seq":N,"payload":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    #[serde(rename = "type")]
    pub frame_type: EventFrameType,
    pub seq: u64,
    pub payload: RealtimeEvent,
}

/// `RECENT_EVENTS`: the answer to a resume. A long replay comes in several frames,
/// each at most the server's batch size, in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvents {
    pub events: Vec<EventFrame>,
    pub from_seq: u64,
    pub to_seq: u64,
    /// `false`: continuity was lost (another epoch, or history trimmed past the
    /// client's lastSeq). `events` is then empty; refetch snapshots.
    pub complete: bool,
}

/// `RESUME` (or the `epoch`/`lastSeq` query parameters of `/ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resume {
    pub epoch: u64,
    pub last_seq: u64,
}

/// `HEARTBEAT` / `HEARTBEAT_ACK`. The seed's client puts `timestamp` beside `type`
/// instead of in a payload; both are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Heartbeat {
    #[serde(default)]
    pub timestamp: Timestamp,
}

/// `ERROR` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    InvalidPayload,
    TooLarge,
    RateLimited,
    Forbidden,
    NotFound,
    OutOfOrder,
    /// A repeat of an op older than the answers the server keeps per client: it was
    /// applied once; its answer is gone (docs/protocol.md).
    StaleOp,
    /// A store bound (entities per workspace) is reached; nothing was applied.
    LimitExceeded,
}

impl ErrorCode {
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
        }
    }
}

/// `ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
    /// With `OUT_OF_ORDER`: the n the server expects next from that client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_n: Option<u64>,
}

/// WebSocket close codes (PROTOCOL.md).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
}
