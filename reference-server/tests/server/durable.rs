//! A durable server on real files: acknowledged writes survive a restart in the same
//! epoch; a torn tail is cut; damage in the middle refuses the start, naming the file
//! and the byte, unless accepted (then a new epoch).

use crate::support::*;
use rtsync_protocol::{EventType, ServerMsg};
use rtsync_server::storage::{Durability, frame};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("rtsync-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn durable(dir: &Path, mode: Durability, accept_damage: bool) -> TestServer {
    let dir = dir.to_owned();
    TestServer::start(move |c| {
        c.durability = mode;
        c.data_dir = dir;
        c.accept_damage = accept_damage;
    })
    .await
}

/// Writes tasks t1..=tn and returns (epoch, seq) of the last ACK.
async fn write_tasks(server: &TestServer, n: u64) -> (u64, u64) {
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    let mut last = (0, 0);
    for i in 1..=n {
        ws.send(&mutation(
            EventType::TaskCreated,
            &format!("ca:{i}"),
            &format!("t{i}"),
            0,
            json!({"title": format!("task {i}")}),
        ))
        .await;
        last = ws
            .until(|m| match m {
                ServerMsg::Ack(a) => Some((a.epoch.unwrap(), a.seq.unwrap())),
                _ => None,
            })
            .await;
    }
    ws.close().await;
    last
}

async fn stop(mut server: TestServer) {
    server.shutdown();
    (&mut server.task).await.unwrap().unwrap();
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("w1.log")
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart_and_clients_resume_in_the_same_epoch() {
    for mode in [Durability::Process, Durability::Group, Durability::Fsync] {
        let dir = TempDir::new("restart");
        let server = durable(&dir.0, mode, false).await;
        let (epoch, seq) = write_tasks(&server, 5).await;
        // A reader that saw seq 2 before the restart.
        stop(server).await;

        let server = durable(&dir.0, mode, false).await;
        let (_, health) = server.http("GET", "/healthz", None, None).await;
        assert!(
            health.contains(&format!(r#""durability":"{mode}""#)),
            "{health}"
        );
        let mut back = server
            .ws_query(&format!(
                "token={}&sessionId=b&epoch={epoch}&lastSeq=2",
                token("bob", "w1")
            ))
            .await;
        assert_eq!(connected(&mut back).await, (epoch, seq), "{mode}");
        let r = back
            .until(|m| match m {
                ServerMsg::RecentEvents(r) => Some(r.clone()),
                _ => None,
            })
            .await;
        assert!(r.complete, "{mode}");
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5], "{mode}");
        // A duplicate of an op acknowledged before the restart gets its first answer.
        let mut alice = server.ws("alice", "w1", "a").await;
        connected(&mut alice).await;
        alice
            .send(&mutation(
                EventType::TaskCreated,
                "ca:5",
                "t5",
                0,
                json!({"title": "task 5"}),
            ))
            .await;
        let dup = alice
            .until(|m| match m {
                ServerMsg::Ack(a) => Some(a.seq),
                _ => None,
            })
            .await;
        assert_eq!(dup, Some(5), "{mode}: the kept answer, not a new write");
        // SSE event ids carry the workspace's epoch, kept across the restart, not the
        // new process's: a browser resuming with its Last-Event-ID continues.
        let mut sse = server.sse("carol", "w1", "c", None).await;
        let t6 = json!({"title": "task 6"});
        alice
            .send(&mutation(EventType::TaskCreated, "ca:6", "t6", 0, t6))
            .await;
        let id = loop {
            let (ev, msg) = sse.recv().await;
            if let ServerMsg::RealtimeEvent { seq: Some(6), .. } = msg {
                break ev.id;
            }
        };
        assert_eq!(id, Some(rtsync_protocol::sse::event_id(epoch, 6)), "{mode}");
        stop(server).await;
    }
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_server_starts_with_every_whole_record() {
    let dir = TempDir::new("torn");
    let server = durable(&dir.0, Durability::Fsync, false).await;
    let (epoch, seq) = write_tasks(&server, 3).await;
    stop(server).await;
    // Half of a record's header and zeros, as a crash mid-write leaves them.
    let path = log_file(&dir.0);
    let good = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0x30, 0, 0, 0, 0x11]);
    std::fs::write(&path, &bytes).unwrap();

    let server = durable(&dir.0, Durability::Fsync, false).await;
    let mut ws = server.ws("bob", "w1", "b").await;
    assert_eq!(connected(&mut ws).await, (epoch, seq));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "cut back");
    stop(server).await;
}

