//! rtsync client state machines: the seed's client-side managers as deterministic,
//! sans-IO code. Every part takes `now_ms` as an input and returns its outputs; none
//! touches a socket, a clock or a global RNG (quinn-proto is the model), so the
//! simulator can run thousands of them and a test can drive one step by step.
//!
//! Module map:
//! - [`session`] — one tab's sync engine: connection + stream position + outbox + replica
//!   (what arriving frames do is its `stream` submodule).
//! - [`connection`] — connecting / open / closing / closed / needs-auth; backoff with
//!   jitter (and the seed's policy as `Legacy`); heartbeats; SSE fallback.
//! - [`seq`] — which seqs were applied: resume point, duplicates, gaps.
//! - [`outbox`] — the offline queue: contiguous opIds, replay, dependencies, bounds.
//! - [`replica`] — confirmed state and the optimistic view (confirmed ⊕ pending).
//! - [`conflict`] — the MANUAL path: a user's choice turned into a resolving mutation.
//! - [`crosstab`] — BroadcastChannel bus between the tabs of one device.
//! - [`cache`] — TanStack-Query-style query cache with statistics.
//! - [`persist`] — snapshot dehydrate/hydrate: checksum, gzip, base64, migrations.
//! - [`memory`] — retained-bytes accounting, pressure, cleanup, trend.
//! - [`virtual_list`] — the virtual list window.
//! - [`rollup`] — a live dashboard's counters and project progress, kept from events.
//! - [`rng`] — the seeded RNG every random choice draws from.

#![warn(missing_docs)]

pub mod cache;
pub mod conflict;
pub mod connection;
pub mod crosstab;
pub mod memory;
pub mod outbox;
pub mod persist;
pub mod replica;
pub mod rng;
pub mod rollup;
pub mod seq;

/// Approximate bytes a JSON value retains (for memory accounting; not exact, but
/// monotone in the data, which is what growth and ratio metrics need).
pub fn value_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 8,
        Value::Number(_) => 16,
        Value::String(s) => 24 + s.len(),
        Value::Array(a) => 24 + a.iter().map(value_bytes).sum::<usize>(),
        Value::Object(o) => {
            48 + o
                .iter()
                .map(|(k, v)| 24 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
    }
}
pub mod session;
pub mod virtual_list;
