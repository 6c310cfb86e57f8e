//! Scenario files (TOML; docs/scenarios.md). Unknown fields are refused, and every
//! semantic check names the field it is about, so a typo never silently runs a
//! different scenario.

pub mod swarm;

use crate::auth::SECRET;
use rtsync_client::connection::ReconnectPolicy;
use rtsync_client::outbox::{OutboxConfig, OutboxPolicy};
use rtsync_server::ServerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use swarm::Swarm;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The root seed; `--seed` overrides it.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Simulated seconds of workload; then faults heal and the liveness phase runs.
    pub duration_s: u64,
    /// After the workload: everything healed, time to converge before the checks.
    #[serde(default = "d_quiescence")]
    pub quiescence_s: u64,
    /// Samples before this are tagged `warmup` and left out of steady-state figures.
    #[serde(default)]
    pub warmup_s: u64,
    /// Tabs start at this many per second (0: all at once), so connections ramp up.
    #[serde(default)]
    pub ramp_up_per_s: f64,
    /// turmoil's tick; coarser is faster and quantises latency to the tick.
    #[serde(default = "d_tick")]
    pub tick_ms: u64,
    /// Independent simulated worlds the workspaces are dealt into, run on parallel
    /// threads, each with its own copy of the reference server (docs/scenarios.md,
    /// "Shards"). Part of the scenario, not of the machine: the same file gives the same
    /// result however many cores run it.
    #[serde(default = "d_shards")]
    pub shards: usize,
    #[serde(default)]
    pub server: ServerSpec,
    pub groups: Vec<Group>,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Metric (optionally `{phase:…,group:…}`) → k6-style conditions.
    #[serde(default)]
    pub thresholds: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub expect: Expect,
    /// Ranges and sets each seed draws its own values from (`swarm`); `None` for
    /// a fixed scenario.
    #[serde(skip)]
    pub swarm: Option<Swarm>,
    /// What this seed drew (empty for a fixed scenario, or before `for_seed`).
    #[serde(skip)]
    pub drawn: swarm::Drawn,
    /// The file without its `[swarm]`, which each seed's draws are applied to.
    #[serde(skip)]
    base: toml::Table,
    /// Where it was read from, for errors in a seed's draws.
    #[serde(skip)]
    path: String,
}

fn d_seed() -> u64 {
    1
}
fn d_quiescence() -> u64 {
    20
}
fn d_tick() -> u64 {
    1
}
fn d_shards() -> usize {
    1
}

/// The server a scenario runs: the reference server's own configuration (every field
/// of [`ServerConfig`] is a key of `[server]`, documented once in
/// `reference-server/src/config.rs`), starting from [`ServerSpec::default`]'s
/// simulation defaults, plus the link latency.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Link latency between the server host and each client host unless the group says.
    pub latency_ms: u64,
    /// Server nodes (1: one server; more: a cluster over the simulated Redis on its own
    /// host, docs/cluster.md).
    pub nodes: usize,
    pub config: ServerConfig,
}

impl Default for ServerSpec {
    /// The reference defaults, except what a simulation needs shorter or larger:
    /// heartbeats and presence grace in seconds rather than tens of seconds (scenarios
    /// last minutes), and room for every tab a scenario gives one user.
    fn default() -> Self {
        let mut config = ServerConfig {
            jwt_secret: SECRET.to_vec(),
            heartbeat_timeout_ms: 15_000,
            connections_per_user_max: 1024,
            ..ServerConfig::default()
        };
        config.core.heartbeat_ms = 5_000;
        config.core.presence_grace_ms = 3_000;
        ServerSpec {
            latency_ms: 5,
            nodes: 1,
            config,
        }
    }
}

impl<'de> Deserialize<'de> for ServerSpec {
    /// `[server]` overlays the simulation defaults key by key; serde's `flatten` (how
    /// `CoreConfig` sits in `ServerConfig`) cannot refuse unknown keys itself, so they
    /// are checked against the serialised defaults.
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut given = toml::Table::deserialize(de)?;
        let mut spec = ServerSpec::default();
        if let Some(v) = given.remove("latency_ms") {
            spec.latency_ms = v.try_into().map_err(D::Error::custom)?;
        }
        if let Some(v) = given.remove("nodes") {
            spec.nodes = v.try_into().map_err(D::Error::custom)?;
        }
        let mut table = toml::Table::try_from(&spec.config).map_err(D::Error::custom)?;
        for (key, value) in given {
            if !table.contains_key(&key) {
                let known: Vec<&str> = table.keys().map(String::as_str).collect();
                return Err(D::Error::custom(format!(
                    "unknown field `{key}`, expected `latency_ms`, `nodes` or one of {}",
                    known.join(", ")
                )));
            }
            table.insert(key, value);
        }
        let config: ServerConfig = table.try_into().map_err(D::Error::custom)?;
        spec.config = ServerConfig {
            jwt_secret: spec.config.jwt_secret,
            ..config
        };
        Ok(spec)
    }
}

