//! The simulated cluster's Redis: a model of the commands the reference server's
//! backplane sends (`rtsync_server::cluster::redis`), served over RESP on its own
//! turmoil host, so the nodes run the same client code as against a real Redis and
//! the network between them and it can fail.
//!
//! - The model holds strings with expiry, counters and streams. Time is simulated
//!   time, so a lease lapses at a seed-determined instant.
//! - Each of the backplane's Lua scripts is recognised by its text and carried out
//!   natively, with the same effect and the same atomicity: one request at a time.
//! - The state outlives a restart of the host: Redis with `appendfsync always`.
//! - Every append Redis accepted is also recorded with its fencing token, in order and
//!   never compacted. [`Model::fencing_violations`] reads that record: a token lower
//!   than one accepted before it means a deposed owner's write got in.

use crate::net::sim_now_ms;
use rtsync_server::cluster::redis as scripts;
use rtsync_server::cluster::resp::Reply;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The port of the simulated Redis on its host `redis`.
pub const REDIS_PORT: u16 = 6379;
/// One request at most this large (a snapshot step included).
const REQUEST_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Default)]
pub struct Model {
    /// key → (value, expires at in simulated ms).
    strings: BTreeMap<String, (String, Option<u64>)>,
    /// key → entries (id, token, step).
    streams: BTreeMap<String, Vec<(u64, u64, String)>>,
    next_id: u64,
    /// stream key → the token of every accepted append, in order.
    accepted: BTreeMap<String, Vec<u64>>,
}

pub type Shared = Arc<Mutex<Model>>;

/// A fencing violation: in `stream`, token `token` was accepted after `before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub stream: String,
    pub token: u64,
    pub before: u64,
}

