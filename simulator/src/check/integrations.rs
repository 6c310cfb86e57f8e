//! The seed's integration points at quiescence: a dashboard shows exactly what the
//! server's tasks imply, and so does every project's progress — the one each tab
//! derives, and any progress a client stored in the project (the seed's broadcast).

use crate::record::{Anomaly, Recorder};
use rtsync_client::rollup::Rollup;
use rtsync_protocol::EntityKind;
use std::collections::BTreeMap;

pub(super) fn check(rec: &Recorder, out: &mut Vec<Anomaly>) {
    let truth: BTreeMap<&str, Rollup> = rec
        .server
        .iter()
        .map(|(ws, s)| (ws.as_str(), Rollup::of(&s.entities)))
        .collect();
    // Tabs that did not converge are reported as such; their counters prove nothing more.
    for t in rec
        .tabs
        .iter()
        .filter(|t| t.open && t.settled && t.outbox_len == 0)
    {
        let Some(want) = truth.get(t.workspace.as_str()).map(Rollup::counts) else {
            continue;
        };
        if let Some(d) = &t.dashboard
            && (d.by_status != want.by_status || d.completions_per_min != want.completions_per_min)
        {
            out.push(Anomaly::new("dashboard_drift", format!(
                "tab {} ({}) shows tasks by status {:?} where the server holds {:?} ({} completion minutes against {})",
                t.tab, t.workspace, d.by_status, want.by_status, d.completions_per_min.len(), want.completions_per_min.len()
            )));
        }
        if let Some(p) = &t.progress
            && p != &want.projects
        {
            let differ: Vec<_> = want
                .projects
                .keys()
                .chain(p.keys())
                .filter(|k| p.get(*k) != want.projects.get(*k))
                .take(3)
                .collect();
            out.push(Anomaly::new(
                "progress_drift",
                format!(
                    "tab {} ({}) shows a progress the server's tasks do not imply for {differ:?}",
                    t.tab, t.workspace
                ),
            ));
        }
    }
    stored_progress(rec, &truth, out);
}

/// A progress number a client wrote into a project (`PROJECT_UPDATED {done, all}`)
/// must match the project's tasks once everyone is quiet.
fn stored_progress(rec: &Recorder, truth: &BTreeMap<&str, Rollup>, out: &mut Vec<Anomaly>) {
    for (ws, s) in &rec.server {
        let Some(derived) = truth.get(ws.as_str()).map(Rollup::counts) else {
            continue;
        };
        for e in s
            .entities
            .iter()
            .filter(|e| e.entity == EntityKind::Project)
        {
            let stored = |k: &str| e.fields.get(k).and_then(|v| v.as_u64());
            let (Some(done), Some(all)) = (stored("done"), stored("all")) else {
                continue;
            };
            let key = e.id.strip_prefix(&format!("{ws}-")).unwrap_or(&e.id);
            let want = derived.projects.get(key).copied().unwrap_or_default();
            if (done, all) != (want.done, want.all) {
                out.push(Anomaly::new("progress_drift", format!(
                    "project {} stores progress {done}/{all} (written by {}) but its tasks are {}/{} done",
                    e.id, e.updated_by, want.done, want.all
                )));
            }
        }
    }
}
