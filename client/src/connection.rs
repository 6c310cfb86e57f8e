//! The connection state machine: connecting / open / closing / closed, plus
//! needs-auth after a 401 and failed when a give-up policy gives up. It decides when
//! to connect, on which transport, and when a connection is dead; the shell owns
//! the socket and reports what happened.
//!
//! Order of use (quinn-proto style): feed inputs with `handle_*(…, now_ms)`, then drain
//! `poll_action()` (what the shell must do) and `poll_event()` (what the app should
//! know), and wake up at `poll_timeout()` to call `handle_timeout`.

use crate::rng::Rng;
use rtsync_protocol::{ClientMsg, Heartbeat, Resume, ServerMsg, Timestamp};
use std::collections::VecDeque;

/// Which kind of connection carries the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// One WebSocket, both ways (the default).
    WebSocket,
    /// SSE for reads, HTTP POST for writes: the seed's fallback.
    Sse,
}

/// When to try again after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReconnectPolicy {
    /// Exponential backoff with full jitter (delay uniform in `0..=min(cap, base·2ⁿ)`),
    /// no attempt limit, reconnects after every unintended close (1001 included).
    Jittered {
        /// The first ceiling, ms (default 500).
        base_ms: u64,
        /// The largest ceiling, ms (default 20 000).
        cap_ms: u64,
    },
    /// The seed's WebSocketManager, kept to show what it does in a storm: 1 s·2ⁿ capped
    /// at 30 s, no jitter, gives up after 5 attempts, and does not reconnect after a
    /// 1000 or 1001 close.
    Legacy,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy::Jittered {
            base_ms: 500,
            cap_ms: 20_000,
        }
    }
}

impl std::str::FromStr for ReconnectPolicy {
    type Err = String;
    /// `jittered` (with the default base and cap) or `legacy`: how a scenario names one.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jittered" => Ok(ReconnectPolicy::default()),
            "legacy" => Ok(ReconnectPolicy::Legacy),
            _ => Err(format!(
                "unknown reconnect policy {s:?}: expected jittered or legacy"
            )),
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (0-based), or `None` to give up.
    pub fn delay_ms(&self, attempt: u32, rng: &mut Rng) -> Option<u64> {
        match *self {
            ReconnectPolicy::Jittered { base_ms, cap_ms } => {
                let ceiling = base_ms.saturating_mul(1u64 << attempt.min(32)).min(cap_ms);
                Some(rng.below(ceiling + 1))
            }
            ReconnectPolicy::Legacy if attempt >= 5 => None,
            ReconnectPolicy::Legacy => Some((1000u64 << attempt).min(30_000)),
        }
    }

    fn reconnects_after(&self, code: Option<u16>) -> bool {
        match self {
            ReconnectPolicy::Jittered { .. } => true,
            ReconnectPolicy::Legacy => !matches!(code, Some(1000 | 1001)),
        }
    }
}

