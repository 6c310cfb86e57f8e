use crate::support::*;
use rtsync_protocol::ServerMsg;
use std::time::Duration;

fn diff(m: &ServerMsg) -> Option<(Vec<String>, Vec<String>)> {
    match m {
        ServerMsg::PresenceDiff(d) => Some((
            d.joins.iter().map(|p| p.user_id.clone()).collect(),
            d.leaves.iter().map(|p| p.user_id.clone()).collect(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn join_second_tab_leave_after_grace() {
    let server = TestServer::start(|c| c.core.presence_grace_ms = 300).await;
    let mut watcher = server.ws("watcher", "w1", "w").await;
    connected(&mut watcher).await;
    let first = watcher
        .until(|m| match m {
            ServerMsg::PresenceUpdate(p) => {
                Some(p.iter().map(|p| p.user_id.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await;
    assert_eq!(first, vec!["watcher".to_string()]);
    watcher.until(diff).await; // the watcher's own join

    let mut tab1 = server.ws("alice", "w1", "t1").await;
    connected(&mut tab1).await;
    assert_eq!(
        watcher.until(diff).await,
        (vec!["alice".to_string()], vec![])
    );
    let mut tab2 = server.ws("alice", "w1", "t2").await;
    connected(&mut tab2).await;
    // A second tab is not a second join; closing one of two tabs is not a leave.
    tab1.close().await;
    watcher.quiet_for(Duration::from_millis(500)).await;
    tab2.close().await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        watcher.until(diff).await,
        (vec![], vec!["alice".to_string()])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "leave waited for the grace period"
    );
}

#[tokio::test]
async fn a_reconnect_inside_the_grace_period_causes_no_leave() {
    let server = TestServer::start(|c| c.core.presence_grace_ms = 400).await;
    let mut watcher = server.ws("watcher", "w1", "w").await;
    connected(&mut watcher).await;
    watcher.until(diff).await;
    let mut alice = server.ws("alice", "w1", "t1").await;
    connected(&mut alice).await;
    assert_eq!(
        watcher.until(diff).await,
        (vec!["alice".to_string()], vec![])
    );
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = server.ws("alice", "w1", "t1").await;
    connected(&mut again).await;
    watcher.quiet_for(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn a_silent_half_open_client_is_dropped_after_the_heartbeat_timeout() {
    let server = TestServer::start(|c| {
        c.core.heartbeat_ms = 100;
        c.heartbeat_timeout_ms = 300;
        c.core.presence_grace_ms = 50;
    })
    .await;
    let mut watcher = server.ws("watcher", "w1", "w").await;
    connected(&mut watcher).await;
    let mut ghost = server.ws("ghost", "w1", "g").await;
    connected(&mut ghost).await;
    // The watcher answers heartbeats and stays; the ghost never sends a thing.
    let watcher_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, watcher.next()).await {
                Ok(Got::Msg(ServerMsg::Heartbeat(_))) => {
                    watcher
                        .send_text(r#"{"type":"HEARTBEAT_ACK","timestamp":1}"#)
                        .await
                }
                Ok(Got::Msg(m)) => seen.extend(diff(&m).map(|d| d.1).unwrap_or_default()),
                Ok(Got::Closed(c)) => panic!("watcher was closed: {c:?}"),
                Err(_) => break,
            }
        }
        seen
    });
    // Read without answering: the server pings, then closes with 4000.
    let started = tokio::time::Instant::now();
    assert_eq!(ghost.closed().await, Some(4000));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(watcher_task.await.unwrap(), vec!["ghost".to_string()]);
}

#[tokio::test]
async fn a_presence_list_larger_than_the_outbound_bound_reaches_a_newcomer_in_pages() {
    let server = TestServer::start(|c| {
        c.outbound_bytes_max = 32 * 1024;
        c.core.replay_batch_bytes = 8 * 1024;
    })
    .await;
    // 40 users with 2 KB pages: a list of ~90 KB, three times the bound.
    let page = "p".repeat(2000);
    let mut crowd = Vec::new();
    for i in 0..40 {
        let mut ws = server.ws(&format!("u{i:02}"), "w1", "s").await;
        connected(&mut ws).await;
        ws.send_text(&format!(
            r#"{{"type":"REALTIME_EVENT","payload":{{"type":"USER_PRESENCE_CHANGED","payload":{{"status":"online","currentPage":"{page}"}}}}}}"#
        ))
        .await;
        // Its heartbeat answered means its presence was handled and fanned out (one
        // connection's frames are handled in order): the newcomer below joins a settled
        // crowd, and gets the list in pages rather than racing 40 diffs of 2 KB (which
        // on a loaded machine overflowed its bound and closed it 1013 before CONNECTED).
        ws.send_text(r#"{"type":"HEARTBEAT","timestamp":1}"#).await;
        ws.until(|m| matches!(m, ServerMsg::HeartbeatAck(_)).then_some(()))
            .await;
        crowd.push(ws.drain_in_background());
    }
    let mut newcomer = server.ws("zz-new", "w1", "s").await;
    connected(&mut newcomer).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    while seen.len() < 41 {
        match newcomer.next().await {
            Got::Msg(ServerMsg::PresenceUpdate(list)) => {
                pages += 1;
                seen.extend(list.into_iter().map(|p| p.user_id));
            }
            Got::Msg(ServerMsg::PresenceDiff(d)) => {
                pages += 1;
                for p in d.joins {
                    assert!(
                        p.user_id == "zz-new" || p.current_page.as_deref() == Some(page.as_str()),
                        "{} came without its fields",
                        p.user_id
                    );
                    seen.insert(p.user_id);
                }
            }
            Got::Msg(_) => {}
            Got::Closed(c) => panic!("newcomer closed ({c:?}) after {} users", seen.len()),
        }
    }
    assert!(pages >= 4, "the list came in pages ({pages})");
    // Still open and served.
    newcomer
        .send_text(r#"{"type":"HEARTBEAT","timestamp":1}"#)
        .await;
    newcomer
        .until(|m| matches!(m, ServerMsg::HeartbeatAck(_)).then_some(()))
        .await;
}
