//! Builds one simulation from a scenario and runs it: the reference server on its own
//! host, one client host per group with its tabs as tasks (turmoil's cost grows with
//! the square of the host count, so clients share hosts), the fault timeline driven
//! from the `sim.step()` loop, then heal, a liveness phase, and the checks.

use crate::glue::{SERVER_PORT, SimClock, SimListener};
use crate::record::{Phases, Recorder, ServerFinal};
use crate::scenario::{OutboxKind, ReconnectKind, Scenario};
use crate::tab::{
    Command, DeviceBus, Inbox, Input, TabSpec, fetch_snapshots, run_device_bus, run_tab,
};
use crate::timeline::{Faults, Timeline};
use rtsync_client::connection::{ConnectionConfig, ReconnectPolicy, Transport};
use rtsync_client::crosstab::Bus;
use rtsync_client::outbox::{OutboxConfig, OutboxPolicy};
use rtsync_client::rng::Rng;
use rtsync_client::session::SessionConfig;
use rtsync_protocol::auth::{Claims, mint};
use rtsync_server::ServerConfig;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The simulated wall clock starts here (2026-11-18T…Z), so timestamps look real.
pub const SIM_EPOCH_MS: u64 = 1_795_000_000_000;
/// The JWT secret of simulated (and `--spawn-server` live) runs.
pub const SECRET: &[u8] = b"rtsync-simulation-secret";

#[derive(Debug)]
pub struct RunOutput {
    /// Live mode (real TCP, real time): the figures are measured, not deterministic.
    pub live: bool,
    pub recorder: Recorder,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub tabs: usize,
    /// The workload after warm-up, on its own: the speed under load, which the
    /// whole-run figure flatters with its idle quiescence (simulated runs only).
    pub load: Option<LoadWindow>,
}

/// Simulated and wall time of the workload window (warm-up end → workload end), and the
/// deliveries made in it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadWindow {
    pub simulated_s: f64,
    pub wall_s: f64,
    pub deliveries: u64,
}

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

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("simulation failed: {0}")]
    Sim(String),
}

/// A token that does not expire within any run (ten years past the simulated epoch).
pub fn token(user: &str, workspace: &str) -> String {
    token_until(user, workspace, SIM_EPOCH_MS / 1000 + 10 * 365 * 86_400)
}

/// A token that expires at `exp_s` (seconds since the Unix epoch, on the server's clock).
pub fn token_until(user: &str, workspace: &str, exp_s: u64) -> String {
    mint(
        &Claims {
            sub: user.into(),
            ws: workspace.into(),
            exp: exp_s,
        },
        SECRET,
    )
}

pub fn server_config(sc: &Scenario) -> ServerConfig {
    let s = &sc.server;
    let mut c = ServerConfig {
        jwt_secret: SECRET.to_vec(),
        ..ServerConfig::default()
    };
    c.core.heartbeat_ms = s.heartbeat_ms;
    c.heartbeat_timeout_ms = s.heartbeat_timeout_ms;
    c.core.presence_grace_ms = s.presence_grace_ms;
    c.core.history_events_max = s.history_events_max;
    c.core.strategy_task = s.strategy_task;
    c.core.strategy_project = s.strategy_project;
    c.core.strategy_note = s.strategy_note;
    c.admission_rate_per_s = s.admission_rate_per_s;
    c.admission_burst = s.admission_burst;
    c.outbound_messages_max = s.outbound_messages_max;
    c.outbound_bytes_max = s.outbound_bytes_max;
    c.inbound_rate_per_s = s.inbound_rate_per_s;
    c.inbound_burst = s.inbound_burst;
    c.core.snapshot_page_entities = s.snapshot_page_entities;
    c.connections_per_user_max = 1024;
    c
}

/// Zipf CDF over `keys` ranks with exponent `s` (s = 0: uniform).
pub fn zipf_cdf(keys: u64, s: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=keys).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

