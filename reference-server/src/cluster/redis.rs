//! The backplane on Redis: per workspace, a lease key naming its owner node and
//! carrying a fencing token, a counter that issues the tokens, and a Stream of the
//! owner's steps (docs/cluster.md, "Redis keys").
//!
//! Every operation that depends on who owns the workspace is one Lua script, so Redis
//! checks the lease and acts in one atomic step: a deposed owner's append is refused
//! by Redis itself, whatever the deposed node believes (its clock, its pause).

use super::resp::{Conn, Reply};
use super::{BoxIo, NetHandle};
use std::io;
use std::time::Duration;

/// Where the backplane is: parsed from `redis://[:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: String,
    pub password: Option<String>,
    pub db: u32,
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            format!("{url:?}: a Redis URL starts with redis:// (TLS is not supported)")
        })?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_owned());
        let (host, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, db)) => (
                h,
                db.parse()
                    .map_err(|_| format!("{url:?}: the database must be a number"))?,
            ),
            None => (rest, 0),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let addr = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:6379")
        };
        Ok(RedisUrl { addr, password, db })
    }
}

/// Who holds a workspace's lease after an `acquire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This node: its fencing token, and the lease key's value (`token|node`) that
    /// renewals and appends must find in place.
    Mine { token: u64, value: String },
    /// Another node, at this address.
    Held { owner: String },
}

/// One entry of a workspace's stream: the fencing token of the owner that wrote it,
/// and the step (a JSON array of the core's records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub token: u64,
    pub step: String,
}

/// Takes the lease if it is free or held by this same node (a restart of it: the old
/// incarnation is gone), issuing a new token; else names the holder.
pub const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner = string.sub(cur, string.find(cur, '|', 1, true) + 1)
  if owner ~= ARGV[1] then return {0, owner} end
end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], t .. '|' .. ARGV[1], 'PX', ARGV[2])
return {t, ARGV[1]}
";

/// Extends the lease only if it is still exactly ours.
pub const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Extends each lease (`KEYS[i]`) still exactly ours (`ARGV[i + 1]`) by `ARGV[1]` ms: a
/// node's renewals in one round trip. One 1 or 0 per key, in order.
pub const RENEW_ALL: &str = r"
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

/// Leases renewed per round trip at most: a node with more sends several, so neither
/// the request nor the reply grows without bound.
pub const RENEW_BATCH: usize = 256;

/// Appends steps only if the lease is still exactly ours (the fencing check).
pub const APPEND: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], '*', 't', ARGV[2], 'e', ARGV[i])
end
return 1
";

/// The canary's append (`canary_unfenced`): no lease check. A deposed owner's late
/// write lands; the simulator's fencing check must catch it.
pub const APPEND_UNFENCED: &str = r"
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], '*', 't', ARGV[2], 'e', ARGV[i])
end
return 1
";

/// Compaction: the stream replaced by one snapshot step, only if the lease is ours.
pub const REPLACE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[2], '*', 't', ARGV[2], 'e', ARGV[3])
return 1
";

/// How long node `ARGV[1]` still holds the lease, ms (`PTTL`); -2 when it does not
/// (free, or another node's). One script, so the holder and its time are read together.
pub const LEASE_LEFT: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return -2 end
local owner = string.sub(cur, string.find(cur, '|', 1, true) + 1)
if owner ~= ARGV[1] then return -2 end
return redis.call('PTTL', KEYS[1])
";

/// Gives the lease up (a clean shutdown), only if it is still ours.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Stream entries read per `XRANGE` while a new owner replays.
const READ_PAGE: usize = 1000;
/// Connections to Redis a node has open at most; a call past it waits its turn (within
/// its timeout). Room for the flusher's (`edge::owner::FLUSH_IN_FLIGHT_MAX`) plus
/// renewals, takeovers and relays waiting on a lease; without a cap, a dead owner's
/// hundred relayed clients each opened a connection for one `PTTL` at the same moment.
const CONNECTIONS_MAX: usize = 16;
/// Idle connections kept for reuse: all of them, so a busy node does not reconnect.
const IDLE_MAX: usize = CONNECTIONS_MAX;

/// The Redis backplane of one node.
pub struct Redis {
    url: RedisUrl,
    /// The canary: appends without the fencing check.
    pub unfenced: bool,
    net: NetHandle,
    /// Each call is bounded by this: a Redis that does not answer is an error, not a hang.
    timeout: Duration,
    idle: std::sync::Mutex<Vec<Conn<BoxIo>>>,
    /// One permit per connection in use ([`CONNECTIONS_MAX`]).
    in_use: tokio::sync::Semaphore,
    /// Where each round trip's time goes (the node's `/metrics`), when set.
    pub round_trips: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("addr", &self.url.addr)
            .finish()
    }
}

fn keys(ws: &str) -> (String, String, String) {
    (
        format!("rtsync:{{{ws}}}:lease"),
        format!("rtsync:{{{ws}}}:fence"),
        format!("rtsync:{{{ws}}}:log"),
    )
}

