//! The client's copy of confirmed server state, and the optimistic view over it.
//!
//! view = confirmed ⊕ pending ops replayed in order (Replicache's rebase): the view is
//! computed from the confirmed entities and the outbox on every read, so a server event
//! "rebases" the pending ops for free and rolling one op back is removing it from the
//! outbox — no other pending op is touched.

use crate::outbox::PendingOp;
use rtsync_protocol::{Entity, EntityKind, EventType, Timestamp};
use serde_json::Map;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

/// One hash map per kind: every delivery looks an entity up, and a `BTreeMap<String, _>`
/// walk compared a dozen cold strings per lookup (~5% of a large simulation). Hashed with
/// a fixed key, and every iteration that can reach output is sorted by (kind, id).
#[derive(Debug, Default, Clone)]
pub struct Replica {
    by_kind: [ById; EntityKind::ALL.len()],
}

type ById = HashMap<String, Entity, BuildHasherDefault<DefaultHasher>>;

/// `map`'s entities sorted by id.
fn sorted(map: &ById) -> Vec<&Entity> {
    let mut v: Vec<&Entity> = map.values().collect();
    v.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    v
}

impl Replica {
    fn of(&self, kind: EntityKind) -> &ById {
        &self.by_kind[kind as usize]
    }
    fn of_mut(&mut self, kind: EntityKind) -> &mut ById {
        &mut self.by_kind[kind as usize]
    }

    /// Confirmed entities, tombstones included.
    pub fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }
    /// No confirmed entity.
    pub fn is_empty(&self) -> bool {
        self.by_kind.iter().all(HashMap::is_empty)
    }

    /// The confirmed entity `(kind, id)`, tombstone or not; pending ops not applied.
    pub fn get(&self, kind: EntityKind, id: &str) -> Option<&Entity> {
        self.of(kind).get(id)
    }

    /// A server event's entity. Versions only move forward: an older or equal version
    /// (a replay overlapping what a snapshot already had) changes nothing.
    pub fn apply_event(&mut self, e: Entity) -> bool {
        let map = self.of_mut(e.entity);
        match map.get_mut(&e.id) {
            Some(cur) if cur.version >= e.version => false,
            Some(cur) => {
                *cur = e;
                true
            }
            None => {
                map.insert(e.id.clone(), e);
                true
            }
        }
    }

    /// Our own op was acknowledged at `version`: the server applied exactly our change
    /// on top of `version - 1`, which the session checked we hold (an ack further ahead
    /// waits for a replay). If a later version is already here (SSE: the stream overtook
    /// the POST answer), it already includes our change.
    pub fn apply_ack(&mut self, op: &PendingOp, version: u64, by: &str, at: Timestamp) {
        let Some(kind) = op.kind.entity_kind() else {
            return;
        };
        let cur = self
            .of_mut(kind)
            .entry(op.entity_id.clone())
            .or_insert_with(|| Entity {
                id: op.entity_id.clone(),
                entity: kind,
                version: 0,
                updated_at: at,
                updated_by: by.to_owned(),
                op_id: None,
                deleted: false,
                task_id: None,
                fields: Map::new(),
            });
        if cur.version >= version {
            return;
        }
        overlay(cur, op);
        cur.version = version;
        cur.updated_at = at;
        cur.updated_by = by.to_owned();
    }

    /// Replaces every entity of `kind` with a snapshot's (after continuity was lost).
    pub fn replace_kind(&mut self, kind: EntityKind, entities: Vec<Entity>) {
        *self.of_mut(kind) = entities.into_iter().map(|e| (e.id.clone(), e)).collect();
    }

    /// Forgets every entity (a reset before a refetch).
    pub fn clear(&mut self) {
        self.by_kind.iter_mut().for_each(HashMap::clear);
    }

    /// Confirmed, live (not deleted) entities: what must equal the server at quiescence.
    pub fn live(&self) -> impl Iterator<Item = &Entity> {
        self.entities().filter(|e| !e.deleted)
    }

    /// `live()`, owned (in the same order).
    pub fn into_live(self) -> impl Iterator<Item = Entity> {
        self.by_kind.into_iter().flat_map(|m| {
            let mut v: Vec<Entity> = m.into_values().filter(|e| !e.deleted).collect();
            v.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            v
        })
    }

    /// Every confirmed entity, tombstones included, by kind then id.
    pub fn entities(&self) -> impl Iterator<Item = &Entity> {
        self.by_kind.iter().flat_map(sorted)
    }

    /// The optimistic view of one entity: confirmed plus every pending op on it.
    pub fn view<'a>(
        &self,
        kind: EntityKind,
        id: &str,
        pending: impl Iterator<Item = &'a PendingOp>,
    ) -> Option<Entity> {
        let mut e = self.get(kind, id).cloned();
        for op in pending.filter(|o| o.entity_id == id && o.kind.entity_kind() == Some(kind)) {
            let cur = e.get_or_insert_with(|| Entity {
                id: id.to_owned(),
                entity: kind,
                version: 0,
                updated_at: Timestamp(op.enqueued_at_ms),
                updated_by: String::new(),
                op_id: None,
                deleted: false,
                task_id: None,
                fields: Map::new(),
            });
            overlay(cur, op);
        }
        e.filter(|e| !e.deleted)
    }

    /// Approximate retained bytes (ids, field names and JSON values).
    pub fn bytes(&self) -> usize {
        // A sum: no order needed.
        self.by_kind
            .iter()
            .flat_map(HashMap::values)
            .map(entity_bytes)
            .sum()
    }
}

