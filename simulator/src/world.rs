//! One simulated world: the reference server on its own host, one client host per
//! group with its tabs as tasks (turmoil's cost grows with the square of the host
//! count, so clients share hosts), the fault timeline driven from the `sim.step()`
//! loop, then heal, a liveness phase and the final probe.

use crate::disk::{DiskFaults, SIM_DATA_DIR, SimDisk};
use crate::listener::{Crashing, SimListener};
use crate::net::{Net, SERVER_PORT, SIM_EPOCH_MS, SimClock};
use crate::record::Recorder;
use crate::scenario::Scenario;
use crate::setup::{
    Controls, new_recorder, probe_final_state, spawn_tabs, tab_specs, workspaces, zipf,
};
use crate::tab::{Inbox, TabSpec};
use crate::timeline::{Faults, Timeline};
use rtsync_client::rng::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Which of the scenario's workspaces one simulated world holds: those at positions
/// `index`, `index + count`, … of the sorted workspace list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// What one world hands back: its history (not yet checked) and its own figures.
#[derive(Debug)]
pub struct WorldOutput {
    pub recorder: Recorder,
    pub simulated_s: f64,
    pub tabs: usize,
    pub load: LoadWindow,
}

/// Simulated and wall time of the workload window (warm-up end → workload end), and the
/// deliveries made in it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadWindow {
    pub simulated_s: f64,
    pub wall_s: f64,
    pub deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("simulation failed: {0}")]
    Sim(String),
}

/// The recorder back from the tasks that shared it, once they are all done.
pub fn unshare(rec: Rc<RefCell<Recorder>>) -> Result<Recorder, RunError> {
    Rc::try_unwrap(rec)
        .map(RefCell::into_inner)
        .map_err(|_| RunError::Sim("recorder still shared after the run".into()))
}

/// turmoil tears a write that was pending at a power loss at this block size.
const SIM_BLOCK_BYTES: u64 = 512;

/// The host of server node `i`: "server" for the first (and only, unless a cluster).
pub fn node_host(i: usize) -> String {
    if i == 0 {
        "server".into()
    } else {
        format!("node{i}")
    }
}

/// The cluster's simulated Redis host.
const REDIS_HOST: &str = "redis";

/// One server node's process, as the timeline acts on it.
struct Node {
    /// Whether the process may run. turmoil's `crash` also drops the host's unsynced
    /// writes (a power loss); a killed process is a `bounce` whose new incarnation
    /// waits on this until `start_server`.
    up: watch::Sender<bool>,
    /// The host was crashed (power loss) and must be bounced to start.
    powered_off: bool,
    /// Set while turmoil drops the node's tasks, so its sockets close in the order they
    /// were opened (`listener`'s docs).
    crashing: Crashing,
}

/// The timeline's faults on turmoil: each group is a client host, linked to every
/// server node; a cluster's nodes are linked to the Redis host.
struct SimFaults<'a, 'b> {
    sim: &'a mut turmoil::Sim<'b>,
    sc: &'a Scenario,
    /// The groups with tabs in this world.
    groups: &'a [String],
    nodes: Vec<Node>,
    /// The first node's disk (a cluster's nodes keep nothing on disk).
    disk: &'a DiskFaults,
}