/// Every tab of the scenario, in a fixed order. `run_tag` prefixes user, workspace and
/// client ids: empty in simulation (a fresh server each run), unique per run in live mode,
/// where a long-lived server remembers earlier runs — a reused clientId would get the
/// old run's answers to its "new" ops (correctly: that is what idempotency means).
pub fn tab_specs(sc: &Scenario, root: &mut Rng, run_tag: &str) -> Vec<TabSpec> {
    let mut out = Vec::new();
    for g in &sc.groups {
        let connection = ConnectionConfig {
            reconnect: match g.reconnect {
                ReconnectKind::Jittered => ReconnectPolicy::default(),
                ReconnectKind::Legacy => ReconnectPolicy::Legacy,
            },
            ping_interval_ms: g.ping_interval_ms,
            pong_timeout_ms: sc.server.heartbeat_ms.max(2_000),
            sse_idle_timeout_ms: sc.server.heartbeat_ms * 3,
            connect_timeout_ms: 5_000,
            ..ConnectionConfig::default()
        };
        let outbox = OutboxConfig {
            policy: match g.outbox {
                OutboxKind::Sequenced => OutboxPolicy::Sequenced {
                    capacity: g.outbox_capacity,
                },
                OutboxKind::Legacy => OutboxPolicy::Legacy,
            },
            ..OutboxConfig::default()
        };
        let tabs = g.tabs();
        let sse_tabs = (g.sse_fraction * tabs as f64).round() as usize;
        let mut i = 0;
        for u in 0..g.users {
            let user = format!("{run_tag}{}-u{u}", g.name);
            let workspace = format!("{run_tag}w{}", u % g.workspaces);
            for d in 0..g.devices_per_user {
                for t in 0..g.tabs_per_device {
                    let sse = i < sse_tabs;
                    let mut connection = connection.clone();
                    if sse {
                        connection.start_transport = Transport::Sse;
                    }
                    out.push(TabSpec {
                        id: format!("{user}-d{d}-t{t}"),
                        group: g.name.clone(),
                        token: token(&user, &workspace),
                        user: user.clone(),
                        workspace: workspace.clone(),
                        sse,
                        seed: root.next_u64(),
                        session: SessionConfig {
                            connection,
                            outbox: outbox.clone(),
                            ..SessionConfig::default()
                        },
                        workload: sc.workload.clone(),
                        start_delay_ms: if sc.ramp_up_per_s > 0.0 {
                            (out.len() as f64 * 1000.0 / sc.ramp_up_per_s) as u64
                        } else {
                            0
                        },
                    });
                    i += 1;
                }
            }
        }
    }
    out
}

/// Spawns tabs (on the current `LocalSet`), grouping the tabs of a device on one
/// BroadcastChannel bus with its delivery task.
pub fn spawn_tabs(
    tabs: Vec<(TabSpec, Inbox)>,
    rec: &Rc<RefCell<Recorder>>,
    zipf: &Rc<Vec<f64>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut devices: BTreeMap<String, Rc<RefCell<DeviceBus>>> = BTreeMap::new();
    let mut handles = Vec::new();
    for (spec, inbox) in tabs {
        let device_id = spec
            .id
            .rsplit_once("-t")
            .map_or(spec.id.clone(), |(d, _)| d.to_owned());
        let dev = devices
            .entry(device_id)
            .or_insert_with(|| {
                let d = Rc::new(RefCell::new(DeviceBus {
                    bus: Bus::new(10_000),
                    inboxes: BTreeMap::new(),
                    wake: Rc::new(tokio::sync::Notify::new()),
                }));
                tokio::task::spawn_local(run_device_bus(d.clone()));
                d
            })
            .clone();
        {
            let mut d = dev.borrow_mut();
            d.bus.join(&spec.id);
            d.inboxes.insert(spec.id.clone(), inbox.tx.clone());
        }
        handles.push(tokio::task::spawn_local(run_tab(
            spec,
            rec.clone(),
            Some(dev),
            zipf.clone(),
            inbox,
        )));
    }
    handles
}

/// The world's line to every tab, by group: faults and the run's end go out on it.
#[derive(Debug, Default)]
pub struct Controls(BTreeMap<String, Vec<mpsc::UnboundedSender<Input>>>);

impl Controls {
    /// A new tab's inbox; the world keeps a sender to it.
    pub fn add(&mut self, spec: &TabSpec) -> Inbox {
        let inbox = Inbox::new();
        self.0
            .entry(spec.group.clone())
            .or_default()
            .push(inbox.tx.clone());
        inbox
    }