/// A value read from its name (`FromStr`): the client's policies, named in a scenario.
fn from_name<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let name = String::deserialize(de)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// A client host (a network location) and the users on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub users: usize,
    #[serde(default = "one")]
    pub devices_per_user: usize,
    #[serde(default = "one")]
    pub tabs_per_device: usize,
    /// Share of tabs on SSE (+ POST) instead of WebSocket, 0..=1.
    #[serde(default)]
    pub sse_fraction: f64,
    /// Users are spread over this many workspaces (named `w0`, `w1`, …).
    #[serde(default = "one")]
    pub workspaces: usize,
    /// Link latency to the server; the server's `latency_ms` if absent.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// `jittered` (default) or the seed's `legacy`.
    #[serde(default, deserialize_with = "from_name")]
    pub reconnect: ReconnectPolicy,
    /// `sequenced` (default) or the seed's `legacy` (its capacity: `outbox_capacity`).
    #[serde(default = "d_outbox", deserialize_with = "from_name")]
    pub outbox: OutboxPolicy,
    #[serde(default = "d_capacity")]
    pub outbox_capacity: usize,
    /// Client ping interval (the seed pings every 30 s).
    #[serde(default = "d_ping")]
    pub ping_interval_ms: u64,
}

fn one() -> usize {
    1
}
fn d_outbox() -> OutboxPolicy {
    OutboxConfig::default().policy
}
fn d_capacity() -> usize {
    1000
}
fn d_ping() -> u64 {
    5_000
}

impl Group {
    pub fn tabs(&self) -> usize {
        self.users * self.devices_per_user * self.tabs_per_device
    }
}

/// What every tab does, per tab.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Mutations per second per tab (Poisson arrivals).
    pub ops_per_s: f64,
    /// Relative weights of mutation kinds.
    pub create: f64,
    pub update: f64,
    pub status: f64,
    pub delete: f64,
    /// Cursor moves per second per tab.
    pub cursors_per_s: f64,
    /// Entities per workspace the keys are drawn from…
    pub keys: u64,
    /// …with Zipf skew s (0 = uniform), so conflicts really happen.
    pub zipf_s: f64,
    /// Simulated users resolve conflicts after this think time…
    pub think_time_ms: u64,
    /// …keeping their own values with this probability.
    pub keep_local_p: f64,
    /// The delay model of the cross-tab bus: exponential with this mean, rounded to
    /// the simulator's millisecond and clamped into `min..=max`. Fitted to Chromium 156
    /// on this machine (two tabs, BroadcastChannel: p50 0.4 ms, p99 2.1–3.3 ms, max
    /// 4.3 ms): an exponential's p50 is 0.69 × mean and its p99 4.6 × mean, so a mean of
    /// 0.58 ms gives 0.4 and 2.7 ms (docs/performance.md, "Simulator fidelity").
    pub cross_tab_ms_mean: f64,
    pub cross_tab_ms_min: u64,
    pub cross_tab_ms_max: u64,
    /// Tasks get `projectId = p0 … p(projects-1)`.
    pub projects: u64,
    /// List queries (`["tasks", workspace, project]`) per second per tab, through the
    /// query cache; a miss or a stale entry fetches `GET /api/entities/tasks?projectId=`.
    pub queries_per_s: f64,
    /// The cache's `staleTime` (TanStack's default is 0).
    pub stale_time_ms: u64,
    /// Every this many seconds a tab samples its retained bytes (0 = never)…
    pub memory_sample_s: u64,
    /// …and above this many bytes it runs its cleanup tasks.
    pub memory_pressure_bytes: usize,
    /// Rows in the tab's virtual task list, and how far it scrolls per second.
    pub list_rows: u64,
    /// Creates and updates carry a `description` of this many bytes (0: none), up to
    /// the protocol's frame limit: large payloads and large entities.
    pub payload_bytes: usize,
    /// After connecting, each WebSocket tab sets its presence with a `currentPage` of
    /// this many bytes (0: no presence change): crowded, heavy presence lists.
    pub presence_bytes: usize,
    /// Each tab's token expires this many seconds after it was issued (0: never): the
    /// server ends the session at expiry (4001), and the app fetches a fresh token
    /// (`TOKEN_REFRESH_MS`) and reconnects.
    pub token_ttl_s: u64,
    /// The seed's live dashboard: tasks by status and completions per minute, kept from
    /// events (`client::rollup`). Status changes then carry `completedAt`.
    pub dashboard: DashboardMode,
    /// The seed's project progress (done of all tasks per project).
    pub progress: ProgressMode,
    /// Shared notes per workspace (`<workspace>-n0…`) that users edit at once (0: none)…
    pub notes: u64,
    /// …with this share of a tab's ops: `NOTE_UPDATED` of one or two of `title`, `body`,
    /// `tags`, under the server's `strategy_note`.
    pub note_p: f64,
    /// The seed's focus timer across tabs and devices (`tab/focus.rs`)…
    pub focus: FocusMode,
    /// …with sessions this long (simulated ms).
    pub focus_ms: u64,
}

