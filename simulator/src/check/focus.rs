//! The seed's focus timer at quiescence: every completed session counted exactly once
//! in the user's record, and every tab of the user showing the record the server holds.

use crate::record::{Anomaly, Recorder};
use crate::tab::FocusState;
use rtsync_protocol::EntityKind;
use std::collections::BTreeMap;

pub(super) fn check(rec: &Recorder, out: &mut Vec<Anomaly>) {
    // (workspace, user) → the server's record.
    let mut records: BTreeMap<(&str, &str), FocusState> = BTreeMap::new();
    for (ws, s) in &rec.server {
        for e in s.entities.iter().filter(|e| e.entity == EntityKind::Note) {
            let Some(user) = e.id.strip_prefix(&format!("{ws}-focus-")) else {
                continue;
            };
            if let Some(st) = FocusState::of(&e.fields) {
                records.insert((ws.as_str(), user), st);
            }
        }
    }
    let mut completed: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (ws, user, _) in &rec.focus_completed {
        *completed.entry((ws.as_str(), user.as_str())).or_default() += 1;
    }
    let users: std::collections::BTreeSet<_> = completed.keys().chain(records.keys()).collect();
    for &(ws, user) in users {
        let n = completed.get(&(ws, user)).copied().unwrap_or(0);
        let counted = records.get(&(ws, user)).map_or(0, |r| r.completions);
        if counted != n {
            out.push(Anomaly::new("focus_miscounts", format!(
                "user {user} ({ws}) completed {n} focus sessions, and their record counts {counted}"
            )));
        }
    }
    for t in rec
        .tabs
        .iter()
        .filter(|t| t.open && t.settled && t.outbox_len == 0)
    {
        let Some(mine) = &t.focus else { continue };
        let theirs = records.get(&(t.workspace.as_str(), t.user.as_str()));
        if theirs.map(|r| r.change) != Some(mine.change) {
            out.push(Anomaly::new(
                "focus_divergence",
                format!(
                    "tab {} shows focus change {} ({} of session {}), the server holds {:?}",
                    t.tab,
                    mine.change,
                    mine.state,
                    mine.session,
                    theirs.map(|r| r.change)
                ),
            ));
        }
    }
}
