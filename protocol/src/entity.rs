//! Entities (tasks, projects, notes), conflict strategies and the seed's
//! `ConflictResolution`.

use crate::{EntityKind, Timestamp};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// An entity as the server sends it: flat, the app's own fields beside the
/// bookkeeping ones, so the seed's stores can read `payload.id`, `payload.status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    /// Unique within its kind and workspace.
    pub id: String,
    /// Which store it lives in.
    pub entity: EntityKind,
    /// +1 per applied change; 1 after the create.
    pub version: u64,
    /// When the server applied the change that made this version.
    pub updated_at: Timestamp,
    /// The user whose change made this version.
    pub updated_by: String,
    /// The mutation that produced this version; lets a receiver correlate the event
    /// with the sender's op (delivery latency, read-your-writes checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
    /// A tombstone: the entity was deleted at `version`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// `TASK_STATUS_CHANGED` events also carry the seed's `{taskId, status}` shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The app's own fields (title, status, …), flattened beside the ones above.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// By hand, not derived: `#[serde(flatten)]` buffers the whole object into serde's
/// `Content` and copies every string again, and entities are what every event, snapshot
/// and conflict carries. Reading the object as a map and taking the bookkeeping keys out
/// of it moves each string once (and not at all from an owned `Value`).
impl<'de> Deserialize<'de> for Entity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Entity::from_fields(Map::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Entity {
    /// An entity from its flat JSON object, taken apart without copying: what a client
    /// does with every event's payload.
    pub fn from_fields(mut fields: Map<String, Value>) -> Result<Entity, String> {
        fn take<T: DeserializeOwned>(
            fields: &mut Map<String, Value>,
            key: &'static str,
        ) -> Result<Option<T>, String> {
            match fields.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => serde_json::from_value(v)
                    .map(Some)
                    .map_err(|e| format!("field `{key}`: {e}")),
            }
        }
        fn need<T: DeserializeOwned>(
            fields: &mut Map<String, Value>,
            key: &'static str,
        ) -> Result<T, String> {
            take(fields, key)?.ok_or_else(|| format!("missing field `{key}`"))
        }
        Ok(Entity {
            id: need(&mut fields, "id")?,
            entity: need(&mut fields, "entity")?,
            version: need(&mut fields, "version")?,
            updated_at: need(&mut fields, "updatedAt")?,
            updated_by: need(&mut fields, "updatedBy")?,
            op_id: take(&mut fields, "opId")?,
            deleted: take(&mut fields, "deleted")?.unwrap_or(false),
            task_id: take(&mut fields, "taskId")?,
            fields,
        })
    }
}

/// How a mutation made on a stale base version is resolved (docs/protocol.md, Mutations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    /// Apply on top; overwritten fields are reported for telemetry.
    LastWriteWins,
    /// Apply the fields nobody changed since the base; return the overlapping ones.
    Merge,
    /// Apply nothing; return every overlapping field.
    Manual,
}

impl Strategy {
    /// The wire name, e.g. `"MERGE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LastWriteWins => "LAST_WRITE_WINS",
            Strategy::Merge => "MERGE",
            Strategy::Manual => "MANUAL",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "LAST_WRITE_WINS" | "LWW" => Ok(Strategy::LastWriteWins),
            "MERGE" => Ok(Strategy::Merge),
            "MANUAL" => Ok(Strategy::Manual),
            _ => Err(format!(
                "unknown conflict strategy {s:?}: expected LAST_WRITE_WINS, MERGE or MANUAL"
            )),
        }
    }
}

/// The seed's `ConflictItem`: one field two writers changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictItem {
    /// The field name (`"deleted"` when the entity was deleted meanwhile).
    pub field: String,
    /// What this client asked for (`null` when it deleted or the field is absent).
    pub local_value: Value,
    /// What the server holds now.
    pub remote_value: Value,
    /// When the server's value was written.
    pub timestamp: Timestamp,
    /// Who wrote the server's value.
    pub user_id: String,
}

/// The seed's `ConflictResolution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictResolution {
    /// `"conflict:<opId>"` from the reference server: one conflict per refused op.
    pub id: String,
    /// The kind of the entity in conflict.
    #[serde(rename = "type")]
    pub kind: EntityKind,
    /// The entity in conflict.
    pub entity_id: String,
    /// The fields both sides changed.
    pub conflicts: Vec<ConflictItem>,
    /// Who resolved it; the server never sets it, a client's resolution does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// When it was resolved; set by the client, as `resolved_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// The strategy that produced this outcome (`MERGE` or `MANUAL`).
    pub strategy: Strategy,
}

/// `CONFLICT_DETECTED`: the seed's `ConflictResolution` plus the op it answers and the
/// server's entity as it now stands (after any non-overlapping fields were applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictDetected {
    /// The seed's part, flattened into the same object.
    #[serde(flatten)]
    pub resolution: ConflictResolution,
    /// The sender's op this answers.
    pub op_id: String,
    /// The server's entity now: resolve with a new mutation on `current.version`.
    pub current: Entity,
    /// The seq of the event that applied the non-overlapping fields (MERGE), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The epoch `seq` belongs to. A POST answer does not travel on the stream, so it
    /// may come from another server incarnation than the one the stream is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `ACK`: a mutation was applied, or was a duplicate (then the same answer again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The op this answers.
    pub op_id: String,
    /// The kind of the entity it changed.
    pub entity: EntityKind,
    /// The entity it changed.
    pub entity_id: String,
    /// The entity's version after the mutation.
    pub version: u64,
    /// The seq of the logged event; absent when nothing changed (delete of a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The epoch `seq` belongs to (see `ConflictDetected::epoch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Present when the base was stale and a strategy decided the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Strategy>,
    /// Under LAST_WRITE_WINS: the fields this write overwrote that others had changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overwritten: Vec<String>,
}
