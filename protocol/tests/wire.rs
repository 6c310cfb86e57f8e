//! Wire-format tests: JSON literals exactly as a browser client following the seed
//! sends them, and round trips of every server frame.

use rtsync_protocol::*;
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

#[test]
fn decodes_the_seeds_presence_event_verbatim() {
    // WebSocketManager.updatePresence → sendEvent → ws.send(JSON.stringify({type, payload}))
    let text = r#"{"type":"REALTIME_EVENT","payload":{"id":"7f1c2a8e-3b7d-4c1e-9a55-0c2f9e1d4b6a","userId":"u1","sessionId":"s1","timestamp":"2026-11-24T22:43:09.123Z","type":"USER_PRESENCE_CHANGED","payload":{"userId":"u1","status":"online","currentPage":"/tasks","device":{"type":"desktop","browser":"Mozilla/5.0"}},"version":1}}"#;
    let ClientMsg::RealtimeEvent(ev) = ClientMsg::decode(text).unwrap() else {
        panic!()
    };
    assert_eq!(ev.kind, EventType::UserPresenceChanged);
    assert_eq!(ev.timestamp, Some(ts("2026-11-24T22:43:09.123Z")));
    let change: PresenceChange = serde_json::from_value(ev.payload).unwrap();
    assert_eq!(change.status, PresenceStatus::Online);
    assert_eq!(change.device.unwrap().kind, DeviceType::Desktop);
}

#[test]
fn decodes_the_seeds_heartbeat_with_a_top_level_number() {
    // startHeartbeat: this.sendMessage({ type: 'HEARTBEAT', timestamp: Date.now() })
    let m = ClientMsg::decode(r#"{"type":"HEARTBEAT","timestamp":1795646589123}"#).unwrap();
    assert_eq!(
        m,
        ClientMsg::Heartbeat(Heartbeat {
            timestamp: Timestamp(1_795_646_589_123)
        })
    );
    let m = ClientMsg::decode(
        r#"{"type":"HEARTBEAT_ACK","payload":{"timestamp":"2026-11-25T22:43:09.123Z"}}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        ClientMsg::HeartbeatAck(Heartbeat {
            timestamp: Timestamp(1_795_646_589_123)
        })
    );
}

