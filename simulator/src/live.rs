//! Live mode: the same virtual tabs over real TCP, in real time, against a server at
//! `--target`, one spawned on 127.0.0.1, or a spawned cluster (N nodes over a local
//! Redis: `spawned_cluster.rs`). Same workload, checkers, thresholds and reports as the
//! simulator; the figures are measured, not deterministic.
//!
//! Each group's tabs connect through their own fault proxy on loopback (`proxy.rs`),
//! which adds the group's link latency and applies the network faults of the timeline
//! for real (partition, hold, latency). The tabs run on worker threads (a `LocalSet`
//! each, split by workspace); the proxies and the timeline on the calling thread; a
//! spawned server has its own multi-threaded runtime; the server faults (crash,
//! restart, bounce) are applied to a spawned server or a cluster's node — killed,
//! started again on its port — and skipped with a warning against `--target`. A
//! cluster's groups start on node i mod N, as in simulation, and move on to the next. Latencies
//! count from the
//! intended send time (the workload is an open model; see `tab.rs`), late starts are
//! counted in `late_ops`, and `ramp_up_per_s` ramps connections up.

use crate::net::Net;
use crate::proxy::FaultProxy;
use crate::record::Recorder;
use crate::run::{RunOutput, conclude};
use crate::scenario::Scenario;
use crate::setup::{
    Controls, from_home, home_nodes, new_recorder, probe_final_state, spawn_tabs, tab_specs,
    workspaces, zipf,
};
use crate::tab::{Inbox, TabSpec};
use crate::timeline::{Faults, Timeline};
use crate::world::{RunError, unshare};
use rtsync_client::rng::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// The timeline's faults for real: network faults on the groups' fault proxies,
/// server and cluster faults on servers this process spawned (skipped, with one
/// warning, against anyone else's).
struct LiveFaults<'p, 's> {
    /// Group → its proxy and base latency (none with `--direct`).
    proxies: &'p BTreeMap<String, (FaultProxy, u64)>,
    spawned: Option<&'s mut (dyn Spawned + 's)>,
    nodes: usize,
    warned: bool,
}

impl<'s> LiveFaults<'_, 's> {
    fn proxy(&self, group: &str) -> Option<&FaultProxy> {
        self.proxies.get(group).map(|(p, _)| p)
    }

    fn spawned(&mut self) -> Option<&mut (dyn Spawned + 's)> {
        if self.spawned.is_none() && !self.warned {
            self.warned = true;
            eprintln!(
                "live mode: server faults are applied only to servers spawned by --spawn-server or --spawn-cluster; skipped"
            );
        }
        self.spawned.as_deref_mut()
    }
}

impl Faults for LiveFaults<'_, '_> {
    /// The groups with a fault proxy, by name.
    fn groups(&self) -> Vec<String> {
        self.proxies.keys().cloned().collect()
    }
    fn base_latency_ms(&self, group: &str) -> u64 {
        self.proxies.get(group).map_or(0, |(_, base)| *base)
    }
    fn partition(&mut self, group: &str, on: bool) {
        self.proxy(group).inspect(|p| p.partition(on));
    }
    fn hold(&mut self, group: &str, on: bool) {
        self.proxy(group).inspect(|p| p.hold(on));
    }
    fn set_latency(&mut self, group: &str, ms: u64) {
        self.proxy(group).inspect(|p| p.set_latency(ms));
    }
    fn nodes(&self) -> usize {
        self.nodes
    }
    /// A real disk cannot be filled or broken on cue without root: skipped (the server's
    /// answers to a failing disk are tested on real files and in simulation).
    fn set_disk(&mut self, full: bool, error_rate: f64) {
        if full || error_rate > 0.0 {
            eprintln!("live mode: disk faults are simulated only; skipped");
        }
    }
    fn corrupt_log(&mut self) {
        eprintln!("live mode: corrupt_log is simulated only; skipped");
    }
    /// A real machine cannot lose power on cue: live mode kills the process either way
    /// (what it wrote to the OS survives).
    fn crash_server(&mut self, node: usize, _power_loss: bool) {
        if let Some(s) = self.spawned() {
            s.crash(node);
        }
    }
    fn start_server(&mut self, node: usize) {
        if let Some(Err(e)) = self.spawned().map(|s| s.restart(node)) {
            eprintln!("live mode: {e}; the run goes on without node {node}");
        }
    }
    fn backplane(&mut self, node: usize, link: crate::timeline::Link, on: bool) {
        if let Some(s) = self.spawned() {
            s.backplane(node, link, on);
        }
    }
    fn restart_redis(&mut self) {
        if let Some(Err(e)) = self.spawned().map(|s| s.restart_redis()) {
            eprintln!("live mode: {e}; the run goes on without Redis");
        }
    }
}

