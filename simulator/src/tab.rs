//! A virtual tab: the shell around one `rtsync_client::session::Session`. It owns the
//! simulated sockets (WebSocket or SSE + POST over turmoil), carries out the session's
//! actions, runs the workload (Poisson ops on Zipf-chosen entities), resolves conflicts
//! like a user would, and records what happens.

use crate::check::Anomaly;
use crate::glue::{self, ConnectFail, Sse, SseRead, Ws, now_ms};
use crate::record::{OpRecord, Outcome, Recorder, TabFinal};
use crate::scenario::Workload;
use crate::storage;
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rtsync_client::cache::{CacheConfig, Filter, Lookup, QueryCache};
use rtsync_client::conflict::{ConflictChoice, resolve};
use rtsync_client::connection::{ConnectError, Transport};
use rtsync_client::crosstab::Bus;
use rtsync_client::memory::MemoryManager;
use rtsync_client::rng::Rng;
use rtsync_client::session::{Action, Note, Session, SessionConfig, SyncState};
use rtsync_client::virtual_list::{ListGeometry, window};
use rtsync_protocol::sync::CrossTabType;
use rtsync_protocol::{
    ClientMsg, ConflictDetected, CrossTabMessage, Entity, EntityKind, EventType, ServerMsg,
    Timestamp, UserAction,
};
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::collections::BTreeSet;
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
    /// The workload stops: the liveness phase begins.
    StopWorkload,
    /// Report final state and exit.
    Finish,
}

/// One device's BroadcastChannel, shared by its tabs, with a task that delivers.
#[derive(Debug)]
pub struct DeviceBus {
    pub bus: Bus,
    pub inboxes: std::collections::BTreeMap<String, mpsc::UnboundedSender<CrossTabMessage>>,
    pub wake: Rc<Notify>,
}

