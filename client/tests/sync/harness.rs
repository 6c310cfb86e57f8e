//! Sessions wired to the real server core (`rtsync_server::core::Workspace`) through
//! in-memory queues that can drop, duplicate and delay frames. Not a mock: the server
//! side is the reference server's own domain core; only the sockets are replaced.

use rtsync_client::rng::Rng;
use rtsync_client::session::{Action, Note, Session, SessionConfig};
use rtsync_protocol::{ClientMsg, Device, EntityKind, EventType, ServerMsg, Strategy};
use rtsync_server::core::{ConnId, CoreConfig, Delivery, SessionInfo, Workspace};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// An epoch and, per kind, the seq watermark and entities: one snapshot answer.
type Snapshot = (u64, Vec<(EntityKind, u64, Vec<rtsync_protocol::Entity>)>);

pub struct Client {
    pub s: Session,
    /// What the tab last wrote to storage (its queue and stream position), as JSON.
    pub stored_queue: Option<String>,
    pub user: String,
    pub conn: Option<ConnId>,
    /// The connection's current connect attempt.
    pub attempt: u64,
    pub to_server: VecDeque<ClientMsg>,
    pub to_client: VecDeque<ServerMsg>,
    pub notes: Vec<Note>,
    /// Hold the answer to a snapshot fetch (taken when asked, as a server would) until
    /// `answer_snapshot`: the window in which a resyncing session buffers events.
    pub hold_snapshot: bool,
    held_snapshot: Option<Snapshot>,
}

pub struct Net {
    pub ws: Workspace,
    pub clients: Vec<Client>,
    pub now: u64,
    next_conn: ConnId,
    epoch: u64,
    cfg: Arc<CoreConfig>,
}

impl Net {
    pub fn new(clients: usize, session: SessionConfig, core: CoreConfig) -> Self {
        let cfg = Arc::new(core);
        let mut net = Net {
            ws: Workspace::new("w", 1, cfg.clone()),
            clients: Vec::new(),
            now: 0,
            next_conn: 0,
            epoch: 1,
            cfg,
        };
        for i in 0..clients {
            let s = Session::new(
                &format!("u{i}"),
                &format!("c{i}"),
                session.clone(),
                Rng::new(i as u64 + 1),
            );
            net.clients.push(Client {
                s,
                stored_queue: None,
                user: format!("u{i}"),
                conn: None,
                attempt: 0,
                to_server: VecDeque::new(),
                to_client: VecDeque::new(),
                notes: Vec::new(),
                hold_snapshot: false,
                held_snapshot: None,
            });
        }
        net
    }

    /// `clients` sessions with default settings, started and settled, against a core
    /// whose tasks resolve conflicts with `strategy`.
    pub fn settled(clients: usize, strategy: Strategy) -> Self {
        let core = CoreConfig {
            strategy_task: strategy,
            ..CoreConfig::default()
        };
        let mut net = Net::new(clients, SessionConfig::default(), core);
        net.start_all();
        net.settle();
        net
    }

    /// Client `i` queues a plain change now (no strategy, no dependencies) and its
    /// actions are carried out (frames queued, not delivered); returns the opId.
    pub fn mutate(&mut self, i: usize, kind: EventType, id: &str, changes: Value) -> String {
        let changes = changes.as_object().cloned().unwrap_or_default();
        let op = self.clients[i]
            .s
            .mutate(kind, id, changes, None, vec![], self.now)
            .expect("the queue takes it");
        self.pump();
        op
    }

    /// Replaces the server with a fresh one (a crash: the in-memory log and entities are
    /// gone, a new epoch begins); every connection drops.
    pub fn bounce_server(&mut self, keep: impl FnOnce(&Workspace, &mut Workspace)) {
        self.epoch += 1;
        let mut fresh = Workspace::new("w", self.epoch, self.cfg.clone());
        keep(&self.ws, &mut fresh);
        self.ws = fresh;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.conn.take().is_some() {
                c.to_server.clear();
                c.to_client.clear();
                c.s.handle_closed(c.attempt, None, self.now);
            }
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.clients.len() {
            self.clients[i].s.start(self.now);
        }
        self.pump();
    }