/// How a user's tabs keep their focus timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FocusMode {
    #[default]
    Off,
    /// One tab drives; the others follow through the bus and the server.
    Driven,
    /// Canary, the seed's `syncFocusMetrics` from every tab: each tab that learns of a
    /// completed session counts it again.
    CountEverywhere,
}

/// How a tab keeps its dashboard (docs/scenarios.md, "Integration points").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DashboardMode {
    #[default]
    Off,
    /// Incremental from events, rebuilt from the replica after a snapshot resync.
    Live,
    /// Canary: never rebuilt, so what changed while it was away is missed.
    NoResync,
}

/// How project progress reaches the tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    #[default]
    Off,
    /// Each tab derives it from its replica (what rtsync recommends).
    Derived,
    /// Canary, the seed's `broadcastProjectProgress`: the tab that changes a task's
    /// status computes its project's progress from its own view and writes it to the
    /// project (`PROJECT_UPDATED {progress}`); concurrent writers race.
    Broadcast,
}

impl Workload {
    /// Whether tabs keep a rollup (dashboard or progress).
    pub fn rolls_up(&self) -> bool {
        self.dashboard != DashboardMode::Off || self.progress != ProgressMode::Off
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            ops_per_s: 0.5,
            create: 0.2,
            update: 0.5,
            status: 0.25,
            delete: 0.05,
            cursors_per_s: 0.0,
            keys: 200,
            zipf_s: 1.0,
            think_time_ms: 300,
            keep_local_p: 0.5,
            cross_tab_ms_mean: 0.58,
            cross_tab_ms_min: 0,
            cross_tab_ms_max: 5,
            projects: 10,
            queries_per_s: 0.0,
            stale_time_ms: 0,
            memory_sample_s: 0,
            memory_pressure_bytes: 4 << 20,
            list_rows: 0,
            payload_bytes: 0,
            presence_bytes: 0,
            token_ttl_s: 0,
            dashboard: DashboardMode::Off,
            progress: ProgressMode::Off,
            notes: 0,
            note_p: 0.5,
            focus: FocusMode::Off,
            focus_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The group's link to the server drops everything (connections break; connects are refused).
    Partition,
    /// Heals a partition.
    Repair,
    /// The group's link holds everything (delivered on release).
    Hold,
    Release,
    /// Sets the group's link latency to `latency_ms`.
    Latency,
    /// The server process is killed (in-memory state lost, connections cut; what it
    /// wrote to the OS is kept). It stays down until `server_restart`.
    ServerCrash,
    /// The server's machine loses power: like `server_crash`, and whatever its disk had
    /// not synced is lost, pending writes possibly torn at a block boundary.
    PowerLoss,
    /// The stopped server starts again: it replays its logs (same epochs; a new one
    /// with durability `memory`).
    ServerRestart,
    /// Kill and restart at once.
    ServerBounce,
    /// Several nodes: the node's link to Redis drops everything (`node`; node 0 if
    /// absent)…
    BackplanePartition,
    /// …and heals.
    BackplaneRepair,
    /// The node's link to Redis holds everything, delivered on release: from Redis's
    /// side the node is paused, and what it sent meanwhile arrives late (a deposed
    /// owner waking up).
    BackplaneHold,
    BackplaneRelease,
    /// Redis is killed and restarts at once; what it acknowledged is kept
    /// (`appendfsync always`).
    RedisRestart,
    /// The server's disk is full: every append fails (ENOSPC) until `disk_freed`.
    DiskFull,
    DiskFreed,
    /// Each append of the server's fails (EIO) with probability `fraction`, until
    /// `disk_healthy`.
    DiskErrors,
    DiskHealthy,
    /// A byte in the middle of a workspace's log flips while the server is down (give
    /// it between a `server_crash` or `power_loss` and its `server_restart`): the server
    /// must refuse to start, or with `accept_damage` start that workspace in a new epoch.
    CorruptLog,
    /// A fraction of the group's tabs go offline (the browser's offline event)…
    Offline,
    /// …and come back.
    Online,
    /// A fraction of the group's tabs reload: state is dehydrated to storage and
    /// hydrated back (the queue survives; a failure means reset and refetch).
    Reload,
    /// Like `reload`, but the stored state is corrupted first (a different kind of
    /// corruption per tab: truncated, bad base64, bad gzip, bad checksum, bad JSON).
    CorruptStorage,
    /// Like `reload`, but the stored state is an older schema (v1) to migrate.
    SchemaUpgrade,
    /// Tabs close (their session ends: presence must drop them)…
    TabClose,
    /// …and open again, restoring from storage.
    TabOpen,
    /// Tabs stop reading their socket (a slow consumer)…
    Stall,
    /// …and read again.
    Unstall,
    /// Tabs make `ops` mutations at once (a user bursting writes, e.g. a bulk edit).
    Burst,
    /// Tabs reload with a damaged stored resume point: another incarnation's epoch, or
    /// a seq far ahead of the server's (each tab one of them). The server must answer
    /// `complete: false` and the tab resync.
    BadResume,
}

impl FaultKind {
    /// A fault on the cluster's Redis or a node's link to it.
    pub fn is_backplane(self) -> bool {
        use FaultKind::*;
        matches!(
            self,
            BackplanePartition | BackplaneRepair | BackplaneHold | BackplaneRelease | RedisRestart
        )
    }

