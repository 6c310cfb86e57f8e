//! The frame envelope `{"type": T, "payload": P}` (plus `"seq"` on logged events),
//! and the one enum per direction that every frame decodes into.

use crate::{
    Ack, ClientEvent, ConflictDetected, Connected, ErrorCode, ErrorPayload, Heartbeat,
    PresenceDiff, RealtimeEvent, RecentEvents, Resume, UserAction, UserPresence,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A frame from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// `REALTIME_EVENT`: a mutation, or the tab's presence (`USER_PRESENCE_CHANGED`).
    RealtimeEvent(ClientEvent),
    /// `USER_ACTION`: a cursor move, relayed to the others as `COLLABORATION_CURSOR`.
    UserAction(UserAction),
    /// `RESUME`: replay the log after this position.
    Resume(Resume),
    /// `HEARTBEAT`: the client's own liveness ping.
    Heartbeat(Heartbeat),
    /// `HEARTBEAT_ACK`: the answer to the server's `HEARTBEAT`.
    HeartbeatAck(Heartbeat),
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMsg {
    /// `CONNECTED`: the first frame of every connection (ids, epoch, log head).
    Connected(Connected),
    /// `REALTIME_EVENT`: `seq` is present for logged (entity) events, absent for
    /// ephemeral ones.
    RealtimeEvent {
        /// The event's position in the workspace log; `None` for ephemeral events.
        seq: Option<u64>,
        /// The event itself.
        event: RealtimeEvent,
    },
    /// `RECENT_EVENTS`: one batch of a replay, or "continuity lost" (`complete: false`).
    RecentEvents(RecentEvents),
    /// `PRESENCE_UPDATE`: who is online, sent after `CONNECTED`.
    PresenceUpdate(Vec<UserPresence>),
    /// `PRESENCE_DIFF`: joins and leaves since the last diff.
    PresenceDiff(PresenceDiff),
    /// `ACK`: the sender's mutation was applied.
    Ack(Ack),
    /// `CONFLICT_DETECTED`: the sender's mutation overlapped others' changes (boxed:
    /// it is much larger than the other variants).
    ConflictDetected(Box<ConflictDetected>),
    /// `HEARTBEAT`: the server's liveness ping; answer with `HEARTBEAT_ACK`.
    Heartbeat(Heartbeat),
    /// `HEARTBEAT_ACK`: the answer to a client's `HEARTBEAT`.
    HeartbeatAck(Heartbeat),
    /// `ERROR`: a refused frame or op, with its code.
    Error(ErrorPayload),
}

/// Why a frame could not be decoded. Each maps to the `ERROR` code it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or no string `type` (`BAD_JSON`); holds serde's message.
    #[error("frame is not a JSON object with a string \"type\": {0}")]
    BadJson(String),
    /// A `type` this direction does not have (`UNKNOWN_TYPE`); holds its first 64 chars.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A known `type` whose payload does not fit its shape (`INVALID_PAYLOAD`).
    #[error("invalid {frame_type} payload: {reason}")]
    InvalidPayload {
        /// The frame's `type`.
        frame_type: &'static str,
        /// serde's message.
        reason: String,
    },
}

impl DecodeError {
    /// The `ERROR` code to answer this frame with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadJson(_) => ErrorCode::BadJson,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::InvalidPayload { .. } => ErrorCode::InvalidPayload,
        }
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    frame_type: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    seq: Option<u64>,
    /// The seed's heartbeat: `{type: 'HEARTBEAT', timestamp: Date.now()}`.
    #[serde(default)]
    timestamp: Option<crate::Timestamp>,
}

fn raw(text: &str) -> Result<RawEnvelope<'_>, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::BadJson(e.to_string()))
}

fn payload<T: DeserializeOwned>(
    frame_type: &'static str,
    p: Option<&RawValue>,
) -> Result<T, DecodeError> {
    let text = p.map_or("null", RawValue::get);
    serde_json::from_str(text).map_err(|e| DecodeError::InvalidPayload {
        frame_type,
        reason: e.to_string(),
    })
}

fn heartbeat(frame_type: &'static str, env: &RawEnvelope<'_>) -> Result<Heartbeat, DecodeError> {
    match (env.payload, env.timestamp) {
        (None, Some(timestamp)) => Ok(Heartbeat { timestamp }),
        (None, None) => Ok(Heartbeat::default()),
        (p, _) => payload(frame_type, p),
    }
}