    fn route(&mut self, out: Vec<Delivery>) {
        for d in out {
            if let Some(c) = self.clients.iter_mut().find(|c| c.conn == Some(d.to)) {
                c.to_client
                    .push_back(ServerMsg::decode(&d.frame.text).expect("server frames decode"));
            }
        }
    }

    /// Carries out every action the sessions asked for.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.clients.len() {
                while let Some(a) = self.clients[i].s.poll_action() {
                    progressed = true;
                    self.act(i, a);
                }
                while let Some(n) = self.clients[i].s.poll_note() {
                    self.clients[i].notes.push(n);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn act(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Connect {
                resume, attempt, ..
            } => {
                self.next_conn += 1;
                let conn = self.next_conn;
                let c = &mut self.clients[i];
                c.conn = Some(conn);
                let info = SessionInfo {
                    user_id: c.user.clone(),
                    session_id: format!("tab{i}"),
                    device: Device::default(),
                };
                c.attempt = attempt;
                c.s.handle_open(attempt, now);
                let out = self.ws.connect(conn, info, resume, now);
                self.route(out);
            }
            Action::Send(m) | Action::Post(m) => self.clients[i].to_server.push_back(m),
            Action::Close { .. } => self.drop_conn(i),
            Action::PersistQueue => {
                let c = &mut self.clients[i];
                c.stored_queue = serde_json::to_string(&c.s.sync_state()).ok();
            }
            Action::FetchSnapshot => {
                let parts = EntityKind::ALL
                    .into_iter()
                    .map(|k| {
                        let s = self.ws.snapshot(k, None);
                        (k, s.seq, s.entities)
                    })
                    .collect();
                let epoch = self.ws.epoch();
                if self.clients[i].hold_snapshot {
                    self.clients[i].held_snapshot = Some((epoch, parts));
                } else {
                    self.clients[i].s.handle_snapshot(epoch, parts, now);
                }
            }
        }
    }

    /// Delivers a held snapshot answer (see `Client::hold_snapshot`).
    pub fn answer_snapshot(&mut self, i: usize) {
        if let Some((epoch, parts)) = self.clients[i].held_snapshot.take() {
            self.clients[i].s.handle_snapshot(epoch, parts, self.now);
            self.pump();
        }
    }

    /// The connection breaks: frames in flight both ways are lost.
    pub fn drop_conn(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if let Some(conn) = c.conn.take() {
            c.to_server.clear();
            c.to_client.clear();
            self.ws.disconnect(conn, now);
            c.s.handle_closed(c.attempt, None, now);
        }
    }

    /// Delivers one client→server frame; `dup` delivers it twice.
    pub fn deliver_up(&mut self, i: usize, dup: bool) {
        let Some(conn) = self.clients[i].conn else {
            return;
        };
        let Some(m) = self.clients[i].to_server.pop_front() else {
            return;
        };
        for _ in 0..(1 + usize::from(dup)) {
            let out = self.ws.handle_msg(conn, &m, self.now);
            self.route(out);
        }
    }

    /// Delivers one server→client frame; `dup` delivers it twice.
    pub fn deliver_down(&mut self, i: usize, dup: bool) {
        let Some(m) = self.clients[i].to_client.pop_front() else {
            return;
        };
        if dup {
            self.clients[i].s.handle_frame(m.clone(), self.now);
        }
        self.clients[i].s.handle_frame(m, self.now);
        self.pump();
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.clients.len() {
            if self.clients[i]
                .s
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.clients[i].s.handle_timeout(self.now);
            }
        }
        self.pump();
    }

    /// Heals everything: all online, every frame delivered, time advanced until every
    /// session is open and settled (bounded).
    pub fn settle(&mut self) {
        for i in 0..self.clients.len() {
            self.clients[i].s.go_online(self.now);
        }
        self.pump();
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while !self.clients[i].to_server.is_empty() || !self.clients[i].to_client.is_empty()
                {
                    moved = true;
                    self.deliver_up(i, false);
                    self.deliver_down(i, false);
                    self.pump();
                }
            }
            let done = self.clients.iter().all(|c| {
                c.conn.is_some()
                    && c.s.is_settled()
                    && c.to_server.is_empty()
                    && c.to_client.is_empty()
            });
            if done {
                return;
            }
            if !moved {
                self.advance(250);
            }
        }
        panic!("did not settle");
    }
}