    /// Sends `cmd` to the first `fraction` of the tabs of `group` (of every group: None).
    pub fn send(&self, group: &Option<String>, fraction: f64, cmd: Command) {
        for (g, txs) in &self.0 {
            if group.as_ref().is_none_or(|x| x == g) {
                let n = (fraction * txs.len() as f64).ceil() as usize;
                for tx in txs.iter().take(n) {
                    let _ = tx.send(Input::Command(cmd));
                }
            }
        }
    }
}

/// An empty recorder with the scenario's phase boundaries and interval size.
pub fn new_recorder(sc: &Scenario) -> Recorder {
    let mut faults: Vec<u64> = sc.faults.iter().map(|f| (f.at_s * 1000.0) as u64).collect();
    faults.sort_unstable();
    let workload_end_ms = sc.duration_s * 1000;
    let total_ms = workload_end_ms + sc.quiescence_s * 1000;
    Recorder {
        phases: Some(Phases {
            warmup_end_ms: sc.warmup_s * 1000,
            faults_ms: faults.first().map(|a| (*a, *faults.last().unwrap_or(a))),
            workload_end_ms,
        }),
        // About 120 intervals per run, at least one second each.
        interval_ms: (total_ms / 120).max(1000).div_ceil(1000) * 1000,
        ..Recorder::default()
    }
}

/// Every workspace the scenario's users are in, sorted (the probe reads each).
pub fn workspaces(sc: &Scenario, run_tag: &str) -> Vec<String> {
    let mut w: Vec<String> = sc
        .groups
        .iter()
        .flat_map(|g| (0..g.workspaces.min(g.users)).map(|i| format!("{run_tag}w{i}")))
        .collect();
    w.sort();
    w.dedup();
    w
}

/// The recorder back from the tasks that shared it, once they are all done.
pub fn unshare(rec: Rc<RefCell<Recorder>>) -> Result<Recorder, RunError> {
    Rc::try_unwrap(rec)
        .map(RefCell::into_inner)
        .map_err(|_| RunError::Sim("recorder still shared after the run".into()))
}

/// Ends a run: the checkers, the gauges.
pub fn conclude(
    mut recorder: Recorder,
    live: bool,
    simulated_s: f64,
    wall_s: f64,
    tabs: usize,
    load: Option<LoadWindow>,
) -> RunOutput {
    crate::check::run_all(&mut recorder);
    crate::report::finalize_gauges(&mut recorder);
    RunOutput {
        live,
        recorder,
        simulated_s,
        wall_s,
        tabs,
        load,
    }
}

