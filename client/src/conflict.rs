//! Conflict resolution on the client: a last-write-wins register ordered by
//! (version, clientId) — a join-semilattice, so merging is commutative, associative
//! and idempotent — and the `MANUAL` path that surfaces the seed's `ConflictResolution`
//! and resolves it with a new mutation.

use rtsync_protocol::{ConflictDetected, ConflictResolution, EntityKind, Timestamp};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A last-write-wins register: the write with the higher (version, clientId) wins;
/// the clientId breaks ties between concurrent writes of the same version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lww<T> {
    /// The written value.
    pub value: T,
    /// The version it was written at: higher wins.
    pub version: u64,
    /// The writer: breaks ties between writes of the same version.
    pub client_id: String,
}

impl<T: Clone> Lww<T> {
    /// The winner of the two: commutative, associative and idempotent.
    pub fn merge(&self, other: &Lww<T>) -> Lww<T> {
        if (other.version, &other.client_id) > (self.version, &self.client_id) {
            other.clone()
        } else {
            self.clone()
        }
    }
}

/// Field-wise LWW merge of two entity states: each field keeps the write with the
/// higher (version, clientId).
pub fn merge_fields(
    a: &BTreeMap<String, Lww<Value>>,
    b: &BTreeMap<String, Lww<Value>>,
) -> BTreeMap<String, Lww<Value>> {
    let mut out = a.clone();
    for (k, v) in b {
        let merged = match out.get(k) {
            Some(cur) => cur.merge(v),
            None => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

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

/// Conflicts waiting for the app's (the user's) decision, by conflict id: the seed's
/// `conflictResolutions` map and `resolveConflict`. Bounded: past `max`, the oldest is
/// dropped (remote wins: nothing is sent) and counted in `overflowed`.
///
/// No scenario drives it yet: the simulator keeps its simulated users' open conflicts
/// in a list of its own and calls [`resolve`] directly, so only the unit test uses
/// this type.
#[derive(Debug)]
pub struct ManualConflicts {
    open: BTreeMap<String, (u64, ConflictDetected)>,
    max: usize,
    /// Conflicts auto-resolved (remote wins) because the bound was reached.
    pub overflowed: u64,
}

impl ManualConflicts {
    /// Holds at most `max` open conflicts (at least 1).
    pub fn new(max: usize) -> Self {
        ManualConflicts {
            open: BTreeMap::new(),
            max: max.max(1),
            overflowed: 0,
        }
    }

    /// Conflicts waiting for a decision.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// None waiting.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Surfaces a conflict; returns the seed's `ConflictResolution` for the app.
    pub fn surface(&mut self, c: ConflictDetected, now_ms: u64) -> ConflictResolution {
        if self.open.len() >= self.max
            && let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            self.open.remove(&oldest);
            self.overflowed += 1;
        }
        let r = c.resolution.clone();
        self.open.insert(r.id.clone(), (now_ms, c));
        r
    }

    /// The app decided: returns the mutation to queue (if any) and the resolution
    /// stamped with who resolved it and when.
    pub fn resolve(
        &mut self,
        id: &str,
        choice: ConflictChoice,
        user_id: &str,
        now_ms: u64,
    ) -> Option<(Option<Resolution>, ConflictResolution)> {
        let (_, c) = self.open.remove(id)?;
        let mut done = c.resolution.clone();
        done.resolved_by = Some(user_id.to_owned());
        done.resolved_at = Some(Timestamp(now_ms));
        Some((resolve(&c, choice), done))
    }

    /// Conflicts opened at or before `cutoff_ms` (for simulated users' think time).
    pub fn due(&self, cutoff_ms: u64) -> Vec<String> {
        self.open
            .iter()
            .filter(|(_, (t, _))| *t <= cutoff_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rtsync_protocol::{ConflictItem, Entity, Strategy as Strat};
    use serde_json::json;

    fn reg() -> impl proptest::strategy::Strategy<Value = Lww<i32>> {
        (any::<i32>(), 0u64..5, "[a-c]").prop_map(|(value, version, client_id)| Lww {
            value,
            version,
            client_id,
        })
    }

    fn fields() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, Lww<Value>>> {
        proptest::collection::btree_map(
            "[a-d]",
            reg().prop_map(|r| Lww {
                value: json!(r.value),
                version: r.version,
                client_id: r.client_id,
            }),
            0..4,
        )
    }

    proptest! {
        #[test]
        fn lww_merge_is_commutative_associative_idempotent(a in reg(), b in reg(), c in reg()) {
            // Commutative up to equal keys: two writes with the same (version, client)
            // are the same write, so compare the ordering key and value together.
            prop_assume!(!(a.version == b.version && a.client_id == b.client_id && a.value != b.value));
            prop_assume!(!(b.version == c.version && b.client_id == c.client_id && b.value != c.value));
            prop_assume!(!(a.version == c.version && a.client_id == c.client_id && a.value != c.value));
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
        }

        #[test]
        fn field_merge_is_a_semilattice(a in fields(), b in fields()) {
            let distinct = |x: &BTreeMap<String, Lww<Value>>, y: &BTreeMap<String, Lww<Value>>| {
                x.iter().all(|(k, v)| y.get(k).is_none_or(|w| (w.version, &w.client_id) != (v.version, &v.client_id) || w.value == v.value))
            };
            prop_assume!(distinct(&a, &b));
            prop_assert_eq!(merge_fields(&a, &b), merge_fields(&b, &a));
            prop_assert_eq!(merge_fields(&a, &a), a.clone());
            prop_assert_eq!(merge_fields(&merge_fields(&a, &b), &b), merge_fields(&a, &b));
        }
    }

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

    #[test]
    fn manual_conflicts_are_surfaced_resolved_and_bounded() {
        let mut m = ManualConflicts::new(1);
        let surfaced = m.surface(conflict(), 10);
        assert_eq!(surfaced.strategy, Strat::Manual);
        let (res, done) = m
            .resolve("conflict:c:2", ConflictChoice::KeepLocal, "me", 50)
            .unwrap();
        assert!(res.is_some());
        assert_eq!(
            (done.resolved_by.as_deref(), done.resolved_at),
            (Some("me"), Some(Timestamp(50)))
        );
        m.surface(conflict(), 60);
        let mut other = conflict();
        other.resolution.id = "conflict:c:3".into();
        m.surface(other, 70);
        assert_eq!((m.len(), m.overflowed), (1, 1));
    }
}
