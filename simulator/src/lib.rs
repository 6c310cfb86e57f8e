//! rtsync simulator: the reference server and many virtual users inside turmoil's
//! deterministic network, faults on a timeline, invariants checked after the run.
//!
//! Module map:
//! - [`scenario`] — the TOML schema and its validation (docs/scenarios.md); its
//!   `swarm` submodule: the ranges and sets each seed of a swarm scenario draws from.
//! - [`sweep`] — many scenarios over a seed range on parallel threads; failing seeds kept.
//! - [`output`] — the report files of one run (summary, `.hgrm`, `.hlog`, HTML).
//! - [`run`] — one simulated run of a scenario: its worlds, then the checkers.
//! - [`shards`] — a scenario's workspaces split into worlds run on parallel threads.
//! - [`world`] — one turmoil world (server host, client hosts, faults) run to the end.
//! - [`backplane`] — the simulated cluster's Redis: a model of the backplane's
//!   commands on its own host, its record of accepted appends for the fencing check.
//! - [`disk`] — the simulated server's disk (turmoil's file system) and its faults.
//! - [`listener`] — the server's listener on turmoil; its sockets close in accept order
//!   when the host is crashed (tokio's own drop order depends on other threads).
//! - [`setup`] — what simulated and live runs set up alike: tab specs, tab tasks, the
//!   line to the tabs, the recorder, the final probe.
//! - [`auth`] — the simulated runs' secret and the tokens minted with it.
//! - [`tab`] — a virtual tab: the shell around a client `Session` (its workload, the
//!   app around it — cache, memory, reloads — and the notes it records are submodules).
//! - [`live`] — the same tabs over real TCP in real time; a spawned reference server.
//! - [`spawned`] — the reference server live mode starts: a child process it can
//!   `kill -9` (`simulate serve-child`), or in-process for library callers.
//! - [`spawned_cluster`] — the cluster `live --spawn-cluster N` starts: a local Redis and
//!   N nodes, each behind a fault proxy to Redis (backplane faults for real).
//! - [`proxy`] — live mode's fault proxy (latency, hold, partition for real), per group
//!   and per cluster node's link to Redis.
//! - [`storage`] — a tab's persisted browser storage: snapshots, corruption, old schemas.
//! - [`net`] — the network a run speaks over ([`net::Net`]: turmoil or real TCP), the
//!   WebSocket/SSE/HTTP clients, the simulated clock.
//! - [`record`] — histograms, counters and the history the checkers read.
//! - [`check`] — the checkers (the invariants of docs/metrics.md), each anomaly explained.
//! - [`threshold`] — k6-style thresholds.
//! - [`timeline`] — the fault timeline, applied once for simulated and live runs.
//! - [`report`] — verdicts, the console summary and `summary.json`.
//! - [`hgrm`] — `.hgrm` percentile distributions and `.hlog` interval logs.
//! - [`html`] — the self-contained HTML report (plotters SVG charts) and the index page.
//! - [`conformance`] — `simulate conformance`: numbered protocol cases against any
//!   server, each PASS, FAIL (with the frames) or NOT IMPLEMENTED (docs/conformance.md).
//! - [`compare`] — `simulate compare`: change per metric against a noise band.
//! - [`fidelity`] — `simulate fidelity`: simulated and live percentiles side by side.
//! - [`metrics`] — metric and invariant names.
//! - [`catalog`] — every scenario of `scenarios/`, embedded.

pub mod auth;
pub mod backplane;
pub mod check;
pub mod compare;
pub mod conformance;
pub mod disk;
pub mod fidelity;
pub mod listener;

/// The scenario catalog, embedded at build time (see build.rs).
pub mod catalog {
    include!(concat!(env!("OUT_DIR"), "/catalog.rs"));
}
pub mod hgrm;
pub mod html;
pub mod live;
pub mod metrics;
pub mod net;
pub mod output;
pub mod proxy;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod setup;
pub mod shards;
pub mod spawned;
pub mod spawned_cluster;
pub mod storage;
pub mod sweep;
pub mod tab;
pub mod threshold;
pub mod timeline;
pub mod world;
