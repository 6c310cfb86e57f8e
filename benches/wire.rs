//! Criterion benches for the wire format: encoding and decoding the frames every
//! delivery pays for.

use criterion::{Criterion, criterion_group, criterion_main};
use rtsync_protocol::{
    ClientMsg, Entity, EntityKind, EventType, RealtimeEvent, ServerMsg, Timestamp,
};
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;

fn event() -> ServerMsg {
    let entity = Entity {
        id: "w0-t42".into(),
        entity: EntityKind::Task,
        version: 7,
        updated_at: Timestamp(1_795_000_000_000),
        updated_by: "office-u3".into(),
        op_id: Some("office-u3-d0-t0:17".into()),
        deleted: false,
        task_id: None,
        fields: json!({"title": "Write the report", "status": "doing", "priority": 2, "projectId": "p3"}).as_object().cloned().unwrap_or_default(),
    };
    ServerMsg::RealtimeEvent {
        seq: Some(1234),
        event: RealtimeEvent {
            id: "1795000000000:1234".into(),
            kind: EventType::TaskUpdated,
            payload: serde_json::to_value(entity).unwrap_or_default(),
            user_id: "office-u3".into(),
            session_id: "office-u3-d0-t0".into(),
            timestamp: Timestamp(1_795_000_000_123),
            version: 7,
        },
    }
}

fn wire(c: &mut Criterion) {
    let msg = event();
    let text = msg.encode();
    c.bench_function("encode_realtime_event", |b| {
        b.iter(|| black_box(msg.encode().len()))
    });
    c.bench_function("decode_realtime_event", |b| {
        b.iter(|| black_box(ServerMsg::decode(&text).is_ok()))
    });
    let mutation = r#"{"type":"REALTIME_EVENT","payload":{"type":"TASK_UPDATED","version":6,"payload":{"opId":"office-u3-d0-t0:18","id":"w0-t42","changes":{"title":"Write the report","priority":3}}}}"#;
    c.bench_function("decode_client_mutation", |b| {
        b.iter(|| black_box(ClientMsg::decode(mutation).is_ok()))
    });
    // Every event carries two timestamps, written and read as ISO-8601 strings.
    let ts = Timestamp(1_795_646_589_123);
    let iso = ts.to_string();
    c.bench_function("timestamp_format", |b| {
        b.iter(|| black_box(black_box(ts).to_string().len()))
    });
    c.bench_function("timestamp_parse", |b| {
        b.iter(|| black_box(Timestamp::parse(black_box(&iso)).is_ok()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    targets = wire
}
criterion_main!(benches);