/// Every knob of the connection, with the seed's values where it has them.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// When to reconnect (default: jittered, 500 ms doubling to 20 s).
    pub reconnect: ReconnectPolicy,
    /// A connect that has not opened by then is abandoned and counts as a failure
    /// (turmoil: connects to a crashed host hang forever).
    /// Default 10 s.
    pub connect_timeout_ms: u64,
    /// How often the client pings (`HEARTBEAT`) an open WebSocket; seed: 30 s.
    pub ping_interval_ms: u64,
    /// No frame at all for this long after a ping: the connection is half-open
    /// (default 10 s).
    pub pong_timeout_ms: u64,
    /// SSE cannot ping: no event or keep-alive comment for this long means dead
    /// (default 75 s, the server's heartbeat timeout).
    pub sse_idle_timeout_ms: u64,
    /// After this many consecutive failed WebSocket attempts, fall back to SSE
    /// (default 3; 0 = never).
    pub sse_fallback_after: u32,
    /// On SSE, try the WebSocket again after this long (default 60 s).
    pub ws_retry_after_ms: u64,
    /// The transport of the first attempt (default WebSocket).
    pub start_transport: Transport,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            reconnect: ReconnectPolicy::default(),
            connect_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            pong_timeout_ms: 10_000,
            sse_idle_timeout_ms: 75_000,
            sse_fallback_after: 3,
            ws_retry_after_ms: 60_000,
            start_transport: Transport::WebSocket,
        }
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// A connect attempt is out; waiting for `handle_open` or a failure.
    Connecting,
    /// Open: frames flow, heartbeats and idle checks run.
    Open,
    /// The app closed it; waiting for `handle_closed`.
    Closing,
    /// No socket: waiting for the reconnect time, for `go_online`, or for good
    /// (after the app's close, or a close the legacy policy does not retry).
    Closed,
    /// The server refused the token (401): no retry until new credentials.
    NeedsAuth,
    /// The reconnect policy gave up (legacy policy only).
    Failed,
}

/// Why a connect attempt failed, as the shell saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// 401: the token was refused. No retry until `reauthorize`.
    Unauthorized,
    /// 503/429 with `Retry-After`: the server asks us to wait at least this long.
    Refused {
        /// The server's `Retry-After`, ms: the next attempt waits at least this long.
        retry_after_ms: u64,
    },
    /// Refused connection, reset, timeout, DNS … anything else.
    Network,
}

/// Numbers each connect attempt. The shell reports every outcome with the attempt it
/// belongs to, so a late report about an abandoned socket cannot be mistaken for news
/// about the current one.
pub type Attempt = u64;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a connection; report its outcome with `handle_open` or
    /// `handle_connect_failed`, quoting `attempt`.
    Connect {
        /// WebSocket or SSE.
        transport: Transport,
        /// Where to resume the stream from; `None`: no position yet.
        resume: Option<Resume>,
        /// This attempt's number.
        attempt: Attempt,
    },
    /// Send this frame on the open socket (heartbeats and their answers).
    Send(ClientMsg),
    /// Close (or abandon) the socket of `attempt` with this code, then report it with
    /// `handle_closed(attempt, …)`.
    Close {
        /// The close code to send.
        code: u16,
        /// The socket to close.
        attempt: Attempt,
    },
}

/// What the app may want to know.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnEvent {
    /// A connection opened.
    Opened {
        /// On which transport.
        transport: Transport,
        /// When, ms.
        at_ms: u64,
    },
    /// An open connection was lost, or the tab went offline while open or connecting.
    /// A failed connect attempt is not a loss.
    Lost {
        /// The close code, if a close frame came.
        code: Option<u16>,
        /// When, ms.
        at_ms: u64,
    },
    /// The token was refused (401) or expired (4001): call `reauthorize` with a new one.
    NeedsAuth,
    /// The reconnect policy gave up (legacy policy only).
    GaveUp,
}

/// Counters for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// Connect attempts.
    pub attempts: u64,
    /// Attempts that opened.
    pub opens: u64,
    /// Open connections lost (offline included).
    pub losses: u64,
    /// Open connections given up as half-open (no pong, SSE idle, or an overdue ack).
    pub half_open_detected: u64,
    /// Switches from WebSocket to SSE.
    pub sse_fallbacks: u64,
}

/// One tab's connection as a sans-IO state machine: it says when to connect, send a
/// heartbeat or close, and the shell does it and reports back.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnectionConfig,
    rng: Rng,
    state: ConnState,
    transport: Transport,
    online: bool,
    /// Consecutive failures since the last open.
    failures: u32,
    ws_failures: u32,
    /// Connect timeout while connecting; reconnect time while closed.
    deadline_ms: Option<u64>,
    ping_due_ms: Option<u64>,
    pong_deadline_ms: Option<u64>,
    last_rx_ms: u64,
    sse_since_ms: Option<u64>,
    resume: Option<Resume>,
    /// The current (or last) connect attempt.
    attempt: Attempt,
    actions: VecDeque<Action>,
    events: VecDeque<ConnEvent>,
    /// Counters for reports.
    pub stats: ConnStats,
}