#[test]
fn decodes_cursor_moves_and_mutations() {
    let m = ClientMsg::decode(r#"{"type":"USER_ACTION","payload":{"type":"CURSOR_MOVE","x":10.5,"y":20,"elementId":"task-1"}}"#).unwrap();
    assert_eq!(
        m,
        ClientMsg::UserAction(UserAction::CursorMove {
            x: 10.5,
            y: 20.0,
            element_id: Some("task-1".into())
        })
    );
    let text = r#"{"type":"REALTIME_EVENT","payload":{"type":"TASK_UPDATED","version":3,"payload":{"opId":"tab-1:4","id":"t9","changes":{"title":"Ship it","priority":2}}}}"#;
    let ClientMsg::RealtimeEvent(ev) = ClientMsg::decode(text).unwrap() else {
        panic!()
    };
    let (p, op) = MutationPayload::from_event(ev.kind, &ev.payload).unwrap();
    assert_eq!((op.client_id.as_str(), op.n, ev.version), ("tab-1", 4, 3));
    assert_eq!(p.changes["priority"], json!(2));
}

#[test]
fn decode_errors_say_what_was_wrong() {
    let cases = [
        ("{not json", ErrorCode::BadJson, "not a JSON object"),
        (r#"{"payload":{}}"#, ErrorCode::BadJson, "type"),
        (
            r#"{"type":"SUBSCRIBE"}"#,
            ErrorCode::UnknownType,
            "SUBSCRIBE",
        ),
        (
            r#"{"type":"REALTIME_EVENT","payload":{"type":"TASK_EXPLODED"}}"#,
            ErrorCode::InvalidPayload,
            "TASK_EXPLODED",
        ),
        (
            r#"{"type":"USER_ACTION","payload":{"type":"CURSOR_MOVE","x":"left","y":1}}"#,
            ErrorCode::InvalidPayload,
            "USER_ACTION",
        ),
    ];
    for (text, code, needle) in cases {
        let e = ClientMsg::decode(text).unwrap_err();
        assert_eq!(e.code(), code, "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn resume_points_are_opaque_an_unreadable_one_is_unusable_not_an_error() {
    let resume = |text: &str| match ClientMsg::decode(text) {
        Ok(ClientMsg::Resume(r)) => r,
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(
        resume(r#"{"type":"RESUME","payload":{"epoch":7,"lastSeq":"9"}}"#),
        Resume {
            epoch: 7,
            last_seq: 9
        }
    );
    for p in [
        r#"{"epoch":"x","lastSeq":1}"#,
        r#"{"epoch":1,"lastSeq":-1}"#,
        r#"{"epoch":1}"#,
        r#"{"epoch":1,"lastSeq":1e30}"#,
        "null",
        "[]",
    ] {
        let text = format!(r#"{{"type":"RESUME","payload":{p}}}"#);
        assert_eq!(resume(&text), Resume::UNUSABLE, "{p}");
    }
    assert_eq!(Resume::from_query(None, None), None);
    assert_eq!(Resume::from_query(Some("1"), None), Some(Resume::UNUSABLE));
    assert_eq!(
        Resume::from_query(Some(" 3 "), Some("4")),
        Some(Resume {
            epoch: 3,
            last_seq: 4
        })
    );
}

fn entity() -> Entity {
    let mut fields = serde_json::Map::new();
    fields.insert("title".into(), json!("Write docs"));
    fields.insert("status".into(), json!("todo"));
    Entity {
        id: "t1".into(),
        entity: EntityKind::Task,
        version: 2,
        updated_at: ts("2026-11-24T22:43:09.123Z"),
        updated_by: "u2".into(),
        op_id: Some("c2:7".into()),
        deleted: false,
        task_id: None,
        fields,
    }
}

#[test]
fn entity_events_are_flat_like_the_seeds_task_store_reads_them() {
    let ev = RealtimeEvent {
        id: "5:12".into(),
        kind: EventType::TaskUpdated,
        payload: serde_json::to_value(entity()).unwrap(),
        user_id: "u2".into(),
        session_id: "s2".into(),
        timestamp: ts("2026-11-24T22:43:09.123Z"),
        version: 2,
    };
    let text = ServerMsg::RealtimeEvent {
        seq: Some(12),
        event: ev,
    }
    .encode();
    assert_eq!(
        text,
        r#"{"type":"REALTIME_EVENT","seq":12,"payload":{"id":"5:12","type":"TASK_UPDATED","payload":{"entity":"TASK","id":"t1","opId":"c2:7","status":"todo","title":"Write docs","updatedAt":"2026-11-24T22:43:09.123Z","updatedBy":"u2","version":2},"userId":"u2","sessionId":"s2","timestamp":"2026-11-24T22:43:09.123Z","version":2}}"#
    );
}

#[test]
fn entities_read_from_text_and_from_values_alike_and_name_a_bad_field() {
    let e = entity();
    let text = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<Entity>(&text).unwrap(), e);
    let value = serde_json::to_value(&e).unwrap();
    assert_eq!(serde_json::from_value::<Entity>(value).unwrap(), e);
    // Bookkeeping keys never leak into the app's fields; null optionals are absent.
    let v = json!({"id": "t9", "entity": "NOTE", "version": 1, "updatedAt": 5,
        "updatedBy": "u1", "opId": null, "body": "x"});
    let n: Entity = serde_json::from_value(v).unwrap();
    assert_eq!(
        (n.entity, n.op_id, n.deleted),
        (EntityKind::Note, None, false)
    );
    assert_eq!(n.fields, json!({"body": "x"}).as_object().unwrap().clone());
    let bad = json!({"id": "t9", "entity": "TASK", "version": "two", "updatedAt": 5,
        "updatedBy": "u1"});
    let err = serde_json::from_value::<Entity>(bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("version"), "{err}");
    let missing = json!({"entity": "TASK", "version": 1, "updatedAt": 5, "updatedBy": "u1"});
    let err = serde_json::from_value::<Entity>(missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `id`"), "{err}");
}

#[test]
fn every_server_frame_round_trips() {
    let t = ts("2026-11-24T22:43:09.123Z");
    let presence = UserPresence {
        user_id: "u1".into(),
        session_id: "s1".into(),
        last_seen: t,
        status: PresenceStatus::Away,
        current_page: Some("/p".into()),
        current_task: None,
        current_project: None,
        device: Device {
            kind: DeviceType::Mobile,
            browser: "x".into(),
        },
    };
    let event = RealtimeEvent {
        id: "1:1".into(),
        kind: EventType::TaskCreated,
        payload: serde_json::to_value(entity()).unwrap(),
        user_id: "u1".into(),
        session_id: "s1".into(),
        timestamp: t,
        version: 1,
    };
    let frames = vec![
        ServerMsg::Connected(Connected {
            user_id: "u1".into(),
            session_id: "s1".into(),
            connection_id: 3,
            workspace_id: "w".into(),
            epoch: 9,
            seq: 4,
            heartbeat_ms: 30_000,
            server_time: t,
            inflight_max: Some(256),
        }),
        ServerMsg::RealtimeEvent {
            seq: Some(1),
            event: event.clone(),
        },
        ServerMsg::RealtimeEvent {
            seq: None,
            event: event.clone(),
        },
        ServerMsg::RecentEvents(RecentEvents {
            events: vec![EventFrame {
                frame_type: EventFrameType::RealtimeEvent,
                seq: 1,
                payload: event,
            }],
            from_seq: 1,
            to_seq: 1,
            complete: true,
        }),
        ServerMsg::PresenceUpdate(vec![presence.clone()]),
        ServerMsg::PresenceDiff(PresenceDiff {
            joins: vec![presence.clone()],
            leaves: vec![presence],
        }),
        ServerMsg::Ack(Ack {
            op_id: "c:1".into(),
            entity: EntityKind::Note,
            entity_id: "n".into(),
            version: 3,
            seq: Some(8),
            epoch: Some(1_795_000_000_000),
            resolution: Some(Strategy::LastWriteWins),
            overwritten: vec!["body".into()],
        }),
        ServerMsg::ConflictDetected(Box::new(ConflictDetected {
            resolution: ConflictResolution {
                id: "conflict:c:2".into(),
                kind: EntityKind::Task,
                entity_id: "t1".into(),
                conflicts: vec![ConflictItem {
                    field: "title".into(),
                    local_value: json!("a"),
                    remote_value: json!("b"),
                    timestamp: t,
                    user_id: "u2".into(),
                }],
                resolved_by: None,
                resolved_at: None,
                strategy: Strategy::Merge,
            },
            op_id: "c:2".into(),
            current: entity(),
            seq: None,
            epoch: None,
        })),
        ServerMsg::Heartbeat(Heartbeat { timestamp: t }),
        ServerMsg::HeartbeatAck(Heartbeat { timestamp: t }),
        ServerMsg::Error(ErrorPayload {
            code: ErrorCode::OutOfOrder,
            message: "expected n=3".into(),
            op_id: Some("c:5".into()),
            expected_n: Some(3),
            retry_after_ms: None,
        }),
    ];
    for f in frames {
        let text = f.encode();
        assert_eq!(ServerMsg::decode(&text).unwrap(), f, "{text}");
    }
}

#[test]
fn every_client_frame_round_trips() {
    let frames = vec![
        ClientMsg::Resume(Resume {
            epoch: 5,
            last_seq: 10,
        }),
        ClientMsg::Heartbeat(Heartbeat {
            timestamp: Timestamp(5),
        }),
        ClientMsg::UserAction(UserAction::CursorMove {
            x: 1.0,
            y: 2.0,
            element_id: None,
        }),
        ClientMsg::RealtimeEvent(ClientEvent {
            id: None,
            kind: EventType::TaskDeleted,
            payload: json!({"opId": "c:1", "id": "t"}),
            user_id: None,
            session_id: None,
            timestamp: None,
            version: 4,
        }),
    ];
    for f in frames {
        assert_eq!(ClientMsg::decode(&f.encode()).unwrap(), f);
    }
}

#[test]
fn performance_metrics_accept_the_seeds_shape_and_refuse_nonsense() {
    let mut body = json!({
        "id": "m1", "sessionId": "s1", "userId": "u1", "timestamp": "2026-11-24T22:43:09.123Z",
        "LCP": 1200.5, "FID": 8, "CLS": 0.02, "FCP": 800, "TTI": 1500,
        "memory": {"used": 1.0e7, "total": 2.0e7, "limit": 4.0e9},
        "networkRequests": [{"url": "/api/tasks", "method": "GET", "duration": 12, "size": 2048, "cached": false, "status": 200, "type": "fetch"}],
        "cacheHitRate": 0.85, "bundleSize": 250000, "renderTime": 4, "stateUpdateTime": 1, "queryResolutionTime": 20,
        "userActions": [{"action": "click", "element": "button", "timestamp": "2026-11-24T22:43:09.123Z", "duration": 3, "successful": true}],
        "errorCount": 0, "warningCount": 1
    });
    let m: PerformanceMetrics = serde_json::from_value(body.clone()).unwrap();
    assert!(m.validate().is_ok());
    body["cacheHitRate"] = json!(1.5);
    let m: PerformanceMetrics = serde_json::from_value(body).unwrap();
    assert!(m.validate().unwrap_err().contains("cacheHitRate"));
}

#[test]
fn a_float_a_client_writes_comes_back_bit_for_bit() {
    // 5/24 is where the default parser (without serde_json's float_roundtrip) was one
    // ulp off; a replica holding the written value then differed from the server's.
    for x in [5.0 / 24.0, 0.1 + 0.2, 1e-300, f64::MAX, 2.0f64.sqrt()] {
        let sent = ClientMsg::RealtimeEvent(ClientEvent {
            id: None,
            kind: EventType::ProjectUpdated,
            payload: json!({"opId": "c:1", "id": "p", "changes": {"progress": x}}),
            user_id: None,
            session_id: None,
            timestamp: None,
            version: 1,
        });
        let ClientMsg::RealtimeEvent(got) = ClientMsg::decode(&sent.encode()).unwrap() else {
            panic!("a realtime event");
        };
        let back = got.payload["changes"]["progress"].as_f64().unwrap();
        assert_eq!(back.to_bits(), x.to_bits(), "{x}");
    }
}