/// The ids of the tasks the server holds.
async fn task_ids(server: &TestServer) -> Vec<String> {
    let (status, body) = server
        .http(
            "GET",
            "/api/entities/tasks?limit=100",
            Some(&token("bob", "w1")),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids = v["entities"].as_array().unwrap().iter();
    ids.map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

/// A power loss can keep the first blocks of a write and lose the rest. Each step is
/// one entry, so a step cut anywhere is dropped whole: cut after its entity and its
/// event (format 01, one entry per record, kept those two: the task existed on the
/// server while no client had been told of it — `27-server-kill-group` seed 3).
#[tokio::test]
async fn a_step_cut_short_is_dropped_whole() {
    let dir = TempDir::new("torn-step");
    let server = durable(&dir.0, Durability::Fsync, false).await;
    let (epoch, seq) = write_tasks(&server, 3).await; // t3's step is the last entry
    stop(server).await;
    let path = log_file(&dir.0);
    let bytes = std::fs::read(&path).unwrap();
    let last = frame::scan(&bytes).entries.last().unwrap().0 as usize;
    assert!(
        bytes.len() - last > 200,
        "the last step holds its entity, event and answer"
    );
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();

    let server = durable(&dir.0, Durability::Fsync, false).await;
    let mut ws = server.ws("bob", "w1", "b").await;
    assert_eq!(
        connected(&mut ws).await,
        (epoch, seq - 1),
        "t3's event is gone"
    );
    assert_eq!(task_ids(&server).await, ["t1", "t2"], "and so is t3");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
    stop(server).await;
}

/// Logs written in format 01 (one record per entry) are read, and rewritten in 02.
#[tokio::test]
async fn a_format_01_log_is_read_and_rewritten() {
    let dir = TempDir::new("format01");
    let server = durable(&dir.0, Durability::Fsync, false).await;
    let (epoch, seq) = write_tasks(&server, 3).await;
    stop(server).await;
    let path = log_file(&dir.0);
    let bytes = std::fs::read(&path).unwrap();
    let mut old = frame::MAGIC_01.to_vec();
    for (_, step) in frame::scan(&bytes).entries {
        let records: Vec<serde_json::Value> = serde_json::from_slice(step).unwrap();
        for r in records {
            frame::encode(&serde_json::to_vec(&r).unwrap(), &mut old);
        }
    }
    std::fs::write(&path, &old).unwrap();

    let server = durable(&dir.0, Durability::Fsync, false).await;
    let mut ws = server.ws("bob", "w1", "b").await;
    assert_eq!(connected(&mut ws).await, (epoch, seq));
    assert_eq!(task_ids(&server).await, ["t1", "t2", "t3"]);
    assert_eq!(&std::fs::read(&path).unwrap()[..8], frame::MAGIC);
    stop(server).await;
}

#[tokio::test]
async fn damage_in_the_middle_refuses_the_start_unless_accepted_then_a_new_epoch() {
    let dir = TempDir::new("damage");
    let server = durable(&dir.0, Durability::Fsync, false).await;
    let (epoch, _) = write_tasks(&server, 4).await;
    stop(server).await;
    let path = log_file(&dir.0);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let mut server = durable(&dir.0, Durability::Fsync, false).await;
    let err = (&mut server.task).await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("w1.log") && err.contains("damaged at byte"),
        "{err}"
    );
    assert!(err.contains("--accept-damage"), "{err}");

    let server = durable(&dir.0, Durability::Fsync, true).await;
    let mut ws = server.ws("bob", "w1", "b").await;
    let (new_epoch, _) = connected(&mut ws).await;
    assert!(
        new_epoch > epoch,
        "continuity lost: a new epoch ({new_epoch} vs {epoch})"
    );
    stop(server).await;
}