impl Connection {
    /// Closed and online: `start` makes the first attempt. `rng` draws the jitter.
    pub fn new(cfg: ConnectionConfig, rng: Rng) -> Self {
        Connection {
            transport: cfg.start_transport,
            cfg,
            rng,
            state: ConnState::Closed,
            online: true,
            failures: 0,
            ws_failures: 0,
            deadline_ms: None,
            ping_due_ms: None,
            pong_deadline_ms: None,
            last_rx_ms: 0,
            sse_since_ms: None,
            resume: None,
            attempt: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: ConnStats::default(),
        }
    }

    // ---- getters ----

    /// Where the connection stands.
    pub fn state(&self) -> ConnState {
        self.state
    }
    /// The transport of the current (or next) attempt.
    pub fn transport(&self) -> Transport {
        self.transport
    }
    /// Open: frames can be sent.
    pub fn is_open(&self) -> bool {
        self.state == ConnState::Open
    }
    /// False between `go_offline` and `go_online` (the browser's offline state).
    pub fn is_online(&self) -> bool {
        self.online
    }

    // ---- inputs ----

    /// Where a reconnect resumes from; the session keeps it current.
    pub fn set_resume(&mut self, resume: Option<Resume>) {
        self.resume = resume;
    }

    /// Makes the first connect attempt (if online and closed).
    pub fn start(&mut self, now_ms: u64) {
        if self.online && matches!(self.state, ConnState::Closed) {
            self.connect(now_ms);
        }
    }

    /// The number of the current (or last) connect attempt.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// Attempt `attempt` opened (ignored if it is not the current one).
    pub fn handle_open(&mut self, attempt: Attempt, now_ms: u64) {
        if self.state != ConnState::Connecting || attempt != self.attempt {
            return;
        }
        self.state = ConnState::Open;
        self.failures = 0;
        if self.transport == Transport::WebSocket {
            self.ws_failures = 0;
        }
        self.deadline_ms = None;
        self.last_rx_ms = now_ms;
        self.pong_deadline_ms = None;
        self.ping_due_ms =
            (self.transport == Transport::WebSocket).then_some(now_ms + self.cfg.ping_interval_ms);
        self.stats.opens += 1;
        self.events.push_back(ConnEvent::Opened {
            transport: self.transport,
            at_ms: now_ms,
        });
    }

    /// Attempt `attempt` failed before opening: back off, fall back to SSE after
    /// enough WebSocket failures, or wait for auth.
    pub fn handle_connect_failed(&mut self, attempt: Attempt, err: ConnectError, now_ms: u64) {
        if self.state != ConnState::Connecting || attempt != self.attempt {
            return;
        }
        match err {
            ConnectError::Unauthorized => self.needs_auth(),
            ConnectError::Refused { retry_after_ms } => self.fail(now_ms, retry_after_ms),
            ConnectError::Network => self.fail(now_ms, 0),
        }
    }

    /// The socket closed (`code` from the close frame, `None` for a reset or EOF).
    pub fn handle_closed(&mut self, attempt: Attempt, code: Option<u16>, now_ms: u64) {
        if attempt != self.attempt {
            return; // about a socket already abandoned
        }
        match self.state {
            ConnState::Closing => {
                self.state = ConnState::Closed;
                self.deadline_ms = None;
            }
            ConnState::Open | ConnState::Connecting
                if code == Some(rtsync_protocol::close::TOKEN_EXPIRED) =>
            {
                // Reconnecting with the same token would only be refused (401): wait
                // for the app's fresh one (`reauthorize`).
                self.lose(now_ms, code);
                self.needs_auth();
            }
            ConnState::Open | ConnState::Connecting => self.lose(now_ms, code),
            _ => {}
        }
    }

