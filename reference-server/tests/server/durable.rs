//! A durable server on real files: acknowledged writes survive a restart in the same
//! epoch; a torn tail is cut; damage in the middle refuses the start, naming the file
//! and the byte, unless accepted (then a new epoch).

use crate::support::*;
use rtsync_protocol::{EventType, ServerMsg};
use rtsync_server::storage::Durability;
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
