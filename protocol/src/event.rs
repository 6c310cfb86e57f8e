//! The seed's `RealtimeEvent` and the payloads it carries.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The seed's `RealtimeEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// A task was created (a mutation with base version 0).
    TaskCreated,
    /// Some of a task's fields changed.
    TaskUpdated,
    /// A task was deleted: it stays as a tombstone, fields cleared.
    TaskDeleted,
    /// A task's `status` changed (the seed's `{taskId, status}` shape).
    TaskStatusChanged,
    /// Some of a project's fields changed (also creates it).
    ProjectUpdated,
    /// Some of a note's fields changed (also creates it).
    NoteUpdated,
    /// A user's presence changed: ephemeral, relayed, never logged.
    UserPresenceChanged,
    /// A cursor position: ephemeral, sent by the server only.
    CollaborationCursor,
    /// A notice from the system: sent by the server only.
    SystemNotification,
}

impl EventType {
    /// The entity kind a mutation type acts on; `None` for ephemeral types.
    pub fn entity_kind(self) -> Option<EntityKind> {
        match self {
            EventType::TaskCreated
            | EventType::TaskUpdated
            | EventType::TaskDeleted
            | EventType::TaskStatusChanged => Some(EntityKind::Task),
            EventType::ProjectUpdated => Some(EntityKind::Project),
            EventType::NoteUpdated => Some(EntityKind::Note),
            EventType::UserPresenceChanged
            | EventType::CollaborationCursor
            | EventType::SystemNotification => None,
        }
    }

    /// Whether this type changes an entity (and is logged with a seq).
    pub fn is_mutation(self) -> bool {
        self.entity_kind().is_some()
    }

    /// Whether this type deletes its entity (the only one whose `changes` may be empty).
    pub fn is_delete(self) -> bool {
        self == EventType::TaskDeleted
    }

    /// The wire name, e.g. `"TASK_UPDATED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskCreated => "TASK_CREATED",
            EventType::TaskUpdated => "TASK_UPDATED",
            EventType::TaskDeleted => "TASK_DELETED",
            EventType::TaskStatusChanged => "TASK_STATUS_CHANGED",
            EventType::ProjectUpdated => "PROJECT_UPDATED",
            EventType::NoteUpdated => "NOTE_UPDATED",
            EventType::UserPresenceChanged => "USER_PRESENCE_CHANGED",
            EventType::CollaborationCursor => "COLLABORATION_CURSOR",
            EventType::SystemNotification => "SYSTEM_NOTIFICATION",
        }
    }
}

/// The seed's `ConflictResolution.type`: which store an entity lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntityKind {
    /// `TASK`: the seed's tasks.
    Task,
    /// `PROJECT`: the seed's projects.
    Project,
    /// `NOTE`: the seed's notes.
    Note,
}

impl EntityKind {
    /// Every kind, in declaration order (also the order of `kind as usize`).
    pub const ALL: [EntityKind; 3] = [EntityKind::Task, EntityKind::Project, EntityKind::Note];

    /// The path segment of `GET /api/entities/{kind}`.
    pub fn plural(self) -> &'static str {
        match self {
            EntityKind::Task => "tasks",
            EntityKind::Project => "projects",
            EntityKind::Note => "notes",
        }
    }

    /// The kind whose [`plural`](Self::plural) is `s`, if any.
    pub fn from_plural(s: &str) -> Option<Self> {
        EntityKind::ALL.into_iter().find(|k| k.plural() == s)
    }
}

/// A `RealtimeEvent` as the server sends it: every field present, stamped by the server.
///
/// For entity events `payload` is the entity itself (see [`crate::Entity`]), flat, as
/// the seed's task store reads it (`event.payload.id`, `event.payload.status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeEvent {
    /// `"E:N"` (epoch, seq) for a logged event, `"E:eK"` for an ephemeral one.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The entity for entity events; the presence or cursor for ephemeral ones.
    pub payload: Value,
    /// Who made the change (the sender's token `sub`).
    pub user_id: String,
    /// The sender's tab.
    pub session_id: String,
    /// When the server applied or relayed it.
    pub timestamp: Timestamp,
    /// The entity's version after the change; 0 for ephemeral events.
    pub version: u64,
}