    /// The app has a fresh token (after `ConnEvent::NeedsAuth`): connect now.
    pub fn reauthorize(&mut self, now_ms: u64) {
        if self.state == ConnState::NeedsAuth {
            self.state = ConnState::Closed;
            self.failures = 0;
            if self.online {
                self.connect(now_ms);
            }
        }
    }

    fn needs_auth(&mut self) {
        self.clear_timers();
        self.state = ConnState::NeedsAuth;
        self.events.push_back(ConnEvent::NeedsAuth);
    }

    /// A frame arrived: the connection is alive. A `HEARTBEAT` queues its
    /// `HEARTBEAT_ACK` as an `Action::Send`.
    pub fn handle_frame(&mut self, msg: &ServerMsg, now_ms: u64) {
        self.last_rx_ms = now_ms;
        self.pong_deadline_ms = None;
        if let ServerMsg::Heartbeat(_) = msg {
            let ack = ClientMsg::HeartbeatAck(Heartbeat {
                timestamp: Timestamp(now_ms),
            });
            self.actions.push_back(Action::Send(ack));
        }
    }

    /// Any sign of life without a frame (an SSE keep-alive comment).
    pub fn handle_activity(&mut self, now_ms: u64) {
        self.last_rx_ms = now_ms;
    }

    /// The device went offline: close any socket and make no attempt until `go_online`.
    pub fn go_offline(&mut self, now_ms: u64) {
        if !self.online {
            return;
        }
        self.online = false;
        if matches!(self.state, ConnState::Open | ConnState::Connecting) {
            self.actions.push_back(Action::Close {
                code: 1000,
                attempt: self.attempt,
            });
            self.events.push_back(ConnEvent::Lost {
                code: None,
                at_ms: now_ms,
            });
            self.stats.losses += 1;
        }
        if !matches!(self.state, ConnState::NeedsAuth | ConnState::Failed) {
            self.state = ConnState::Closed;
        }
        self.clear_timers();
    }

    /// The device is back online: connect now, with the backoff reset.
    pub fn go_online(&mut self, now_ms: u64) {
        if self.online {
            return;
        }
        self.online = true;
        self.failures = 0;
        if self.state == ConnState::Closed {
            self.connect(now_ms);
        }
    }

    /// The app closes on purpose: no reconnect.
    pub fn close(&mut self) {
        if matches!(self.state, ConnState::Open | ConnState::Connecting) {
            self.actions.push_back(Action::Close {
                code: 1000,
                attempt: self.attempt,
            });
            self.state = ConnState::Closing;
        } else {
            self.state = ConnState::Closed;
        }
        self.clear_timers();
    }

    /// Something above (an unacknowledged op past its timeout) suspects the
    /// connection is half-open: treat it as lost and reconnect.
    pub fn suspect(&mut self, now_ms: u64) {
        if self.state == ConnState::Open {
            self.stats.half_open_detected += 1;
            self.actions.push_back(Action::Close {
                code: 4000,
                attempt: self.attempt,
            });
            self.lose(now_ms, None);
        }
    }

