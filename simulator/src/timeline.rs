//! The fault timeline, written once for both kinds of run: the scenario's faults at
//! their times, then the heal that starts the liveness phase, then the finish. What a
//! fault does to the network or the server goes through [`Faults`], which the
//! simulation implements on turmoil (`world.rs`) and live mode on its fault proxies and
//! spawned server (`live.rs`); what it does to tabs goes to their inboxes.
//!
//! A new fault kind is added here, to `FaultKind`, and to each `Faults` impl: the
//! match below is exhaustive, so none can be forgotten.

use crate::record::Recorder;
use crate::scenario::{Fault, FaultKind, Scenario};
use crate::setup::Controls;
use crate::tab::Command;
use std::cell::RefCell;

/// The network and the server, as the timeline acts on them.
pub trait Faults {
    /// The client groups this run can act on, in the scenario's order (a shard's own
    /// groups; live mode's groups with a fault proxy).
    fn groups(&self) -> Vec<String>;
    /// The group's link latency when no fault is active.
    fn base_latency_ms(&self, group: &str) -> u64;
    /// The group's link drops everything (`false`: heals).
    fn partition(&mut self, group: &str, on: bool);
    /// The group's link holds everything, delivered on release (`false`).
    fn hold(&mut self, group: &str, on: bool);
    fn set_latency(&mut self, group: &str, ms: u64);
    /// Server nodes (1 unless a cluster).
    fn nodes(&self) -> usize {
        1
    }
    /// Server node `node`'s process dies: in-memory state gone, connections cut. With
    /// `power_loss` its machine dies too: what its disk had not synced is lost.
    fn crash_server(&mut self, node: usize, power_loss: bool);
    /// A stopped node starts again (it replays its logs, or the cluster's streams).
    fn start_server(&mut self, node: usize);
    /// Several nodes: node `node`'s link to Redis drops (`Link::Partition`) or holds
    /// (`Link::Hold`) everything while `on`.
    fn backplane(&mut self, node: usize, link: Link, on: bool);
    /// Several nodes: Redis is killed and restarts at once, keeping what it acknowledged.
    fn restart_redis(&mut self);
    /// The server's disk: `full` fails every append; otherwise each fails with
    /// probability `error_rate`.
    fn set_disk(&mut self, full: bool, error_rate: f64);
    /// Flips a byte in the middle of a workspace's log of the stopped server.
    fn corrupt_log(&mut self);
    /// Kill and start at once.
    fn bounce_server(&mut self, node: usize) {
        self.crash_server(node, false);
        self.start_server(node);
    }
}

/// How a node's link to Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Partition,
    Hold,
}

/// What one call of [`Timeline::advance`] started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// The workload stopped and every fault was healed: the liveness phase began.
    pub liveness: bool,
    /// The run's end: every tab was told to finish.
    pub finish: bool,
}

#[derive(Debug)]
pub struct Timeline {
    faults: Vec<Fault>,
    next: usize,
    workload_end_ms: u64,
    total_ms: u64,
    /// The nodes crashed and not yet restarted.
    server_down: std::collections::BTreeSet<usize>,
    disk_full: bool,
    disk_error_rate: f64,
    liveness: bool,
    finished: bool,
}

impl Timeline {
    pub fn new(sc: &Scenario) -> Self {
        let mut faults = sc.faults.clone();
        faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let workload_end_ms = sc.duration_s * 1000;
        Timeline {
            faults,
            next: 0,
            workload_end_ms,
            total_ms: workload_end_ms + sc.quiescence_s * 1000,
            server_down: Default::default(),
            disk_full: false,
            disk_error_rate: 0.0,
            liveness: false,
            finished: false,
        }
    }

    pub fn total_ms(&self) -> u64 {
        self.total_ms
    }