/// Delivers a device's cross-tab messages when they fall due.
pub async fn run_device_bus(dev: Rc<RefCell<DeviceBus>>) {
    let wake = dev.borrow().wake.clone();
    loop {
        let now = now_ms();
        let due: Vec<(String, CrossTabMessage)> =
            std::iter::from_fn(|| dev.borrow_mut().bus.poll(now)).collect();
        for (to, msg) in due {
            if let Some(tx) = dev.borrow().inboxes.get(&to) {
                let _ = tx.send(msg);
            }
        }
        let next = dev.borrow().bus.poll_timeout();
        match next {
            Some(t) => {
                let wait = Duration::from_millis(t.saturating_sub(now_ms()).max(1));
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

enum Link {
    Ws(Box<Ws>),
    Sse(Box<Sse>),
}

enum Incoming {
    Frame(ServerMsg),
    Activity,
    Closed(Option<u16>),
}

impl Link {
    async fn next(&mut self) -> Incoming {
        match self {
            Link::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                        Ok(m) => return Incoming::Frame(m),
                        Err(_) => return Incoming::Activity,
                    },
                    Some(Ok(Message::Close(c))) => {
                        return Incoming::Closed(c.map(|c| u16::from(c.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Incoming::Closed(None),
                }
            },
            Link::Sse(s) => match s.next().await {
                SseRead::Frame(m) => Incoming::Frame(m),
                SseRead::Activity => Incoming::Activity,
                SseRead::Ended => Incoming::Closed(None),
            },
        }
    }
}

/// An epoch and, per entity kind, its seq watermark and entities.
pub type Snapshots = (u64, Vec<(EntityKind, u64, Vec<Entity>)>);

enum Io {
    Post(Option<ServerMsg>),
    Query(Vec<String>, Option<Value>),
    Snapshot(Option<Snapshots>),
}

struct Tab {
    spec: TabSpec,
    rec: Rc<RefCell<Recorder>>,
    device: Option<Rc<RefCell<DeviceBus>>>,
    zipf: Rc<Vec<f64>>,
    rng: Rng,
    s: Session,
    epoch: u64,
    link: Option<Link>,
    connecting: Option<LocalBoxFuture<'static, Result<Link, ConnectFail>>>,
    io_tx: mpsc::UnboundedSender<Io>,
    snapshot_retry_at: Option<u64>,
    /// Simulated storage: what the tab last persisted (its queue and position).
    stored_queue: Option<String>,
    presence: BTreeSet<String>,
    lost_at: Option<u64>,
    reopened_at: Option<u64>,
    drain_from: Option<u64>,
    /// Conflicts waiting for the user's think time: (due, conflict, received_at).
    thinking: Vec<(u64, Box<ConflictDetected>, u64)>,
    /// Resolving op → when its conflict arrived.
    resolving: std::collections::BTreeMap<String, u64>,
    next_op_ms: Option<u64>,
    next_cursor_ms: Option<u64>,
    /// The seq a resume asked to continue from, to check the replay.
    resumed_from: Option<u64>,
    /// The connect attempt `connecting` or `link` belongs to.
    attempt: u64,
    /// When the tab started, until its first sync (start-up time).
    starting_since: Option<u64>,
    cache: QueryCache,
    memory: MemoryManager,
    next_query_ms: Option<u64>,
    next_sample_ms: Option<u64>,
    scroll_px: u64,
    list_rows_max: u64,
    stalled: bool,
    closed: bool,
    /// A reset (corrupted storage) is being recovered since this time.
    recovering_since: Option<u64>,
}

pub async fn run_tab(
    spec: TabSpec,
    rec: Rc<RefCell<Recorder>>,
    device: Option<Rc<RefCell<DeviceBus>>>,
    zipf: Rc<Vec<f64>>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    mut bus_rx: mpsc::UnboundedReceiver<CrossTabMessage>,
) {
    let (io_tx, mut io_rx) = mpsc::unbounded_channel();
    let mut rng = Rng::new(spec.seed);
    let s = Session::new(&spec.user, &spec.id, spec.session.clone(), rng.fork(1));
    let mut t = Tab {
        rec,
        device,
        zipf,
        rng,
        s,
        epoch: 0,
        link: None,
        connecting: None,
        io_tx,
        snapshot_retry_at: None,
        stored_queue: None,
        presence: BTreeSet::new(),
        lost_at: None,
        reopened_at: None,
        drain_from: None,
        thinking: Vec::new(),
        resolving: Default::default(),
        next_op_ms: None,
        next_cursor_ms: None,
        resumed_from: None,
        attempt: 0,
        starting_since: None,
        cache: QueryCache::new(CacheConfig {
            stale_time_ms: spec.workload.stale_time_ms,
            ..CacheConfig::default()
        }),
        memory: MemoryManager::new(spec.workload.memory_pressure_bytes),
        next_query_ms: None,
        next_sample_ms: None,
        scroll_px: 0,
        list_rows_max: 0,
        stalled: false,
        closed: false,
        recovering_since: None,
        spec,
    };
    let now = now_ms();
    t.next_op_ms = t.draw_next(now, t.spec.workload.ops_per_s);
    t.next_cursor_ms = t.draw_next(now, t.spec.workload.cursors_per_s);
    t.next_query_ms = t.draw_next(now, t.spec.workload.queries_per_s);
    t.next_sample_ms =
        (t.spec.workload.memory_sample_s > 0).then(|| now + t.spec.workload.memory_sample_s * 1000);
    t.starting_since = Some(now);
    let home = t.query_key(0);
    t.cache.subscribe(&home, now);
    t.s.start(now);
    // One timer, re-armed only when the wake-up time changes (a new timer per loop turn
    // was a measurable share of a large run).
    let sleep = tokio::time::sleep(Duration::from_millis(1));
    tokio::pin!(sleep);
    let mut armed_for: Option<u64> = None;
    loop {
        t.drive().await;
        let wake = t.wake_at().unwrap_or(now_ms() + 3_600_000);
        if armed_for != Some(wake) {
            armed_for = Some(wake);
            let wait = Duration::from_millis(wake.saturating_sub(now_ms()).max(1));
            sleep.as_mut().reset(tokio::time::Instant::now() + wait);
        }
        tokio::select! {
            biased;
            Some(cmd) = cmds.recv() => {
                let now = now_ms();
                match cmd {
                    Command::Offline => t.s.go_offline(now),
                    Command::Online => {
                        if !t.s.connection().is_online() {
                            t.drain_from = Some(now);
                        }
                        t.s.go_online(now);
                    }
                    Command::StopWorkload => {
                        t.next_op_ms = None;
                        t.next_cursor_ms = None;
                        t.next_query_ms = None;
                    }
                    Command::Reload { corrupt, old_schema } => t.reload(corrupt, old_schema, now),
                    Command::Close if !t.closed => {
                        t.closed = true;
                        t.s.close(now);
                        if let Some(dev) = &t.device {
                            dev.borrow_mut().bus.leave(&t.spec.id);
                        }
                    }
                    Command::Open if t.closed => {
                        t.closed = false;
                        if let Some(dev) = &t.device {
                            dev.borrow_mut().bus.join(&t.spec.id);
                        }
                        t.reload(false, false, now);
                    }
                    Command::Close | Command::Open => {}
                    Command::Stall(on) => t.stalled = on,
                    Command::Finish => {
                        t.finish();
                        return;
                    }
                }
            }
            r = async { t.connecting.as_mut().expect("guarded").await }, if t.connecting.is_some() => {
                t.connecting = None;
                let now = now_ms();
                match r {
                    Ok(link) => {
                        t.set_link(Some(link));
                        t.s.handle_open(t.attempt, now);
                    }
                    Err(e) => {
                        t.rec.borrow_mut().count("connect_failures", &t.spec.group, 1);
                        let err = match e {
                            ConnectFail::Unauthorized => ConnectError::Unauthorized,
                            ConnectFail::Refused { retry_after_ms } => ConnectError::Refused { retry_after_ms },
                            ConnectFail::Network => ConnectError::Network,
                        };
                        t.s.handle_connect_failed(t.attempt, err, now);
                    }
                }
            }
            inc = async { t.link.as_mut().expect("guarded").next().await }, if t.link.is_some() && !t.stalled => {
                let now = now_ms();
                let mut next = Some(inc);
                // Take every frame that is already here before going round the select
                // again: one wake-up per burst, not per frame.
                while let Some(inc) = next.take() {
                    match inc {
                        Incoming::Frame(m) => t.frame(m, now),
                        Incoming::Activity => t.s.handle_activity(now),
                        Incoming::Closed(code) => {
                            t.set_link(None);
                            t.s.handle_closed(t.attempt, code, now);
                        }
                    }
                    next = t.link.as_mut().and_then(|l| l.next().now_or_never());
                }
            }
            Some(io) = io_rx.recv() => {
                let now = now_ms();
                match io {
                    Io::Post(Some(m)) => t.s.handle_post_answer(m, now),
                    // A lost POST: the op stays queued; the ack timeout replaces the connection.
                    Io::Post(None) => {}
                    Io::Snapshot(Some((epoch, parts))) => {
                        t.epoch = epoch;
                        t.s.handle_snapshot(epoch, parts, now);
                    }
                    Io::Snapshot(None) => t.snapshot_retry_at = Some(now + 500),
                    Io::Query(key, Some(d)) => {
                        t.cache.resolve(&key, d, now);
                        t.rec.borrow_mut().count("query_fetches", &t.spec.group, 1);
                    }
                    Io::Query(key, None) => t.cache.fail(&key),
                }
            }
            Some(msg) = bus_rx.recv() => {
                let now = now_ms();
                if let Some(at) = msg.payload.get("appliedAt").and_then(Value::as_u64) {
                    t.rec.borrow_mut().sample("cross_tab_ms", &t.spec.group, now, now.saturating_sub(at));
                }
            }
            () = &mut sleep => {
                armed_for = None;
                t.timers(now_ms()).await;
            }
        }
    }
}

impl Tab {
    fn draw_next(&mut self, now: u64, rate_per_s: f64) -> Option<u64> {
        if rate_per_s <= 0.0 {
            return None;
        }
        // Exponential inter-arrival (Poisson process).
        let u = self.rng.unit().max(1e-12);
        Some(now + (-u.ln() / rate_per_s * 1000.0).round().max(1.0) as u64)
    }

    fn wake_at(&self) -> Option<u64> {
        [
            self.s.poll_timeout(),
            self.next_op_ms,
            self.next_cursor_ms,
            self.next_query_ms,
            self.next_sample_ms,
            self.snapshot_retry_at,
            self.thinking.iter().map(|(due, _, _)| *due).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn timers(&mut self, now: u64) {
        if self.snapshot_retry_at.is_some_and(|t| t <= now) {
            self.snapshot_retry_at = None;
            self.s.handle_snapshot_failed();
        }
        if self.next_op_ms.is_some_and(|t| t <= now) {
            if !self.closed {
                self.workload_op(now);
            }
            self.next_op_ms = self.draw_next(now, self.spec.workload.ops_per_s);
        }
        if self.next_query_ms.is_some_and(|t| t <= now) {
            if !self.closed {
                let j = self.rng.below(self.spec.workload.projects.max(1));
                let key = self.query_key(j);
                self.query(key, now);
            }
            self.next_query_ms = self.draw_next(now, self.spec.workload.queries_per_s);
        }
        if self.next_sample_ms.is_some_and(|t| t <= now) {
            self.sample_memory(now);
            self.next_sample_ms = Some(now + self.spec.workload.memory_sample_s * 1000);
        }
        if self.next_cursor_ms.is_some_and(|t| t <= now) {
            if let (Some(Link::Ws(ws)), true) = (&mut self.link, self.s.connection().is_open()) {
                let m = ClientMsg::UserAction(UserAction::CursorMove {
                    x: self.rng.below(1920) as f64,
                    y: self.rng.below(1080) as f64,
                    element_id: None,
                });
                let _ = ws.send(Message::text(m.encode())).await;
            }
            self.next_cursor_ms = self.draw_next(now, self.spec.workload.cursors_per_s);
        }
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.thinking)
            .into_iter()
            .partition(|(d, _, _)| *d <= now);
        self.thinking = rest;
        for (_, c, received) in due {
            self.resolve_conflict(&c, received, now);
        }
        self.s.handle_timeout(now);
    }

    fn key(&mut self) -> String {
        let u = self.rng.unit();
        let k = self
            .zipf
            .partition_point(|c| *c < u)
            .min(self.zipf.len().saturating_sub(1));
        format!("{}-t{k}", self.spec.workspace)
    }

    fn workload_op(&mut self, now: u64) {
        let w = &self.spec.workload;
        let total = w.create + w.update + w.status + w.delete;
        let (create, update, status) = (w.create, w.update, w.status);
        let id = self.key();
        let exists = self.s.view(EntityKind::Task, &id).is_some();
        let pick = self.rng.unit() * total;
        let n = self.rng.below(1_000_000);
        let (kind, changes) = if !exists || pick < create {
            if exists {
                (
                    EventType::TaskUpdated,
                    json!({"title": format!("title {n}")}),
                )
            } else {
                (
                    EventType::TaskCreated,
                    json!({"title": format!("task {n}"), "status": "todo", "priority": n % 5, "projectId": format!("p{}", n % self.spec.workload.projects.max(1))}),
                )
            }
        } else if pick < create + update {
            (
                EventType::TaskUpdated,
                json!({"title": format!("title {n}"), "priority": n % 5}),
            )
        } else if pick < create + update + status {
            let status = ["todo", "doing", "done"][(n % 3) as usize];
            (EventType::TaskStatusChanged, json!({ "status": status }))
        } else {
            (EventType::TaskDeleted, json!({}))
        };
        self.enqueue(
            kind,
            &id,
            changes.as_object().cloned().unwrap_or_default(),
            now,
        );
    }

    fn enqueue(
        &mut self,
        kind: EventType,
        id: &str,
        changes: Map<String, Value>,
        now: u64,
    ) -> Option<String> {
        let entity = kind.entity_kind()?;
        let dropped_before = self.s.outbox().stats.dropped_silently;
        // optimistic_apply_us is CPU time: measured with the wall clock, reported in the
        // measured section only (never in the deterministic one).
        let wall = std::time::Instant::now();
        let result = self.s.mutate(kind, id, changes, None, vec![], now);
        let _ = self.s.view(entity, id);
        let apply_us = wall.elapsed().as_micros() as u64;
        self.rec.borrow_mut().measured_apply_us.push(apply_us);
        match result {
            Ok(op_id) => {
                let dropped = self.s.outbox().stats.dropped_silently - dropped_before;
                self.rec
                    .borrow_mut()
                    .timeline_add("queued_ops", now, 1 - dropped as i64);
                let n = op_id
                    .rsplit_once(':')
                    .and_then(|(_, n)| n.parse().ok())
                    .unwrap_or(0);
                let mut rec = self.rec.borrow_mut();
                rec.count("ops_enqueued", &self.spec.group, 1);
                rec.ops.insert(
                    op_id.clone(),
                    OpRecord {
                        client: self.spec.id.clone(),
                        n,
                        workspace: self.spec.workspace.clone(),
                        kind: entity,
                        entity_id: id.to_owned(),
                        enqueued_ms: now,
                        first_sent_ms: None,
                        outcome: Outcome::Pending,
                        answered_ms: None,
                    },
                );
                Some(op_id)
            }
            Err(_) => {
                // Refused loudly (queue full): the app knows; nothing is lost silently.
                self.rec
                    .borrow_mut()
                    .count("ops_refused_full", &self.spec.group, 1);
                None
            }
        }
    }

    fn resolve_conflict(&mut self, c: &ConflictDetected, received: u64, now: u64) {
        let keep = self.rng.chance(self.spec.workload.keep_local_p);
        let choice = if keep {
            ConflictChoice::KeepLocal
        } else {
            ConflictChoice::TakeRemote
        };
        match resolve(c, choice) {
            Some(r) => {
                let kind = match r.kind {
                    EntityKind::Task => EventType::TaskUpdated,
                    EntityKind::Project => EventType::ProjectUpdated,
                    EntityKind::Note => EventType::NoteUpdated,
                };
                if let Some(op) = self.enqueue(kind, &r.entity_id, r.changes, now) {
                    self.resolving.insert(op, received);
                }
            }
            None => self.rec.borrow_mut().sample(
                "conflict_resolution_ms",
                &self.spec.group,
                now,
                now.saturating_sub(received),
            ),
        }
    }

    /// Checks a frame the session is about to see, then hands it over.
    fn frame(&mut self, m: ServerMsg, now: u64) {
        match &m {
            ServerMsg::Connected(c) => {
                self.epoch = c.epoch;
                self.resumed_from = self
                    .s
                    .seq()
                    .resume_point()
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

    fn check_replay(&mut self, from: u64, to: u64, seqs: &[u64]) {
        let resumed = self.resumed_from.take();
        let mut rec = self.rec.borrow_mut();
        for a in crate::check::replay_batch(&self.spec.id, resumed, from, to, seqs) {
            rec.anomaly(a);
        }
    }

    /// Carries out the session's actions and records its notes.
    async fn drive(&mut self) {
        loop {
            let mut acted = false;
            while let Some(a) = self.s.poll_action() {
                acted = true;
                self.act(a).await;
            }
            while let Some(n) = self.s.poll_note() {
                acted = true;
                self.note(n);
            }
            if !acted {
                break;
            }
        }
        if let Some(from) = self.drain_from
            && self.s.outbox().is_empty()
            && self.s.connection().is_open()
        {
            let now = now_ms();
            self.rec
                .borrow_mut()
                .sample("offline_drain_ms", &self.spec.group, now, now - from);
            self.drain_from = None;
        }
    }

    fn mark_sent(&self, m: &ClientMsg) {
        if let ClientMsg::RealtimeEvent(ev) = m
            && let Some(op) = ev.payload.get("opId").and_then(Value::as_str)
            && let Some(r) = self.rec.borrow_mut().ops.get_mut(op)
        {
            r.first_sent_ms.get_or_insert(now_ms());
        }
    }

    async fn act(&mut self, a: Action) {
        let now = now_ms();
        match a {
            Action::Connect {
                transport,
                resume,
                attempt,
            } => {
                self.rec.borrow_mut().timeline_add(
                    &format!("connect_attempts_per_s.{}", self.spec.group),
                    now,
                    1,
                );
                self.set_link(None);
                self.attempt = attempt;
                let server = "server";
                let (token, tab, sse) = (
                    self.spec.token.clone(),
                    self.spec.id.clone(),
                    transport == Transport::Sse,
                );
                let query = match resume {
                    Some(r) if !sse => format!(
                        "token={token}&sessionId={tab}&epoch={}&lastSeq={}",
                        r.epoch, r.last_seq
                    ),
                    _ => format!("token={token}&sessionId={tab}"),
                };
                let last_event_id =
                    resume.map(|r| rtsync_protocol::sse::event_id(r.epoch, r.last_seq));
                self.connecting = Some(
                    async move {
                        if sse {
                            glue::sse_connect(
                                server,
                                &format!("/api/events/subscribe?{query}"),
                                last_event_id,
                            )
                            .await
                            .map(|s| Link::Sse(Box::new(s)))
                        } else {
                            glue::ws_connect(server, &query)
                                .await
                                .map(|w| Link::Ws(Box::new(w)))
                        }
                    }
                    .boxed_local(),
                );
            }
            Action::Send(m) => {
                self.mark_sent(&m);
                if let Some(Link::Ws(ws)) = &mut self.link
                    && ws.send(Message::text(m.encode())).await.is_err()
                {
                    self.set_link(None);
                    self.s.handle_closed(self.attempt, None, now);
                }
            }
            Action::Post(m) => {
                self.mark_sent(&m);
                let (tx, token, tab) = (
                    self.io_tx.clone(),
                    self.spec.token.clone(),
                    self.spec.id.clone(),
                );
                tokio::task::spawn_local(async move {
                    let path = format!("/api/events?sessionId={tab}");
                    let headers = [
                        ("authorization", format!("Bearer {token}")),
                        ("content-type", "application/json".to_owned()),
                    ];
                    let answer = glue::http("server", "POST", &path, &headers, Some(m.encode()))
                        .await
                        .ok()
                        .and_then(|(_, body)| {
                            ServerMsg::decode(std::str::from_utf8(&body).ok()?).ok()
                        });
                    let _ = tx.send(Io::Post(answer));
                });
            }
            Action::Close { code, attempt } => {
                // Only the current socket is still there to close.
                if attempt == self.attempt {
                    if let Some(Link::Ws(ws)) = &mut self.link {
                        let _ = ws.close(None).await;
                    }
                    self.set_link(None);
                    self.connecting = None;
                }
                self.s.handle_closed(attempt, Some(code), now);
            }
            Action::FetchSnapshot => {
                let (tx, token) = (self.io_tx.clone(), self.spec.token.clone());
                tokio::task::spawn_local(async move {
                    let _ = tx.send(Io::Snapshot(fetch_snapshots(&token).await));
                });
            }
            Action::PersistQueue => {
                self.stored_queue = serde_json::to_string(&self.s.sync_state()).ok()
            }
        }
    }

    fn note(&mut self, n: Note) {
        let g = self.spec.group.clone();
        let now = now_ms();
        let mut rec = self.rec.borrow_mut();
        match n {
            Note::Opened { at_ms, .. } => {
                rec.count("connections_opened", &g, 1);
                // refetchOnReconnect: observed queries are marked stale; the next read refetches.
                self.cache.on_reconnect();
                if let Some(lost) = self.lost_at.take() {
                    rec.sample("reconnect_ms", &g, at_ms, at_ms - lost);
                    self.reopened_at = Some(at_ms);
                }
            }
            Note::Lost { at_ms, .. } => {
                rec.count("connection_losses", &g, 1);
                self.lost_at.get_or_insert(at_ms);
            }
            Note::Synced { by_snapshot, at_ms } => {
                if let Some(start) = self.starting_since.take() {
                    rec.sample("startup_sync_ms", &g, at_ms, at_ms - start);
                }
                if by_snapshot {
                    rec.count("resyncs_by_snapshot", &g, 1);
                    if let Some(since) = self.recovering_since.take() {
                        rec.sample("recovery_ms", &g, at_ms, at_ms - since);
                    }
                }
                if let Some(open) = self.reopened_at.take() {
                    rec.sample("resync_ms", &g, at_ms, at_ms - open);
                }
            }
            Note::Applied { seq, event } => {
                rec.count("deliveries", &g, 1);
                let id = event
                    .payload
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !(id.starts_with(self.spec.workspace.as_str())
                    && id[self.spec.workspace.len()..].starts_with('-'))
                {
                    rec.anomaly(Anomaly::new(
                        "cross_workspace_leaks",
                        format!(
                            "tab {} of {} received {id} from another workspace",
                            self.spec.id, self.spec.workspace
                        ),
                    ));
                }
                if let Some(op) = event.payload.get("opId").and_then(Value::as_str) {
                    rec.applied(self.epoch, op, seq);
                    if let Some(sent) = rec.ops.get(op).and_then(|o| o.first_sent_ms) {
                        let metric = if self.spec.sse {
                            "sse_delivery_ms"
                        } else {
                            "ws_delivery_ms"
                        };
                        rec.sample(metric, &g, now, now.saturating_sub(sent));
                    }
                }
                if event.payload.get("deleted") == Some(&Value::Bool(true)) {
                    let kind = event.kind.entity_kind().unwrap_or(EntityKind::Task);
                    rec.deletes_seen.insert(
                        (self.epoch, self.spec.workspace.clone(), kind, id.to_owned()),
                        event.version,
                    );
                }
                drop(rec);
                if !self.cache.is_empty()
                    && let Some(p) = event.payload.get("projectId").and_then(Value::as_str)
                {
                    let key = vec![
                        "tasks".to_owned(),
                        self.spec.workspace.clone(),
                        p.to_owned(),
                    ];
                    self.cache.invalidate(Filter::Exact(&key));
                }
                self.cross_tab(now, event.payload.get("opId").cloned());
            }
            Note::Acked { op, ack, at_ms } => {
                rec.count("ops_acked", &g, 1);
                rec.timeline_add("queued_ops", at_ms, -1);
                if let Some(r) = rec.ops.get_mut(&op.op_id) {
                    if let Some(sent) = r.first_sent_ms {
                        let v = at_ms.saturating_sub(sent);
                        r.answered_ms = Some(at_ms);
                        r.outcome = Outcome::Applied {
                            epoch: self.epoch,
                            seq: ack.seq,
                            version: ack.version,
                            fields: op.changes.clone(),
                            delete: op.kind == EventType::TaskDeleted,
                        };
                        rec.sample("ack_ms", &g, at_ms, v);
                    } else {
                        r.outcome = Outcome::Applied {
                            epoch: self.epoch,
                            seq: ack.seq,
                            version: ack.version,
                            fields: op.changes.clone(),
                            delete: op.kind == EventType::TaskDeleted,
                        };
                    }
                }
                if let Some(seq) = ack.seq {
                    rec.applied(self.epoch, &op.op_id, seq);
                    if op.kind == EventType::TaskDeleted {
                        rec.deletes_seen.insert(
                            (
                                self.epoch,
                                self.spec.workspace.clone(),
                                EntityKind::Task,
                                op.entity_id.clone(),
                            ),
                            ack.version,
                        );
                    }
                }
                if let Some(received) = self.resolving.remove(&op.op_id) {
                    rec.sample(
                        "conflict_resolution_ms",
                        &g,
                        at_ms,
                        at_ms.saturating_sub(received),
                    );
                }
            }
            Note::RolledBack { op, .. } => {
                rec.count("ops_rolled_back", &g, 1);
                rec.timeline_add("queued_ops", now, -1);
                if let Some(r) = rec.ops.get_mut(&op.op_id) {
                    r.outcome = Outcome::RolledBack;
                    r.answered_ms = Some(now);
                }
                self.resolving.remove(&op.op_id);
            }
            Note::Conflict(c) => {
                rec.count("conflicts", &g, 1);
                if let Some(seq) = c.seq {
                    // MERGE applied the fields nobody else had changed: the entity at
                    // that version is `current`, which the final state must show if it
                    // is still at that version.
                    if let Some(r) = rec.ops.get_mut(&c.op_id) {
                        r.outcome = Outcome::Applied {
                            epoch: self.epoch,
                            seq: Some(seq),
                            version: c.current.version,
                            fields: c.current.fields.clone(),
                            delete: false,
                        };
                    }
                    rec.applied(self.epoch, &c.op_id, seq);
                }
                drop(rec);
                let due = now + self.spec.workload.think_time_ms;
                self.thinking.push((due, c, now));
            }
            Note::Presence(list) => {
                self.presence = list.into_iter().map(|p| p.user_id).collect();
            }
            Note::PresenceDiff(d) => {
                for p in d.joins {
                    self.presence.insert(p.user_id);
                }
                for p in d.leaves {
                    self.presence.remove(&p.user_id);
                }
            }
            Note::Duplicate { .. }
            | Note::Ephemeral(_)
            | Note::Error(_)
            | Note::NeedsAuth
            | Note::GaveUp => {}
        }
    }

    /// Tells the device's other tabs about a change (BroadcastChannel STATE_UPDATE).
    fn cross_tab(&mut self, now: u64, op: Option<Value>) {
        let Some(dev) = &self.device else { return };
        if dev.borrow().bus.members().nth(1).is_none() {
            return; // the only tab of its device: nobody to tell
        }
        let (lo, hi) = (
            self.spec.workload.cross_tab_ms_min,
            self.spec.workload.cross_tab_ms_max,
        );
        let msg = CrossTabMessage {
            kind: CrossTabType::StateUpdate,
            payload: json!({"appliedAt": now, "opId": op}),
            source: self.spec.id.clone(),
            timestamp: Timestamp(now),
        };
        let rng = &mut self.rng;
        let mut d = dev.borrow_mut();
        let _ = d
            .bus
            .post(&self.spec.id, msg, now, |_| lo + rng.below(hi - lo + 1));
        d.wake.notify_one();
    }

    /// Replaces the socket, keeping the open-connections timeline exact (opens and
    /// closes counted where the socket itself comes and goes).
    fn set_link(&mut self, link: Option<Link>) {
        let delta = i64::from(link.is_some()) - i64::from(self.link.is_some());
        if delta != 0 {
            self.rec
                .borrow_mut()
                .timeline_add("connections_open", now_ms(), delta);
        }
        self.link = link;
    }

    fn query_key(&self, project: u64) -> Vec<String> {
        vec![
            "tasks".to_owned(),
            self.spec.workspace.clone(),
            format!("p{project}"),
        ]
    }

    /// A list query through the cache; a miss or a stale entry fetches over HTTP
    /// (deduplicated by the cache while one fetch is in flight).
    fn query(&mut self, key: Vec<String>, now: u64) {
        self.rec.borrow_mut().count("queries", &self.spec.group, 1);
        let fetch = match self.cache.query(&key, now) {
            Lookup::Fresh(_) => false,
            Lookup::Stale { fetch, .. } | Lookup::Miss { fetch } => fetch,
        };
        if !fetch {
            return;
        }
        let (tx, token, project) = (self.io_tx.clone(), self.spec.token.clone(), key[2].clone());
        tokio::task::spawn_local(async move {
            let path = format!("/api/entities/tasks?projectId={project}");
            let data = glue::get_json(&token, &path)
                .await
                .and_then(|v| v.get("entities").cloned());
            let _ = tx.send(Io::Query(key, data));
        });
    }

    /// Samples retained bytes per store; under pressure, runs the cleanup tasks. Also
    /// scrolls the virtual task list and notes how many rows it materialises.
    fn sample_memory(&mut self, now: u64) {
        let outbox: usize = self
            .s
            .outbox()
            .ops()
            .map(|o| {
                96 + o.entity_id.len()
                    + rtsync_client::value_bytes(&Value::Object(o.changes.clone()))
            })
            .sum();
        let stores = [
            ("replica", self.s.replica().bytes()),
            ("cache", self.cache.bytes()),
            ("outbox", outbox),
        ];
        let before = self.memory.current() as i64;
        let total = self.memory.sample(now, &stores) as i64;
        self.rec
            .borrow_mut()
            .timeline_add("retained_bytes", now, total - before);
        if self.memory.under_pressure() {
            // The cleanup task: the seed's removal of old, rarely hit entries, then a trim
            // of the cache to its budget (15% of retained bytes). It succeeded if the cache
            // is within budget afterwards.
            let budget = self.memory.current() * 15 / 100;
            self.cache.cleanup(now, 30_000, 2);
            self.cache.gc(now);
            self.cache.trim_to(budget);
            let within = self.cache.bytes() <= budget;
            self.memory.record_cleanup("cache", within);
        }
        let rows = self.spec.workload.list_rows;
        if rows > 0 {
            let g = ListGeometry::default();
            self.scroll_px =
                (self.scroll_px + 4_321 * u64::from(g.item_px)) % (rows * u64::from(g.item_px));
            self.list_rows_max = self
                .list_rows_max
                .max(window(&g, rows, self.scroll_px).materialised());
        }
    }

    /// Reloads the tab from its storage: the state snapshot goes through the real
    /// dehydrate/hydrate path (corrupted or old-schema on request); the queue comes from
    /// its own key. A failure resets the state and refetches: nothing queued is lost.
    fn reload(&mut self, corrupt: bool, old_schema: bool, now: u64) {
        if self.closed {
            return;
        }
        let wall = std::time::Instant::now(); // measured section only (CPU cost)
        let mut blob = if old_schema {
            storage::save_v1(&self.s, &self.spec.user, now)
        } else {
            storage::save(&self.s, &self.spec.user, now)
        };
        if corrupt {
            blob = storage::corrupt(&blob, &mut self.rng).0;
        }
        let restored = storage::load(&blob, self.stored_queue.as_deref(), now);
        let measured_us = wall.elapsed().as_micros() as u64;
        self.s.close(now);
        let mut cfg = self.spec.session.clone();
        cfg.connection.start_transport = if self.spec.sse {
            Transport::Sse
        } else {
            Transport::WebSocket
        };
        let salt = self.rng.next_u64();
        let mut fresh = Session::new(&self.spec.user, &self.spec.id, cfg, self.rng.fork(salt));
        {
            let mut rec = self.rec.borrow_mut();
            rec.count("reloads", &self.spec.group, 1);
            rec.measured_persist_us.push(measured_us);
            match restored {
                Ok(r) => {
                    if r.migrated {
                        rec.count("migrations", &self.spec.group, 1);
                    }
                    fresh.restore(r.entities, r.sync);
                }
                Err(_) => {
                    rec.count("state_resets", &self.spec.group, 1);
                    self.recovering_since = Some(now);
                    let q = storage::queue_of(self.stored_queue.as_deref());
                    fresh.restore(
                        Vec::new(),
                        SyncState {
                            epoch: None,
                            seq: 0,
                            ..q
                        },
                    );
                }
            }
        }
        // The old session's socket goes; the new one starts over.
        self.set_link(None);
        self.connecting = None;
        self.s = fresh;
        self.epoch = 0;
        self.s.start(now);
    }

    fn finish(&mut self) {
        let trend = self.memory.trend();
        {
            let mut rec = self.rec.borrow_mut();
            let c = self.cache.stats;
            let a = &mut rec.cache;
            a.queries += c.queries;
            a.hits += c.hits;
            a.fetches += c.fetches;
            a.invalidated += c.invalidated;
            a.invalidated_refetched += c.invalidated_refetched;
            a.false_positives += c.false_positives;
            rec.cache_bytes += self.cache.bytes() as u64;
            rec.retained_bytes += self.memory.current() as u64;
            let cl = self.memory.cleanup_total();
            rec.cleanups.runs += cl.runs;
            rec.cleanups.succeeded += cl.succeeded;
            if trend.samples >= 2 {
                rec.growth_bytes_per_hour.push(trend.growth_bytes_per_hour);
            }
            rec.list_rows_max = rec.list_rows_max.max(self.list_rows_max);
        }
        let t = TabFinal {
            tab: self.spec.id.clone(),
            user: self.spec.user.clone(),
            workspace: self.spec.workspace.clone(),
            open: self.s.connection().is_open() && !self.closed,
            closed: self.closed,

            settled: self.s.is_settled(),
            outbox_len: self.s.outbox().len(),
            live: self.s.replica().live().cloned().collect(),
            presence: self.presence.clone(),
            dropped_silently: self.s.outbox().stats.dropped_silently,
        };
        self.rec.borrow_mut().tabs.push(t);
    }
}

/// Reads the three snapshots; `None` on any failure (the tab retries).
pub async fn fetch_snapshots(token: &str) -> Option<Snapshots> {
    let mut parts = Vec::new();
    let mut epoch = None;
    for kind in EntityKind::ALL {
        let path = format!("/api/entities/{}", kind.plural());
        let v = glue::get_json(token, &path).await?;
        let e = v.get("epoch")?.as_u64()?;
        if epoch.is_some_and(|x| x != e) {
            return None; // the server restarted between two reads
        }
        epoch = Some(e);
        let entities: Vec<Entity> = serde_json::from_value(v.get("entities")?.clone()).ok()?;
        parts.push((kind, v.get("seq")?.as_u64()?, entities));
    }
    Some((epoch?, parts))
}
