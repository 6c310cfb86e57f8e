//! Conflict resolution on the client: the `MANUAL` path. The server reports a conflict
//! (`CONFLICT_DETECTED`, carrying the seed's `ConflictResolution`); the user's choice —
//! keep mine or take theirs — becomes a new mutation (or none).

use rtsync_protocol::{ConflictDetected, EntityKind};
use serde_json::{Map, Value};

/// What a user does with a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictChoice {
    /// Write my values again on top of the current version.
    KeepLocal,
    /// Accept the server's values: nothing to send.
    TakeRemote,
}

/// The mutation that resolves a conflict: the chosen values, to queue with
/// `Session::mutate`. It carries no base version: the session learned the server's
/// (`current.version`) from the conflict itself and bases the change on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The kind of the entity in conflict.
    pub kind: EntityKind,
    /// The entity in conflict.
    pub entity_id: String,
    /// The local values of the conflicting fields, written again.
    pub changes: Map<String, Value>,
}

/// Builds the resolving mutation for `choice`, or `None` when nothing needs sending
/// (remote wins, or the entity was deleted and the user accepts that).
pub fn resolve(c: &ConflictDetected, choice: ConflictChoice) -> Option<Resolution> {
    if choice == ConflictChoice::TakeRemote || c.current.deleted {
        return None;
    }
    let changes: Map<String, Value> = c
        .resolution
        .conflicts
        .iter()
        .filter(|i| i.field != "deleted")
        .map(|i| (i.field.clone(), i.local_value.clone()))
        .collect();
    (!changes.is_empty()).then(|| Resolution {
        kind: c.resolution.kind,
        entity_id: c.resolution.entity_id.clone(),
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtsync_protocol::{ConflictItem, ConflictResolution, Entity, Strategy as Strat, Timestamp};
    use serde_json::json;

    fn conflict() -> ConflictDetected {
        ConflictDetected {
            resolution: ConflictResolution {
                id: "conflict:c:2".into(),
                kind: EntityKind::Task,
                entity_id: "t1".into(),
                conflicts: vec![ConflictItem {
                    field: "title".into(),
                    local_value: json!("mine"),
                    remote_value: json!("theirs"),
                    timestamp: Timestamp(0),
                    user_id: "u2".into(),
                }],
                resolved_by: None,
                resolved_at: None,
                strategy: Strat::Manual,
            },
            op_id: "c:2".into(),
            current: Entity {
                id: "t1".into(),
                entity: EntityKind::Task,
                version: 7,
                updated_at: Timestamp(0),
                updated_by: "u2".into(),
                op_id: None,
                deleted: false,
                task_id: None,
                fields: Map::new(),
            },
            seq: None,
            epoch: None,
        }
    }

    #[test]
    fn keep_local_writes_my_values_again_take_remote_sends_nothing() {
        let r = resolve(&conflict(), ConflictChoice::KeepLocal).unwrap();
        assert_eq!(
            (r.entity_id.as_str(), r.changes["title"].clone()),
            ("t1", json!("mine"))
        );
        assert!(resolve(&conflict(), ConflictChoice::TakeRemote).is_none());
    }
}