    /// The fault that undoes this one, if it has one.
    pub fn heal(self) -> Option<FaultKind> {
        use FaultKind::*;
        Some(match self {
            Partition => Repair,
            Hold => Release,
            Offline => Online,
            Stall => Unstall,
            ServerCrash | PowerLoss => ServerRestart,
            BackplanePartition => BackplaneRepair,
            BackplaneHold => BackplaneRelease,
            DiskFull => DiskFreed,
            DiskErrors => DiskHealthy,
            TabClose => TabOpen,
            Latency => Latency,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub at_s: f64,
    pub kind: FaultKind,
    /// The group a network or client fault acts on; every group if absent.
    #[serde(default)]
    pub group: Option<String>,
    /// Share of the group's tabs a client fault acts on (the first ones).
    #[serde(default = "d_fraction")]
    pub fraction: f64,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// A `burst`'s mutations per tab.
    #[serde(default)]
    pub ops: Option<u64>,
    /// The server node a server or backplane fault acts on (0 if absent).
    #[serde(default)]
    pub node: Option<usize>,
}

fn d_fraction() -> f64 {
    1.0
}

/// A canary names the anomaly its checker must find; finding it is the pass.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub violation: Option<String>,
    /// Other invariants the canary's bug may break too (not failures of the canary).
    #[serde(default)]
    pub tolerate: Vec<String>,
}

/// Why a scenario file was refused (exit code 104).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

impl Scenario {
    pub fn load(path: &std::path::Path) -> Result<Self, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let parse_error = |message: String| ScenarioError::Parse {
            path: path.to_owned(),
            message,
        };
        let mut base: toml::Table = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let swarm = match base.remove("swarm") {
            Some(v) => Some(
                v.try_into::<Swarm>()
                    .map_err(|e| parse_error(format!("[swarm]: {}", e.message())))?,
            ),
            None => None,
        };
        let mut s = Self::from_table(base, path)?;
        s.swarm = swarm;
        if s.swarm.is_some() {
            // A swarm must draw a valid scenario; its own seed is the first check (every
            // seed's draws are validated again when it runs).
            s.for_seed(s.seed)?;
        }
        Ok(s)
    }

    fn from_table(base: toml::Table, path: &str) -> Result<Self, ScenarioError> {
        let mut s: Scenario =
            toml::Value::Table(base.clone())
                .try_into()
                .map_err(|e: toml::de::Error| ScenarioError::Parse {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
        s.validate()
            .map_err(|(field, message)| ScenarioError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })?;
        s.base = base;
        s.path = path.to_owned();
        Ok(s)
    }

    /// The scenario as `seed` runs it: itself when fixed; a swarm's own draws otherwise
    /// (refused like a bad file, naming the seed, when a draw makes it invalid).
    /// What a valid scenario may not mean, in words: said on stderr, never refused.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let timeout_ms = self.server.config.heartbeat_timeout_ms;
        let end_ms = (self.duration_s + self.quiescence_s) * 1000;
        let last_partition_ms = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Partition)
            .map(|f| (f.at_s * 1000.0) as u64)
            .max();
        if let Some(at) = last_partition_ms
            && at + timeout_ms > end_ms
        {
            out.push(format!(
                "{}: a partition black-holes connections (nothing arrives, nothing is refused); a tab cut off at {:.1} s may notice only after heartbeat_timeout_ms ({timeout_ms} ms) of silence, after the run ends at {} s (duration_s + quiescence_s): it may end unconverged. Raise quiescence_s to {} or more",
                self.name,
                at as f64 / 1000.0,
                end_ms / 1000,
                (at + timeout_ms).div_ceil(1000).saturating_sub(self.duration_s)
            ));
        }
        out
    }

