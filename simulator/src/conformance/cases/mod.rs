//! The cases, one file per protocol area of docs/protocol.md; each file's `cases()`
//! lists its own, numbered `area.n`. docs/conformance.md tables them all.

mod conflicts;
mod connect;
mod envelope;
mod fanout;
mod heartbeat;
mod limits;
mod mutations;
mod ordering;
mod presence;
mod resume;
mod snapshots;
mod sse;

use super::Case;

/// One case: `case!("3.1", minimum, "title", function)`, the function an
/// `async fn(&mut Ctx) -> Outcome`.
macro_rules! case {
    ($id:literal, $min:literal, $title:literal, $f:path) => {
        $crate::conformance::Case {
            id: $id,
            title: $title,
            minimum: $min,
            run: |cx| Box::pin($f(cx)),
        }
    };
}
pub(crate) use case;

/// The areas, by number.
pub const AREAS: [&str; 12] = [
    "Connect and auth",
    "Envelope and errors",
    "Mutations, ACK and idempotency",
    "Ordering and seq",
    "Fan-out and workspace isolation",
    "Conflicts",
    "Resume",
    "Presence and cursors",
    "Heartbeats",
    "Limits",
    "SSE and HTTP writes",
    "Snapshots",
];

pub fn area_name(area: u32) -> &'static str {
    AREAS
        .get((area as usize).wrapping_sub(1))
        .copied()
        .unwrap_or("?")
}

/// Every case, in area then number order.
pub fn all() -> Vec<Case> {
    [
        connect::cases(),
        envelope::cases(),
        mutations::cases(),
        ordering::cases(),
        fanout::cases(),
        conflicts::cases(),
        resume::cases(),
        presence::cases(),
        heartbeat::cases(),
        limits::cases(),
        sse::cases(),
        snapshots::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}
