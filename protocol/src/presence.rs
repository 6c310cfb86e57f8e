//! Presence and collaboration cursors: the seed's `UserPresence` and
//! `CollaborationCursor`, and the client's `USER_ACTION` / presence-change payloads.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// The seed's `UserPresence.status`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Connected and active (the default).
    #[default]
    Online,
    /// Connected, but the user said they are away.
    Away,
    /// Gone: how a leave is listed in `PRESENCE_DIFF.leaves`.
    Offline,
}

/// The seed's device kinds (the `/ws` `device` parameter; unknown values read as the default).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    /// A desktop browser (the default).
    #[default]
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
}

/// The seed's `UserPresence.device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// What kind of device.
    #[serde(rename = "type")]
    pub kind: DeviceType,
    /// The browser's name, as the client reports it (the reference server leaves it empty).
    #[serde(default)]
    pub browser: String,
}

/// The seed's `UserPresence`: one per user in presence frames (the user's most
/// recently active session speaks for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    /// Whose presence.
    pub user_id: String,
    /// The session that speaks for the user.
    pub session_id: String,
    /// When the server last heard from that session.
    pub last_seen: Timestamp,
    /// Online, away, or offline (a leave).
    pub status: PresenceStatus,
    /// The page the user is on, as its client announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<String>,
    /// The task the user has open, as its client announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    /// The project the user has open, as its client announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_project: Option<String>,
    /// The device of that session.
    #[serde(default)]
    pub device: Device,
}

/// The payload of a client's `USER_PRESENCE_CHANGED` event (the seed's
/// `updatePresence`). `userId` may be sent; it must equal the token's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceChange {
    /// Optional; if sent, must be the token's user (else `FORBIDDEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The new status.
    pub status: PresenceStatus,
    /// The page the user is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<String>,
    /// The task the user has open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    /// The project the user has open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_project: Option<String>,
    /// The device, if the client says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

/// `PRESENCE_DIFF`: users who came online and users who left since the last frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDiff {
    /// Users now online (may repeat one already listed: apply as a set).
    pub joins: Vec<UserPresence>,
    /// Users gone, with `status: offline`.
    pub leaves: Vec<UserPresence>,
}

/// The seed's `CollaborationCursor`, relayed as the payload of an ephemeral
/// `COLLABORATION_CURSOR` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollaborationCursor {
    /// Whose cursor.
    pub user_id: String,
    /// The name to label it with (the reference server uses the user id).
    pub user_name: String,
    /// The colour to draw it in (the reference server derives one from the user id).
    pub user_color: String,
    /// Horizontal position, in the client's own coordinates.
    pub x: f64,
    /// Vertical position, in the client's own coordinates.
    pub y: f64,
    /// The element the cursor is over, if the client says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_id: Option<String>,
    /// When the server relayed the move.
    pub last_moved: Timestamp,
}

/// `USER_ACTION` from a client. Only the seed's `CURSOR_MOVE` is defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserAction {
    /// `CURSOR_MOVE`: the pointer moved (throttled per session by the server).
    #[serde(rename_all = "camelCase")]
    CursorMove {
        /// Horizontal position.
        x: f64,
        /// Vertical position.
        y: f64,
        /// The element under the pointer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        element_id: Option<String>,
    },
}
