//! The entity store: tasks, projects and notes with a version per entity and per
//! field, and the three conflict strategies exactly as docs/protocol.md states them.

use rtsync_protocol::{ConflictItem, Entity, EntityKind, ErrorCode, Strategy, Timestamp};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Who last wrote a field, and at which entity version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FieldMeta {
    version: u64,
    by: String,
    at: Timestamp,
}

/// An entity as the store keeps it; public only as the content of a durable record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    version: u64,
    fields: Map<String, Value>,
    meta: BTreeMap<String, FieldMeta>,
    deleted: bool,
    updated_at: Timestamp,
    updated_by: String,
    op_id: Option<String>,
    /// `fields`, encoded (`field_bytes` of each).
    bytes: usize,
}

/// One mutation as the store sees it.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub kind: EntityKind,
    pub id: &'a str,
    pub delete: bool,
    /// The version the client changed; 0 for a create.
    pub base: u64,
    pub changes: &'a Map<String, Value>,
    pub strategy: Strategy,
    pub by: &'a str,
    pub at: Timestamp,
    pub op_id: &'a str,
}

/// What a mutation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new version exists. `conflicts` is non-empty only for a MERGE that applied the
    /// non-overlapping fields and returns the overlapping ones.
    Applied {
        entity: Entity,
        resolution: Option<Strategy>,
        overwritten: Vec<String>,
        conflicts: Vec<ConflictItem>,
    },
    /// Nothing was applied; the client must resolve.
    Conflict {
        strategy: Strategy,
        conflicts: Vec<ConflictItem>,
        current: Entity,
    },
    /// Accepted without a change (delete of a tombstone).
    Unchanged {
        entity: Entity,
    },
    Refused {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Default)]
pub struct EntityStore {
    entities: BTreeMap<(EntityKind, String), Stored>,
    entities_max: usize,
    entity_bytes_max: usize,
}