    /// Time passed `poll_timeout`: abandon a slow connect, reconnect after a backoff,
    /// send a heartbeat, give up a silent connection, or retry the WebSocket from SSE.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.state {
            ConnState::Connecting if self.deadline_ms.is_some_and(|d| now_ms >= d) => {
                self.actions.push_back(Action::Close {
                    code: 1000,
                    attempt: self.attempt,
                });
                self.fail(now_ms, 0);
            }
            ConnState::Closed if self.online && self.deadline_ms.is_some_and(|d| now_ms >= d) => {
                self.connect(now_ms);
            }
            ConnState::Open => self.check_open(now_ms),
            _ => {}
        }
    }

    fn check_open(&mut self, now_ms: u64) {
        if self.pong_deadline_ms.is_some_and(|d| now_ms >= d)
            || (self.transport == Transport::Sse
                && now_ms.saturating_sub(self.last_rx_ms) >= self.cfg.sse_idle_timeout_ms)
        {
            self.suspect(now_ms);
            return;
        }
        if self.transport == Transport::Sse
            && self
                .sse_since_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.cfg.ws_retry_after_ms)
        {
            // Try the WebSocket again; the resume makes the switch lossless.
            self.actions.push_back(Action::Close {
                code: 1000,
                attempt: self.attempt,
            });
            self.transport = Transport::WebSocket;
            self.sse_since_ms = None;
            self.ws_failures = 0;
            self.connect(now_ms);
            return;
        }
        if self.ping_due_ms.is_some_and(|d| now_ms >= d) {
            self.actions
                .push_back(Action::Send(ClientMsg::Heartbeat(Heartbeat {
                    timestamp: Timestamp(now_ms),
                })));
            self.ping_due_ms = Some(now_ms + self.cfg.ping_interval_ms);
            if self.pong_deadline_ms.is_none() {
                self.pong_deadline_ms = Some(now_ms + self.cfg.pong_timeout_ms);
            }
        }
    }

    // ---- outputs ----

    /// The next thing the shell must do, in order; `None` when there is nothing.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing the app should know, in order.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            ConnState::Connecting => self.deadline_ms,
            ConnState::Closed if self.online => self.deadline_ms,
            ConnState::Open => {
                let sse_idle = (self.transport == Transport::Sse)
                    .then(|| self.last_rx_ms + self.cfg.sse_idle_timeout_ms);
                let ws_retry = self.sse_since_ms.map(|t| t + self.cfg.ws_retry_after_ms);
                [self.ping_due_ms, self.pong_deadline_ms, sse_idle, ws_retry]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        }
    }

    // ---- internals ----

    fn connect(&mut self, now_ms: u64) {
        self.state = ConnState::Connecting;
        self.deadline_ms = Some(now_ms + self.cfg.connect_timeout_ms);
        self.stats.attempts += 1;
        self.attempt += 1;
        self.actions.push_back(Action::Connect {
            attempt: self.attempt,
            transport: self.transport,
            resume: self.resume,
        });
    }

    fn lose(&mut self, now_ms: u64, code: Option<u16>) {
        let was_open = self.state == ConnState::Open;
        if was_open {
            self.stats.losses += 1;
            self.events.push_back(ConnEvent::Lost {
                code,
                at_ms: now_ms,
            });
        }
        if !self.cfg.reconnect.reconnects_after(code) {
            self.state = ConnState::Closed;
            self.clear_timers();
            return;
        }
        if was_open {
            self.failures = 0;
        }
        self.fail(now_ms, 0);
    }

    fn fail(&mut self, now_ms: u64, at_least_ms: u64) {
        self.clear_timers();
        if self.transport == Transport::WebSocket && self.state == ConnState::Connecting {
            self.ws_failures += 1;
            if self.cfg.sse_fallback_after > 0 && self.ws_failures >= self.cfg.sse_fallback_after {
                self.transport = Transport::Sse;
                self.sse_since_ms = Some(now_ms);
                self.stats.sse_fallbacks += 1;
            }
        }
        let attempt = self.failures;
        self.failures += 1;
        match self.cfg.reconnect.delay_ms(attempt, &mut self.rng) {
            None => {
                self.state = ConnState::Failed;
                self.events.push_back(ConnEvent::GaveUp);
            }
            Some(delay) => {
                self.state = ConnState::Closed;
                self.deadline_ms = Some(now_ms + delay.max(at_least_ms));
            }
        }
    }

    fn clear_timers(&mut self) {
        self.deadline_ms = None;
        self.ping_due_ms = None;
        self.pong_deadline_ms = None;
    }
}

#[cfg(test)]
mod tests;
