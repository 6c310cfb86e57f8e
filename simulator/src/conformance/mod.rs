//! `simulate conformance`: numbered cases, grouped by protocol area, run one by one
//! against any server that claims to speak rtsync, each answered PASS, FAIL (what was
//! expected, what came back, the frames exchanged) or NOT IMPLEMENTED (the server said
//! it does not support it, or the endpoint is absent) — the Autobahn testsuite's model
//! for WebSocket libraries, applied to docs/protocol.md (docs/conformance.md).
//!
//! - [`probe`] — WebSocket, SSE and HTTP over real TCP, every frame into a transcript.
//! - [`cases`] — the cases, one file per area; [`cases::all`] numbers them.
//! - [`report`] — the console summary, `conformance.json` and `conformance.html`.
//!
//! Each case has its own workspace (named after the run and the case) and its own
//! users, so cases do not see each other's writes, and is bounded in time
//! ([`CASE_BOUND`]).

pub mod cases;
pub mod probe;
pub mod report;

use probe::{Refused, Transcript, Ws};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// No case runs longer than this (presence leaves wait for a grace period).
pub const CASE_BOUND: Duration = Duration::from_secs(20);

/// A case's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Pass,
    Fail {
        expected: String,
        got: String,
    },
    /// The server answered that it does not support this (`UNKNOWN_TYPE`, a 404).
    NotImplemented {
        why: String,
    },
    /// Not run against this server, and why (a bound the server advertises is longer
    /// than a case may wait).
    Skipped {
        why: String,
    },
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail { .. } => "FAIL",
            Verdict::NotImplemented { .. } => "NOT IMPLEMENTED",
            Verdict::Skipped { .. } => "SKIPPED",
        }
    }
}

pub fn not_implemented(why: impl Into<String>) -> Verdict {
    Verdict::NotImplemented { why: why.into() }
}

/// What a case's body returns: `Ok` is a pass.
pub type Outcome = Result<(), Verdict>;
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// One numbered case.
pub struct Case {
    /// `area.n`, e.g. "3.2".
    pub id: &'static str,
    pub title: &'static str,
    /// Part of the minimum a server needs for `simulate live` (docs/conformance.md).
    pub minimum: bool,
    pub run: for<'a> fn(&'a mut Ctx) -> CaseFuture<'a>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "case {} ({})", self.id, self.title)
    }
}

impl Case {
    pub fn area(&self) -> u32 {
        self.id
            .split('.')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }
}

/// What a case talks to: the target, the secret its tokens are signed with, the case's
/// own workspace and its transcript.
pub struct Ctx {
    pub addr: String,
    secret: Vec<u8>,
    /// This case's workspace, unused by any other case or run.
    pub ws: String,
    pub log: Transcript,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the secret.
        f.debug_struct("Ctx")
            .field("addr", &self.addr)
            .field("ws", &self.ws)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// A token for `user` in this case's workspace, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        self.token_in(user, &self.ws, now_s() + 3600)
    }

    pub fn token_in(&self, user: &str, workspace: &str, exp_s: u64) -> String {
        rtsync_protocol::auth::mint(
            &rtsync_protocol::auth::Claims {
                sub: user.into(),
                ws: workspace.into(),
                exp: exp_s,
            },
            &self.secret,
        )
    }

    /// A second workspace of this case (isolation cases).
    pub fn other_ws(&self) -> String {
        format!("{}-other", self.ws)
    }

    /// A WebSocket upgrade with this query; the refusal as it came.
    pub async fn upgrade(&self, query: &str, name: &str) -> Result<Ws, Refused> {
        Ws::connect(&self.addr, query, name, &self.log).await
    }

    /// `user`'s tab `session`, connected: the socket and its `CONNECTED` payload. No
    /// `/ws` endpoint is NOT IMPLEMENTED; any other refusal, or no `CONNECTED`, fails.
    pub async fn join(&self, user: &str, session: &str) -> Result<(Ws, Value), Verdict> {
        self.join_with(user, session, "").await
    }

    /// As [`Ctx::join`], with more query parameters (`&epoch=…&lastSeq=…`).
    pub async fn join_with(
        &self,
        user: &str,
        session: &str,
        extra: &str,
    ) -> Result<(Ws, Value), Verdict> {
        let query = format!("token={}&sessionId={session}{extra}", self.token(user));
        let name = format!("ws {user}/{session}");
        let mut ws = match self.upgrade(&query, &name).await {
            Ok(ws) => ws,
            Err(Refused::Status(404)) => return Err(not_implemented("GET /ws answered 404")),
            Err(e) => {
                return Err(probe::fail(
                    format!("{name}: a WebSocket upgrade"),
                    e.to_string(),
                ));
            }
        };
        let connected = ws.frame("CONNECTED").await?;
        Ok((ws, connected["payload"].clone()))
    }

    /// One HTTP request with `token` as a bearer.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<probe::Answer, Verdict> {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(t) = token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        probe::http(&self.addr, &self.log, method, path, &headers, body).await
    }
}

