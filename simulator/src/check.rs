//! Checkers: read the recorded history after the run and name each anomaly with an
//! explanation in words (Jepsen/Elle style). Some anomalies are caught during the run
//! (a replay that skips a seq, an event from another workspace) and recorded there.

use crate::record::{Anomaly, Outcome, Recorder};
use rtsync_protocol::{Entity, EntityKind};
use std::collections::{BTreeMap, BTreeSet};

/// Checks one `RECENT_EVENTS {complete: true}` batch as a tab receives it: the first
/// batch after a resume must start right after the resume point, and every batch must
/// carry exactly `from..=to`. (Checked during the run, where the resume point is known.)
pub fn replay_batch(
    tab: &str,
    resumed_after: Option<u64>,
    from: u64,
    to: u64,
    seqs: &[u64],
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if let Some(last) = resumed_after
        && !seqs.is_empty()
        && from != last + 1
    {
        let name = if from <= last {
            "replay_duplicates"
        } else {
            "replay_gaps"
        };
        out.push(Anomaly::new(
            name,
            format!("tab {tab} resumed after seq {last} and the replay began at {from}"),
        ));
    }
    let expected: Vec<u64> = if seqs.is_empty() {
        Vec::new()
    } else {
        (from..=to).collect()
    };
    if seqs != expected {
        let name = if seqs.len() > expected.len() {
            "replay_duplicates"
        } else {
            "replay_gaps"
        };
        out.push(Anomaly::new(
            name,
            format!("tab {tab}: a replay batch {from}..={to} carried seqs {seqs:?}"),
        ));
    }
    out
}

/// Entity ids are minted `<workspace>-…` by the workload, so an id with another
/// prefix reaching a tab crossed workspaces.
pub fn leaked(workspace: &str, entity_id: &str) -> bool {
    !(entity_id.starts_with(workspace) && entity_id[workspace.len()..].starts_with('-'))
}

/// Runs every post-run checker; appends to `rec.anomalies`.
pub fn run_all(rec: &mut Recorder) {
    let mut found = Vec::new();
    lost_acked_writes(rec, &mut found);
    duplicate_applies(rec, &mut found);
    session_order(rec, &mut found);
    convergence(rec, &mut found);
    presence(rec, &mut found);
    silent_drops(rec, &mut found);
    integrations::check(rec, &mut found);
    notes::check(rec, &mut found);
    focus::check(rec, &mut found);
    rec.anomalies.extend(found);
    rec.anomalies.sort();
}

type Key = (String, EntityKind, String);

/// An acknowledged write is lost if the final state neither shows it nor shows a
/// later version of the entity (versions only grow, so any later version is a write
/// ordered after it, which may legitimately overwrite it).
fn lost_acked_writes(rec: &Recorder, out: &mut Vec<Anomaly>) {
    let finals: BTreeMap<Key, &Entity> = rec
        .server
        .iter()
        .flat_map(|(ws, s)| {
            s.entities
                .iter()
                .map(move |e| ((ws.clone(), e.entity, e.id.clone()), e))
        })
        .collect();
    for (op_id, op) in &rec.ops {
        let Outcome::Applied {
            epoch,
            version,
            fields,
            delete,
            ..
        } = &op.outcome
        else {
            continue;
        };
        let Some(server) = rec.server.get(&op.workspace) else {
            continue;
        };
        if *epoch != server.epoch {
            continue; // the server crashed since: its in-memory state is gone by design
        }
        let key = (op.workspace.clone(), op.kind, op.entity_id.clone());
        let deleted_after = rec
            .deletes_seen
            .get(&(*epoch, op.workspace.clone(), op.kind, op.entity_id.clone()))
            .is_some_and(|v| v >= version);
        match finals.get(&key) {
            None if *delete || deleted_after => {}
            None => out.push(Anomaly::new("lost_acked_writes", format!(
                "{op_id} was acknowledged at version {version} of {:?} {}, but the entity is not in the final state and nobody was seen deleting it",
                op.kind, op.entity_id
            ))),
            Some(e) if e.version > *version => {}
            Some(e) if e.version < *version => out.push(Anomaly::new("lost_acked_writes", format!(
                "{op_id} was acknowledged at version {version} of {}, but the final state is at version {}: the server went back in time",
                op.entity_id, e.version
            ))),
            Some(e) => {
                for (f, v) in fields {
                    if e.fields.get(f) != Some(v) {
                        out.push(Anomaly::new("lost_acked_writes", format!(
                            "{op_id} wrote {f}={v} at version {version} of {}, and the final state at that same version has {f}={}",
                            op.entity_id,
                            e.fields.get(f).map_or("nothing".into(), |x| x.to_string())
                        )));
                    }
                }
            }
        }
    }
}