    /// When the next thing happens (a fault, the liveness phase, the finish); `None`
    /// once finished. Live mode sleeps until then; the simulation asks every step.
    pub fn next_due_ms(&self) -> Option<u64> {
        let fault = self.faults.get(self.next).map(at_ms);
        let phase = if !self.liveness {
            Some(self.workload_end_ms)
        } else {
            (!self.finished).then_some(self.total_ms)
        };
        match (fault, phase) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies everything due by `t_ms`: faults in time order, then the heal at the
    /// workload's end, then the finish.
    pub fn advance(
        &mut self,
        t_ms: u64,
        world: &mut dyn Faults,
        tabs: &Controls,
        rec: &RefCell<Recorder>,
    ) -> Reached {
        let mut reached = Reached::default();
        while let Some(f) = self.faults.get(self.next).filter(|f| at_ms(f) <= t_ms) {
            let group = f.group.as_ref().map_or(String::new(), |g| format!(" {g}"));
            rec.borrow_mut()
                .fault_marks
                .push((t_ms, format!("{:?}{group}", f.kind)));
            let f = f.clone();
            self.apply(&f, world, tabs);
            self.next += 1;
        }
        if !self.liveness && t_ms >= self.workload_end_ms {
            self.liveness = true;
            reached.liveness = true;
            self.heal(world, tabs);
        }
        if !self.finished && t_ms >= self.total_ms {
            self.finished = true;
            reached.finish = true;
            tabs.send(&None, 1.0, Command::Finish);
        }
        reached
    }

    fn apply(&mut self, f: &Fault, world: &mut dyn Faults, tabs: &Controls) {
        use FaultKind::*;
        let node = f.node.unwrap_or(0);
        // A fault on a group with no tabs in this run has nothing to act on.
        let targets: Vec<String> = world
            .groups()
            .into_iter()
            .filter(|g| f.group.as_ref().is_none_or(|x| x == g))
            .collect();
        match f.kind {
            Partition | Repair => {
                for g in &targets {
                    world.partition(g, f.kind == Partition);
                }
            }
            Hold | Release => {
                for g in &targets {
                    world.hold(g, f.kind == Hold);
                }
            }
            Latency => {
                for g in &targets {
                    world.set_latency(g, f.latency_ms.unwrap_or(0));
                }
            }
            ServerCrash | PowerLoss => {
                if self.server_down.insert(node) {
                    world.crash_server(node, f.kind == PowerLoss);
                }
            }
            ServerRestart => {
                if self.server_down.remove(&node) {
                    world.start_server(node);
                }
            }
            ServerBounce => {
                world.bounce_server(node);
                self.server_down.remove(&node);
            }
            BackplanePartition | BackplaneRepair => {
                world.backplane(node, Link::Partition, f.kind == BackplanePartition);
            }
            BackplaneHold | BackplaneRelease => {
                world.backplane(node, Link::Hold, f.kind == BackplaneHold);
            }
            RedisRestart => world.restart_redis(),
            DiskFull | DiskFreed => {
                self.disk_full = f.kind == DiskFull;
                world.set_disk(self.disk_full, self.disk_error_rate);
            }
            DiskErrors | DiskHealthy => {
                self.disk_error_rate = if f.kind == DiskErrors {
                    f.fraction
                } else {
                    0.0
                };
                world.set_disk(self.disk_full, self.disk_error_rate);
            }
            CorruptLog => world.corrupt_log(),
            Offline | Online | Reload | CorruptStorage | SchemaUpgrade | TabClose | TabOpen
            | Stall | Unstall | Burst | BadResume => {
                if let Some(cmd) = Command::of_fault(f) {
                    tabs.send(&f.group, f.fraction, cmd);
                }
            }
        }
    }

    /// The liveness phase: no more workload, every link and the server healed, every
    /// tab online and reading.
    fn heal(&mut self, world: &mut dyn Faults, tabs: &Controls) {
        tabs.send(&None, 1.0, Command::StopWorkload);
        for g in world.groups() {
            world.partition(&g, false);
            world.hold(&g, false);
            let base = world.base_latency_ms(&g);
            world.set_latency(&g, base);
        }
        if self.disk_full || self.disk_error_rate > 0.0 {
            self.disk_full = false;
            self.disk_error_rate = 0.0;
            world.set_disk(false, 0.0);
        }
        if world.nodes() > 1 {
            for node in 0..world.nodes() {
                world.backplane(node, Link::Partition, false);
                world.backplane(node, Link::Hold, false);
            }
        }
        for node in std::mem::take(&mut self.server_down) {
            world.start_server(node);
        }
        tabs.send(&None, 1.0, Command::Online);
        tabs.send(&None, 1.0, Command::Stall(false));
    }
}

fn at_ms(f: &Fault) -> u64 {
    (f.at_s * 1000.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the timeline asked for, in order.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Faults for Log {
        fn groups(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn base_latency_ms(&self, group: &str) -> u64 {
            if group == "a" { 5 } else { 7 }
        }
        fn partition(&mut self, g: &str, on: bool) {
            self.0.push(format!("partition {g} {on}"));
        }
        fn hold(&mut self, g: &str, on: bool) {
            self.0.push(format!("hold {g} {on}"));
        }
        fn set_latency(&mut self, g: &str, ms: u64) {
            self.0.push(format!("latency {g} {ms}"));
        }
        fn set_disk(&mut self, full: bool, rate: f64) {
            self.0.push(format!("disk full {full} errors {rate}"));
        }
        fn corrupt_log(&mut self) {
            self.0.push("corrupt log".into());
        }
        fn crash_server(&mut self, _node: usize, power_loss: bool) {
            self.0
                .push(if power_loss { "power loss" } else { "crash" }.into());
        }
        fn start_server(&mut self, _node: usize) {
            self.0.push("start".into());
        }
        fn backplane(&mut self, node: usize, link: Link, on: bool) {
            self.0.push(format!("backplane {node} {link:?} {on}"));
        }
        fn restart_redis(&mut self) {
            self.0.push("restart redis".into());
        }
    }

    #[test]
    fn faults_in_time_order_server_state_kept_then_heal_then_finish() {
        let sc = Scenario::parse(
            r#"
            name = "t"
            duration_s = 5
            quiescence_s = 2
            [[groups]]
            name = "a"
            users = 1
            [[groups]]
            name = "b"
            users = 1
            [[faults]]
            at_s = 3
            kind = "partition"
            group = "b"
            [[faults]]
            at_s = 1
            kind = "server_crash"
            [[faults]]
            at_s = 2
            kind = "server_crash"
            [[faults]]
            at_s = 4
            kind = "hold"
            "#,
            "t.toml",
        )
        .unwrap();
        let (mut t, mut log) = (Timeline::new(&sc), Log::default());
        let (tabs, rec) = (
            Controls::default(),
            RefCell::new(crate::setup::new_recorder(&sc)),
        );
        assert_eq!(t.next_due_ms(), Some(1000));
        assert_eq!(t.advance(999, &mut log, &tabs, &rec), Reached::default());
        assert!(log.0.is_empty(), "nothing before its time");
        t.advance(2500, &mut log, &tabs, &rec);
        assert_eq!(
            log.0,
            ["crash"],
            "a second crash of a crashed server is nothing"
        );
        assert_eq!(t.next_due_ms(), Some(3000));
        t.advance(4000, &mut log, &tabs, &rec);
        assert_eq!(
            log.0[1..],
            ["partition b true", "hold a true", "hold b true"]
        );
        let r = t.advance(5000, &mut log, &tabs, &rec);
        assert!(r.liveness && !r.finish);
        assert_eq!(
            log.0[4..],
            [
                "partition a false",
                "hold a false",
                "latency a 5",
                "partition b false",
                "hold b false",
                "latency b 7",
                "start",
            ],
            "every link healed to its base latency, then the crashed server started"
        );
        assert_eq!(t.next_due_ms(), Some(7000));
        assert!(t.advance(7000, &mut log, &tabs, &rec).finish);
        assert_eq!(t.next_due_ms(), None);
        let rec = rec.borrow();
        let marks: Vec<&str> = rec.fault_marks.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(marks, ["ServerCrash", "ServerCrash", "Partition b", "Hold"]);
    }
}