/// A `RealtimeEvent` as a client sends it. The server stamps `userId`, `sessionId`
/// and `timestamp` itself, so those are optional here and never trusted; the seed's
/// client sends them anyway (`id` is its `crypto.randomUUID()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientEvent {
    /// The client's event id (ignored by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A mutation type, or `USER_PRESENCE_CHANGED`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// A [`MutationPayload`] for a mutation; the presence for `USER_PRESENCE_CHANGED`.
    #[serde(default)]
    pub payload: Value,
    /// Ignored: the server uses the token's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Ignored: the server uses the connection's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Ignored: the server stamps its own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// For a mutation: the base version the change was made on (0 for a create).
    #[serde(default)]
    pub version: u64,
}

/// The payload of a mutation event: `{opId, id, changes}` (docs/protocol.md, Mutations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutationPayload {
    /// `"<clientId>:<n>"`, n = 1, 2, 3 … per client without gaps.
    pub op_id: String,
    /// The entity id.
    pub id: String,
    /// Field name → new value. Empty for a delete.
    #[serde(default)]
    pub changes: Map<String, Value>,
    /// Asks for a conflict strategy other than the server's default for the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::Strategy>,
}

/// Field names an entity reserves; `changes` may not set them.
pub const RESERVED_FIELDS: [&str; 8] = [
    "id",
    "entity",
    "version",
    "updatedAt",
    "updatedBy",
    "opId",
    "deleted",
    "taskId",
];
/// At most this many fields in one `changes` object.
pub const CHANGES_FIELDS_MAX: usize = 64;
/// At most this many bytes in a field name.
pub const FIELD_NAME_BYTES_MAX: usize = 64;
/// At most this many bytes in an entity id, a clientId or a sessionId.
pub const ID_BYTES_MAX: usize = 128;

/// Why a mutation payload was refused (answered `ERROR INVALID_PAYLOAD`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutationError {
    /// Not `{opId, id, changes, strategy?}` (serde's message).
    #[error("payload is not a mutation {{opId, id, changes}}: {0}")]
    Shape(String),
    /// The opId is not `<clientId>:<n>` with 1 ≤ n ≤ [`OP_N_MAX`].
    #[error("opId {0:?} must be \"<clientId>:<n>\" with n a whole number from 1")]
    OpId(String),
    /// The entity id is empty or longer than [`ID_BYTES_MAX`].
    #[error("entity id must be 1 to {ID_BYTES_MAX} bytes")]
    EntityId,
    /// `changes` sets one of [`RESERVED_FIELDS`].
    #[error("changes may not set the reserved field {0:?}")]
    Reserved(String),
    /// `changes` has more than [`CHANGES_FIELDS_MAX`] fields.
    #[error("changes has {0} fields; at most {CHANGES_FIELDS_MAX}")]
    TooManyFields(usize),
    /// A field name is empty or longer than [`FIELD_NAME_BYTES_MAX`].
    #[error("field name {0:?} is empty or longer than {FIELD_NAME_BYTES_MAX} bytes")]
    FieldName(String),
    /// A create or update with empty `changes` (only a delete may have none).
    #[error("{0} needs at least one change")]
    NoChanges(&'static str),
    /// A `TASK_STATUS_CHANGED` that does not set `status` to a string.
    #[error("TASK_STATUS_CHANGED must change \"status\" to a string")]
    Status,
}

/// The largest op sequence number: `Number.MAX_SAFE_INTEGER`.
pub const OP_N_MAX: u64 = (1 << 53) - 1;

/// A parsed opId: the client it came from and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    /// The client (one outbox) that sent it; may itself contain `:`.
    pub client_id: String,
    /// The op's number: 1, 2, 3 … per client, without gaps.
    pub n: u64,
}

