//! What simulated and live runs set up alike: the tabs a scenario has (their specs,
//! tokens and tasks), the line to them that faults go out on, the recorder, and the
//! final probe of the server's state.

use crate::auth::token;
use crate::net::Net;
use crate::record::{Phases, Recorder, ServerFinal};
use crate::scenario::Scenario;
use crate::tab::{
    Command, DeviceBus, Inbox, Input, TabSpec, fetch_snapshots, run_device_bus, run_tab,
};
use rand_distr::Zipf;
use rtsync_client::connection::{ConnectionConfig, Transport};
use rtsync_client::crosstab::Bus;
use rtsync_client::outbox::OutboxConfig;
use rtsync_client::rng::Rng;
use rtsync_client::session::SessionConfig;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tokio::sync::mpsc;

/// Zipf over `keys` ranks with exponent `s` (s = 0: uniform); draws are ranks 1..=keys.
/// The scenario's validation guarantees `keys >= 1` and `s >= 0`.
pub fn zipf(keys: u64, s: f64) -> Zipf<f64> {
    Zipf::new(keys as f64, s).expect("workload.keys >= 1 and zipf_s >= 0 (validated)")
}

/// Each group's home node: group i's tabs start on node i mod nodes (then try the next
/// ones), so a cluster's workspaces are reached through several nodes.
pub fn home_nodes(sc: &Scenario) -> BTreeMap<String, usize> {
    let nodes = sc.server.nodes.max(1);
    sc.groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), i % nodes))
        .collect()
}

/// `items` from `home` on, wrapping: the order a route from that home tries the nodes in.
pub fn from_home<T: Clone>(items: &[T], home: usize) -> Vec<T> {
    (0..items.len())
        .map(|k| items[(home + k) % items.len()].clone())
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
            reconnect: g.reconnect,
            ping_interval_ms: g.ping_interval_ms,
            pong_timeout_ms: sc.server.config.core.heartbeat_ms.max(2_000),
            sse_idle_timeout_ms: sc.server.config.core.heartbeat_ms * 3,
            connect_timeout_ms: 5_000,
            ..ConnectionConfig::default()
        };
        let outbox = OutboxConfig {
            policy: g.outbox.with_capacity(g.outbox_capacity),
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
    zipf: Zipf<f64>,
    net: &Net,
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
                    net: net.clone(),
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
            zipf,
            inbox,
            net.clone(),
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

/// The final probe, simulated and live: every workspace's state as the server holds it,
/// read over HTTP after the tabs finished, for the convergence checkers.
pub async fn probe_final_state(net: &Net, workspaces: Vec<String>, rec: &RefCell<Recorder>) {
    for ws in workspaces {
        let snap = fetch_snapshots(net, "probe", &token("probe", &ws)).await;
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