/// Applies one op's change to an entity (the same rule the server applies).
fn overlay(e: &mut Entity, op: &PendingOp) {
    e.op_id = Some(op.op_id.clone());
    if op.kind == EventType::TaskDeleted {
        e.deleted = true;
        e.fields.clear();
        return;
    }
    e.deleted = false;
    for (k, v) in &op.changes {
        e.fields.insert(k.clone(), v.clone());
    }
}

/// Approximate bytes one entity retains (id, author, field names and values), for
/// memory accounting: not exact, but growing with the data.
pub fn entity_bytes(e: &Entity) -> usize {
    64 + e.id.len()
        + e.updated_by.len()
        + e.fields
            .iter()
            .map(|(k, v)| k.len() + crate::value_bytes(v))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(id: &str, version: u64, title: &str) -> Entity {
        Entity {
            id: id.into(),
            entity: EntityKind::Task,
            version,
            updated_at: Timestamp(0),
            updated_by: "u".into(),
            op_id: None,
            deleted: false,
            task_id: None,
            fields: json!({"title": title}).as_object().unwrap().clone(),
        }
    }

    fn op(op_id: &str, kind: EventType, id: &str, changes: serde_json::Value) -> PendingOp {
        PendingOp {
            op_id: op_id.into(),
            kind,
            entity_id: id.into(),
            base: 0,
            changes: changes.as_object().cloned().unwrap_or_default(),
            strategy: None,
            dependencies: vec![],
            enqueued_at_ms: 0,
            sent_at_ms: None,
        }
    }

    #[test]
    fn versions_only_move_forward() {
        let mut r = Replica::default();
        assert!(r.apply_event(entity("t", 2, "b")));
        assert!(!r.apply_event(entity("t", 1, "a")));
        assert_eq!(r.get(EntityKind::Task, "t").unwrap().fields["title"], "b");
    }

    #[test]
    fn the_view_overlays_pending_ops_in_order_and_a_rollback_touches_only_its_op() {
        let mut r = Replica::default();
        r.apply_event(entity("t", 1, "a"));
        let ops = [
            op("c:1", EventType::TaskUpdated, "t", json!({"title": "mine"})),
            op(
                "c:2",
                EventType::TaskUpdated,
                "t",
                json!({"status": "done"}),
            ),
        ];
        let v = r.view(EntityKind::Task, "t", ops.iter()).unwrap();
        assert_eq!(
            (v.fields["title"].clone(), v.fields["status"].clone()),
            (json!("mine"), json!("done"))
        );
        // A server event rebases the pending ops: theirs underneath, ours on top.
        r.apply_event(entity("t", 2, "theirs"));
        assert_eq!(
            r.view(EntityKind::Task, "t", ops.iter()).unwrap().fields["title"],
            "mine"
        );
        // Roll back c:1 alone.
        let v = r.view(EntityKind::Task, "t", ops[1..].iter()).unwrap();
        assert_eq!(
            (v.fields["title"].clone(), v.fields["status"].clone()),
            (json!("theirs"), json!("done"))
        );
        // A pending delete hides it.
        let del = [op("c:3", EventType::TaskDeleted, "t", json!({}))];
        assert!(r.view(EntityKind::Task, "t", del.iter()).is_none());
    }

    #[test]
    fn an_ack_applies_our_change_unless_a_later_version_is_here() {
        let mut r = Replica::default();
        r.apply_event(entity("t", 1, "a"));
        let o = op("c:1", EventType::TaskUpdated, "t", json!({"title": "mine"}));
        r.apply_ack(&o, 2, "me", Timestamp(5));
        let e = r.get(EntityKind::Task, "t").unwrap();
        assert_eq!((e.version, e.fields["title"].clone()), (2, json!("mine")));
        r.apply_event(entity("t", 4, "later"));
        r.apply_ack(
            &op(
                "c:2",
                EventType::TaskUpdated,
                "t",
                json!({"title": "stale"}),
            ),
            3,
            "me",
            Timestamp(6),
        );
        assert_eq!(
            r.get(EntityKind::Task, "t").unwrap().fields["title"],
            "later"
        );
    }

    #[test]
    fn iteration_is_by_kind_then_id_whatever_the_insertion_order() {
        let mut r = Replica::default();
        for id in ["t9", "t10", "t1", "t5"] {
            r.apply_event(entity(id, 1, id));
        }
        let mut note = entity("n1", 1, "x");
        note.entity = EntityKind::Note;
        r.apply_event(note);
        let mut gone = entity("t7", 2, "y");
        gone.deleted = true;
        r.apply_event(gone);
        let ids = |v: Vec<&Entity>| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(r.entities().collect()),
            ["t1", "t10", "t5", "t7", "t9", "n1"]
        );
        assert_eq!(ids(r.live().collect()), ["t1", "t10", "t5", "t9", "n1"]);
        let owned: Vec<String> = r.clone().into_live().map(|e| e.id).collect();
        assert_eq!(owned, ["t1", "t10", "t5", "t9", "n1"]);
    }
}