/// The reference server as `simulate conformance --spawn-server` starts it: its
/// defaults, but a 1 s heartbeat and a 1 s presence grace period, so that the cases
/// that wait for them run within their bound, and nothing on disk.
pub fn reference_config() -> rtsync_server::ServerConfig {
    let mut cfg = rtsync_server::ServerConfig {
        durability: rtsync_server::storage::Durability::Memory,
        ..Default::default()
    };
    cfg.core.heartbeat_ms = 1000;
    cfg.core.presence_grace_ms = 1000;
    cfg
}

/// Seconds since the Unix epoch (conformance runs against real servers, in real time).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A mutation frame as a client sends it.
pub fn mutation(kind: &str, op: &str, id: &str, base: u64, changes: Value) -> Value {
    serde_json::json!({
        "type": "REALTIME_EVENT",
        "payload": {
            "type": kind,
            "version": base,
            "payload": {"opId": op, "id": id, "changes": changes}
        }
    })
}

/// One case's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub id: String,
    pub area: String,
    pub title: String,
    pub minimum: bool,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub elapsed_ms: u64,
    pub transcript: Vec<probe::Line>,
}

/// Which cases: `all`, `minimum`, or a comma-separated list of case ids and areas
/// ("1,3.2,7").
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Minimum,
    Ids(Vec<String>),
}

impl Selection {
    pub fn parse(s: &str) -> Result<Selection, String> {
        match s.trim() {
            "all" | "" => Ok(Selection::All),
            "minimum" | "min" => Ok(Selection::Minimum),
            list => {
                let ids: Vec<String> = list.split(',').map(|p| p.trim().to_owned()).collect();
                let known = cases::all();
                for id in &ids {
                    let exists = known
                        .iter()
                        .any(|c| c.id == id || c.area().to_string() == *id);
                    if !exists {
                        return Err(format!(
                            "no case or area {id:?} (cases are numbered area.n: `simulate conformance --list`)"
                        ));
                    }
                }
                Ok(Selection::Ids(ids))
            }
        }
    }

    pub fn contains(&self, c: &Case) -> bool {
        match self {
            Selection::All => true,
            Selection::Minimum => c.minimum,
            Selection::Ids(ids) => ids
                .iter()
                .any(|id| c.id == id || c.area().to_string() == *id),
        }
    }
}

/// Runs the selected cases one after another against `addr`, calling `done` after
/// each (progress). Each case gets a fresh workspace named from `run_tag`.
pub async fn run(
    addr: &str,
    secret: &[u8],
    run_tag: &str,
    selection: &Selection,
    mut done: impl FnMut(&CaseResult),
) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for case in cases::all().iter().filter(|c| selection.contains(c)) {
        let mut cx = Ctx {
            addr: addr.to_owned(),
            secret: secret.to_vec(),
            ws: format!("conf-{run_tag}-{}", case.id.replace('.', "-")),
            log: Transcript::new(),
        };
        let started = std::time::Instant::now(); // wall clock: real servers only
        let verdict = match tokio::time::timeout(CASE_BOUND, (case.run)(&mut cx)).await {
            Ok(Ok(())) => Verdict::Pass,
            Ok(Err(v)) => v,
            Err(_) => probe::fail(
                "a verdict",
                format!("the case ran past its bound ({} s)", CASE_BOUND.as_secs()),
            ),
        };
        let r = CaseResult {
            id: case.id.to_owned(),
            area: cases::area_name(case.area()).to_owned(),
            title: case.title.to_owned(),
            minimum: case.minimum,
            verdict,
            elapsed_ms: started.elapsed().as_millis() as u64,
            transcript: cx.log.take(),
        };
        done(&r);
        out.push(r);
    }
    out
}

/// Live mode's first look at a target: the minimum cases pass, or the message that
/// names each one missing (with what came back) and how to see the whole report.
pub async fn precheck(addr: &str, secret: &[u8]) -> Result<(), String> {
    let tag = format!("pre{:x}", now_s());
    let results = run(addr, secret, &tag, &Selection::Minimum, |_| {}).await;
    let missing: Vec<String> = results
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| {
            let detail = match &r.verdict {
                Verdict::Fail { expected, got } => format!("expected {expected}; got {got}"),
                Verdict::NotImplemented { why } | Verdict::Skipped { why } => why.clone(),
                Verdict::Pass => String::new(),
            };
            format!("  {} {} — {}: {detail}", r.id, r.verdict.label(), r.title)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{addr} does not speak the minimum of the protocol live mode needs (docs/conformance.md):\n{}\n\
         the whole report: simulate conformance --target {addr}",
        missing.join("\n")
    ))
}
