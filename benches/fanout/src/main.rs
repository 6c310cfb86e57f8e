//! `fanout`: the load generator of the side-by-side benchmark (`benches/fanout/run`).
//!
//! N WebSocket clients in rooms of R (one workspace each), each updating its own task
//! at a fixed rate; every update is fanned out to the room's R − 1 others. Open model:
//! each update is sent at its *intended* time and carries it (`sentAtUs`), and each
//! receiver counts latency from that time — a generator or server that falls behind is
//! charged for the wait (coordinated omission corrected). The generator reports its own
//! CPU share, so a saturated generator is visible rather than mistaken for the server.
//! It speaks only the protocol subset both servers implement: connect with a token,
//! `CONNECTED`, mutations, `ACK`, `REALTIME_EVENT`. Prints one JSON line.
//!
//! `--idle-s` instead connects the clients, holds them idle and reports the server's
//! resident memory per connection (`--server-pid`).

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rtsync_protocol::auth::{Claims, mint};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

#[derive(Parser, Debug)]
#[command(about = "Open-model WebSocket fan-out load generator (benches/fanout)")]
struct Args {
    /// host:port of a server speaking docs/protocol.md's basic subset; several,
    /// comma-separated (the nodes of a cluster): client i connects to the (i mod n)th.
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Clients per workspace: each update reaches room − 1 others.
    #[arg(long, default_value_t = 10)]
    room: usize,
    /// Updates per second per client.
    #[arg(long, default_value_t = 1.0)]
    rate_per_client: f64,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Deliveries of updates intended in the first seconds are not counted.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    #[arg(long, default_value = "fanout-bench-secret")]
    jwt_secret: String,
    /// The server's process, for its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connect, stay idle this long, report memory per connection, and exit.
    #[arg(long)]
    idle_s: Option<u64>,
    /// host:port of the cluster's Redis: each room's owner is read from its lease, and
    /// latency is also reported by relay hops per delivery (0: sender and receiver on
    /// the owner; 1: one of them relayed; 2: both).
    #[arg(long)]
    redis: Option<String>,
}

