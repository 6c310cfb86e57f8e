//! A virtual tab: the shell around one `rtsync_client::session::Session`. It owns the
//! simulated sockets (WebSocket or SSE + POST over turmoil), carries out the session's
//! actions, runs the workload (Poisson ops on Zipf-chosen entities), resolves conflicts
//! like a user would, and records what happens.
//!
//! Here: the tab's inputs and its run loop. The tab's state is split by what owns it,
//! each part with its submodule: `wire` (`Wire`: the sockets), `workload` (`User`:
//! the simulated user), `app` (`App`: query cache, memory, storage, reloads, the final
//! report), `notes` (`Marks`: what the session reports, recorded, and the moments
//! metrics are measured from); `actions` carries out the session's actions.

mod actions;
mod app;
mod dashboard;
mod focus;
mod notes;
mod wire;
mod workload;

use app::App;
pub use focus::FocusState;
use notes::Marks;
use wire::{Incoming, Link, Wire};
use workload::User;

use crate::net::{self, ConnectFail, Net, Sse, SseRead, Ws};
use crate::record::{Anomaly, OpRecord, Outcome, Recorder, TabFinal};
use crate::scenario::Workload;
use crate::storage;
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand_distr::{Exp, Zipf};
use rtsync_client::cache::{CacheConfig, Filter, Lookup, QueryCache, QueryKey};
use rtsync_client::conflict::{ConflictChoice, resolve};
use rtsync_client::connection::{ConnectError, Transport};
use rtsync_client::crosstab::Bus;
use rtsync_client::memory::MemoryManager;
use rtsync_client::rng::Rng;
use rtsync_client::rollup::{Counts, Progress, Rollup};
use rtsync_client::session::{Action, Note, Session, SessionConfig, SyncState};
use rtsync_client::virtual_list::{ListGeometry, window};
use rtsync_protocol::sync::CrossTabType;
use rtsync_protocol::{
    ClientMsg, ConflictDetected, CrossTabMessage, Entity, EntityKind, EventType, ServerMsg,
    Timestamp, UserAction,
};
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Who a tab is and how it behaves.
#[derive(Debug, Clone)]
pub struct TabSpec {
    pub id: String,
    pub group: String,
    pub user: String,
    pub workspace: String,
    pub token: String,
    pub sse: bool,
    pub seed: u64,
    pub session: SessionConfig,
    pub workload: Workload,
    /// When the tab opens (the scenario's ramp-up).
    pub start_delay_ms: u64,
}

/// Faults and the run's end, sent by the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Offline,
    Online,
    /// Reload the tab from storage (optionally corrupted first, or in an old schema).
    Reload {
        corrupt: bool,
        old_schema: bool,
    },
    /// Close the tab (the session ends) / open it again from storage.
    Close,
    Open,
    /// Stop / resume reading the socket (a slow consumer).
    Stall(bool),
    /// Make this many mutations at once.
    Burst(u64),
    /// Reload with a damaged stored resume point.
    BadResume,
    /// The workload stops: the liveness phase begins.
    StopWorkload,
    /// Report final state and exit.
    Finish,
}

impl Command {
    /// What a fault asks of the tabs it reaches; `None` for network and server faults,
    /// which act on links and hosts (simulated and live runs share this table).
    pub fn of_fault(f: &crate::scenario::Fault) -> Option<Command> {
        use crate::scenario::FaultKind::*;
        Some(match f.kind {
            Offline => Command::Offline,
            Online => Command::Online,
            Reload => Command::Reload {
                corrupt: false,
                old_schema: false,
            },
            CorruptStorage => Command::Reload {
                corrupt: true,
                old_schema: false,
            },
            SchemaUpgrade => Command::Reload {
                corrupt: false,
                old_schema: true,
            },
            TabClose => Command::Close,
            TabOpen => Command::Open,
            Stall => Command::Stall(true),
            Unstall => Command::Stall(false),
            Burst => Command::Burst(f.ops.unwrap_or(1)),
            BadResume => Command::BadResume,
            Partition | Repair | Hold | Release | Latency | ServerCrash | PowerLoss
            | ServerRestart | ServerBounce | DiskFull | DiskFreed | DiskErrors | DiskHealthy
            | CorruptLog | BackplanePartition | BackplaneRepair | BackplaneHold
            | BackplaneRelease | RedisRestart => return None,
        })
    }
}

/// Everything that reaches a tab besides its socket, on one channel: one queue to poll
/// per wake-up instead of three (polling them was a visible share of a large run).
#[derive(Debug)]
pub enum Input {
    /// From the world: a fault, or the run's end.
    Command(Command),
    /// The answer to an HTTP request the tab made.
    Io(Io),
    /// A STATE_UPDATE from another tab of the device.
    CrossTab(CrossTabMessage),
}

