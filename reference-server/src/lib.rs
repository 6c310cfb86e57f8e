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
//! - [`clock`] — real or simulated "now".

pub mod clock;
pub mod config;
pub mod core;
pub mod edge;
pub mod fdlimit;
pub mod storage;

pub use clock::{Clock, SystemClock};
pub use config::ServerConfig;
pub use edge::{ServeError, Tcp, serve, tcp};