fn unexpected(what: &str, r: &Reply) -> io::Error {
    io::Error::other(format!("Redis answered {what} with {r:?}"))
}

impl Redis {
    pub fn new(url: RedisUrl, net: NetHandle, timeout: Duration) -> Self {
        Redis {
            url,
            unfenced: false,
            net,
            timeout,
            idle: std::sync::Mutex::new(Vec::new()),
            in_use: tokio::sync::Semaphore::new(CONNECTIONS_MAX),
            round_trips: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.url.addr
    }

    async fn connect(&self) -> io::Result<Conn<BoxIo>> {
        let mut conn = Conn::new(self.net.connect(&self.url.addr).await?);
        if let Some(p) = &self.url.password {
            expect_ok(conn.call(&[b"AUTH", p.as_bytes()]).await?, "AUTH")?;
        }
        if self.url.db != 0 {
            let db = self.url.db.to_string();
            expect_ok(conn.call(&[b"SELECT", db.as_bytes()]).await?, "SELECT")?;
        }
        Ok(conn)
    }

    /// One command on an idle connection (or a new one), bounded by the timeout, which
    /// also covers waiting for a connection ([`CONNECTIONS_MAX`]). A connection that
    /// failed or timed out is dropped, never reused mid-reply.
    pub async fn call(&self, args: &[&[u8]]) -> io::Result<Reply> {
        let work = async {
            let _permit = self
                .in_use
                .acquire()
                .await
                .map_err(|_| io::Error::other("Redis client closed"))?;
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            // From here: the round trip (a new connection's connect included).
            let started = tokio::time::Instant::now();
            let observe = || {
                if let Some(h) = &self.round_trips {
                    h.observe(started.elapsed().as_secs_f64());
                }
            };
            let mut conn = match idle {
                Some(c) => c,
                None => self.connect().await.inspect_err(|_| observe())?,
            };
            let reply = conn.call(args).await;
            observe();
            Ok::<_, io::Error>((conn, reply?))
        };
        let done = match tokio::time::timeout(self.timeout, work).await {
            Ok(done) => done,
            Err(_) => {
                // Counted as the timeout, whether it ran out waiting or on the wire.
                if let Some(h) = &self.round_trips {
                    h.observe(self.timeout.as_secs_f64());
                }
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "Redis did not answer in time",
                ))
            }
        };
        let (conn, reply) = done.inspect_err(|_| {
            // One connection failed: Redis restarted or the network broke, and every idle
            // one is most likely dead too. They go, rather than fail a call each.
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        })?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(conn);
        }
        drop(idle);
        if let Reply::Error(e) = &reply {
            return Err(io::Error::other(format!("Redis: {e}")));
        }
        Ok(reply)
    }

    async fn eval(&self, script: &str, keys: &[&str], args: &[&[u8]]) -> io::Result<Reply> {
        let n = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), n.as_bytes()];
        all.extend(keys.iter().map(|k| k.as_bytes()));
        all.extend_from_slice(args);
        self.call(&all).await
    }

    pub async fn acquire(&self, ws: &str, node: &str, lease_ms: u64) -> io::Result<Lease> {
        let (lease, fence, _) = keys(ws);
        let ms = lease_ms.to_string();
        let r = self
            .eval(
                ACQUIRE,
                &[&lease, &fence],
                &[node.as_bytes(), ms.as_bytes()],
            )
            .await?;
        let (token, who) = match r.items() {
            [t, who] => (t.int(), who.text()),
            _ => (None, None),
        };
        match (token, who) {
            (Some(0), Some(owner)) => Ok(Lease::Held { owner }),
            (Some(t), Some(_)) if t > 0 => Ok(Lease::Mine {
                token: t as u64,
                value: format!("{t}|{node}"),
            }),
            _ => Err(unexpected("a lease request", &r)),
        }
    }

    /// `true`: renewed; `false`: the lease is no longer ours.
    pub async fn renew(&self, ws: &str, value: &str, lease_ms: u64) -> io::Result<bool> {
        let (lease, _, _) = keys(ws);
        let ms = lease_ms.to_string();
        self.flag(RENEW, &[&lease], &[value.as_bytes(), ms.as_bytes()])
            .await
    }

    /// Renews each `(workspace, lease value)` still ours, at most [`RENEW_BATCH`] at a
    /// time (the caller chunks): `true` per lease renewed, `false` per lease lost.
    pub async fn renew_all(&self, leases: &[(&str, &str)], lease_ms: u64) -> io::Result<Vec<bool>> {
        let keys: Vec<String> = leases.iter().map(|(ws, _)| keys(ws).0).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let ms = lease_ms.to_string();
        let mut args: Vec<&[u8]> = vec![ms.as_bytes()];
        args.extend(leases.iter().map(|(_, v)| v.as_bytes()));
        let r = self.eval(RENEW_ALL, &key_refs, &args).await?;
        let flags: Option<Vec<bool>> = r
            .items()
            .iter()
            .map(|x| match x.int() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            })
            .collect();
        match flags {
            Some(f) if f.len() == leases.len() => Ok(f),
            _ => Err(unexpected("a batch of renewals", &r)),
        }
    }

    /// How long `node` still holds `ws`'s lease, ms; `None` when it does not (the lease
    /// is free or moved). A relay whose owner is gone sleeps this long, so it routes
    /// again the moment the lease lapses rather than at its next poll.
    pub async fn lease_left(&self, ws: &str, node: &str) -> io::Result<Option<u64>> {
        let (lease, _, _) = keys(ws);
        let r = self.eval(LEASE_LEFT, &[&lease], &[node.as_bytes()]).await?;
        match r.int() {
            Some(ms) if ms >= 0 => Ok(Some(ms as u64)),
            Some(-2) => Ok(None),
            // -1 (no expiry) never happens to a lease; were it to, the lease counts as
            // held, and a relay waits out its deadline.
            Some(-1) => Ok(Some(u64::MAX)),
            _ => Err(unexpected("a lease's time left", &r)),
        }
    }

    pub async fn release(&self, ws: &str, value: &str) -> io::Result<bool> {
        let (lease, _, _) = keys(ws);
        self.flag(RELEASE, &[&lease], &[value.as_bytes()]).await
    }

    /// Appends steps in order; `false`: fenced off (the lease is no longer ours),
    /// nothing was appended.
    pub async fn append(
        &self,
        ws: &str,
        value: &str,
        token: u64,
        steps: &[String],
    ) -> io::Result<bool> {
        let (lease, _, log) = keys(ws);
        let t = token.to_string();
        let mut args: Vec<&[u8]> = vec![value.as_bytes(), t.as_bytes()];
        args.extend(steps.iter().map(|s| s.as_bytes()));
        let script = if self.unfenced {
            APPEND_UNFENCED
        } else {
            APPEND
        };
        self.flag(script, &[&lease, &log], &args).await
    }

    /// Replaces the whole stream by one step (a snapshot); `false`: fenced off.
    pub async fn replace(&self, ws: &str, value: &str, token: u64, step: &str) -> io::Result<bool> {
        let (lease, _, log) = keys(ws);
        let t = token.to_string();
        self.flag(
            REPLACE,
            &[&lease, &log],
            &[value.as_bytes(), t.as_bytes(), step.as_bytes()],
        )
        .await
    }

    async fn flag(&self, script: &str, keys: &[&str], args: &[&[u8]]) -> io::Result<bool> {
        match self.eval(script, keys, args).await? {
            Reply::Int(1) => Ok(true),
            Reply::Int(0) => Ok(false),
            r => Err(unexpected("a fenced write", &r)),
        }
    }

    /// The workspace's whole stream, oldest first, a page at a time.
    pub async fn read(&self, ws: &str) -> io::Result<Vec<StreamEntry>> {
        let (_, _, log) = keys(ws);
        let count = READ_PAGE.to_string();
        let mut out = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let r = self
                .call(&[
                    b"XRANGE",
                    log.as_bytes(),
                    from.as_bytes(),
                    b"+",
                    b"COUNT",
                    count.as_bytes(),
                ])
                .await?;
            let page = r.items();
            for item in page {
                let (id, entry) = parse_entry(item).ok_or_else(|| unexpected("XRANGE", item))?;
                from = format!("({id}");
                out.push(entry);
            }
            if page.len() < READ_PAGE {
                return Ok(out);
            }
        }
    }
}