impl Model {
    fn get(&mut self, key: &str) -> Option<String> {
        let now = sim_now_ms();
        match self.strings.get(key) {
            Some((_, Some(at))) if *at <= now => {
                self.strings.remove(key);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    fn set(&mut self, key: &str, value: String, px: Option<u64>) {
        let at = px.map(|ms| sim_now_ms() + ms);
        self.strings.insert(key.to_owned(), (value, at));
    }

    fn xadd(&mut self, key: &str, token: u64, step: String) {
        self.next_id += 1;
        let id = self.next_id;
        self.streams
            .entry(key.to_owned())
            .or_default()
            .push((id, token, step));
        self.accepted.entry(key.to_owned()).or_default().push(token);
    }

    /// Every append accepted with a lower token than one accepted before it.
    pub fn fencing_violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for (stream, tokens) in &self.accepted {
            let mut high = 0;
            for &t in tokens {
                if t < high {
                    out.push(Violation {
                        stream: stream.clone(),
                        token: t,
                        before: high,
                    });
                }
                high = high.max(t);
            }
        }
        out
    }

    /// Carries out one command.
    fn call(&mut self, args: &[String]) -> Reply {
        let ok = || Reply::Simple("OK".into());
        let int = |b: bool| Reply::Int(i64::from(b));
        let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
        let Some(cmd) = args.first() else {
            return Reply::Error("ERR empty command".into());
        };
        match cmd.to_ascii_uppercase().as_str() {
            "PING" => Reply::Simple("PONG".into()),
            "AUTH" | "SELECT" => ok(),
            "XRANGE" => self.xrange(args),
            "EVAL" if args.len() >= 3 => {
                let n: usize = args[2].parse().unwrap_or(usize::MAX);
                if args.len() < 3 + n {
                    return Reply::Error("ERR wrong number of keys".into());
                }
                let (keys, argv) = args[3..].split_at(n);
                let key = |i: usize| keys.get(i).map_or("", String::as_str);
                let arg = |i: usize| argv.get(i).map_or("", String::as_str);
                let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
                let script = args[1].as_str();
                if script == scripts::ACQUIRE {
                    if let Some(cur) = self.get(key(0)) {
                        let owner = cur.split_once('|').map_or("", |(_, o)| o).to_owned();
                        if owner != arg(0) {
                            return Reply::Array(Some(vec![Reply::Int(0), bulk(&owner)]));
                        }
                    }
                    let t = self
                        .get(key(1))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        + 1;
                    self.set(key(1), t.to_string(), None);
                    self.set(key(0), format!("{t}|{}", arg(0)), Some(num(1)));
                    Reply::Array(Some(vec![Reply::Int(t as i64), bulk(arg(0))]))
                } else if script == scripts::LEASE_LEFT {
                    let now = sim_now_ms();
                    let held = self
                        .get(key(0))
                        .is_some_and(|cur| cur.split_once('|').map(|(_, o)| o) == Some(arg(0)));
                    match self.strings.get(key(0)) {
                        // `get` dropped it if it had lapsed: `at > now`.
                        Some((_, Some(at))) if held => Reply::Int((at - now) as i64),
                        Some(_) if held => Reply::Int(-1),
                        _ => Reply::Int(-2),
                    }
                } else if script == scripts::RENEW {
                    let mine = self.get(key(0)).as_deref() == Some(arg(0));
                    if mine {
                        self.set(key(0), arg(0).to_owned(), Some(num(1)));
                    }
                    int(mine)
                } else if script == scripts::RENEW_ALL {
                    let ms = num(0);
                    let renewed = keys
                        .iter()
                        .enumerate()
                        .map(|(i, k)| {
                            let mine = self.get(k).as_deref() == Some(arg(i + 1));
                            if mine {
                                self.set(k, arg(i + 1).to_owned(), Some(ms));
                            }
                            int(mine)
                        })
                        .collect();
                    Reply::Array(Some(renewed))
                } else if script == scripts::APPEND || script == scripts::APPEND_UNFENCED {
                    let fenced = script == scripts::APPEND;
                    if fenced && self.get(key(0)).as_deref() != Some(arg(0)) {
                        return int(false);
                    }
                    for step in argv.iter().skip(2) {
                        self.xadd(key(1), num(1), step.clone());
                    }
                    int(true)
                } else if script == scripts::REPLACE {
                    if self.get(key(0)).as_deref() != Some(arg(0)) {
                        return int(false);
                    }
                    self.streams.remove(key(1));
                    self.xadd(key(1), num(1), arg(2).to_owned());
                    int(true)
                } else if script == scripts::RELEASE {
                    let mine = self.get(key(0)).as_deref() == Some(arg(0));
                    if mine {
                        self.strings.remove(key(0));
                    }
                    int(mine)
                } else {
                    Reply::Error("ERR this model runs only the backplane's scripts".into())
                }
            }
            other => Reply::Error(format!("ERR unknown command {other:?} in the model")),
        }
    }

    /// `XRANGE key (start|- + COUNT n`, as the backplane reads a stream.
    fn xrange(&self, args: &[String]) -> Reply {
        let after = match args.get(2).map(String::as_str) {
            Some("-") | None => 0,
            Some(s) => s
                .trim_start_matches('(')
                .split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        };
        let count: usize = args
            .get(5)
            .and_then(|c| c.parse().ok())
            .unwrap_or(usize::MAX);
        let bulk = |s: String| Reply::Bulk(Some(s.into_bytes()));
        let items = self
            .streams
            .get(&args[1])
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(id, _, _)| *id > after)
                    .take(count)
                    .map(|(id, token, step)| {
                        Reply::Array(Some(vec![
                            bulk(format!("{id}-0")),
                            Reply::Array(Some(vec![
                                bulk("t".into()),
                                bulk(token.to_string()),
                                bulk("e".into()),
                                bulk(step.clone()),
                            ])),
                        ]))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Reply::Array(Some(items))
    }
}

fn encode(out: &mut Vec<u8>, r: &Reply) {
    match r {
        Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Reply::Bulk(Some(b)) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(Some(items)) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for i in items {
                encode(out, i);
            }
        }
    }
}

/// A `*N` or `$N` line's number (at most 4 KiB read for it).
async fn header<S: tokio::io::AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    line: &mut Vec<u8>,
) -> Option<usize> {
    line.clear();
    (&mut *io)
        .take(4096)
        .read_until(b'\n', line)
        .await
        .ok()
        .filter(|n| *n > 0)?;
    std::str::from_utf8(line)
        .ok()?
        .trim_end()
        .get(1..)?
        .parse()
        .ok()
}

/// Reads one request (an array of bulk strings); `None` at the end or on garbage.
async fn request<S: tokio::io::AsyncRead + Unpin>(io: &mut BufReader<S>) -> Option<Vec<String>> {
    let mut line = Vec::new();
    let n = header(io, &mut line).await?;
    let mut args = Vec::with_capacity(n.min(64));
    let mut total = 0;
    for _ in 0..n {
        let len = header(io, &mut line).await?;
        total += len;
        if total > REQUEST_BYTES_MAX {
            return None;
        }
        let mut buf = vec![0; len + 2];
        io.read_exact(&mut buf).await.ok()?;
        buf.truncate(len);
        args.push(String::from_utf8(buf).ok()?);
    }
    Some(args)
}

/// Serves the model on the host's `REDIS_PORT` until the host is stopped.
pub async fn serve(model: Shared) -> std::io::Result<()> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", REDIS_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let model = model.clone();
        tokio::spawn(async move {
            let mut io = BufReader::new(stream);
            let mut out = Vec::new();
            while let Some(args) = request(&mut io).await {
                let reply = model.lock().unwrap_or_else(|p| p.into_inner()).call(&args);
                out.clear();
                encode(&mut out, &reply);
                if io.get_mut().write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn the_scripts_fence_a_deposed_owner_and_the_record_catches_an_unfenced_one() {
        let mut m = Model::default();
        let acquire = |m: &mut Model, node: &str| {
            m.call(&s(&["EVAL", scripts::ACQUIRE, "2", "L", "F", node, "3000"]))
        };
        let first = acquire(&mut m, "a");
        assert_eq!(first.items()[0], Reply::Int(1));
        assert_eq!(acquire(&mut m, "b").items()[0], Reply::Int(0), "held by a");
        let left =
            |m: &mut Model, node: &str| m.call(&s(&["EVAL", scripts::LEASE_LEFT, "1", "L", node]));
        assert_eq!(left(&mut m, "a"), Reply::Int(3000), "a's whole lease left");
        assert_eq!(left(&mut m, "b"), Reply::Int(-2), "b holds nothing");
        let append = |m: &mut Model, script: &str, value: &str, token: &str| {
            m.call(&s(&["EVAL", script, "2", "L", "S", value, token, "[]"]))
        };
        assert_eq!(append(&mut m, scripts::APPEND, "1|a", "1"), Reply::Int(1));
        // The lease is handed over by hand (as if it lapsed): b gets token 2.
        m.strings.remove("L");
        assert_eq!(left(&mut m, "a"), Reply::Int(-2), "no lease");
        assert_eq!(acquire(&mut m, "b").items()[0], Reply::Int(2));
        assert_eq!(append(&mut m, scripts::APPEND, "2|b", "2"), Reply::Int(1));
        assert_eq!(
            append(&mut m, scripts::APPEND, "1|a", "1"),
            Reply::Int(0),
            "fenced"
        );
        assert!(m.fencing_violations().is_empty());
        // A batch of renewals: the deposed owner's refused, the owner's renewed.
        let renewed = m.call(&s(&[
            "EVAL",
            scripts::RENEW_ALL,
            "2",
            "L",
            "L",
            "3000",
            "1|a",
            "2|b",
        ]));
        assert_eq!(renewed.items(), [Reply::Int(0), Reply::Int(1)]);
        assert_eq!(
            append(&mut m, scripts::APPEND_UNFENCED, "1|a", "1"),
            Reply::Int(1)
        );
        assert_eq!(
            m.fencing_violations(),
            vec![Violation {
                stream: "S".into(),
                token: 1,
                before: 2
            }]
        );
        let r = m.call(&s(&["XRANGE", "S", "(1-0", "+", "COUNT", "10"]));
        assert_eq!(r.items().len(), 2, "entries after the first");
    }
}