impl ClientMsg {
    /// Parses one text frame from a client.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let env = raw(text)?;
        Ok(match env.frame_type.as_ref() {
            "REALTIME_EVENT" => ClientMsg::RealtimeEvent(payload("REALTIME_EVENT", env.payload)?),
            "USER_ACTION" => ClientMsg::UserAction(payload("USER_ACTION", env.payload)?),
            "RESUME" => ClientMsg::Resume(Resume::from_payload(
                env.payload.map_or("null", RawValue::get),
            )),
            "HEARTBEAT" => ClientMsg::Heartbeat(heartbeat("HEARTBEAT", &env)?),
            "HEARTBEAT_ACK" => ClientMsg::HeartbeatAck(heartbeat("HEARTBEAT_ACK", &env)?),
            other => return Err(DecodeError::UnknownType(other.chars().take(64).collect())),
        })
    }

    /// The wire `type` (`"REALTIME_EVENT"`, …), for encoding, logs and metrics.
    pub fn frame_type(&self) -> &'static str {
        match self {
            ClientMsg::RealtimeEvent(_) => "REALTIME_EVENT",
            ClientMsg::UserAction(_) => "USER_ACTION",
            ClientMsg::Resume(_) => "RESUME",
            ClientMsg::Heartbeat(_) => "HEARTBEAT",
            ClientMsg::HeartbeatAck(_) => "HEARTBEAT_ACK",
        }
    }

    /// Writes the frame as JSON text.
    pub fn encode(&self) -> String {
        let t = self.frame_type();
        match self {
            ClientMsg::RealtimeEvent(p) => encode_frame(t, None, p),
            ClientMsg::UserAction(p) => encode_frame(t, None, p),
            ClientMsg::Resume(p) => encode_frame(t, None, p),
            ClientMsg::Heartbeat(p) | ClientMsg::HeartbeatAck(p) => encode_frame(t, None, p),
        }
    }
}

impl ServerMsg {
    /// Parses one text frame (or SSE `data:`) from the server.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let env = raw(text)?;
        let p = env.payload;
        Ok(match env.frame_type.as_ref() {
            "CONNECTED" => ServerMsg::Connected(payload("CONNECTED", p)?),
            "REALTIME_EVENT" => ServerMsg::RealtimeEvent {
                seq: env.seq,
                event: payload("REALTIME_EVENT", p)?,
            },
            "RECENT_EVENTS" => ServerMsg::RecentEvents(payload("RECENT_EVENTS", p)?),
            "PRESENCE_UPDATE" => ServerMsg::PresenceUpdate(payload("PRESENCE_UPDATE", p)?),
            "PRESENCE_DIFF" => ServerMsg::PresenceDiff(payload("PRESENCE_DIFF", p)?),
            "ACK" => ServerMsg::Ack(payload("ACK", p)?),
            "CONFLICT_DETECTED" => {
                ServerMsg::ConflictDetected(Box::new(payload("CONFLICT_DETECTED", p)?))
            }
            "HEARTBEAT" => ServerMsg::Heartbeat(heartbeat("HEARTBEAT", &env)?),
            "HEARTBEAT_ACK" => ServerMsg::HeartbeatAck(heartbeat("HEARTBEAT_ACK", &env)?),
            "ERROR" => ServerMsg::Error(payload("ERROR", p)?),
            other => return Err(DecodeError::UnknownType(other.chars().take(64).collect())),
        })
    }

    /// The wire `type` (`"ACK"`, …), for encoding, logs and metrics.
    pub fn frame_type(&self) -> &'static str {
        match self {
            ServerMsg::Connected(_) => "CONNECTED",
            ServerMsg::RealtimeEvent { .. } => "REALTIME_EVENT",
            ServerMsg::RecentEvents(_) => "RECENT_EVENTS",
            ServerMsg::PresenceUpdate(_) => "PRESENCE_UPDATE",
            ServerMsg::PresenceDiff(_) => "PRESENCE_DIFF",
            ServerMsg::Ack(_) => "ACK",
            ServerMsg::ConflictDetected(_) => "CONFLICT_DETECTED",
            ServerMsg::Heartbeat(_) => "HEARTBEAT",
            ServerMsg::HeartbeatAck(_) => "HEARTBEAT_ACK",
            ServerMsg::Error(_) => "ERROR",
        }
    }

    /// Writes the frame as JSON text (a logged event with its `seq`).
    pub fn encode(&self) -> String {
        let t = self.frame_type();
        match self {
            ServerMsg::Connected(p) => encode_frame(t, None, p),
            ServerMsg::RealtimeEvent { seq, event } => encode_frame(t, *seq, event),
            ServerMsg::RecentEvents(p) => encode_frame(t, None, p),
            ServerMsg::PresenceUpdate(p) => encode_frame(t, None, p),
            ServerMsg::PresenceDiff(p) => encode_frame(t, None, p),
            ServerMsg::Ack(p) => encode_frame(t, None, p),
            ServerMsg::ConflictDetected(p) => encode_frame(t, None, p),
            ServerMsg::Heartbeat(p) | ServerMsg::HeartbeatAck(p) => encode_frame(t, None, p),
            ServerMsg::Error(p) => encode_frame(t, None, p),
        }
    }
}

#[derive(Serialize)]
struct OutFrame<'a, P> {
    #[serde(rename = "type")]
    frame_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    payload: &'a P,
}

/// Writes one envelope. Serialising our own types to a `String` cannot fail (no
/// non-string map keys, no failing `Serialize` impls), so a failure is a bug.
pub fn encode_frame<P: Serialize>(frame_type: &str, seq: Option<u64>, payload: &P) -> String {
    serde_json::to_string(&OutFrame {
        frame_type,
        seq,
        payload,
    })
    .unwrap_or_else(|e| unreachable!("protocol types always serialise: {e}"))
}