fn expect_ok(r: Reply, what: &str) -> io::Result<()> {
    match r {
        Reply::Simple(s) if s == "OK" => Ok(()),
        r => Err(unexpected(what, &r)),
    }
}

/// `[id, [field, value, …]]` with fields `t` (token) and `e` (step).
fn parse_entry(item: &Reply) -> Option<(String, StreamEntry)> {
    let [id, fields] = item.items() else {
        return None;
    };
    let mut token = None;
    let mut step = None;
    for pair in fields.items().chunks(2) {
        match (pair[0].text().as_deref(), pair.get(1)) {
            (Some("t"), Some(v)) => token = v.text().and_then(|t| t.parse().ok()),
            (Some("e"), Some(v)) => step = v.text(),
            _ => {}
        }
    }
    Some((
        id.text()?,
        StreamEntry {
            token: token?,
            step: step?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        let u: RedisUrl = "redis://127.0.0.1:7001".parse().unwrap();
        assert_eq!(
            (u.addr.as_str(), u.password, u.db),
            ("127.0.0.1:7001", None, 0)
        );
        let u: RedisUrl = "redis://:s3cret@cache/2".parse().unwrap();
        assert_eq!(
            (u.addr.as_str(), u.password.as_deref(), u.db),
            ("cache:6379", Some("s3cret"), 2)
        );
        assert!(
            "rediss://x"
                .parse::<RedisUrl>()
                .unwrap_err()
                .contains("redis://")
        );
        assert!(
            "redis:///0"
                .parse::<RedisUrl>()
                .unwrap_err()
                .contains("no host")
        );
        assert!(
            "redis://h/x"
                .parse::<RedisUrl>()
                .unwrap_err()
                .contains("number")
        );
    }
}
