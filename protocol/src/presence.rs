//! Presence and collaboration cursors: the seed's `UserPresence` and
//! `CollaborationCursor`, and the client's `USER_ACTION` / presence-change payloads.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    #[default]
    Online,
    Away,
    Offline,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    #[default]
    Desktop,
    Mobile,
    Tablet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(rename = "type")]
    pub kind: DeviceType,
    #[serde(default)]
    pub browser: String,
}

/// The seed's `UserPresence`: one per user in presence frames (the user's most
/// recently active session speaks for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub user_id: String,
    pub session_id: String,
    pub last_seen: Timestamp,
    pub status: PresenceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_project: Option<String>,
    #[serde(default)]
    pub device: Device,
}

/// The payload of a client's `USER_PRESENCE_CHANGED` event (the seed's
/// `updatePresence`). `userId` may be sent; it must equal the token's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub status: PresenceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

/// `PRESENCE_DIFF`: users who came online and users who left since the last frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDiff {
    pub joins: Vec<UserPresence>,
    pub leaves: Vec<UserPresence>,
}

/// The seed's `CollaborationCursor`, relayed as the payload of an ephemeral
/// `COLLABORATION_CURSOR` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollaborationCursor {
    pub user_id: String,
    pub user_name: String,
    pub user_color: String,
    pub x: f64,
    pub y: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_id: Option<String>,
    pub last_moved: Timestamp,
}

/// `USER_ACTION` from a client. Only the seed's `CURSOR_MOVE` is defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserAction {
    #[serde(rename_all = "camelCase")]
    CursorMove {
        x: f64,
        y: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        element_id: Option<String>,
    },
}
