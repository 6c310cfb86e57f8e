//! What a dashboard shows, kept live from the event stream: tasks by status,
//! completions per minute and, per project, done of all (its progress). The seed's
//! integration points "dashboard real-time analytics updates" and "project progress
//! synchronization" (`updateProjectMetrics`, `broadcastProjectProgress`).
//!
//! Progress is derived, never stored: every client derives it from its confirmed
//! replica, as the server could from its own state, so two clients that hold the same
//! tasks show the same progress. The seed broadcasts a progress number computed by the
//! client that completed a task; two clients completing tasks of one project at once
//! each compute it from a view without the other's change, and the last write wins with
//! a wrong number (the `progress = "broadcast"` canary shows it).
//!
//! The rollup is incremental: one task's change costs O(log n) whatever the workspace's
//! size. It keeps an index of what each task counted as, so a change knows what to take
//! back. A snapshot resync replaces the replica without events, so the rollup must then
//! be rebuilt from it ([`Rollup::rebuild`]); a dashboard that forgets misses every
//! change made while it was away (the `dashboard = "no_resync"` canary).
//!
//! Bounds: one index row per live task and at most one counter per distinct status,
//! project and completion minute among them, so the replica's bound is the rollup's.

use rtsync_protocol::{Entity, EntityKind};
use std::collections::BTreeMap;

/// The status a task counts as done at.
pub const DONE: &str = "done";

/// One project's progress: done tasks of all its tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tasks of the project whose status is [`DONE`].
    pub done: u64,
    /// Every live task of the project.
    pub all: u64,
}

impl Progress {
    /// `done / all`, 0 for a project without tasks.
    pub fn ratio(&self) -> f64 {
        if self.all == 0 {
            0.0
        } else {
            self.done as f64 / self.all as f64
        }
    }
}

/// The dashboard's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live tasks per status (`""` for a task without one).
    pub by_status: BTreeMap<String, u64>,
    /// Done tasks per minute of their `completedAt` (ms since the epoch / 60 000).
    pub completions_per_min: BTreeMap<u64, u64>,
    /// Per `projectId`, its progress.
    pub projects: BTreeMap<String, Progress>,
}

/// What one task counts as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    status: String,
    project: Option<String>,
    completed_min: Option<u64>,
}

impl Row {
    fn of(e: &Entity) -> Option<Row> {
        if e.entity != EntityKind::Task || e.deleted {
            return None;
        }
        let text = |k: &str| e.fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let status = text("status").unwrap_or_default();
        let completed_min = (status == DONE)
            .then(|| e.fields.get("completedAt").and_then(|v| v.as_u64()))
            .flatten()
            .map(|ms| ms / 60_000);
        Some(Row {
            status,
            project: text("projectId"),
            completed_min,
        })
    }
}

/// What one update changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing the dashboard shows.
    Nothing,
    /// A status or completion counter, not a project's progress.
    Counters,
    /// A project's progress (and counters with it).
    Progress,
}

/// The counters and the index they were counted from.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    rows: BTreeMap<String, Row>,
    counts: Counts,
}

impl Rollup {
    /// The rollup of a set of entities (tasks are counted, the rest ignored).
    pub fn of<'a>(entities: impl IntoIterator<Item = &'a Entity>) -> Rollup {
        let mut r = Rollup::default();
        r.rebuild(entities);
        r
    }

    /// Forgets everything and counts `entities` afresh (after a snapshot resync).
    pub fn rebuild<'a>(&mut self, entities: impl IntoIterator<Item = &'a Entity>) {
        *self = Rollup::default();
        for e in entities {
            self.update(&e.id, Some(e));
        }
    }

    /// Task `id` is now `now` (`None` or a tombstone: gone); what that changed.
    /// Entities of other kinds change nothing.
    pub fn update(&mut self, id: &str, now: Option<&Entity>) -> Change {
        let new = now.and_then(Row::of);
        let old = self.rows.get(id);
        if old == new.as_ref() {
            return Change::Nothing;
        }
        let counts_for =
            |r: Option<&Row>| r.and_then(|r| Some((r.project.clone()?, r.status == DONE)));
        let progress = counts_for(old) != counts_for(new.as_ref());
        if let Some(old) = self.rows.remove(id) {
            self.count(&old, false);
        }
        if let Some(new) = new {
            self.count(&new, true);
            self.rows.insert(id.to_owned(), new);
        }
        if progress {
            Change::Progress
        } else {
            Change::Counters
        }
    }

    /// The counters.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    fn count(&mut self, row: &Row, add: bool) {
        let c = &mut self.counts;
        bump(&mut c.by_status, row.status.clone(), add);
        if let Some(min) = row.completed_min {
            bump(&mut c.completions_per_min, min, add);
        }
        if let Some(p) = &row.project {
            let done = row.status == DONE;
            let entry = c.projects.entry(p.clone()).or_default();
            if add {
                entry.all += 1;
                entry.done += u64::from(done);
            } else {
                entry.all -= 1;
                entry.done -= u64::from(done);
            }
            if entry.all == 0 {
                c.projects.remove(p);
            }
        }
    }
}