fn duplicate_applies(rec: &Recorder, out: &mut Vec<Anomaly>) {
    for (epoch, op, seqs) in rec
        .applied_at
        .iter()
        .flat_map(|(e, ops)| ops.iter().map(move |(o, s)| (e, o, s)))
    {
        if seqs.len() > 1 {
            out.push(Anomaly::new(
                "duplicate_applies",
                format!(
                    "{op} was applied {} times in epoch {epoch}, at seqs {seqs:?}",
                    seqs.len()
                ),
            ));
        }
    }
}

/// A client's own acknowledged writes must take effect in the order it made them.
fn session_order(rec: &Recorder, out: &mut Vec<Anomaly>) {
    // (client, epoch) → [(n, seq, opId)]
    type Applied<'a> = Vec<(u64, u64, &'a str)>;
    let mut by_client: BTreeMap<(&str, u64), Applied<'_>> = BTreeMap::new();
    for (op_id, op) in &rec.ops {
        if let Outcome::Applied {
            epoch,
            seq: Some(seq),
            ..
        } = &op.outcome
        {
            by_client
                .entry((op.client.as_str(), *epoch))
                .or_default()
                .push((op.n, *seq, op_id));
        }
    }
    for ((client, epoch), mut ops) in by_client {
        ops.sort();
        for w in ops.windows(2) {
            if w[1].1 < w[0].1 {
                out.push(Anomaly::new("session_order_violations", format!(
                    "client {client} made {} before {}, but the server applied them at seqs {} and {} (epoch {epoch})",
                    w[0].2, w[1].2, w[0].1, w[1].1
                )));
            }
        }
    }
}

type Stripped<'a> =
    BTreeMap<(EntityKind, &'a str), (u64, &'a serde_json::Map<String, serde_json::Value>)>;

/// What must agree at quiescence: per entity, its version and fields (borrowed).
fn strip(v: &[Entity]) -> Stripped<'_> {
    v.iter()
        .map(|e| ((e.entity, e.id.as_str()), (e.version, &e.fields)))
        .collect()
}

/// At quiescence every tab has drained its queue and holds exactly the server's state.
fn convergence(rec: &Recorder, out: &mut Vec<Anomaly>) {
    // Each workspace's server state is compared with each of its tabs: strip it once.
    let servers: BTreeMap<&str, Stripped<'_>> = rec
        .server
        .iter()
        .map(|(ws, s)| (ws.as_str(), strip(&s.entities)))
        .collect();
    for t in rec.tabs.iter().filter(|t| !t.closed) {
        if !t.open || !t.settled || t.outbox_len > 0 {
            out.push(Anomaly::new("unconverged_clients", format!(
                "tab {} did not converge after the faults healed (open: {}, settled: {}, {} ops still queued)",
                t.tab, t.open, t.settled, t.outbox_len
            )));
            continue;
        }
        let Some(theirs) = servers.get(t.workspace.as_str()) else {
            continue;
        };
        let mine = strip(&t.live);
        if &mine != theirs {
            let missing = theirs.keys().filter(|k| !mine.contains_key(*k)).count();
            let extra = mine.keys().filter(|k| !theirs.contains_key(*k)).count();
            let differ = mine
                .iter()
                .filter(|(k, v)| theirs.get(*k).is_some_and(|w| w != *v))
                .map(|(k, _)| k.1)
                .take(3)
                .collect::<Vec<_>>();
            out.push(Anomaly::new("divergent_replicas", format!(
                "tab {} ({}) differs from the server at quiescence: {missing} entities missing, {extra} extra, differing e.g. {differ:?}",
                t.tab, t.workspace
            )));
        }
    }
}

/// At quiescence a tab's presence must list exactly the workspace's users with a live session.
fn presence(rec: &Recorder, out: &mut Vec<Anomaly>) {
    let mut truth: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for t in rec.tabs.iter().filter(|t| t.open) {
        truth
            .entry(t.workspace.as_str())
            .or_default()
            .insert(t.user.clone());
    }
    for t in rec.tabs.iter().filter(|t| t.open) {
        let want = truth.get(t.workspace.as_str()).cloned().unwrap_or_default();
        let ghosts: Vec<_> = t.presence.difference(&want).cloned().collect();
        let missing: Vec<_> = want.difference(&t.presence).cloned().collect();
        if !ghosts.is_empty() || !missing.is_empty() {
            out.push(Anomaly::new(
                "ghost_presences",
                format!(
                    "tab {} shows {ghosts:?} online with no live session, and misses {missing:?}",
                    t.tab
                ),
            ));
        }
    }
}

fn silent_drops(rec: &Recorder, out: &mut Vec<Anomaly>) {
    for t in &rec.tabs {
        if t.dropped_silently > 0 {
            out.push(Anomaly::new("silent_queue_drops", format!(
                "tab {} dropped {} queued writes without telling the app (the seed's drop-oldest queue)",
                t.tab, t.dropped_silently
            )));
        }
    }
}

mod focus;
mod integrations;
mod notes;

#[cfg(test)]
mod tests;