impl Faults for SimFaults<'_, '_> {
    fn groups(&self) -> Vec<String> {
        self.groups.to_vec()
    }
    fn base_latency_ms(&self, group: &str) -> u64 {
        let g = self.sc.groups.iter().find(|x| x.name == group);
        g.and_then(|x| x.latency_ms)
            .unwrap_or(self.sc.server.latency_ms)
    }
    fn nodes(&self) -> usize {
        self.nodes.len()
    }
    fn partition(&mut self, group: &str, on: bool) {
        for n in 0..self.nodes.len() {
            if on {
                self.sim.partition(group, node_host(n));
            } else {
                self.sim.repair(group, node_host(n));
            }
        }
    }
    fn hold(&mut self, group: &str, on: bool) {
        for n in 0..self.nodes.len() {
            if on {
                self.sim.hold(group, node_host(n));
            } else {
                self.sim.release(group, node_host(n));
            }
        }
    }
    fn set_latency(&mut self, group: &str, ms: u64) {
        for n in 0..self.nodes.len() {
            self.sim
                .set_link_latency(group, node_host(n), Duration::from_millis(ms));
        }
    }
    fn crash_server(&mut self, node: usize, power_loss: bool) {
        let host = node_host(node);
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        n.up.send_replace(false);
        if power_loss {
            n.crashing.during(|| self.sim.crash(host));
            n.powered_off = true;
        } else {
            // The process restarts at once and waits, not listening, until started.
            n.crashing.during(|| self.sim.bounce(host));
        }
    }
    fn backplane(&mut self, node: usize, link: crate::timeline::Link, on: bool) {
        use crate::timeline::Link;
        let host = node_host(node);
        match (link, on) {
            (Link::Partition, true) => self.sim.partition(host, REDIS_HOST),
            (Link::Partition, false) => self.sim.repair(host, REDIS_HOST),
            (Link::Hold, true) => self.sim.hold(host, REDIS_HOST),
            (Link::Hold, false) => self.sim.release(host, REDIS_HOST),
        }
    }
    /// Its state is kept outside the host (`appendfsync always`): only connections go.
    fn restart_redis(&mut self) {
        self.sim.bounce(REDIS_HOST);
    }
    fn set_disk(&mut self, full: bool, error_rate: f64) {
        self.disk.set(full, error_rate);
    }
    fn corrupt_log(&mut self) {
        self.disk.corrupt_next_start();
    }
    /// turmoil's `bounce` starts a crashed host again.
    fn start_server(&mut self, node: usize) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        n.up.send_replace(true);
        if std::mem::take(&mut n.powered_off) {
            self.sim.bounce(node_host(node));
        }
    }
}

/// Runs one world: the tabs of `shard`'s workspaces against their own server.
pub fn run_world(
    sc: &Scenario,
    seed: u64,
    shard: Shard,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WorldOutput, RunError> {
    let mut root = Rng::new(seed);
    let rec = Rc::new(RefCell::new(new_recorder(sc)));
    let (workspaces, specs) = shard_tabs(sc, &mut root, shard);
    let tabs_total = specs.len();
    let disk = DiskFaults::new(root.next_u64());
    let model = crate::backplane::Shared::default();
    let (mut sim, nodes) = build_sim(sc, &mut root, shard, tabs_total, disk.clone(), &model);
    let (finish_tx, finish_rx) = watch::channel(false);
    let (controls, groups) = add_clients(&mut sim, sc, specs, workspaces, &rec, &finish_rx);
    let mut world = SimFaults {
        sim: &mut sim,
        sc,
        groups: &groups,
        nodes,
        disk: &disk,
    };
    let load = drive(&mut world, sc, &controls, &rec, &finish_tx, progress)?;
    let simulated_s = sim.elapsed().as_secs_f64();
    drop(sim);
    let mut recorder = unshare(rec)?;
    // Several nodes: what Redis accepted, checked for a deposed owner's write.
    let model = model.lock().unwrap_or_else(|p| p.into_inner());
    for v in model.fencing_violations() {
        recorder.anomalies.push(crate::record::Anomaly::new(
            "fencing_violations",
            format!(
                "stream {}: an append with fencing token {} was accepted after one with token {} (a deposed owner wrote)",
                v.stream, v.token, v.before
            ),
        ));
    }
    Ok(WorldOutput {
        recorder,
        simulated_s,
        tabs: tabs_total,
        load,
    })
}

/// The shard's workspaces and their tabs. Every shard draws the whole scenario's tabs
/// (the same RNG stream), then keeps its own.
fn shard_tabs(sc: &Scenario, root: &mut Rng, shard: Shard) -> (Vec<String>, Vec<TabSpec>) {
    let workspaces: Vec<String> = workspaces(sc, "")
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % shard.count == shard.index)
        .map(|(_, w)| w)
        .collect();
    let specs: Vec<TabSpec> = tab_specs(sc, root, "")
        .into_iter()
        .filter(|t| workspaces.binary_search(&t.workspace).is_ok())
        .collect();
    (workspaces, specs)
}

