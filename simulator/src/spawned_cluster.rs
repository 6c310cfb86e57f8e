//! The cluster `simulate live --spawn-cluster N` starts on 127.0.0.1: a throwaway
//! `redis-server` (`rtsync_server::cluster::LocalRedis`: a free port, a temporary
//! directory, `appendfsync always`) and N reference-server nodes over it, each reaching
//! Redis through a fault proxy of its own, so the timeline's cluster faults happen for
//! real:
//! - `server_crash` on a node: SIGKILL (a child process); `server_restart`: started
//!   again on its port, where it takes workspaces back by lease as any node would;
//! - `backplane_partition`: the node's proxy cuts its Redis connections and refuses new
//!   ones; `backplane_hold`: the proxy stalls both ways, so a paused owner's late
//!   appends reach Redis on release, after its lease moved — fencing must refuse them;
//! - `redis_restart`: Redis is SIGKILLed and started again on its port and directory.

use crate::proxy::FaultProxy;
use crate::scenario::Scenario;
use crate::spawned::{Spawned, SpawnedServer};
use crate::timeline::Link;
use crate::world::RunError;
use rtsync_server::cluster::LocalRedis;
use std::net::SocketAddr;

/// A running cluster; everything is stopped when it is dropped.
#[derive(Debug)]
pub struct SpawnedCluster {
    /// Node i, and its link to Redis.
    nodes: Vec<(SpawnedServer, FaultProxy)>,
    redis: LocalRedis,
    /// Runs the Redis links (their tasks end with it). Declared after `nodes`: fields
    /// drop in order, so the nodes are gone before their links.
    _links: tokio::runtime::Runtime,
}

fn fail(e: impl std::fmt::Display) -> RunError {
    RunError::Sim(format!("could not start the cluster: {e}"))
}

impl SpawnedCluster {
    /// Redis, then `nodes` nodes with the scenario's server settings, as child processes
    /// of `exe` (the `simulate` binary) or, with `None`, each on a runtime thread here.
    pub fn start(
        sc: &Scenario,
        nodes: usize,
        exe: Option<std::path::PathBuf>,
    ) -> Result<Self, RunError> {
        let redis = LocalRedis::start().map_err(fail)?;
        let links = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis-links")
            .enable_all()
            .build()
            .map_err(fail)?;
        let redis_addr: SocketAddr = ([127, 0, 0, 1], redis.port).into();
        let mut started = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            let link = links
                .block_on(FaultProxy::start(vec![redis_addr], 0))
                .map_err(fail)?;
            let mut cfg = sc.server.config.clone();
            cfg.cluster.redis = Some(format!("redis://{}", link.addr));
            cfg.cluster.advertise = None; // each node advertises the port it bound
            started.push((SpawnedServer::with_config(cfg, exe.clone())?, link));
        }
        Ok(SpawnedCluster {
            nodes: started,
            redis,
            _links: links,
        })
    }

    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    pub fn is_running(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(|(n, _)| n.is_running())
    }
}

impl Spawned for SpawnedCluster {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|(n, _)| n.addr).collect()
    }
    fn crash(&mut self, node: usize) {
        if let Some((n, _)) = self.nodes.get_mut(node) {
            n.crash();
        }
    }
    fn restart(&mut self, node: usize) -> Result<(), RunError> {
        match self.nodes.get_mut(node) {
            Some((n, _)) => n.restart(),
            None => Ok(()),
        }
    }
    fn backplane(&mut self, node: usize, link: Link, on: bool) {
        if let Some((_, l)) = self.nodes.get(node) {
            match link {
                Link::Partition => l.partition(on),
                Link::Hold => l.hold(on),
            }
        }
    }
    fn restart_redis(&mut self) -> Result<(), RunError> {
        self.redis
            .restart()
            .map_err(|e| RunError::Sim(format!("redis did not restart: {e}")))
    }
}