/// A tab's input channel: the receiver for the tab, a sender for whoever feeds it.
#[derive(Debug)]
pub struct Inbox {
    pub tx: mpsc::UnboundedSender<Input>,
    pub rx: mpsc::UnboundedReceiver<Input>,
}

impl Inbox {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Inbox { tx, rx }
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

/// One device's BroadcastChannel, shared by its tabs, with a task that delivers.
#[derive(Debug)]
pub struct DeviceBus {
    pub bus: Bus,
    pub inboxes: std::collections::BTreeMap<String, mpsc::UnboundedSender<Input>>,
    pub wake: Rc<Notify>,
    /// The network whose clock the bus keeps time by.
    pub net: Net,
}

/// Delivers a device's cross-tab messages when they fall due.
pub async fn run_device_bus(dev: Rc<RefCell<DeviceBus>>) {
    let (wake, net) = {
        let d = dev.borrow();
        (d.wake.clone(), d.net.clone())
    };
    loop {
        let now = net.now_ms();
        let due: Vec<(String, CrossTabMessage)> =
            std::iter::from_fn(|| dev.borrow_mut().bus.poll(now)).collect();
        for (to, msg) in due {
            if let Some(tx) = dev.borrow().inboxes.get(&to) {
                let _ = tx.send(Input::CrossTab(msg));
            }
        }
        let next = dev.borrow().bus.poll_timeout();
        match next {
            Some(t) => {
                let wait = Duration::from_millis(t.saturating_sub(net.now_ms()).max(1));
                tokio::select! {
                    biased;
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// An op that starts more than this after its intended time counts as late (a coarse
/// simulation tick alone delays timers by up to `tick_ms`).
const LATE_MS: u64 = 100;

/// An epoch and, per entity kind, its seq watermark and entities.
pub type Snapshots = (u64, Vec<(EntityKind, u64, Vec<Entity>)>);

/// What the tab's HTTP requests bring back.
#[derive(Debug)]
pub enum Io {
    Post(Option<ServerMsg>),
    Query(Vec<String>, Option<Value>),
    Snapshot(Option<Snapshots>),
}

struct Tab {
    spec: TabSpec,
    /// Simulated or real TCP, and the clock that goes with it.
    net: Net,
    rec: Rc<RefCell<Recorder>>,
    device: Option<Rc<RefCell<DeviceBus>>>,
    s: Session,
    epoch: u64,
    io_tx: mpsc::UnboundedSender<Input>,
    stalled: bool,
    closed: bool,
    /// The token was refused or expired: a fresh one arrives at this time.
    reauth_at: Option<u64>,
    /// Told to finish while a connect attempt was in flight: finish once it is done and
    /// the tab settled, or at this time at the latest.
    finish_by: Option<u64>,
    wire: Wire,
    user: User,
    app: App,
    marks: Marks,
    focus: focus::Focus,
}

/// How long the simulated app takes to fetch a fresh token from its auth server.
const TOKEN_REFRESH_MS: u64 = 100;

/// At most this long after the finish, a connect attempt that was in flight then may
/// complete before the tab's final state is read (the client's connect timeout): a
/// handshake that began just before the end — a planned switch from SSE back to the
/// WebSocket, say — is not sampled half done (35-swarm-cluster seed 40: a tab's switch
/// 154 ms before the end, through a relay node, was read as a tab that never reconnected).
const FINISH_GRACE_MS: u64 = 10_000;

pub async fn run_tab(
    spec: TabSpec,
    rec: Rc<RefCell<Recorder>>,
    device: Option<Rc<RefCell<DeviceBus>>>,
    zipf: Zipf<f64>,
    inbox: Inbox,
    net: Net,
) {
    let Inbox {
        tx: io_tx,
        rx: mut inbox,
    } = inbox;
    let mut t = Tab::new(spec, rec, device, zipf, io_tx, net);
    if t.spec.start_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(t.spec.start_delay_ms)).await;
    }
    t.start();
    // One timer, re-armed only when the wake-up time changes (a new timer per loop turn
    // was a measurable share of a large run).
    let sleep = tokio::time::sleep(Duration::from_millis(1));
    tokio::pin!(sleep);
    let mut armed_for: Option<u64> = None;
    loop {
        t.drive().await;
        let wake = t.wake_at().unwrap_or(t.net.now_ms() + 3_600_000);
        if armed_for != Some(wake) {
            armed_for = Some(wake);
            let wait = Duration::from_millis(wake.saturating_sub(t.net.now_ms()).max(1));
            sleep.as_mut().reset(tokio::time::Instant::now() + wait);
        }
        tokio::select! {
            biased;
            Some(input) = inbox.recv() => {
                if t.input(input) {
                    return;
                }
            }
            r = async { t.wire.connecting.as_mut().expect("guarded").await }, if t.wire.connecting.is_some() => {
                t.connect_done(r);
            }
            inc = async { t.wire.link.as_mut().expect("guarded").next().await }, if t.wire.link.is_some() && !t.stalled => {
                t.incoming(inc);
            }
            () = &mut sleep => {
                armed_for = None;
                t.timers(t.net.now_ms()).await;
            }
        }
        if t.finish_due() {
            t.finish();
            return;
        }
    }
}

impl Tab {
    fn new(
        spec: TabSpec,
        rec: Rc<RefCell<Recorder>>,
        device: Option<Rc<RefCell<DeviceBus>>>,
        zipf: Zipf<f64>,
        io_tx: mpsc::UnboundedSender<Input>,
        net: Net,
    ) -> Tab {
        let mut rng = Rng::new(spec.seed);
        let s = Session::new(&spec.user, &spec.id, spec.session.clone(), rng.fork(1));
        Tab {
            net,
            rec,
            device,
            s,
            epoch: 0,
            io_tx,
            stalled: false,
            closed: false,
            reauth_at: None,
            finish_by: None,
            wire: Wire {
                link: None,
                keep_alive: Default::default(),
                connecting: None,
                attempt: 0,
                sent_resume: None,
            },
            user: User {
                rng,
                zipf,
                thinking: Vec::new(),
                resolving: Default::default(),
                next_op_ms: None,
                next_cursor_ms: None,
                next_query_ms: None,
                scroll_px: 0,
            },
            app: App {
                cache: QueryCache::new(CacheConfig {
                    stale_time_ms: spec.workload.stale_time_ms,
                    ..CacheConfig::default()
                }),
                memory: MemoryManager::new(spec.workload.memory_pressure_bytes),
                stored_queue: None,
                presence: BTreeSet::new(),
                list_rows_max: 0,
                next_sample_ms: None,
                snapshot_retry_at: None,
                recovering_since: None,
                rollup: spec.workload.rolls_up().then(Rollup::default),
            },
            marks: Marks::default(),
            focus: focus::Focus::default(),
            spec,
        }
    }

    /// The tab opens: the user's first actions drawn, the home list subscribed,
    /// presence announced, the session started.
    fn start(&mut self) {
        let now = self.net.now_ms();
        let w = self.spec.workload.clone();
        self.user.next_op_ms = self.draw_next(now, w.ops_per_s);
        self.user.next_cursor_ms = self.draw_next(now, w.cursors_per_s);
        self.user.next_query_ms = self.draw_next(now, w.queries_per_s);
        self.app.next_sample_ms = (w.memory_sample_s > 0).then(|| now + w.memory_sample_s * 1000);
        self.marks.starting_since = Some(now);
        // A driving tab draws its user's first focus move.
        self.focus.due = (w.focus != crate::scenario::FocusMode::Off).then_some(now);
        self.refresh_token();
        let home = self.query_key(0);
        self.app.cache.subscribe(&home, now);
        self.announce_presence();
        self.s.start(now);
    }

    /// One input from the world, an HTTP answer or the device's bus; `true`: the tab is
    /// done.
    fn input(&mut self, input: Input) -> bool {
        let now = self.net.now_ms();
        match input {
            Input::Command(cmd) => return self.command(cmd, now),
            Input::Io(io) => self.io(io, now),
            Input::CrossTab(msg) if msg.kind == CrossTabType::FocusChange => {
                self.focus_from_bus(&msg, now);
            }
            Input::CrossTab(msg) => {
                if let Some(at) = msg.payload.get("appliedAt").and_then(Value::as_u64) {
                    self.rec.borrow_mut().sample(
                        "cross_tab_ms",
                        &self.spec.group,
                        now,
                        now.saturating_sub(at),
                    );
                }
            }
        }
        false
    }

    /// A connect attempt ended: the stream is open, or the session learns why not.
    fn connect_done(&mut self, r: Result<Link, ConnectFail>) {
        self.wire.connecting = None;
        let now = self.net.now_ms();
        match r {
            Ok(link) => {
                self.set_link(Some(link));
                self.s.handle_open(self.wire.attempt, now);
            }
            Err(e) => {
                self.rec
                    .borrow_mut()
                    .count("connect_failures", &self.spec.group, 1);
                let err = match e {
                    ConnectFail::Unauthorized => ConnectError::Unauthorized,
                    ConnectFail::Refused { retry_after_ms } => {
                        ConnectError::Refused { retry_after_ms }
                    }
                    ConnectFail::Network => ConnectError::Network,
                };
                self.s.handle_connect_failed(self.wire.attempt, err, now);
            }
        }
    }

    /// What the stream gave, and every frame already waiting behind it: one wake-up
    /// per burst, not per frame.
    fn incoming(&mut self, inc: Incoming) {
        let now = self.net.now_ms();
        let mut next = Some(inc);
        while let Some(inc) = next.take() {
            match inc {
                Incoming::Frame(m) => self.frame(m, now),
                Incoming::Activity => self.s.handle_activity(now),
                Incoming::Closed(code) => {
                    self.set_link(None);
                    self.s.handle_closed(self.wire.attempt, code, now);
                }
            }
            next = self
                .wire
                .link
                .as_mut()
                .and_then(|l| l.next().now_or_never());
        }
    }
}

impl Tab {
    /// Carries out a command from the world; true when the tab is finished.
    fn command(&mut self, cmd: Command, now: u64) -> bool {
        match cmd {
            Command::Offline => self.s.go_offline(now),
            Command::Online => {
                if !self.s.connection().is_online() {
                    self.marks.drain_from = Some(now);
                }
                self.s.go_online(now);
            }
            Command::StopWorkload => {
                self.user.next_op_ms = None;
                self.user.next_cursor_ms = None;
                self.user.next_query_ms = None;
            }
            Command::Reload {
                corrupt,
                old_schema,
            } => self.reload(corrupt, old_schema, now),
            Command::Close if !self.closed => {
                self.focus_leave(now);
                self.closed = true;
                self.s.close(now);
                if let Some(dev) = &self.device {
                    dev.borrow_mut().bus.leave(&self.spec.id);
                }
            }
            Command::Open if self.closed => {
                self.closed = false;
                if let Some(dev) = &self.device {
                    dev.borrow_mut().bus.join(&self.spec.id);
                }
                self.reload(false, false, now);
                if self.spec.workload.focus != crate::scenario::FocusMode::Off {
                    self.focus.due = Some(now); // it may drive again
                }
            }
            Command::Close | Command::Open => {}
            Command::Stall(on) => self.stalled = on,
            Command::Burst(n) if !self.closed && self.user.next_op_ms.is_some() => {
                for _ in 0..n {
                    self.workload_op(now, 0);
                }
            }
            Command::Burst(_) => {}
            Command::BadResume => self.reload_with_bad_resume(now),
            Command::Finish if !self.closed && self.wire.connecting.is_some() => {
                self.finish_by = Some(now + FINISH_GRACE_MS);
            }
            Command::Finish => {
                self.finish();
                return true;
            }
        }
        false
    }

    /// An HTTP request's answer.
    fn io(&mut self, io: Io, now: u64) {
        match io {
            Io::Post(Some(m)) => self.s.handle_post_answer(m, now),
            // A lost POST: the op stays queued; the ack timeout replaces the connection.
            Io::Post(None) => {}
            Io::Snapshot(Some((epoch, parts))) => {
                self.epoch = epoch;
                self.s.handle_snapshot(epoch, parts, now);
            }
            Io::Snapshot(None) => self.app.snapshot_retry_at = Some(now + 500),
            Io::Query(key, Some(d)) => {
                self.app.cache.resolve(&key, d, now);
                self.rec
                    .borrow_mut()
                    .count("query_fetches", &self.spec.group, 1);
            }
            Io::Query(key, None) => self.app.cache.fail(&key),
        }
    }

    /// A deferred finish is due: the attempt in flight at the finish is done and the
    /// tab open and settled, or the grace is over.
    fn finish_due(&self) -> bool {
        self.finish_by.is_some_and(|by| {
            self.net.now_ms() >= by
                || (self.wire.connecting.is_none()
                    && self.s.connection().is_open()
                    && self.s.is_settled())
        })
    }

    fn wake_at(&self) -> Option<u64> {
        [
            self.finish_by,
            self.s.poll_timeout(),
            self.user.next_op_ms,
            self.user.next_cursor_ms,
            self.user.next_query_ms,
            self.app.next_sample_ms,
            self.app.snapshot_retry_at,
            self.reauth_at,
            self.user.thinking.iter().map(|(due, _, _)| *due).min(),
            self.focus.due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn timers(&mut self, now: u64) {
        if self.reauth_at.is_some_and(|t| t <= now) {
            self.reauth_at = None;
            self.refresh_token();
            self.rec
                .borrow_mut()
                .count("token_refreshes", &self.spec.group, 1);
            self.s.reauthorize(now);
        }
        if self.app.snapshot_retry_at.is_some_and(|t| t <= now) {
            self.app.snapshot_retry_at = None;
            self.s.handle_snapshot_failed();
        }
        if let Some(due) = self.user.next_op_ms.filter(|t| *t <= now) {
            // An open model (as wrk2): the next op is due a draw after this one was
            // *intended*, however late it ran, and its latencies count from the intended
            // time (coordinated-omission correction); a late start is counted.
            let late_ms = now - due;
            if late_ms > LATE_MS {
                self.rec.borrow_mut().count("late_ops", &self.spec.group, 1);
            }
            if !self.closed {
                self.workload_op(now, late_ms);
            }
            self.user.next_op_ms = self.draw_next(due, self.spec.workload.ops_per_s);
        }
        if self.user.next_query_ms.is_some_and(|t| t <= now) {
            if !self.closed {
                let j = self.user.rng.below(self.spec.workload.projects.max(1));
                let key = self.query_key(j);
                self.query(key, now);
            }
            self.user.next_query_ms = self.draw_next(now, self.spec.workload.queries_per_s);
        }
        if self.app.next_sample_ms.is_some_and(|t| t <= now) {
            self.sample_memory(now);
            self.app.next_sample_ms = Some(now + self.spec.workload.memory_sample_s * 1000);
        }
        if self.user.next_cursor_ms.is_some_and(|t| t <= now) {
            if let (Some(Link::Ws(ws)), true) = (&mut self.wire.link, self.s.connection().is_open())
            {
                let m = ClientMsg::UserAction(UserAction::CursorMove {
                    x: self.user.rng.below(1920) as f64,
                    y: self.user.rng.below(1080) as f64,
                    element_id: None,
                });
                if !actions::write(ws, Message::text(m.encode())).await {
                    self.set_link(None);
                    self.s
                        .handle_closed(self.wire.attempt, None, self.net.now_ms());
                }
            }
            self.user.next_cursor_ms = self.draw_next(now, self.spec.workload.cursors_per_s);
        }
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.user.thinking)
            .into_iter()
            .partition(|(d, _, _)| *d <= now);
        self.user.thinking = rest;
        for (_, c, received) in due {
            self.resolve_conflict(&c, received, now);
        }
        self.focus.due = self.focus_tick(now);
        self.s.handle_timeout(now);
    }

    /// Checks a frame the session is about to see, then hands it over.
    fn frame(&mut self, m: ServerMsg, now: u64) {
        match &m {
            ServerMsg::Connected(c) => {
                self.epoch = c.epoch;
                // The point this connection actually asked to resume from (the session's
                // own position may have moved since, e.g. a snapshot landed meanwhile).
                self.marks.resumed_from = self
                    .wire
                    .sent_resume
                    .filter(|r| r.epoch == c.epoch)
                    .map(|r| r.last_seq);
            }
            ServerMsg::RecentEvents(r) if r.complete => self.check_replay(
                r.from_seq,
                r.to_seq,
                &r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            ),
            _ => {}
        }
        self.s.handle_frame(m, now);
    }

    /// With a token lifetime, the tab's token is issued now and expires after it.
    fn refresh_token(&mut self) {
        let ttl_s = self.spec.workload.token_ttl_s;
        if ttl_s > 0 {
            let exp_s = self.net.epoch_now_s() + ttl_s;
            self.spec.token =
                crate::auth::token_until(&self.spec.user, &self.spec.workspace, exp_s);
        }
    }

    fn check_replay(&mut self, from: u64, to: u64, seqs: &[u64]) {
        let resumed = self.marks.resumed_from.take();
        let mut rec = self.rec.borrow_mut();
        for a in crate::check::replay_batch(&self.spec.id, resumed, from, to, seqs) {
            rec.anomaly(a);
        }
    }
}

/// Reads the three snapshots over `route`; `None` on any failure (the tab retries).
pub async fn fetch_snapshots(net: &Net, route: &str, token: &str) -> Option<Snapshots> {
    let mut parts = Vec::new();
    let mut epoch = None;
    for kind in EntityKind::ALL {
        let path = format!("/api/entities/{}", kind.plural());
        let (e, seq, entities) = net.get_pages(route, token, &path).await?;
        if epoch.is_some_and(|x| x != e) {
            return None; // the server restarted between two reads
        }
        epoch = Some(e);
        let entities: Vec<Entity> = serde_json::from_value(Value::Array(entities)).ok()?;
        parts.push((kind, seq, entities));
    }
    Some((epoch?, parts))
}