pub use crate::spawned::{Spawned, SpawnedServer, serve_child};
pub use crate::spawned_cluster::SpawnedCluster;

/// The servers a live run drives: anyone's at an address (server faults skipped), or
/// servers this process spawned (server faults applied; a cluster's tabs spread over
/// its nodes).
#[derive(Debug)]
pub enum Servers<'a> {
    At(SocketAddr),
    Spawned(&'a mut dyn Spawned),
}

/// Runs the scenario's tabs against `target` in real time, each group through its fault
/// proxy unless `direct` (capacity runs: no proxy doubling the sockets; network faults
/// are then skipped). With the `server` this process spawned at `target`, the server
/// faults are applied to it; against anyone else's server they are skipped.
pub fn run(
    sc: &Scenario,
    seed: u64,
    servers: Servers<'_>,
    direct: bool,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunOutput, RunError> {
    let (targets, spawned) = match servers {
        Servers::At(addr) => (vec![addr], None),
        Servers::Spawned(s) => (s.addrs(), Some(s)),
    };
    if sc.server.nodes != targets.len() {
        return Err(RunError::Sim(format!(
            "{} runs {} server nodes and this run has {}: use --spawn-cluster for a cluster",
            sc.name,
            sc.server.nodes,
            targets.len()
        )));
    }
    let started = std::time::Instant::now(); // live mode: real time is what it measures
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Sim(e.to_string()))?;
    let local = tokio::task::LocalSet::new();
    let rec = Rc::new(RefCell::new(new_recorder(sc)));
    let run_tag = run_tag();
    let specs = tab_specs(sc, &mut Rng::new(seed), &run_tag);
    let tabs_total = specs.len();
    let mut controls = Controls::default();
    let buckets = split_by_workspace(specs, &mut controls, threads.max(1));
    let workspaces = workspaces(sc, &run_tag);
    local.block_on(&rt, async {
        let homes = home_nodes(sc);
        let proxies = start_proxies(sc, &targets, &homes, direct).await;
        // A group connects through its proxy, or (none) to the nodes from its home on.
        let routes = homes
            .iter()
            .map(|(g, &home)| {
                let to = match proxies.get(g) {
                    Some((p, _)) => vec![p.addr],
                    None => from_home(&targets, home),
                };
                (g.clone(), to)
            })
            .collect();
        let origin = std::time::Instant::now(); // live: real time is the point
        let net = Net::live(targets.clone(), routes, origin);
        let workers = spawn_workers(sc, buckets, &net);
        let mut world = LiveFaults {
            proxies: &proxies,
            spawned,
            nodes: targets.len(),
            warned: false,
        };
        follow_timeline(sc, &mut world, &controls, &rec, progress).await;
        join_workers(workers, &rec).await;
        probe_final_state(&net, workspaces, &rec).await;
    });
    let wall_s = started.elapsed().as_secs_f64();
    drop(local);
    Ok(conclude(
        unshare(rec)?,
        true,
        wall_s,
        wall_s,
        tabs_total,
        None,
    ))
}

/// A run tag from the wall clock: live runs against one server must not share ids.
fn run_tag() -> String {
    format!(
        "r{}-",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 100_000_000)
    )
}

