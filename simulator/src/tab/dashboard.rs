//! The tab's dashboard and project progress (the seed's integration points): the
//! rollup kept from what the session applies, how stale each change was when it
//! reached it, and the seed's progress broadcast (a canary).

use super::*;
use crate::scenario::{DashboardMode, ProgressMode};
use rtsync_client::rollup::{Change, Rollup};

impl Tab {
    /// `(kind, id)` changed in the confirmed replica (an event, an ACK); `op` made it.
    pub(super) fn roll(&mut self, kind: EntityKind, id: &str, op: Option<&str>, now: u64) {
        // The rollup counts tasks and indexes them by id alone: a note or project
        // never reaches it (ids are unique per kind, not across kinds).
        let Some(r) = self
            .app
            .rollup
            .as_mut()
            .filter(|_| kind == EntityKind::Task)
        else {
            return;
        };
        let change = r.update(id, self.s.replica().get(kind, id));
        if change == Change::Nothing {
            return;
        }
        let (g, w) = (&self.spec.group, &self.spec.workload);
        let mut rec = self.rec.borrow_mut();
        rec.count("dashboard_updates", g, 1);
        // Staleness: from when the change was sent (its intended send, for a late op)
        // to when this dashboard showed it.
        let Some(sent) = op
            .and_then(|op| rec.ops.get(op))
            .and_then(|o| o.first_sent_ms.map(|t| t.saturating_sub(o.late_ms)))
        else {
            return;
        };
        let stale = now.saturating_sub(sent);
        if w.dashboard != DashboardMode::Off {
            rec.sample("dashboard_staleness_ms", g, now, stale);
        }
        if change == Change::Progress && w.progress != ProgressMode::Off {
            rec.sample("progress_staleness_ms", g, now, stale);
        }
    }

    /// After a snapshot resync the replica was replaced without events: the rollup is
    /// counted afresh from it — unless this is the canary that forgets.
    pub(super) fn rebuild_rollup(&mut self) {
        if self.spec.workload.dashboard == DashboardMode::NoResync {
            return;
        }
        if let Some(r) = self.app.rollup.as_mut() {
            r.rebuild(self.s.replica().live());
        }
    }

    /// The seed's `broadcastProjectProgress`, after this tab changed task `id`'s status:
    /// the project's progress computed from the tab's own (optimistic) view of its
    /// tasks, written to the project entity `<workspace>-<projectId>`.
    pub(super) fn broadcast_progress(&mut self, id: &str, now: u64) {
        if self.spec.workload.progress != ProgressMode::Broadcast {
            return;
        }
        let Some(project) = self
            .s
            .view(EntityKind::Task, id)
            .and_then(|e| e.fields.get("projectId")?.as_str().map(str::to_owned))
        else {
            return;
        };
        let views: Vec<Entity> = self
            .s
            .replica()
            .live()
            .filter(|e| e.entity == EntityKind::Task)
            .filter_map(|e| self.s.view(EntityKind::Task, &e.id))
            .collect();
        let p = Rollup::of(&views)
            .counts()
            .projects
            .get(&project)
            .copied()
            .unwrap_or_default();
        let changes = json!({"progress": p.ratio(), "done": p.done, "all": p.all});
        self.rec
            .borrow_mut()
            .count("progress_broadcasts", &self.spec.group, 1);
        let entity = format!("{}-{project}", self.spec.workspace);
        let changes = changes.as_object().cloned().unwrap_or_default();
        self.enqueue(EventType::ProjectUpdated, &entity, changes, now, 0);
    }

    /// What the tab's dashboard and progress show at the end, for the checkers.
    pub(super) fn final_rollup(&self) -> (Option<Counts>, Option<BTreeMap<String, Progress>>) {
        let Some(r) = &self.app.rollup else {
            return (None, None);
        };
        let w = &self.spec.workload;
        let dashboard = (w.dashboard != DashboardMode::Off).then(|| Counts {
            projects: BTreeMap::new(),
            ..r.counts().clone()
        });
        let progress = (w.progress != ProgressMode::Off).then(|| r.counts().projects.clone());
        (dashboard, progress)
    }
}
