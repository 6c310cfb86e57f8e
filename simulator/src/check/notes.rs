//! Concurrent note editing: an acknowledged edit is lost when a later write of the
//! same fields, by someone who had not seen it, overwrote it. Under last-write-wins
//! that is the strategy working as designed — which is why collaborative notes need
//! MERGE or MANUAL, where the later writer gets `CONFLICT_DETECTED` instead.
//!
//! Only cleanly acknowledged ops are compared (their fields are exactly the op's
//! changes, and their base is known); an op MERGE applied in part is neither counted
//! as lost nor as the overwriter.

use crate::record::{Anomaly, OpRecord, Outcome, Recorder};
use rtsync_protocol::EntityKind;
use std::collections::BTreeMap;

/// (epoch, workspace, note id) → its clean edits, by version.
type Edits<'a> = BTreeMap<(u64, &'a str, &'a str), Vec<(u64, u64, &'a OpRecord)>>;

pub(super) fn check(rec: &Recorder, out: &mut Vec<Anomaly>) {
    let mut edits: Edits<'_> = BTreeMap::new();
    // A user's focus record lives in the notes store too; it has one writer at a time
    // and its own checker (`check/focus.rs`).
    let notes = rec
        .ops
        .values()
        .filter(|o| o.kind == EntityKind::Note && !o.entity_id.contains("-focus-"));
    for o in notes {
        if let (
            Outcome::Applied {
                epoch,
                seq: Some(_),
                version,
                ..
            },
            Some(base),
        ) = (&o.outcome, o.base)
        {
            edits
                .entry((*epoch, o.workspace.as_str(), o.entity_id.as_str()))
                .or_default()
                .push((*version, base, o));
        }
    }
    for ((_, ws, id), mut v) in edits {
        v.sort_unstable_by_key(|(version, _, o)| (*version, o.client.clone(), o.n));
        // Each lost edit is told once, with the first write that overwrote it.
        let mut told = std::collections::BTreeSet::new();
        for (i, (version, base, later)) in v.iter().enumerate() {
            // Edits applied after `later`'s base and before it: it never saw them.
            for (seen, _, earlier) in v[..i].iter().rev().take_while(|(w, ..)| w > base) {
                let overwritten: Vec<&str> = fields(earlier)
                    .filter(|f| fields(later).any(|g| g == *f))
                    .collect();
                if earlier.client != later.client && !overwritten.is_empty() && told.insert(*seen) {
                    out.push(Anomaly::new("lost_note_edits", format!(
                        "note {id} ({ws}): the edit by {} at version {seen} ({overwritten:?}) was overwritten at version {version} by {}, whose write was based on version {base}",
                        earlier.client, later.client
                    )));
                }
            }
        }
    }
}

fn fields(o: &OpRecord) -> impl Iterator<Item = &str> {
    let keys = match &o.outcome {
        Outcome::Applied { fields, .. } => Some(fields.keys().map(String::as_str)),
        _ => None,
    };
    keys.into_iter().flatten()
}