    pub fn for_seed(&self, seed: u64) -> Result<Scenario, ScenarioError> {
        let Some(swarm) = &self.swarm else {
            return Ok(self.clone());
        };
        let at = format!("{} (seed {seed})", self.path);
        let (table, drawn) = swarm::draw(swarm, &self.base, seed).map_err(|(field, message)| {
            ScenarioError::Invalid {
                path: at.clone(),
                field,
                message,
            }
        })?;
        let mut s = Self::from_table(table, &at)?;
        s.base = self.base.clone();
        s.path = self.path.clone();
        s.drawn = drawn;
        Ok(s)
    }

    /// The scenario on a cluster of `nodes` (`simulate live --spawn-cluster`), with
    /// `kills` node kills added: spread evenly between the warm-up and the end, each
    /// node in turn, every one restarted after half the gap to the next (at most 5 s:
    /// past a 3 s lease, so its workspaces move). Refused like a bad file when a fault
    /// names a node the cluster lacks.
    pub fn on_cluster(&self, nodes: usize, kills: usize) -> Result<Scenario, ScenarioError> {
        let mut s = self.clone();
        s.server.nodes = nodes;
        let window_s = s.duration_s.saturating_sub(s.warmup_s) as f64;
        let gap_s = window_s / (kills + 1) as f64;
        let down_s = (gap_s / 2.0).min(5.0);
        for k in 0..kills {
            let at_s = s.warmup_s as f64 + gap_s * (k + 1) as f64;
            for (at_s, kind) in [
                (at_s, FaultKind::ServerCrash),
                (at_s + down_s, FaultKind::ServerRestart),
            ] {
                s.faults.push(Fault {
                    at_s: (at_s * 10.0).round() / 10.0,
                    kind,
                    group: None,
                    fraction: 1.0,
                    latency_ms: None,
                    ops: None,
                    node: Some(k % nodes.max(1)),
                });
            }
        }
        s.validate()
            .map_err(|(field, message)| ScenarioError::Invalid {
                path: format!("{} on a {nodes}-node cluster", s.path),
                field,
                message,
            })?;
        Ok(s)
    }

    pub fn tabs(&self) -> usize {
        self.groups.iter().map(Group::tabs).sum()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.validate_run()?;
        self.validate_groups()?;
        self.validate_workload()?;
        self.validate_faults()?;
        self.validate_checks()
    }