type Ws = WebSocketStream<TcpStream>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.clients == 0 || a.room < 2 || a.rate_per_client <= 0.0 || a.duration_s <= a.warmup_s {
        bail!("need clients > 0, room >= 2, rate_per_client > 0, duration_s > warmup_s");
    }
    let t0 = Instant::now();
    let rss_before = a.server_pid.and_then(rss_bytes);
    let mut clients = Vec::with_capacity(a.clients);
    // In waves, so the connects themselves stay within any server's admission burst.
    for wave in (0..a.clients).collect::<Vec<_>>().chunks(100) {
        let connects = wave.iter().map(|&i| connect(&a, i));
        for c in futures_util::future::join_all(connects).await {
            clients.push(c?);
        }
    }
    if let Some(idle) = a.idle_s {
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let after = a.server_pid.and_then(rss_bytes);
        let per = match (rss_before, after) {
            (Some(b), Some(x)) => Some(x.saturating_sub(b) / a.clients as u64),
            _ => None,
        };
        println!(
            "{}",
            json!({"clients": a.clients, "rss_before_bytes": rss_before,
                   "rss_after_bytes": after, "bytes_per_connection": per})
        );
        return Ok(());
    }
    // Every client creates its task (version 1) before the clock starts.
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(update(i, 1, 0, 0, true))).await?;
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        let want = format!("\"opId\":\"g{i}:1\"");
        loop {
            let m = ws
                .next()
                .await
                .context("closed before the create's ACK")??;
            if let Message::Text(t) = m
                && t.starts_with(r#"{"type":"ACK""#)
                && t.contains(&want)
            {
                break;
            }
        }
    }
    // Which node each room's owner is (every room is open now: its creates were ACKed).
    let owners = match &a.redis {
        Some(addr) => Some(room_owners(addr, a.clients.div_ceil(a.room)).await?),
        None => None,
    };
    let targets: Vec<String> = a.target.split(',').map(str::to_owned).collect();
    // Per client: is it on its room's owner?
    if let Some(stranger) = owners.iter().flatten().find(|o| !targets.contains(o)) {
        // Every delivery would count as relayed twice: say so rather than mislead.
        bail!(
            "a room's owner {stranger:?} is none of --target (nodes must advertise those addresses)"
        );
    }
    let on_owner: Option<Vec<bool>> = owners.as_ref().map(|o| {
        (0..a.clients)
            .map(|i| targets[i % targets.len()] == o[i / a.room])
            .collect()
    });
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(a.duration_s);
    let counted_from_us = (start - t0 + Duration::from_secs(a.warmup_s)).as_micros() as u64;
    let cpu_before = cpu_ticks();
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for (i, ws) in clients.into_iter().enumerate() {
        let (mut tx, mut rx) = ws.split();
        let period = Duration::from_secs_f64(1.0 / a.rate_per_client);
        // Spread the clients' phases over one period.
        let phase = period.mul_f64(i as f64 / a.clients as f64);
        writers.push(tokio::spawn(async move {
            let mut k = 1u64;
            loop {
                let intended = start + phase + period.mul_f64((k - 1) as f64);
                if intended >= end {
                    return Ok::<u64, anyhow::Error>(k - 1);
                }
                tokio::time::sleep_until(intended.into()).await;
                let sent_us = (intended - t0).as_micros() as u64;
                tx.send(Message::text(update(i, k + 1, k, sent_us, false)))
                    .await?;
                k += 1;
            }
        }));
        let drain_until = end + Duration::from_secs(2);
        let on_owner = on_owner.clone();
        readers.push(tokio::spawn(async move {
            // [all, 0 hops, 1 hop, 2 hops]; the split ones grow as needed (empty without
            // --redis), so a thousand readers do not hold four full count arrays each.
            let mut h: [Histogram<u64>; 4] = histograms()?;
            loop {
                let m = tokio::select! {
                    m = rx.next() => m,
                    () = tokio::time::sleep_until(drain_until.into()) => break,
                };
                let Some(Ok(Message::Text(t))) = m else { break };
                if let Some(sent) = sent_at_us(&t)
                    && sent >= counted_from_us
                {
                    let now_us = t0.elapsed().as_micros() as u64;
                    let us = now_us.saturating_sub(sent).max(1);
                    h[0].saturating_record(us);
                    if let Some(on) = &on_owner
                        && let Some(&from_on) = sender(&t).and_then(|f| on.get(f))
                    {
                        let hops = usize::from(!on[i]) + usize::from(!from_on);
                        h[1 + hops].saturating_record(us);
                    }
                }
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut sent = 0;
    for w in writers {
        sent += w.await??;
    }
    let mut hs = histograms()?;
    for r in readers {
        for (sum, h) in hs.iter_mut().zip(r.await??) {
            sum.add(h)?;
        }
    }
    let [all, hops @ ..] = hs;
    let wall = end.saturating_duration_since(start) + Duration::from_secs(2);
    let cpu = cpu_ticks()
        .zip(cpu_before)
        .map(|(a, b)| (a - b) as f64 / ticks_per_s() / wall.as_secs_f64());
    let measured_s = (a.duration_s - a.warmup_s) as f64;
    let offered = a.clients as f64 * a.rate_per_client * (a.room - 1) as f64;
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({
            "clients": a.clients, "room": a.room, "rate_per_client": a.rate_per_client,
            "updates_sent": sent,
            "offered_deliveries_per_s": offered,
            "deliveries_per_s": (all.len() as f64 / measured_s).round(),
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
            "max_ms": all.max() as f64 / 1000.0,
            "generator_cpu": cpu,
            "by_relay_hops": owners.map(|_| {
                hops.iter().enumerate().map(|(n, h)| (n.to_string(), json!({
                    "deliveries_per_s": (h.len() as f64 / measured_s).round(),
                    "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
                    "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
                }))).collect::<serde_json::Map<_, _>>()
            }),
        })
    );
    Ok(())
}

/// All deliveries (bounded: 1 µs to 60 s), then one per relay-hop count (auto-resizing).
fn histograms() -> anyhow::Result<[Histogram<u64>; 4]> {
    let all = Histogram::new_with_bounds(1, 60_000_000, 3)?;
    let split = || Histogram::new(3);
    Ok([all, split()?, split()?, split()?])
}

/// Each room's owner node (`host:port`, as the nodes advertise themselves), from its
/// lease in Redis (`rtsync:{w<r>}:lease` = `token|node`, docs/cluster.md). A Redis
/// without a password, as `benches/cluster/run` starts it.
async fn room_owners(redis: &str, rooms: usize) -> anyhow::Result<Vec<String>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tcp = TcpStream::connect(redis)
        .await
        .with_context(|| format!("connect to Redis at {redis}"))?;
    let mut conn = BufReader::new(tcp);
    let mut owners = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let key = format!("rtsync:{{w{r}}}:lease");
        let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        conn.get_mut().write_all(cmd.as_bytes()).await?;
        // A bulk string: `$<len>\r\n<value>\r\n`, or `$-1\r\n` for no key.
        let mut head = String::new();
        conn.read_line(&mut head).await?;
        let value = match head.trim_end().strip_prefix('$').map(str::parse::<i64>) {
            Some(Ok(n)) if n >= 0 => {
                let mut line = String::new();
                conn.read_line(&mut line).await?;
                line.trim_end().to_owned()
            }
            _ => bail!("room w{r}: no lease in Redis ({head:?}); is --redis the cluster's?"),
        };
        let (_, node) = value
            .split_once('|')
            .with_context(|| format!("room w{r}: lease {value:?} is not token|node"))?;
        owners.push(node.to_owned());
    }
    Ok(owners)
}

/// The client whose update an event carries: its task is `t<i>`.
fn sender(text: &str) -> Option<usize> {
    number_after(text, "\"id\":\"t")
}

/// The decimal number right after the first `key` in `text`.
fn number_after<T: std::str::FromStr>(text: &str, key: &str) -> Option<T> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Client `i`: user `u{i}`, session `s{i}`, workspace `w{i / room}`; waits for `CONNECTED`.
async fn connect(a: &Args, i: usize) -> anyhow::Result<Ws> {
    let claims = Claims {
        sub: format!("u{i}"),
        ws: format!("w{}", i / a.room),
        exp: u64::MAX / 2,
    };
    let token = mint(&claims, a.jwt_secret.as_bytes());
    let targets: Vec<&str> = a.target.split(',').collect();
    let target = targets[i % targets.len()];
    let tcp = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    // Our own sends must not wait on Nagle either.
    tcp.set_nodelay(true)?;
    let url = format!("ws://{target}/ws?token={token}&sessionId=s{i}");
    let (mut ws, _) = client_async(url, tcp).await.context("upgrade")?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.starts_with(r#"{"type":"CONNECTED""#) => Ok(ws),
        other => bail!("client {i}: expected CONNECTED, got {other:?}"),
    }
}

/// Client `i`'s op `n` on its own task at version `base` (a create when `create`).
fn update(i: usize, n: u64, base: u64, sent_us: u64, create: bool) -> String {
    let kind = if create {
        "TASK_CREATED"
    } else {
        "TASK_UPDATED"
    };
    json!({"type": "REALTIME_EVENT", "payload": {
        "type": kind, "version": base,
        "payload": {"opId": format!("g{i}:{n}"), "id": format!("t{i}"),
                    "changes": {"sentAtUs": sent_us}}}})
    .to_string()
}

/// The intended send time an event carries (both servers copy the field into it).
fn sent_at_us(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"type":"REALTIME_EVENT""#) {
        return None;
    }
    number_after(text, "\"sentAtUs\":")
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// This process's user + system CPU time, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_s() -> f64 {
    100.0 // USER_HZ on Linux
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_intended_time_from_either_servers_event() {
        let rtsync = r#"{"type":"REALTIME_EVENT","seq":7,"payload":{"id":"E:7","type":"TASK_UPDATED","payload":{"id":"t1","entity":"TASK","version":3,"sentAtUs":123456}}}"#;
        assert_eq!(sent_at_us(rtsync), Some(123_456));
        assert_eq!(sender(rtsync), Some(1));
        assert_eq!(
            sent_at_us(r#"{"type":"ACK","payload":{"sentAtUs":1}}"#),
            None
        );
        let u = update(3, 2, 1, 99, false);
        assert!(
            u.contains(r#""opId":"g3:2""#) && u.contains(r#""sentAtUs":99"#),
            "{u}"
        );
    }
}
