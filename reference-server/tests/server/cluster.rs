//! Several nodes over a real `redis-server` (started here on a free port, stopped after):
//! one owner per workspace, clients on any node, takeover from the stream, fencing.

use crate::support::*;
use rtsync_protocol::{EventType, ServerMsg};
use rtsync_server::cluster::{Lease, LocalRedis, Redis, RedisUrl, replay};
use serde_json::json;
use std::time::Duration;

/// Connects, retrying while the answer is 503: a client's reconnect loop, while the old
/// owner still holds the lease (it gives it up once its connections are closed).
async fn retry_ws(node: &TestServer, query: &str) -> Ws {
    let url = format!("ws://{}/ws?{query}", node.addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((stream, _)) => return Ws { stream },
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if r.status() == 503 && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("ws connect: {e}"),
        }
    }
}

fn redis() -> LocalRedis {
    LocalRedis::start().expect("a redis-server for the cluster tests")
}

fn backplane(r: &LocalRedis) -> Redis {
    let url: RedisUrl = r.url().parse().unwrap();
    Redis::new(url, Default::default(), Duration::from_secs(2))
}

async fn create(ws: &mut Ws, op: &str, id: &str) -> u64 {
    ws.send(&mutation(
        EventType::TaskCreated,
        op,
        id,
        0,
        json!({"title": id}),
    ))
    .await;
    ws.until(|m| match m {
        ServerMsg::Ack(a) => Some(a.seq.unwrap()),
        ServerMsg::Error(e) => panic!("{e:?}"),
        _ => None,
    })
    .await
}