impl EntityStore {
    pub fn new(entities_max: usize, entity_bytes_max: usize) -> Self {
        EntityStore {
            entities: BTreeMap::new(),
            entities_max,
            entity_bytes_max,
        }
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// The stored state of one entity, for the durable log.
    pub fn stored(&self, kind: EntityKind, id: &str) -> Option<&Stored> {
        self.entities.get(&(kind, id.to_owned()))
    }

    /// Every stored entity, in key order (a snapshot).
    pub fn all(&self) -> impl Iterator<Item = (EntityKind, &str, &Stored)> {
        self.entities
            .iter()
            .map(|((k, id), s)| (*k, id.as_str(), s))
    }

    /// Restores an entity's stored state from the durable log (no bound is checked:
    /// the state was accepted when it was written).
    pub fn put(&mut self, kind: EntityKind, id: String, stored: Stored) {
        self.entities.insert((kind, id), stored);
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn get(&self, kind: EntityKind, id: &str) -> Option<Entity> {
        self.entities
            .get(&(kind, id.to_owned()))
            .map(|s| wire(kind, id, s))
    }

    /// Live (not deleted) entities of a kind, in id order, optionally those whose
    /// `projectId` field equals `project`.
    pub fn list(&self, kind: EntityKind, project: Option<&str>) -> Vec<Entity> {
        self.entities
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .filter(|(_, s)| !s.deleted)
            .filter(|(_, s)| {
                project.is_none_or(|p| s.fields.get("projectId").and_then(Value::as_str) == Some(p))
            })
            .map(|((_, id), s)| wire(kind, id, s))
            .collect()
    }

    /// One page of `list`: entities after id `after` (exclusive), at most `limit` of
    /// them and about `bytes_max` encoded (at least one), and the id to continue after
    /// when more follow.
    pub fn page(
        &self,
        kind: EntityKind,
        project: Option<&str>,
        after: Option<&str>,
        limit: usize,
        bytes_max: usize,
    ) -> (Vec<Entity>, Option<String>) {
        use std::ops::Bound;
        let from = match after {
            Some(a) => Bound::Excluded((kind, a.to_owned())),
            None => Bound::Included((kind, String::new())),
        };
        let mut page: Vec<Entity> = Vec::new();
        let mut bytes = 0;
        let live = self
            .entities
            .range((from, Bound::Unbounded))
            .take_while(|((k, _), _)| *k == kind)
            .filter(|(_, s)| !s.deleted)
            .filter(|(_, s)| {
                project.is_none_or(|p| s.fields.get("projectId").and_then(Value::as_str) == Some(p))
            });
        for ((_, id), s) in live {
            let cost = s.bytes + id.len() + ENTITY_ENVELOPE_BYTES;
            let full = page.len() >= limit.max(1) || bytes + cost > bytes_max;
            if full && !page.is_empty() {
                let last = page.last().map(|e| e.id.clone());
                return (page, last);
            }
            page.push(wire(kind, id, s));
            bytes += cost;
        }
        (page, None)
    }

    /// Applies one mutation: refused if it is too large or its base is ahead of the
    /// server; a create if the entity is new; otherwise the entity's conflict strategy
    /// decides what a stale base gets.
    pub fn apply(&mut self, c: &Change<'_>) -> Outcome {
        let key = (c.kind, c.id.to_owned());
        let max = self.entity_bytes_max;
        let grown = grown_bytes(self.entities.get(&key), c);
        if grown > max {
            return refused(
                ErrorCode::TooLarge,
                format!(
                    "{} {:?} would be {grown} bytes encoded with this write; at most {max} (nothing applied)",
                    c.kind.plural(),
                    c.id
                ),
            );
        }
        let Some(cur) = self.entities.get_mut(&key) else {
            return self.create(key, c);
        };
        if c.base > cur.version {
            return refused(
                ErrorCode::InvalidPayload,
                format!(
                    "base version {} is ahead of the server's {}",
                    c.base, cur.version
                ),
            );
        }
        if cur.deleted {
            return to_tombstone(cur, c);
        }
        let stale = c.base < cur.version;
        let overlap = if stale { overlap(cur, c) } else { Vec::new() };
        by_strategy(cur, c, stale, overlap)
    }

    fn create(&mut self, key: (EntityKind, String), c: &Change<'_>) -> Outcome {
        if c.delete || c.base != 0 {
            return refused(ErrorCode::NotFound, format!("no {:?} {:?}", c.kind, c.id));
        }
        if self.entities.len() >= self.entities_max {
            return refused(
                ErrorCode::LimitExceeded,
                format!(
                    "workspace holds the most entities allowed ({})",
                    self.entities_max
                ),
            );
        }
        let cur = self.entities.entry(key).or_insert_with(|| Stored {
            version: 0,
            fields: Map::new(),
            meta: BTreeMap::new(),
            deleted: false,
            updated_at: c.at,
            updated_by: c.by.to_owned(),
            op_id: None,
            bytes: 0,
        });
        commit(cur, c, c.changes.keys());
        applied(c, cur, None, Vec::new(), Vec::new())
    }
}

/// A write to a deleted entity: deleting it again changes nothing; anything else
/// always needs the app's decision, so it is a conflict on `deleted` whatever the
/// strategy.
fn to_tombstone(cur: &Stored, c: &Change<'_>) -> Outcome {
    if c.delete {
        return Outcome::Unchanged {
            entity: wire(c.kind, c.id, cur),
        };
    }
    let item = ConflictItem {
        field: "deleted".into(),
        local_value: Value::Bool(false),
        remote_value: Value::Bool(true),
        timestamp: cur.updated_at,
        user_id: cur.updated_by.clone(),
    };
    Outcome::Conflict {
        strategy: c.strategy,
        conflicts: vec![item],
        current: wire(c.kind, c.id, cur),
    }
}

/// The fields of a stale write that someone else changed after its base; for a
/// delete, every such field (a delete touches them all).
fn overlap(cur: &Stored, c: &Change<'_>) -> Vec<String> {
    if c.delete {
        cur.meta
            .iter()
            .filter(|(_, m)| m.version > c.base)
            .map(|(f, _)| f.clone())
            .collect()
    } else {
        c.changes
            .keys()
            .filter(|f| cur.meta.get(*f).is_some_and(|m| m.version > c.base))
            .cloned()
            .collect()
    }
}

/// The conflict items of `fields`: the writer's value against the stored one, and who
/// wrote the stored one when.
fn conflict_items(cur: &Stored, c: &Change<'_>, fields: &[String]) -> Vec<ConflictItem> {
    fields
        .iter()
        .map(|f| {
            let m = &cur.meta[f];
            ConflictItem {
                field: f.clone(),
                local_value: c.changes.get(f).cloned().unwrap_or(Value::Null),
                remote_value: cur.fields.get(f).cloned().unwrap_or(Value::Null),
                timestamp: m.at,
                user_id: m.by.clone(),
            }
        })
        .collect()
}

/// The three strategies as docs/protocol.md states them, one arm per case. A current
/// base always applies; LWW applies a stale one and reports what it overwrote; MERGE
/// applies the fields nobody else changed and returns the others as conflicts (all of
/// them if nothing is left to apply); MANUAL applies nothing.
fn by_strategy(cur: &mut Stored, c: &Change<'_>, stale: bool, overlap: Vec<String>) -> Outcome {
    match (stale, c.strategy) {
        (false, _) => {
            commit(cur, c, c.changes.keys());
            applied(c, cur, None, Vec::new(), Vec::new())
        }
        (true, Strategy::LastWriteWins) => {
            commit(cur, c, c.changes.keys());
            applied(c, cur, Some(Strategy::LastWriteWins), overlap, Vec::new())
        }
        (true, Strategy::Merge) if overlap.is_empty() => {
            commit(cur, c, c.changes.keys());
            applied(c, cur, Some(Strategy::Merge), Vec::new(), Vec::new())
        }
        (true, Strategy::Merge) => {
            let conflicts = conflict_items(cur, c, &overlap);
            let rest: Vec<&String> = c.changes.keys().filter(|f| !overlap.contains(f)).collect();
            if c.delete || rest.is_empty() {
                let current = wire(c.kind, c.id, cur);
                return Outcome::Conflict {
                    strategy: Strategy::Merge,
                    conflicts,
                    current,
                };
            }
            commit(cur, c, rest.into_iter());
            applied(c, cur, Some(Strategy::Merge), Vec::new(), conflicts)
        }
        (true, Strategy::Manual) => Outcome::Conflict {
            strategy: Strategy::Manual,
            conflicts: conflict_items(cur, c, &overlap),
            current: wire(c.kind, c.id, cur),
        },
    }
}

/// An entity's encoding beyond its fields and id (kind, version, updatedAt, ...).
const ENTITY_ENVELOPE_BYTES: usize = 160;

/// What one field adds to an entity's encoding: `"name":value,`.
fn field_bytes(name: &str, v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    name.len() + 4 + n.0
}

/// The entity's fields, encoded, with every field of `c` applied (a delete: 0). A
/// MERGE may apply fewer; bounding the whole write keeps the check before any strategy.
fn grown_bytes(cur: Option<&Stored>, c: &Change<'_>) -> usize {
    if c.delete {
        return 0;
    }
    let (mut bytes, fields) = match cur {
        Some(s) if !s.deleted => (s.bytes, Some(&s.fields)),
        _ => (0, None),
    };
    for (f, v) in c.changes {
        bytes += field_bytes(f, v);
        if let Some(old) = fields.and_then(|m| m.get(f)) {
            bytes -= field_bytes(f, old);
        }
    }
    bytes
}

fn refused(code: ErrorCode, message: String) -> Outcome {
    Outcome::Refused { code, message }
}

fn commit<'f>(cur: &mut Stored, c: &Change<'_>, fields: impl Iterator<Item = &'f String>) {
    cur.version += 1;
    cur.updated_at = c.at;
    cur.updated_by = c.by.to_owned();
    cur.op_id = Some(c.op_id.to_owned());
    if c.delete {
        cur.deleted = true;
        cur.fields.clear();
        cur.meta.clear();
        cur.bytes = 0;
        return;
    }
    for f in fields {
        let new = c.changes[f].clone();
        cur.bytes += field_bytes(f, &new);
        if let Some(old) = cur.fields.insert(f.clone(), new) {
            cur.bytes -= field_bytes(f, &old);
        }
        let meta = FieldMeta {
            version: cur.version,
            by: c.by.to_owned(),
            at: c.at,
        };
        cur.meta.insert(f.clone(), meta);
    }
}

fn applied(
    c: &Change<'_>,
    cur: &Stored,
    resolution: Option<Strategy>,
    overwritten: Vec<String>,
    conflicts: Vec<ConflictItem>,
) -> Outcome {
    Outcome::Applied {
        entity: wire(c.kind, c.id, cur),
        resolution,
        overwritten,
        conflicts,
    }
}

fn wire(kind: EntityKind, id: &str, s: &Stored) -> Entity {
    Entity {
        id: id.to_owned(),
        entity: kind,
        version: s.version,
        updated_at: s.updated_at,
        updated_by: s.updated_by.clone(),
        op_id: s.op_id.clone(),
        deleted: s.deleted,
        task_id: None,
        fields: s.fields.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change<'a>(
        id: &'a str,
        base: u64,
        changes: &'a Map<String, Value>,
        strategy: Strategy,
        by: &'a str,
    ) -> Change<'a> {
        Change {
            kind: EntityKind::Task,
            id,
            delete: false,
            base,
            changes,
            strategy,
            by,
            at: Timestamp(1000),
            op_id: "c:1",
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// t1 at version 2: created with {title, status} by u1, then status changed by u2.
    fn store_at_v2() -> EntityStore {
        let mut s = EntityStore::new(100, 1 << 20);
        let c1 = map(json!({"title": "a", "status": "todo"}));
        s.apply(&change("t1", 0, &c1, Strategy::Merge, "u1"));
        let c2 = map(json!({"status": "doing"}));
        s.apply(&change("t1", 1, &c2, Strategy::Merge, "u2"));
        s
    }

    #[test]
    fn current_base_applies_and_bumps_the_version() {
        let s = store_at_v2();
        let e = s.get(EntityKind::Task, "t1").unwrap();
        assert_eq!((e.version, e.fields["status"].clone()), (2, json!("doing")));
    }

    #[test]
    fn merge_applies_untouched_fields_and_returns_overlaps() {
        let mut s = store_at_v2();
        // Based on v1: title is untouched since, status is not.
        let c = map(json!({"title": "b", "status": "done"}));
        let Outcome::Applied {
            entity,
            resolution,
            conflicts,
            ..
        } = s.apply(&change("t1", 1, &c, Strategy::Merge, "u3"))
        else {
            panic!()
        };
        assert_eq!(resolution, Some(Strategy::Merge));
        assert_eq!(
            (entity.version, entity.fields["title"].clone()),
            (3, json!("b"))
        );
        assert_eq!(entity.fields["status"], json!("doing"));
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, "status");
        assert_eq!(
            (
                conflicts[0].local_value.clone(),
                conflicts[0].remote_value.clone()
            ),
            (json!("done"), json!("doing"))
        );
        assert_eq!(conflicts[0].user_id, "u2");
    }

    #[test]
    fn merge_without_overlap_is_acknowledged_as_merge() {
        let mut s = store_at_v2();
        let c = map(json!({"title": "b"}));
        let out = s.apply(&change("t1", 1, &c, Strategy::Merge, "u3"));
        assert!(
            matches!(out, Outcome::Applied { resolution: Some(Strategy::Merge), ref conflicts, .. } if conflicts.is_empty())
        );
    }

    #[test]
    fn last_write_wins_overwrites_and_reports_it() {
        let mut s = store_at_v2();
        let c = map(json!({"status": "done"}));
        let Outcome::Applied {
            entity,
            resolution,
            overwritten,
            ..
        } = s.apply(&change("t1", 1, &c, Strategy::LastWriteWins, "u3"))
        else {
            panic!()
        };
        assert_eq!(resolution, Some(Strategy::LastWriteWins));
        assert_eq!(overwritten, vec!["status".to_string()]);
        assert_eq!(entity.fields["status"], json!("done"));
    }

    #[test]
    fn manual_applies_nothing() {
        let mut s = store_at_v2();
        let c = map(json!({"title": "b", "status": "done"}));
        let out = s.apply(&change("t1", 1, &c, Strategy::Manual, "u3"));
        let Outcome::Conflict {
            strategy,
            conflicts,
            current,
        } = out
        else {
            panic!()
        };
        assert_eq!(strategy, Strategy::Manual);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(
            (current.version, current.fields["title"].clone()),
            (2, json!("a"))
        );
    }

    #[test]
    fn deletes_tombstones_and_conflicts_on_deleted() {
        let mut s = store_at_v2();
        let none = Map::new();
        let mut del = change("t1", 2, &none, Strategy::Merge, "u1");
        del.delete = true;
        assert!(
            matches!(s.apply(&del), Outcome::Applied { ref entity, .. } if entity.deleted && entity.version == 3)
        );
        assert!(matches!(s.apply(&del), Outcome::Unchanged { .. }));
        let c = map(json!({"title": "z"}));
        assert!(matches!(
            s.apply(&change("t1", 3, &c, Strategy::LastWriteWins, "u2")),
            Outcome::Conflict { .. }
        ));
        assert!(s.list(EntityKind::Task, None).is_empty());
    }

    #[test]
    fn refuses_unknown_entities_future_bases_and_overflow() {
        let mut s = EntityStore::new(1, 1 << 20);
        let c = map(json!({"title": "a"}));
        assert!(matches!(
            s.apply(&change("x", 4, &c, Strategy::Merge, "u")),
            Outcome::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        ));
        s.apply(&change("t1", 0, &c, Strategy::Merge, "u"));
        assert!(matches!(
            s.apply(&change("t1", 9, &c, Strategy::Merge, "u")),
            Outcome::Refused {
                code: ErrorCode::InvalidPayload,
                ..
            }
        ));
        assert!(matches!(
            s.apply(&change("t2", 0, &c, Strategy::Merge, "u")),
            Outcome::Refused {
                code: ErrorCode::LimitExceeded,
                ..
            }
        ));
    }

    #[test]
    fn pages_are_bounded_by_count_and_bytes_and_hold_at_least_one_entity() {
        let mut s = EntityStore::new(100, 1 << 20);
        let big = map(json!({"pad": "x".repeat(1000)}));
        for id in ["a", "b", "c", "d"] {
            s.apply(&change(id, 0, &big, Strategy::Merge, "u1"));
        }
        let ids = |p: &[Entity]| p.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let (p, next) = s.page(EntityKind::Task, None, None, 3, 1 << 20);
        assert_eq!(
            (ids(&p), next.as_deref()),
            (vec!["a".into(), "b".into(), "c".into()], Some("c"))
        );
        let (p, next) = s.page(EntityKind::Task, None, Some("c"), 3, 1 << 20);
        assert_eq!((ids(&p), next), (vec!["d".to_string()], None));
        // ~1 KB each: a 2 500-byte page holds two; a 10-byte one still holds one.
        assert_eq!(s.page(EntityKind::Task, None, None, 10, 2500).0.len(), 2);
        assert_eq!(s.page(EntityKind::Task, None, None, 10, 10).0.len(), 1);
    }

    #[test]
    fn an_entity_may_not_grow_past_its_encoded_bound() {
        let mut s = EntityStore::new(100, 2500);
        let a = map(json!({"a": "x".repeat(1000)}));
        let b = map(json!({"b": "x".repeat(1000)}));
        let c = map(json!({"c": "x".repeat(1000)}));
        assert!(matches!(
            s.apply(&change("t", 0, &a, Strategy::Merge, "u")),
            Outcome::Applied { .. }
        ));
        assert!(matches!(
            s.apply(&change("t", 1, &b, Strategy::Merge, "u")),
            Outcome::Applied { .. }
        ));
        let third = s.apply(&change("t", 2, &c, Strategy::Merge, "u"));
        assert!(
            matches!(
                &third,
                Outcome::Refused {
                    code: ErrorCode::TooLarge,
                    ..
                }
            ),
            "{third:?}"
        );
        // Replacing a field with one of the same size keeps it within the bound.
        assert!(matches!(
            s.apply(&change(
                "t",
                2,
                &map(json!({"a": "y".repeat(1000)})),
                Strategy::Merge,
                "u"
            )),
            Outcome::Applied { .. }
        ));
    }
}