    /// Name, durations, tick, and the shards the workspaces allow.
    fn validate_run(&self) -> Result<(), (String, String)> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(
                "name",
                "expected letters, digits, - or _ (it names the output folder)".into(),
            );
        }
        if self.duration_s == 0 {
            return bad(
                "duration_s",
                "expected a whole number of seconds > 0".into(),
            );
        }
        if !(self.ramp_up_per_s >= 0.0 && self.ramp_up_per_s.is_finite()) {
            return bad("ramp_up_per_s", "expected a rate >= 0".into());
        }
        if self.tick_ms == 0 || self.tick_ms > 100 {
            return bad("tick_ms", format!("expected 1..=100, got {}", self.tick_ms));
        }
        if self.groups.is_empty() {
            return bad("groups", "expected at least one [[groups]] entry".into());
        }
        let workspaces = self
            .groups
            .iter()
            .map(|g| g.workspaces.min(g.users))
            .max()
            .unwrap_or(0);
        if !(1..=8).contains(&self.server.nodes) {
            return bad(
                "server.nodes",
                format!("expected 1..=8, got {}", self.server.nodes),
            );
        }
        if self.shards == 0 || self.shards > workspaces.max(1) {
            return bad(
                "shards",
                format!(
                    "expected 1..={} (a shard holds at least one workspace), got {}",
                    workspaces.max(1),
                    self.shards
                ),
            );
        }
        Ok(())
    }

    /// Each group, and the total of tabs.
    fn validate_groups(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let f = |name: &str| format!("groups[{i}].{name}");
            if g.name.is_empty()
                || g.name == "server"
                || g.name == "probe"
                || !g
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return bad(
                    &f("name"),
                    format!(
                        "{:?}: expected letters, digits or -, and not \"server\" or \"probe\"",
                        g.name
                    ),
                );
            }
            if !names.insert(g.name.clone()) {
                return bad(&f("name"), format!("{:?} appears twice", g.name));
            }
            if g.users == 0
                || g.devices_per_user == 0
                || g.tabs_per_device == 0
                || g.workspaces == 0
            {
                return bad(
                    &f("users"),
                    "users, devices_per_user, tabs_per_device and workspaces must be > 0".into(),
                );
            }
            if !(0.0..=1.0).contains(&g.sse_fraction) {
                return bad(
                    &f("sse_fraction"),
                    format!("expected 0..=1, got {}", g.sse_fraction),
                );
            }
            if g.outbox_capacity == 0 {
                return bad(&f("outbox_capacity"), "expected > 0".into());
            }
        }
        if self.tabs() > 20_000 {
            return bad(
                "groups",
                format!("{} tabs in all; at most 20 000", self.tabs()),
            );
        }
        Ok(())
    }

    /// The workload's rates and mix, and the server settings it must fit.
    fn validate_workload(&self) -> Result<(), (String, String)> {
        let w = &self.workload;
        // TOML can write `nan` and `inf`: every rate and the skew must be a real number.
        for (field, rate) in [
            ("workload.ops_per_s", w.ops_per_s),
            ("workload.cursors_per_s", w.cursors_per_s),
            ("workload.queries_per_s", w.queries_per_s),
            ("workload.zipf_s", w.zipf_s),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return bad(field, format!("expected a finite number >= 0, got {rate}"));
            }
        }
        if [w.create, w.update, w.status, w.delete]
            .iter()
            .any(|x| *x < 0.0)
            || w.create + w.update + w.status + w.delete <= 0.0
        {
            return bad(
                "workload.create",
                "the op mix weights must be >= 0 and not all 0".into(),
            );
        }
        if w.keys == 0 {
            return bad("workload.keys", "expected > 0".into());
        }
        if !(0.0..=1.0).contains(&w.keep_local_p) {
            return bad("workload.keep_local_p", "expected 0..=1".into());
        }
        if !(0.0..=1.0).contains(&w.note_p) {
            return bad("workload.note_p", "expected 0..=1".into());
        }
        if !(100..=3_600_000).contains(&w.focus_ms) {
            return bad("workload.focus_ms", "expected 100..=3600000".into());
        }
        if w.notes > 10_000 {
            return bad("workload.notes", "expected 0..=10000".into());
        }
        // A frame is at most 64 KiB; leave room for the envelope and the other fields.
        if w.payload_bytes > 60_000 {
            return bad(
                "workload.payload_bytes",
                format!("expected 0..=60000, got {}", w.payload_bytes),
            );
        }
        // A token must outlive a connect, a resync and some work, or a tab does nothing
        // but reconnect.
        if w.token_ttl_s > 0 && w.token_ttl_s < 5 {
            return bad(
                "workload.token_ttl_s",
                format!("expected 0 (never) or >= 5, got {}", w.token_ttl_s),
            );
        }
        if let Err(e) = self.server.config.validate() {
            return bad("server", e);
        }
        // The server refuses a longer presence field (`presence_field_bytes_max`).
        let presence_max = rtsync_server::core::CoreConfig::default().presence_field_bytes_max;
        if w.presence_bytes > presence_max {
            return bad(
                "workload.presence_bytes",
                format!("expected 0..={presence_max}, got {}", w.presence_bytes),
            );
        }
        if !(w.cross_tab_ms_mean.is_finite() && (0.0..=60_000.0).contains(&w.cross_tab_ms_mean)) {
            return bad(
                "workload.cross_tab_ms_mean",
                format!("expected 0..=60000 ms, got {}", w.cross_tab_ms_mean),
            );
        }
        if w.cross_tab_ms_min > w.cross_tab_ms_max {
            return bad(
                "workload.cross_tab_ms_min",
                "must not exceed cross_tab_ms_max".into(),
            );
        }
        Ok(())
    }

    /// Each fault names a known group, falls inside the run, and has what its kind needs.
    fn validate_faults(&self) -> Result<(), (String, String)> {
        for (i, fault) in self.faults.iter().enumerate() {
            let f = |name: &str| format!("faults[{i}].{name}");
            if !(fault.at_s >= 0.0 && fault.at_s <= self.duration_s as f64) {
                return bad(
                    &f("at_s"),
                    format!(
                        "expected 0..={} (inside duration_s), got {}",
                        self.duration_s, fault.at_s
                    ),
                );
            }
            if let Some(g) = &fault.group
                && !self.groups.iter().any(|x| &x.name == g)
            {
                return bad(&f("group"), format!("no group named {g:?}"));
            }
            if !(0.0..=1.0).contains(&fault.fraction) {
                return bad(&f("fraction"), "expected 0..=1".into());
            }
            if fault.kind == FaultKind::Burst
                && !fault.ops.is_some_and(|n| (1..=10_000).contains(&n))
            {
                return bad(&f("ops"), "a burst needs ops = 1..=10000".into());
            }
            if fault.kind == FaultKind::Latency && fault.latency_ms.is_none() {
                return bad(&f("latency_ms"), "a latency fault needs latency_ms".into());
            }
            let nodes = self.server.nodes;
            if fault.node.is_some_and(|n| n >= nodes) {
                return bad(
                    &f("node"),
                    format!("expected 0..{nodes} (server.nodes is {nodes})"),
                );
            }
            if fault.kind.is_backplane() && nodes < 2 {
                return bad(
                    &f("kind"),
                    "a backplane fault needs a cluster: set server.nodes = 2 or more".into(),
                );
            }
        }
        Ok(())
    }

    /// Thresholds name known metrics with parseable conditions; a canary names an invariant.
    fn validate_checks(&self) -> Result<(), (String, String)> {
        for (metric, conds) in &self.thresholds {
            let sel = crate::threshold::Selector::parse(metric)
                .map_err(|m| (format!("thresholds.{metric}"), m))?;
            if !crate::metrics::is_known(&sel.metric) {
                return bad(
                    &format!("thresholds.{metric}"),
                    format!(
                        "unknown metric {:?}; `simulate list --metrics` lists them",
                        sel.metric
                    ),
                );
            }
            for c in conds {
                crate::threshold::Condition::parse(c)
                    .map_err(|m| (format!("thresholds.{metric}"), m))?;
            }
        }
        if !self.expect.tolerate.is_empty() && self.expect.violation.is_none() {
            return bad(
                "expect.tolerate",
                "only a canary (expect.violation) tolerates invariants".into(),
            );
        }
        let names = self
            .expect
            .violation
            .iter()
            .map(|v| ("expect.violation", v));
        let tolerated = self.expect.tolerate.iter().map(|v| ("expect.tolerate", v));
        if let Some((field, v)) = names
            .chain(tolerated)
            .find(|(_, v)| !crate::metrics::INVARIANTS.contains(&v.as_str()))
        {
            return bad(
                field,
                format!(
                    "{v:?} is not an invariant: expected one of {:?}",
                    crate::metrics::INVARIANTS
                ),
            );
        }
        Ok(())
    }
}

/// A refusal naming the field it is about.
fn bad(field: &str, message: String) -> Result<(), (String, String)> {
    Err((field.to_owned(), message))
}