/// Adds or takes back one from `key`'s counter; a counter at zero is removed, so two
/// rollups of the same tasks are equal however they got there.
fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, add: bool) {
    if add {
        *map.entry(key).or_default() += 1;
    } else if let std::collections::btree_map::Entry::Occupied(mut e) = map.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtsync_protocol::Timestamp;
    use serde_json::{Value, json};

    fn task(id: &str, fields: Value) -> Entity {
        Entity {
            id: id.into(),
            entity: EntityKind::Task,
            version: 1,
            updated_at: Timestamp(0),
            updated_by: "u".into(),
            op_id: None,
            deleted: false,
            task_id: None,
            fields: fields.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn changes_taken_back_and_counted_again_give_the_rollup_of_the_end_state() {
        let mut r = Rollup::default();
        let a = task("a", json!({"status": "todo", "projectId": "p0"}));
        let a_done = task(
            "a",
            json!({"status": "done", "projectId": "p0", "completedAt": 120_000}),
        );
        let b = task("b", json!({"status": "done", "projectId": "p0"}));
        assert_eq!(r.update("a", Some(&a)), Change::Progress);
        assert_eq!(r.update("b", Some(&b)), Change::Progress);
        assert_eq!(r.update("a", Some(&a_done)), Change::Progress);
        let mut renamed = a_done.clone();
        renamed.fields.insert("completedAt".into(), json!(180_000));
        assert_eq!(r.update("a", Some(&renamed)), Change::Counters);
        assert_eq!(r.update("a", Some(&a_done)), Change::Counters);
        assert_eq!(
            r.update("a", Some(&a_done)),
            Change::Nothing,
            "the same row changes nothing"
        );
        let p = r.counts().projects["p0"];
        assert_eq!((p.done, p.all, p.ratio()), (2, 2, 1.0));
        assert_eq!(r.counts().completions_per_min[&2], 1);
        assert_eq!(r.update("b", None), Change::Progress);
        let mut tomb = a_done.clone();
        tomb.deleted = true;
        assert_eq!(r.update("a", Some(&tomb)), Change::Progress);
        assert_eq!(r.counts(), &Counts::default(), "every counter back to none");
        let end = [task("c", json!({"status": "doing", "projectId": "p1"}))];
        r.update("c", Some(&end[0]));
        assert_eq!(r.counts(), Rollup::of(&end).counts());
    }

    #[test]
    fn other_kinds_and_missing_fields_are_handled() {
        let mut note = task("n", json!({"status": "done"}));
        note.entity = EntityKind::Note;
        let mut r = Rollup::default();
        assert_eq!(r.update("n", Some(&note)), Change::Nothing);
        assert_eq!(r.update("t", Some(&task("t", json!({})))), Change::Counters);
        assert_eq!(r.counts().by_status[""], 1);
        assert!(r.counts().projects.is_empty());
    }

    #[test]
    fn a_rebuild_forgets_what_the_snapshot_no_longer_holds() {
        let mut r = Rollup::of(&[task("a", json!({"status": "done", "projectId": "p"}))]);
        r.rebuild(&[task("b", json!({"status": "todo", "projectId": "p"}))]);
        let p = r.counts().projects["p"];
        assert_eq!((p.done, p.all), (0, 1));
        assert!(!r.counts().by_status.contains_key(DONE));
    }
}