/// The turmoil world with the reference server on its host "server" — or, with
/// `server.nodes` above 1, a node per host (`node_host`) and the simulated Redis on
/// its own host.
fn build_sim<'a>(
    sc: &Scenario,
    root: &mut Rng,
    shard: Shard,
    tabs_total: usize,
    disk: Arc<DiskFaults>,
    model: &crate::backplane::Shared,
) -> (turmoil::Sim<'a>, Vec<Node>) {
    let total_ms = (sc.duration_s + sc.quiescence_s) * 1000;
    let mut builder = turmoil::Builder::new();
    builder.fs().block_size(SIM_BLOCK_BYTES);
    let mut sim = builder
        .simulation_duration(Duration::from_millis(total_ms + 60_000))
        .tick_duration(Duration::from_millis(sc.tick_ms))
        // turmoil panics when a listener's accept queue is full, where a kernel would
        // drop the SYN and let the client retry. A tab opens about a dozen connections
        // at once at most (its stream, SSE_POSTS_MAX POSTs, snapshot and list reads):
        // after a server bounce every tab does so in the same tick, and 4 per tab was
        // hit (34-swarm-tokens seed 62). 64 per tab is a panic threshold, not a budget.
        .tcp_capacity((tabs_total * 64).max(64))
        .min_message_latency(Duration::from_millis(sc.server.latency_ms))
        .max_message_latency(Duration::from_millis(sc.server.latency_ms))
        // Shard 0 keeps the unsharded seed, so `shards = 1` runs are unchanged.
        .rng_seed(root.next_u64() ^ (shard.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .build();
    let nodes = (0..sc.server.nodes)
        .map(|i| {
            let (up, up_rx) = watch::channel(true);
            let crashing = Crashing::default();
            add_node(&mut sim, sc, i, up_rx, disk.clone(), crashing.clone());
            Node {
                up,
                powered_off: false,
                crashing,
            }
        })
        .collect();
    if sc.server.nodes > 1 {
        let model = model.clone();
        sim.host(REDIS_HOST, move || {
            let model = model.clone();
            async move {
                crate::backplane::serve(model).await?;
                Ok(())
            }
        });
    }
    (sim, nodes)
}

/// Server node `i` on its host: it waits while the timeline keeps it down, then serves
/// (a cluster's node over the simulated Redis, dialling out through its listener's
/// crash-ordered sockets).
fn add_node(
    sim: &mut turmoil::Sim<'_>,
    sc: &Scenario,
    i: usize,
    server_up: watch::Receiver<bool>,
    disk: Arc<DiskFaults>,
    crashing: Crashing,
) {
    let mut cfg = sc.server.config.clone();
    cfg.disk = rtsync_server::storage::DiskHandle(Arc::new(SimDisk(disk.clone())));
    cfg.data_dir = SIM_DATA_DIR.into();
    let cluster = sc.server.nodes > 1;
    if cluster {
        let redis_port = crate::backplane::REDIS_PORT;
        cfg.cluster.redis = Some(format!("redis://{REDIS_HOST}:{redis_port}"));
        cfg.cluster.advertise = Some(format!("{}:{SERVER_PORT}", node_host(i)));
    }
    sim.host(node_host(i), move || {
        let mut cfg = cfg.clone();
        let mut up = server_up.clone();
        let disk = disk.clone();
        let crashing = crashing.clone();
        async move {
            // A killed process stays down until the timeline starts it.
            up.wait_for(|up| *up).await?;
            disk.damage_if_due();
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", SERVER_PORT)).await?;
            let listener = SimListener::new(listener, crashing.clone());
            if cluster {
                cfg.cluster.net = rtsync_server::cluster::NetHandle(Arc::new(listener.dialer()));
            }
            let clock = Arc::new(SimClock {
                epoch_ms: SIM_EPOCH_MS,
            });
            rtsync_server::serve(listener, cfg, clock, std::future::pending()).await?;
            Ok(())
        }
    });
}

/// One client host per group with its tabs, and the probe host that reads the final
/// state once `finish` is set. Returns the line to the tabs and the world's groups, in
/// the scenario's order.
fn add_clients(
    sim: &mut turmoil::Sim<'_>,
    sc: &Scenario,
    specs: Vec<TabSpec>,
    workspaces: Vec<String>,
    rec: &Rc<RefCell<Recorder>>,
    finish: &watch::Receiver<bool>,
) -> (Controls, Vec<String>) {
    let zipf = zipf(sc.workload.keys, sc.workload.zipf_s);
    let mut controls = Controls::default();
    let mut by_group: BTreeMap<String, Vec<(TabSpec, Inbox)>> = BTreeMap::new();
    for spec in specs {
        let inbox = controls.add(&spec);
        by_group
            .entry(spec.group.clone())
            .or_default()
            .push((spec, inbox));
    }
    let groups: Vec<String> = sc
        .groups
        .iter()
        .map(|g| g.name.clone())
        .filter(|g| by_group.contains_key(g))
        .collect();
    let routes = Arc::new(crate::net::SimRoutes {
        nodes: sc.server.nodes,
        home: crate::setup::home_nodes(sc),
    });
    for (group, tabs) in by_group {
        let (rec, mut finish) = (rec.clone(), finish.clone());
        let routes = routes.clone();
        sim.client(group.as_str(), async move {
            let handles = spawn_tabs(tabs, &rec, zipf, &Net::Sim(routes));
            let _ = finish.wait_for(|f| *f).await;
            for h in handles {
                let _ = h.await;
            }
            Ok(())
        });
    }
    {
        let (rec, mut finish) = (rec.clone(), finish.clone());
        let routes = routes.clone();
        sim.client("probe", async move {
            let _ = finish.wait_for(|f| *f).await;
            probe_final_state(&Net::Sim(routes), workspaces, &rec).await;
            Ok(())
        });
    }
    for g in sc.groups.iter().filter(|g| groups.contains(&g.name)) {
        if let Some(l) = g.latency_ms {
            for n in 0..sc.server.nodes {
                sim.set_link_latency(g.name.as_str(), node_host(n), Duration::from_millis(l));
            }
        }
    }
    (controls, groups)
}

/// Steps the world to its end, the timeline applied as it goes; returns the load
/// window's figures.
fn drive(
    world: &mut SimFaults<'_, '_>,
    sc: &Scenario,
    controls: &Controls,
    rec: &Rc<RefCell<Recorder>>,
    finish: &watch::Sender<bool>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LoadWindow, RunError> {
    let deliveries = || -> u64 {
        rec.borrow()
            .counters
            .get("deliveries")
            .map_or(0, |g| g.values().sum())
    };
    let warmup_end_ms = sc.warmup_s * 1000;
    // Wall-clock reads for the measured section only (the load window's speed).
    let mut load_from: Option<(std::time::Instant, u64)> = None;
    let mut load = LoadWindow::default();
    let mut timeline = Timeline::new(sc);
    let total_ms = timeline.total_ms();
    let mut last_progress_s = u64::MAX;
    loop {
        let t = world.sim.elapsed().as_millis() as u64;
        if load_from.is_none() && t >= warmup_end_ms {
            // Measured section only: the load window's wall time, never in the results.
            load_from = Some((std::time::Instant::now(), deliveries()));
        }
        let reached = timeline.advance(t, world, controls, rec);
        if reached.liveness
            && let Some((at, n)) = load_from
        {
            load = LoadWindow {
                simulated_s: (t - warmup_end_ms.min(t)) as f64 / 1000.0,
                wall_s: at.elapsed().as_secs_f64(),
                deliveries: deliveries() - n,
            };
        }
        if reached.finish {
            let _ = finish.send(true);
        }
        if t / 1000 != last_progress_s {
            last_progress_s = t / 1000;
            progress(last_progress_s, total_ms / 1000);
        }
        match world.sim.step() {
            Ok(true) => return Ok(load),
            Ok(false) => {}
            Err(e) => return Err(RunError::Sim(e.to_string())),
        }
    }
}