/// The tabs split over `threads` worker threads by workspace: a workspace's senders and
/// receivers share a thread and its recorder, so delivery latency needs no lock.
fn split_by_workspace(
    specs: Vec<TabSpec>,
    controls: &mut Controls,
    threads: usize,
) -> Vec<Vec<(TabSpec, Inbox)>> {
    let mut buckets: Vec<Vec<(TabSpec, Inbox)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut ws_index: BTreeMap<String, usize> = BTreeMap::new();
    for spec in specs {
        let inbox = controls.add(&spec);
        let next = ws_index.len();
        let b = *ws_index.entry(spec.workspace.clone()).or_insert(next) % threads;
        buckets[b].push((spec, inbox));
    }
    buckets
}

/// A fault proxy per group (none when `direct`), with the group's base latency, trying
/// the nodes from the group's home on; a group whose proxy cannot start connects
/// directly, with a warning.
async fn start_proxies(
    sc: &Scenario,
    targets: &[SocketAddr],
    homes: &BTreeMap<String, usize>,
    direct: bool,
) -> BTreeMap<String, (FaultProxy, u64)> {
    let mut proxies = BTreeMap::new();
    for g in sc.groups.iter().filter(|_| !direct) {
        let base = g.latency_ms.unwrap_or(sc.server.latency_ms);
        let home = homes.get(&g.name).copied().unwrap_or(0);
        match FaultProxy::start(from_home(targets, home), base).await {
            Ok(p) => {
                proxies.insert(g.name.clone(), (p, base));
            }
            Err(e) => eprintln!(
                "live mode: no fault proxy for {}: {e}; its tabs connect directly",
                g.name
            ),
        }
    }
    proxies
}

/// One worker thread per bucket, each with its own runtime, `LocalSet` and recorder;
/// a worker hands its recorder back when its tabs are done.
fn spawn_workers(
    sc: &Scenario,
    buckets: Vec<Vec<(TabSpec, Inbox)>>,
    net: &Net,
) -> Vec<std::thread::JoinHandle<Option<Recorder>>> {
    let zipf = zipf(sc.workload.keys, sc.workload.zipf_s);
    buckets
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(|bucket| {
            let (net, template) = (net.clone(), new_recorder(sc));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                let local = tokio::task::LocalSet::new();
                let rec = Rc::new(RefCell::new(template));
                local.block_on(&rt, async {
                    for h in spawn_tabs(bucket, &rec, zipf, &net) {
                        let _ = h.await;
                    }
                });
                drop(local);
                Rc::try_unwrap(rec).ok().map(RefCell::into_inner)
            })
        })
        .collect()
}

/// The fault timeline in real time, with the progress line about once a second.
async fn follow_timeline(
    sc: &Scenario,
    world: &mut LiveFaults<'_, '_>,
    controls: &Controls,
    rec: &RefCell<Recorder>,
    progress: &mut dyn FnMut(u64, u64),
) {
    let mut timeline = Timeline::new(sc);
    let total_ms = timeline.total_ms();
    let start = tokio::time::Instant::now();
    let mut next_progress = 0;
    while let Some(due) = timeline.next_due_ms() {
        // Until it is due, a quarter second at a time for the progress line.
        loop {
            let now = start.elapsed().as_millis() as u64;
            if now >= due {
                break;
            }
            tokio::time::sleep(Duration::from_millis((due - now).min(250))).await;
            let s = start.elapsed().as_secs();
            if s >= next_progress {
                progress(s, total_ms / 1000);
                next_progress = s + 1;
            }
        }
        let now = start.elapsed().as_millis() as u64;
        timeline.advance(now, world, controls, rec);
    }
}

/// Waits for the workers without blocking this runtime (it runs the proxies), and
/// merges their recorders.
async fn join_workers(
    workers: Vec<std::thread::JoinHandle<Option<Recorder>>>,
    rec: &RefCell<Recorder>,
) {
    while workers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        match w.join() {
            Ok(Some(r)) => rec.borrow_mut().absorb(r),
            _ => {
                eprintln!("live mode: a worker thread failed; its tabs are missing from the report")
            }
        }
    }
}
