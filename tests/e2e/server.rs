//! `reference-server` as a user runs it: `token` mints, `serve` answers real WebSocket
//! clients and HTTP, and SIGTERM closes every connection with 1001 and exits 0.

use futures_util::{SinkExt, StreamExt};
use rtsync_protocol::{ClientEvent, ClientMsg, EventType, ServerMsg};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "e2e-secret";
const WAIT: Duration = Duration::from_secs(5);

fn server_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reference-server"))
}

/// `reference-server token` for a user of `demo`.
fn token(user: &str) -> String {
    let out = server_cmd()
        .args(["token", "--jwt-secret", SECRET, "--user", user])
        .args(["--workspace", "demo"])
        .output()
        .expect("token runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A spawned server, killed when dropped: a failing test leaves no process behind.
struct Served(Child);

impl std::ops::Deref for Served {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Already reaped: std knows, and sends nothing.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on a free port with `extra` flags; returns the child and the address
/// it printed.
fn serve(extra: &[&str]) -> (Served, String) {
    let mut child = server_cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (Served(child), addr)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, user: &str, session: &str) -> Ws {
    let url = format!("ws://{addr}/ws?token={}&sessionId={session}", token(user));
    tokio_tungstenite::connect_async(url).await.expect("ws").0
}

fn create_task(op: &str, id: &str) -> Message {
    let op = ClientMsg::RealtimeEvent(ClientEvent {
        id: None,
        kind: EventType::TaskCreated,
        payload: serde_json::json!({"opId": op, "id": id, "changes": {"title": id}}),
        user_id: None,
        session_id: None,
        timestamp: None,
        version: 0,
    });
    Message::text(op.encode())
}

/// The next frame `pick` accepts (heartbeats, presence and the rest skipped), or the
/// close code when the server closes first.
async fn until<T>(ws: &mut Ws, mut pick: impl FnMut(ServerMsg) -> Option<T>) -> Result<T, u16> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                if let Some(v) = pick(ServerMsg::decode(t.as_str()).expect("frame decodes")) {
                    return Ok(v);
                }
            }
            Some(Ok(Message::Close(c))) => return Err(c.map_or(0, |c| u16::from(c.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(0),
        }
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[cfg(unix)]
#[test]
fn serve_answers_real_clients_and_sigterm_closes_them_with_1001() {
    let (mut child, addr) = serve(&["--memory"]);
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut alice = connect(&addr, "alice", "tab-a").await;
        let mut bob = connect(&addr, "bob", "tab-b").await;
        for ws in [&mut alice, &mut bob] {
            until(ws, |m| matches!(m, ServerMsg::Connected(_)).then_some(()))
                .await
                .unwrap();
        }
        let op = ClientMsg::RealtimeEvent(ClientEvent {
            id: None,
            kind: EventType::TaskCreated,
            payload: serde_json::json!({"opId": "a:1", "id": "t1", "changes": {"title": "Plan"}}),
            user_id: None,
            session_id: None,
            timestamp: None,
            version: 0,
        });
        alice.send(Message::text(op.encode())).await.unwrap();
        let ack = until(&mut alice, |m| match m {
            ServerMsg::Ack(a) => Some(a),
            _ => None,
        })
        .await
        .unwrap();
        assert_eq!((ack.op_id.as_str(), ack.seq), ("a:1", Some(1)));
        let (seq, title) = until(&mut bob, |m| match m {
            ServerMsg::RealtimeEvent { seq, event } if event.kind == EventType::TaskCreated => {
                Some((seq, event.payload["title"].clone()))
            }
            _ => None,
        })
        .await
        .unwrap();
        assert_eq!((seq, title.as_str()), (Some(1), Some("Plan")));

        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        for ws in [&mut alice, &mut bob] {
            assert_eq!(until(ws, |_| None::<()>).await, Err(1001));
        }
    });
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[test]
fn serve_refuses_to_start_without_a_secret_and_says_why() {
    let out = server_cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RTSYNC_JWT_SECRET")
        .output()
        .expect("serve runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("secret"), "{stderr}");
}

/// `kill -9` in the middle of a steady write load, then a start on the same data dir:
/// every acknowledged write is there, and a client resumes in the same epoch with
/// `complete: true`.
#[cfg(unix)]
#[test]
fn sigkill_under_load_loses_no_acknowledged_write_and_clients_resume_in_the_same_epoch() {
    let dir = crate::TempDir::new("sigkill");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // No rate limit in the way of a steady load from one connection.
    let flags = [
        "--data-dir",
        data,
        "--inbound-rate-per-s",
        "100000",
        "--inbound-burst",
        "100000",
    ];
    let (mut child, addr) = serve(&flags);
    let (epoch, acked) = rt.block_on(async {
        let mut ws = connect(&addr, "alice", "tab-a").await;
        let epoch = until(&mut ws, |m| match m {
            ServerMsg::Connected(c) => Some(c.epoch),
            _ => None,
        })
        .await
        .unwrap();
        // Ten ops in flight at a time; the kill lands while some are unanswered.
        let mut acked: Vec<(u64, String)> = Vec::new();
        let mut sent = 0;
        while sent < 10 {
            sent += 1;
            ws.send(create_task(&format!("a:{sent}"), &format!("t{sent}")))
                .await
                .unwrap();
        }
        loop {
            let got = until(&mut ws, |m| match m {
                ServerMsg::Ack(a) => Some((a.seq.unwrap(), a.entity_id)),
                _ => None,
            })
            .await;
            let Ok(ack) = got else { break };
            acked.push(ack);
            if acked.len() == 200 {
                child.kill().unwrap(); // SIGKILL
            }
            sent += 1;
            if ws
                .send(create_task(&format!("a:{sent}"), &format!("t{sent}")))
                .await
                .is_err()
            {
                break;
            }
        }
        (epoch, acked)
    });
    child.wait().unwrap();
    assert!(acked.len() >= 200, "{} acks before the kill", acked.len());

    let (mut child, addr) = serve(&flags);
    rt.block_on(async {
        let url = format!(
            "ws://{addr}/ws?token={}&sessionId=tab-b&epoch={epoch}&lastSeq=0",
            token("bob")
        );
        let mut ws = tokio_tungstenite::connect_async(url).await.expect("ws").0;
        let (again, head) = until(&mut ws, |m| match m {
            ServerMsg::Connected(c) => Some((c.epoch, c.seq)),
            _ => None,
        })
        .await
        .unwrap();
        assert_eq!(again, epoch, "the same epoch after kill -9");
        let last = acked.iter().map(|(s, _)| *s).max().unwrap();
        assert!(head >= last, "head {head} < last acknowledged seq {last}");
        let mut seen = std::collections::BTreeMap::new();
        while seen.len() < head as usize {
            let r = until(&mut ws, |m| match m {
                ServerMsg::RecentEvents(r) => Some(r),
                _ => None,
            })
            .await
            .unwrap();
            assert!(r.complete, "resume from 0 is complete");
            if r.events.is_empty() {
                break;
            }
            for e in r.events {
                seen.insert(
                    e.seq,
                    e.payload.payload["id"].as_str().unwrap_or("").to_owned(),
                );
            }
        }
        for (seq, id) in &acked {
            assert_eq!(
                seen.get(seq),
                Some(id),
                "acknowledged {id} at seq {seq} is lost"
            );
        }
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Connects with `query` after the token, retrying while a node answers 503 (the dead
/// owner's lease has not lapsed yet) or refuses the connection: a client's reconnect loop.
async fn connect_retrying(addr: &str, user: &str, query: &str) -> Ws {
    let url = format!("ws://{addr}/ws?token={}&{query}", token(user));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => return ws,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no node took the workspace over: {e}"),
        }
    }
}

fn acked(m: ServerMsg) -> Option<u64> {
    match m {
        ServerMsg::Ack(a) => a.seq,
        ServerMsg::Error(e) => panic!("{e:?}"),
        _ => None,
    }
}

fn event_of(id: &'static str) -> impl FnMut(ServerMsg) -> Option<u64> {
    move |m| match m {
        ServerMsg::RealtimeEvent { seq, event } if event.payload["id"] == id => seq,
        _ => None,
    }
}

/// Three real nodes over a real Redis: the owner is SIGKILLed mid-session and the
/// workspace moves, with every acknowledged write and the epoch; then Redis itself is
/// killed and restarted, and nothing acknowledged is lost.
#[cfg(unix)]
#[test]
fn a_three_node_cluster_survives_a_killed_owner_and_a_restarted_redis() {
    let mut redis = rtsync_server::cluster::LocalRedis::start().expect("a redis-server");
    let url = redis.url();
    let flags = [
        "--redis",
        &url,
        "--lease-ms",
        "1000",
        "--redis-timeout-ms",
        "500",
    ];
    let (mut first, a1) = serve(&flags);
    let (_second, a2) = serve(&flags);
    let (_third, a3) = serve(&flags);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let connected = |m: ServerMsg| match m {
            ServerMsg::Connected(c) => Some((c.epoch, c.seq)),
            _ => None,
        };
        let mut alice = connect(&a1, "alice", "tab-a").await;
        let (epoch, _) = until(&mut alice, connected).await.unwrap();
        let mut bob = connect(&a2, "bob", "tab-b").await;
        assert_eq!(until(&mut bob, connected).await.unwrap().0, epoch);
        let ids = ["t1", "t2", "t3", "t4", "t5"];
        let mut seqs = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            alice
                .send(create_task(&format!("a:{}", n + 1), id))
                .await
                .unwrap();
            seqs.push(until(&mut alice, acked).await.unwrap());
            assert_eq!(until(&mut bob, event_of(id)).await, Ok(seqs[n]));
        }
        // The owner dies without a word: bob's relay ends with 1012.
        first.kill().unwrap();
        first.wait().unwrap();
        assert_eq!(until(&mut bob, |_| None::<()>).await, Err(1012));
        // bob resumes on the third node once the lease lapses: same epoch, nothing missed.
        let mut bob = connect_retrying(
            &a3,
            "bob",
            &format!("sessionId=tab-b&epoch={epoch}&lastSeq={}", seqs[1]),
        )
        .await;
        assert_eq!(until(&mut bob, connected).await.unwrap(), (epoch, seqs[4]));
        let replayed = until(&mut bob, |m| match m {
            ServerMsg::RecentEvents(r) => Some(r),
            _ => None,
        })
        .await
        .unwrap();
        assert!(replayed.complete);
        assert_eq!(
            replayed.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            seqs[2..].to_vec()
        );
        // Redis crashes and comes back (append-only file, synced on every write).
        redis.kill();
        redis.restart().expect("redis restarts");
        // The next write either goes through or finds the workspace closed by the
        // failed round trip; resent after reconnecting, it is acknowledged once.
        bob.send(create_task("b:1", "t6")).await.unwrap();
        let six = match until(&mut bob, acked).await {
            Ok(seq) => seq,
            Err(code) => {
                assert!([1011, 1012].contains(&code), "closed with {code}");
                let mut again = connect_retrying(
                    &a3,
                    "bob",
                    &format!("sessionId=tab-b&epoch={epoch}&lastSeq={}", seqs[4]),
                )
                .await;
                again.send(create_task("b:1", "t6")).await.unwrap();
                until(&mut again, acked).await.unwrap()
            }
        };
        assert_eq!(six, seqs[4] + 1);
        let list = http_get(&a3, &format!("/api/entities/tasks?token={}", token("bob")));
        assert!(list.starts_with("HTTP/1.1 200"), "{list}");
        for id in ids.iter().chain(&["t6"]) {
            assert!(
                list.contains(&format!("\"id\":\"{id}\"")),
                "{id} missing: {list}"
            );
        }
    });
}
