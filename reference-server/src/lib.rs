//! rtsync reference realtime server: the executable form of docs/protocol.md.
//!
//! Module map:
//! - [`core`] — the sans-IO domain core (hub, entity store, event log, op table,
//!   presence, rate limits). Inputs with `now_ms`, outputs as deliveries; no I/O.
//! - [`edge`] — axum: `/ws`, SSE, HTTP endpoints, auth and admission, bounded
//!   outbound queues, `/metrics`, and [`serve`], which runs on any
//!   `axum::serve::Listener` (tokio TCP, turmoil, tests).
//! - [`config`] — every bound and policy with its default; [`fdlimit`] — the
//!   open-file limit against the connection limits, checked at start.
//! - [`storage`] — the durable log of each workspace (on a real or simulated disk).
//! - [`cluster`] — several nodes over Redis: the backplane (leases with fencing tokens,
//!   workspace streams) and the owner's unconfirmed steps; the edge's side is
//!   `edge/owner.rs` (ownership, flusher, renewals) and `edge/proxy.rs`.
//! - [`clock`] — real or simulated "now".

pub mod clock;
pub mod cluster;
pub mod config;
pub mod core;
pub mod edge;
pub mod fdlimit;
pub mod storage;

pub use clock::{Clock, SystemClock};
pub use config::ServerConfig;
pub use edge::{ServeError, Tcp, serve, tcp};
