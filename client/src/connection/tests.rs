use super::*;

fn conn(cfg: ConnectionConfig) -> Connection {
    Connection::new(cfg, Rng::new(42))
}

fn actions(c: &mut Connection) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn events(c: &mut Connection) -> Vec<ConnEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn connects_opens_and_resumes_where_told() {
    let mut c = conn(ConnectionConfig::default());
    c.set_resume(Some(Resume {
        epoch: 3,
        last_seq: 9,
    }));
    c.start(0);
    assert_eq!(
        actions(&mut c),
        vec![Action::Connect {
            transport: Transport::WebSocket,
            resume: Some(Resume {
                epoch: 3,
                last_seq: 9
            }),
            attempt: 1,
        }]
    );
    assert_eq!(c.state(), ConnState::Connecting);
    c.handle_open(c.attempt(), 5);
    assert_eq!(c.state(), ConnState::Open);
    assert_eq!(
        events(&mut c),
        vec![ConnEvent::Opened {
            transport: Transport::WebSocket,
            at_ms: 5
        }]
    );
}

#[test]
fn jittered_backoff_grows_to_the_cap_and_never_gives_up() {
    let p = ReconnectPolicy::Jittered {
        base_ms: 500,
        cap_ms: 20_000,
    };
    let mut rng = Rng::new(1);
    for attempt in 0..40 {
        let ceiling = (500u64 << attempt.min(20)).min(20_000);
        for _ in 0..20 {
            let d = p.delay_ms(attempt, &mut rng).unwrap();
            assert!(d <= ceiling, "attempt {attempt}: {d} > {ceiling}");
        }
    }
    // Full jitter spreads a herd: 100 clients' first delays are not all equal.
    let firsts: std::collections::BTreeSet<u64> =
        (0..100).map(|_| p.delay_ms(0, &mut rng).unwrap()).collect();
    assert!(firsts.len() > 50);
}

#[test]
fn the_seeds_policy_is_deterministic_capped_and_gives_up_after_five() {
    let mut rng = Rng::new(1);
    let delays: Vec<_> = (0..6)
        .map(|a| ReconnectPolicy::Legacy.delay_ms(a, &mut rng))
        .collect();
    assert_eq!(
        delays,
        vec![
            Some(1000),
            Some(2000),
            Some(4000),
            Some(8000),
            Some(16_000),
            None
        ]
    );
    let mut c = conn(ConnectionConfig {
        reconnect: ReconnectPolicy::Legacy,
        sse_fallback_after: 0,
        ..Default::default()
    });
    c.start(0);
    let mut now = 0;
    for _ in 0..5 {
        c.handle_connect_failed(c.attempt(), ConnectError::Network, now);
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
    }
    c.handle_connect_failed(c.attempt(), ConnectError::Network, now);
    assert_eq!(c.state(), ConnState::Failed);
    assert!(events(&mut c).contains(&ConnEvent::GaveUp));
    // And it does not reconnect after a graceful server shutdown (1001): the seed's bug.
    let mut c = conn(ConnectionConfig {
        reconnect: ReconnectPolicy::Legacy,
        ..Default::default()
    });
    c.start(0);
    c.handle_open(c.attempt(), 1);
    c.handle_closed(c.attempt(), Some(1001), 2);
    assert_eq!((c.state(), c.poll_timeout()), (ConnState::Closed, None));
}

#[test]
fn a_401_needs_auth_and_does_not_retry() {
    let mut c = conn(ConnectionConfig::default());
    c.start(0);
    c.handle_connect_failed(c.attempt(), ConnectError::Unauthorized, 1);
    assert_eq!(c.state(), ConnState::NeedsAuth);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn an_expired_token_close_waits_for_a_fresh_token_then_reconnects_at_once() {
    let mut c = conn(ConnectionConfig::default());
    c.start(0);
    c.handle_open(c.attempt(), 1);
    actions(&mut c);
    events(&mut c);
    c.handle_closed(c.attempt(), Some(rtsync_protocol::close::TOKEN_EXPIRED), 10);
    assert_eq!(c.state(), ConnState::NeedsAuth);
    assert_eq!(c.poll_timeout(), None, "no retry with the expired token");
    assert_eq!(
        events(&mut c),
        vec![
            ConnEvent::Lost {
                code: Some(rtsync_protocol::close::TOKEN_EXPIRED),
                at_ms: 10
            },
            ConnEvent::NeedsAuth
        ]
    );
    assert!(actions(&mut c).is_empty());
    c.reauthorize(50);
    assert_eq!(c.state(), ConnState::Connecting);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Connect { attempt: 2, .. }]
    ));
    // After a 401 too.
    c.handle_connect_failed(c.attempt(), ConnectError::Unauthorized, 60);
    assert_eq!(c.state(), ConnState::NeedsAuth);
    c.reauthorize(70);
    assert_eq!(c.state(), ConnState::Connecting);
}

