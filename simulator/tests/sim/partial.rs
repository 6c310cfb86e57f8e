//! A deliberately partial server, as a new user would first write one (the small
//! Node.js + `ws` server): it checks the token, sends `CONNECTED`, answers a mutation
//! with an `ACK` and fans it out with a seq, answers `HEARTBEAT`. Everything else is
//! `ERROR UNKNOWN_TYPE`; no HTTP endpoint but `/ws` (404), no resume, no presence, no
//! idempotency or versions (every write applies). The conformance tests run against it.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

const EPOCH: u64 = 1_700_000_000_000;

#[derive(Default)]
struct Room {
    seq: u64,
    conns: BTreeMap<u64, UnboundedSender<String>>,
}

type Rooms = Arc<Mutex<BTreeMap<String, Room>>>;

/// Starts it on its own thread and runtime; its address.
pub fn start() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let rooms = Rooms::default();
            for id in 1.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(connection(tcp, id, rooms.clone()));
            }
        });
    });
    addr
}

fn query(uri: &str, key: &str) -> Option<String> {
    let q = uri.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

async fn connection(mut tcp: tokio::net::TcpStream, id: u64, rooms: Rooms) {
    let mut head = [0u8; 2048];
    let n = tcp.peek(&mut head).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]).to_lowercase();
    if !head.contains("upgrade: websocket") {
        // Read what was peeked first: a socket closed with unread bytes sends a reset,
        // which could reach the client before the 404.
        let mut request = vec![0u8; n];
        let _ = tcp.read_exact(&mut request).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        let _ = tcp.shutdown().await;
        return;
    }
    let who: Arc<Mutex<Option<(String, String, String)>>> = Arc::default();
    let seen = who.clone();
    // tungstenite's callback type: its error is an HTTP response, however large.
    #[allow(clippy::result_large_err)]
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let uri = req.uri().to_string();
        // A real server over real TCP: the wall clock is its clock.
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = query(&uri, "token").unwrap_or_default();
        match rtsync_protocol::auth::verify(&token, rtsync_simulator::auth::SECRET, now_s) {
            Ok(c) => {
                let session = query(&uri, "sessionId").unwrap_or_else(|| format!("s{id}"));
                *seen.lock().unwrap() = Some((c.sub, c.ws, session));
                Ok(resp)
            }
            Err(_) => {
                let mut r = ErrorResponse::new(Some("unauthorized".into()));
                *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
                Err(r)
            }
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
        return;
    };
    let Some((user, workspace, session)) = who.lock().unwrap().clone() else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let head_seq = {
        let mut rooms = rooms.lock().unwrap();
        let room = rooms.entry(workspace.clone()).or_default();
        room.conns.insert(id, tx.clone());
        room.seq
    };
    let connected = json!({"type": "CONNECTED", "payload": {
        "userId": user, "sessionId": session, "connectionId": id, "workspaceId": workspace,
        "epoch": EPOCH, "seq": head_seq, "heartbeatMs": 30000,
        "serverTime": "2026-12-04T00:00:00.000Z"}});
    let _ = tx.send(connected.to_string());
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let answer = match v["type"].as_str() {
            Some("HEARTBEAT") => json!({"type": "HEARTBEAT_ACK", "payload": {"timestamp": 0}}),
            Some("REALTIME_EVENT")
                if v["payload"]["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("TASK_")) =>
            {
                write(&rooms, &workspace, id, &user, &session, &v["payload"])
            }
            _ => {
                json!({"type": "ERROR", "payload": {"code": "UNKNOWN_TYPE", "message": "not supported"}})
            }
        };
        let _ = tx.send(answer.to_string());
    }
    if let Some(room) = rooms.lock().unwrap().get_mut(&workspace) {
        room.conns.remove(&id);
    }
}

/// Applies any write (no versions, no idempotency), fans it out, returns the ACK.
fn write(
    rooms: &Rooms,
    workspace: &str,
    from: u64,
    user: &str,
    session: &str,
    ev: &Value,
) -> Value {
    let p = &ev["payload"];
    let (op, entity_id) = (p["opId"].clone(), p["id"].clone());
    let version = ev["version"].as_u64().unwrap_or(0) + 1;
    let mut entity = p["changes"].as_object().cloned().unwrap_or_default();
    entity.insert("id".into(), entity_id.clone());
    entity.insert("entity".into(), json!("TASK"));
    entity.insert("version".into(), json!(version));
    let mut rooms = rooms.lock().unwrap();
    let room = rooms.entry(workspace.to_owned()).or_default();
    room.seq += 1;
    let seq = room.seq;
    let event = json!({"type": "REALTIME_EVENT", "seq": seq, "payload": {
        "id": format!("{EPOCH}:{seq}"), "type": ev["type"], "payload": entity,
        "userId": user, "sessionId": session, "timestamp": "2026-12-04T00:00:00.000Z",
        "version": version}});
    for (id, tx) in &room.conns {
        if *id != from {
            let _ = tx.send(event.to_string());
        }
    }
    json!({"type": "ACK", "payload": {"opId": op, "entity": "TASK", "entityId": entity_id,
        "version": version, "seq": seq, "epoch": EPOCH}})
}