impl OpId {
    /// Parses `"<clientId>:<n>"` (split at the last `:`), 1 ≤ n ≤ [`OP_N_MAX`].
    pub fn parse(s: &str) -> Result<Self, MutationError> {
        let bad = || MutationError::OpId(s.chars().take(ID_BYTES_MAX).collect());
        let (client, n) = s.rsplit_once(':').ok_or_else(bad)?;
        if client.is_empty() || client.len() > ID_BYTES_MAX {
            return Err(bad());
        }
        let n: u64 = n.parse().map_err(|_| bad())?;
        // n counts a client's ops from 1; past 2^53 - 1 a JavaScript client could no
        // longer count them exactly, and n + 1 must never wrap.
        if n == 0 || n > OP_N_MAX {
            return Err(bad());
        }
        Ok(OpId {
            client_id: client.to_owned(),
            n,
        })
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.client_id, self.n)
    }
}

impl MutationPayload {
    /// Reads and checks the payload of a mutation event of type `kind`.
    pub fn from_event(kind: EventType, payload: &Value) -> Result<(Self, OpId), MutationError> {
        let p = MutationPayload::deserialize(payload)
            .map_err(|e| MutationError::Shape(e.to_string()))?;
        let op = OpId::parse(&p.op_id)?;
        if p.id.is_empty() || p.id.len() > ID_BYTES_MAX {
            return Err(MutationError::EntityId);
        }
        if p.changes.len() > CHANGES_FIELDS_MAX {
            return Err(MutationError::TooManyFields(p.changes.len()));
        }
        for name in p.changes.keys() {
            if RESERVED_FIELDS.contains(&name.as_str()) {
                return Err(MutationError::Reserved(name.clone()));
            }
            if name.is_empty() || name.len() > FIELD_NAME_BYTES_MAX {
                return Err(MutationError::FieldName(name.chars().take(80).collect()));
            }
        }
        if !kind.is_delete() && p.changes.is_empty() {
            return Err(MutationError::NoChanges(kind.as_str()));
        }
        if kind == EventType::TaskStatusChanged
            && !matches!(p.changes.get("status"), Some(Value::String(_)))
        {
            return Err(MutationError::Status);
        }
        Ok((p, op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn op_ids_parse_and_refuse() {
        let op = OpId::parse("tab-7:c:42").unwrap();
        assert_eq!((op.client_id.as_str(), op.n), ("tab-7:c", 42));
        assert_eq!(op.to_string(), "tab-7:c:42");
        assert_eq!(OpId::parse("a:9007199254740991").unwrap().n, OP_N_MAX);
        for bad in [
            "",
            "abc",
            ":3",
            "a:0",
            "a:-1",
            "a:x",
            "a:9007199254740992",
            "a:18446744073709551615",
        ] {
            assert!(OpId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mutation_payloads_are_checked() {
        let ok = json!({"opId": "c1:1", "id": "t1", "changes": {"title": "a"}});
        assert!(MutationPayload::from_event(EventType::TaskCreated, &ok).is_ok());
        let del = json!({"opId": "c1:2", "id": "t1"});
        assert!(MutationPayload::from_event(EventType::TaskDeleted, &del).is_ok());
        let cases = [
            (
                EventType::TaskUpdated,
                json!({"opId": "c1:1", "id": "t1", "changes": {"version": 3}}),
            ),
            (
                EventType::TaskUpdated,
                json!({"opId": "c1:1", "id": "t1", "changes": {}}),
            ),
            (
                EventType::TaskUpdated,
                json!({"opId": "c1", "id": "t1", "changes": {"a": 1}}),
            ),
            (
                EventType::TaskUpdated,
                json!({"opId": "c1:1", "id": "", "changes": {"a": 1}}),
            ),
            (
                EventType::TaskUpdated,
                json!({"opId": "c1:1", "id": "t", "changes": [1]}),
            ),
            (
                EventType::TaskUpdated,
                json!({"opId": "c1:1", "id": "t", "changes": {"a": 1}, "x": 1}),
            ),
            (
                EventType::TaskStatusChanged,
                json!({"opId": "c1:1", "id": "t", "changes": {"a": 1}}),
            ),
        ];
        for (kind, payload) in cases {
            assert!(
                MutationPayload::from_event(kind, &payload).is_err(),
                "{payload}"
            );
        }
    }
}