#[test]
fn retry_after_is_respected() {
    let mut c = conn(ConnectionConfig::default());
    c.start(0);
    c.handle_connect_failed(
        c.attempt(),
        ConnectError::Refused {
            retry_after_ms: 7_000,
        },
        100,
    );
    assert!(c.poll_timeout().unwrap() >= 7_100);
}

#[test]
fn a_hung_connect_times_out_and_counts_as_a_failure() {
    let mut c = conn(ConnectionConfig {
        connect_timeout_ms: 1000,
        ..Default::default()
    });
    c.start(0);
    actions(&mut c);
    assert_eq!(c.poll_timeout(), Some(1000));
    c.handle_timeout(1000);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Close { code: 1000, .. }]
    ));
    assert_eq!(c.state(), ConnState::Closed);
    let retry = c.poll_timeout().unwrap();
    c.handle_timeout(retry);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Connect { .. }]
    ));
}

#[test]
fn pings_and_detects_a_half_open_connection() {
    let mut c = conn(ConnectionConfig {
        ping_interval_ms: 100,
        pong_timeout_ms: 50,
        ..Default::default()
    });
    c.start(0);
    c.handle_open(c.attempt(), 0);
    actions(&mut c);
    c.handle_timeout(100);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Send(ClientMsg::Heartbeat(_))]
    ));
    // An answer in time keeps it open.
    c.handle_frame(&ServerMsg::HeartbeatAck(Heartbeat::default()), 120);
    c.handle_timeout(150);
    assert_eq!(c.state(), ConnState::Open);
    // Silence past the pong timeout: lost, closed 4000, reconnect scheduled.
    c.handle_timeout(200);
    actions(&mut c);
    c.handle_timeout(250);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Close { code: 4000, .. }]
    ));
    assert_eq!(c.state(), ConnState::Closed);
    assert_eq!(c.stats.half_open_detected, 1);
    assert!(c.poll_timeout().is_some());
}

#[test]
fn a_late_report_about_an_abandoned_socket_changes_nothing() {
    let mut c = conn(ConnectionConfig {
        connect_timeout_ms: 100,
        ..Default::default()
    });
    c.start(0);
    let first = c.attempt();
    c.handle_timeout(100); // the connect hung: abandoned, retry scheduled
    let retry = c.poll_timeout().unwrap();
    c.handle_timeout(retry);
    assert_eq!(c.attempt(), first + 1);
    // The abandoned socket's outcome arrives late: ignored.
    c.handle_open(first, retry + 1);
    c.handle_closed(first, Some(1000), retry + 1);
    assert_eq!(c.state(), ConnState::Connecting);
    c.handle_open(first + 1, retry + 2);
    assert_eq!(c.state(), ConnState::Open);
}

#[test]
fn answers_server_heartbeats() {
    let mut c = conn(ConnectionConfig::default());
    c.start(0);
    c.handle_open(c.attempt(), 0);
    actions(&mut c);
    c.handle_frame(
        &ServerMsg::Heartbeat(Heartbeat {
            timestamp: Timestamp(1),
        }),
        10,
    );
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Send(ClientMsg::HeartbeatAck(_))]
    ));
}

#[test]
fn falls_back_to_sse_after_k_websocket_failures_and_returns_later() {
    let mut c = conn(ConnectionConfig {
        sse_fallback_after: 2,
        ws_retry_after_ms: 10_000,
        ..Default::default()
    });
    c.start(0);
    c.handle_connect_failed(c.attempt(), ConnectError::Network, 0);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    c.handle_connect_failed(c.attempt(), ConnectError::Network, t);
    assert_eq!(c.transport(), Transport::Sse);
    let t2 = c.poll_timeout().unwrap();
    c.handle_timeout(t2);
    actions(&mut c);
    c.handle_open(c.attempt(), t2);
    c.handle_timeout(t + 10_000);
    let acts = actions(&mut c);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Connect {
                transport: Transport::WebSocket,
                resume: None,
                ..
            }
        )),
        "{acts:?}"
    );
}

#[test]
fn offline_stops_trying_and_online_connects_at_once() {
    let mut c = conn(ConnectionConfig::default());
    c.start(0);
    c.handle_open(c.attempt(), 1);
    actions(&mut c);
    c.go_offline(10);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Close { code: 1000, .. }]
    ));
    assert_eq!(c.poll_timeout(), None);
    c.handle_closed(c.attempt(), None, 11);
    assert_eq!(c.poll_timeout(), None, "no attempts while offline");
    c.go_online(500);
    assert!(matches!(
        actions(&mut c).as_slice(),
        [Action::Connect { .. }]
    ));
}