async fn event_seq(ws: &mut Ws, id: &str) -> u64 {
    ws.until(|m| match m {
        ServerMsg::RealtimeEvent {
            seq: Some(s),
            event,
        } if event.payload["id"] == json!(id) => Some(*s),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_any_node_share_one_workspace() {
    let r = redis();
    let nodes = [
        TestServer::node(&r.url(), |_| {}).await,
        TestServer::node(&r.url(), |_| {}).await,
        TestServer::node(&r.url(), |_| {}).await,
    ];
    // The first connection makes node 0 the owner; the others are relayed to it.
    let mut alice = nodes[0].ws("alice", "w1", "a").await;
    let (epoch, _) = connected(&mut alice).await;
    let mut bob = nodes[1].ws("bob", "w1", "b").await;
    let mut carol = nodes[2].ws("carol", "w1", "c").await;
    assert_eq!(connected(&mut bob).await.0, epoch, "one core: one epoch");
    assert_eq!(connected(&mut carol).await.0, epoch);
    // A write through a relay is acknowledged and fanned out in one seq order.
    let s1 = create(&mut bob, "b:1", "t1").await;
    for ws in [&mut alice, &mut carol] {
        assert_eq!(event_seq(ws, "t1").await, s1);
    }
    let s2 = create(&mut alice, "a:1", "t2").await;
    assert_eq!(s2, s1 + 1, "one seq order across the nodes");
    for ws in [&mut bob, &mut carol] {
        assert_eq!(event_seq(ws, "t2").await, s2);
    }
    // Presence spans the nodes: carol (node 2) sees bob (node 1) online.
    carol
        .until(|m| match m {
            ServerMsg::PresenceUpdate(users) if users.iter().any(|u| u.user_id == "bob") => {
                Some(())
            }
            ServerMsg::PresenceDiff(d) if d.joins.iter().any(|u| u.user_id == "bob") => Some(()),
            _ => None,
        })
        .await;
    // HTTP on a node that does not own the workspace is relayed to its owner: a read,
    // a POST (answered and fanned out by the owner), an SSE stream kept open.
    let path = format!("/api/entities/tasks/t1?token={}", token("carol", "w1"));
    let (status, body) = nodes[2].http("GET", &path, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"t1\""), "{body}");
    let mut sse = nodes[1].sse("dave", "w1", "d", None).await;
    let post = mutation(
        EventType::TaskCreated,
        "c:1",
        "t3",
        0,
        json!({"title": "t3"}),
    );
    let (status, body) = nodes[2]
        .http(
            "POST",
            "/api/events?sessionId=c-http",
            Some(&token("carol", "w1")),
            Some(post.encode()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(event_seq(&mut alice, "t3").await, s2 + 1);
    loop {
        if let (_, ServerMsg::RealtimeEvent { seq: Some(s), .. }) = sse.recv().await {
            assert_eq!(
                s,
                s2 + 1,
                "the relayed SSE stream gets the relayed POST's event"
            );
            break;
        }
    }
    // Each node counts what it did: node 0 took the workspace over once and holds every
    // session (alice's, and bob's and carol's through their relays); nodes 1 and 2
    // count their relays, not sessions of their own.
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("rtsync_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let mut scraped = Vec::new();
    for n in &nodes {
        scraped.push(n.http("GET", "/metrics", None, None).await.1);
    }
    assert_eq!(metric(&scraped[0], "takeovers_total"), 1);
    assert_eq!(metric(&scraped[0], "connections_ws_opened_total"), 3);
    assert_eq!(metric(&scraped[0], "relays_ws_opened_total"), 0);
    for m in &scraped[1..] {
        assert_eq!(metric(m, "takeovers_total"), 0);
        assert_eq!(metric(m, "relays_ws_opened_total"), 1);
        assert_eq!(metric(m, "connections_ws_opened_total"), 0);
    }
    assert_eq!(
        metric(&scraped[1], "relays_http_total"),
        1,
        "dave's SSE stream"
    );
    assert_eq!(
        metric(&scraped[2], "relays_http_total"),
        2,
        "carol's read and POST"
    );
    // Every node asked Redis who owns w1; the owner also took the lease, read the
    // stream and appended the writes.
    let trips = |m: &str| metric(m, "redis_round_trip_seconds_count");
    assert!(trips(&scraped[0]) >= 4, "{}", trips(&scraped[0]));
    assert!(scraped[1..].iter().all(|m| trips(m) >= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_replays_the_stream_and_clients_resume_in_the_same_epoch() {
    let r = redis();
    let mut first = TestServer::node(&r.url(), |_| {}).await;
    let second = TestServer::node(&r.url(), |_| {}).await;
    let mut alice = first.ws("alice", "w2", "a").await;
    let (epoch, _) = connected(&mut alice).await;
    let mut bob = second.ws("bob", "w2", "b").await;
    connected(&mut bob).await;
    let mut acked = Vec::new();
    let mut last = 0;
    for n in 1..=3 {
        acked.push(create(&mut alice, &format!("a:{n}"), &format!("t{n}")).await);
        last = event_seq(&mut bob, &format!("t{n}")).await;
    }
    // The owner goes away (a clean stop gives its lease up); bob's relay ends with the
    // owner's close.
    first.shutdown();
    let code = bob.closed().await;
    assert_eq!(code, Some(1001), "the owner's close passed on");
    // bob's reconnect makes the second node the owner, rebuilt from the stream.
    let mut back = retry_ws(
        &second,
        &format!(
            "token={}&sessionId=b&epoch={epoch}&lastSeq={}",
            token("bob", "w2"),
            last - 1
        ),
    )
    .await;
    assert_eq!(connected(&mut back).await, (epoch, last));
    match back.recv().await {
        ServerMsg::RecentEvents(r) => {
            assert!(r.complete);
            assert_eq!((r.from_seq, r.to_seq), (last, last));
        }
        other => panic!("{other:?}"),
    }
    // The op answers came back too: alice's resent op gets its first answer again.
    let mut alice = second.ws("alice", "w2", "a").await;
    connected(&mut alice).await;
    assert_eq!(create(&mut alice, "a:2", "t2").await, acked[1]);
    let s = create(&mut back, "b:1", "t9").await;
    assert_eq!(s, last + 1, "the seq goes on from the stream");
}

#[tokio::test]
async fn a_deposed_owner_cannot_append() {
    let r = redis();
    let bp = backplane(&r);
    let Lease::Mine {
        token: t1,
        value: v1,
    } = bp.acquire("w3", "node-a:1", 300).await.unwrap()
    else {
        panic!("a free lease is taken")
    };
    assert_eq!(
        bp.acquire("w3", "node-b:1", 300).await.unwrap(),
        Lease::Held {
            owner: "node-a:1".into()
        }
    );
    assert!(bp.append("w3", &v1, t1, &["[]".into()]).await.unwrap());
    // What a relay whose owner is lost sleeps for: the rest of the owner's lease (none
    // for a node that does not hold it), then nothing.
    let left_ms = bp
        .lease_left("w3", "node-a:1")
        .await
        .unwrap()
        .expect("held");
    assert!((1..=300).contains(&left_ms), "{left_ms}");
    assert_eq!(bp.lease_left("w3", "node-b:1").await.unwrap(), None);
    // node-a pauses past its lease; node-b takes the workspace with a higher token.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        bp.lease_left("w3", "node-a:1").await.unwrap(),
        None,
        "lapsed"
    );
    let Lease::Mine {
        token: t2,
        value: v2,
    } = bp.acquire("w3", "node-b:1", 300).await.unwrap()
    else {
        panic!("an expired lease is taken")
    };
    assert!(t2 > t1);
    // node-a wakes up and writes: refused, by Redis, whatever node-a believes.
    assert!(!bp.append("w3", &v1, t1, &["[]".into()]).await.unwrap());
    assert!(!bp.renew("w3", &v1, 300).await.unwrap());
    // In a batch (how a node renews): the deposed owner's refused, the owner's renewed.
    let both = [("w3", v1.as_str()), ("w3", v2.as_str())];
    assert_eq!(bp.renew_all(&both, 300).await.unwrap(), [false, true]);
    assert!(bp.append("w3", &v2, t2, &["[]".into()]).await.unwrap());
    let entries = bp.read("w3").await.unwrap();
    let tokens: Vec<u64> = entries.iter().map(|e| e.token).collect();
    assert_eq!(
        tokens,
        vec![t1, t2],
        "one entry per accepted append, in token order"
    );
    // A stream where a lower token follows a higher one is refused at replay.
    let mut forged = entries.clone();
    forged.reverse();
    let cfg = std::sync::Arc::new(rtsync_server::core::CoreConfig::default());
    let err = replay(&forged, &cfg, 1).unwrap_err().to_string();
    assert!(err.contains("two owners wrote"), "{err}");
}