/// Runs the scenario with `seed`; `progress(simulated_s, total_s)` is called about once
/// per simulated second.
pub fn run(
    sc: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunOutput, RunError> {
    let started = std::time::Instant::now(); // measured section only: wall-clock speed
    let w = crate::shards::run_worlds(sc, seed, progress)?;
    let wall_s = started.elapsed().as_secs_f64();
    Ok(conclude(
        w.recorder,
        false,
        w.simulated_s,
        wall_s,
        w.tabs,
        Some(w.load),
    ))
}

/// The timeline's faults on turmoil: each group is a client host, linked to "server".
struct SimFaults<'a, 'b> {
    sim: &'a mut turmoil::Sim<'b>,
    sc: &'a Scenario,
    /// The groups with tabs in this world.
    groups: &'a [String],
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
    fn partition(&mut self, group: &str, on: bool) {
        if on {
            self.sim.partition(group, "server");
        } else {
            self.sim.repair(group, "server");
        }
    }
    fn hold(&mut self, group: &str, on: bool) {
        if on {
            self.sim.hold(group, "server");
        } else {
            self.sim.release(group, "server");
        }
    }
    fn set_latency(&mut self, group: &str, ms: u64) {
        self.sim
            .set_link_latency(group, "server", Duration::from_millis(ms));
    }
    fn crash_server(&mut self) {
        self.sim.crash("server");
    }
    /// turmoil's `bounce` starts a crashed host again (and restarts a running one).
    fn start_server(&mut self) {
        self.sim.bounce("server");
    }
    fn bounce_server(&mut self) {
        self.sim.bounce("server");
    }
}

/// The final probe, simulated and live: every workspace's state as the server holds it,
/// read over HTTP after the tabs finished, for the convergence checkers.
pub async fn probe_final_state(workspaces: Vec<String>, rec: &RefCell<Recorder>) {
    for ws in workspaces {
        let snap = fetch_snapshots("probe", &token("probe", &ws)).await;
        let (epoch, parts) = snap.unwrap_or_default();
        let entities = parts.into_iter().flat_map(|(_, _, e)| e).collect();
        rec.borrow_mut().server.insert(
            ws,
            ServerFinal {
                epoch,
                entities,
                presence: Default::default(),
            },
        );
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
    let total_ms = (sc.duration_s + sc.quiescence_s) * 1000;
    let rec = Rc::new(RefCell::new(new_recorder(sc)));
    // Every shard draws the whole scenario's tabs (the same RNG stream), then keeps its own.
    let workspaces: Vec<String> = workspaces(sc, "")
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % shard.count == shard.index)
        .map(|(_, w)| w)
        .collect();
    let specs: Vec<TabSpec> = tab_specs(sc, &mut root, "")
        .into_iter()
        .filter(|t| workspaces.binary_search(&t.workspace).is_ok())
        .collect();
    let tabs_total = specs.len();
    let mut sim = turmoil::Builder::new()
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

    let cfg = server_config(sc);
    sim.host("server", move || {
        let cfg = cfg.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", SERVER_PORT)).await?;
            let clock = Arc::new(SimClock {
                epoch_ms: SIM_EPOCH_MS,
            });
            rtsync_server::serve(SimListener(listener), cfg, clock, std::future::pending()).await?;
            Ok(())
        }
    });

    let zipf = Rc::new(zipf_cdf(sc.workload.keys, sc.workload.zipf_s));
    let (finish_tx, finish_rx) = watch::channel(false);
    let mut controls = Controls::default();
    let mut by_group: BTreeMap<String, Vec<(TabSpec, Inbox)>> = BTreeMap::new();
    for spec in specs {
        let inbox = controls.add(&spec);
        by_group
            .entry(spec.group.clone())
            .or_default()
            .push((spec, inbox));
    }
    // The client hosts of this world: groups with tabs here, in the scenario's order.
    let groups: Vec<String> = sc
        .groups
        .iter()
        .map(|g| g.name.clone())
        .filter(|g| by_group.contains_key(g))
        .collect();
    for (group, tabs) in by_group {
        let (rec, zipf, mut finish) = (rec.clone(), zipf.clone(), finish_rx.clone());
        sim.client(group.as_str(), async move {
            let handles = spawn_tabs(tabs, &rec, &zipf);
            let _ = finish.wait_for(|f| *f).await;
            for h in handles {
                let _ = h.await;
            }
            Ok(())
        });
    }
    {
        let (rec, mut finish) = (rec.clone(), finish_rx.clone());
        sim.client("probe", async move {
            let _ = finish.wait_for(|f| *f).await;
            probe_final_state(workspaces, &rec).await;
            Ok(())
        });
    }
    for g in sc.groups.iter().filter(|g| groups.contains(&g.name)) {
        if let Some(l) = g.latency_ms {
            sim.set_link_latency(g.name.as_str(), "server", Duration::from_millis(l));
        }
    }

    let deliveries = |rec: &Rc<RefCell<Recorder>>| -> u64 {
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
        let t = sim.elapsed().as_millis() as u64;
        if load_from.is_none() && t >= warmup_end_ms {
            // Measured section only: the load window's wall time, never in the results.
            load_from = Some((std::time::Instant::now(), deliveries(&rec)));
        }
        let mut world = SimFaults {
            sim: &mut sim,
            sc,
            groups: &groups,
        };
        let reached = timeline.advance(t, &mut world, &controls, &rec);
        if reached.liveness
            && let Some((at, n)) = load_from
        {
            load = LoadWindow {
                simulated_s: (t - warmup_end_ms.min(t)) as f64 / 1000.0,
                wall_s: at.elapsed().as_secs_f64(),
                deliveries: deliveries(&rec) - n,
            };
        }
        if reached.finish {
            let _ = finish_tx.send(true);
        }
        if t / 1000 != last_progress_s {
            last_progress_s = t / 1000;
            progress(last_progress_s, total_ms / 1000);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(RunError::Sim(e.to_string())),
        }
    }
    let simulated_s = sim.elapsed().as_secs_f64();
    drop(sim);
    Ok(WorldOutput {
        recorder: unshare(rec)?,
        simulated_s,
        tabs: tabs_total,
        load,
    })
}
