use super::*;
use proptest::prelude::*;

fn stores(tasks: Value) -> SnapshotStores {
    SnapshotStores {
        tasks,
        projects: json!([]),
        notes: json!([]),
        focus: json!({}),
        ui: json!({"theme": "dark"}),
        sync: Value::Null,
    }
}

fn cfg() -> PersistConfig {
    PersistConfig::default()
}

#[test]
fn round_trips() {
    let s = snapshot(
        "s1",
        "u1",
        stores(json!([{"id": "t1", "status": "todo"}])),
        "",
        1000,
    );
    let back = hydrate(&dehydrate(&s), &cfg(), 2000).unwrap();
    assert_eq!(back, s);
}

fn regz(json: &[u8]) -> String {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(json).unwrap();
    STANDARD.encode(gz.finish().unwrap())
}

#[test]
fn every_kind_of_corruption_is_detected_and_named() {
    let good = snapshot("s1", "u1", stores(json!([{"id": "t1"}])), "", 1000);
    let mut tampered = serde_json::to_value(&good).unwrap();
    tampered["stores"]["tasks"][0]["id"] = json!("t2");
    let mut shapeless = serde_json::to_value(&good).unwrap();
    shapeless["userId"] = json!(42);
    shapeless["checksum"] = json!(checksum(&shapeless["stores"]));
    type Is = fn(&PersistError) -> bool;
    let cases: Vec<(String, Is)> = vec![
        ("%%% not base64".into(), |e| {
            matches!(e, PersistError::Base64(_))
        }),
        (STANDARD.encode(b"not gzip at all"), |e| {
            matches!(e, PersistError::Gzip(_))
        }),
        (regz(b"{not json"), |e| matches!(e, PersistError::Json(_))),
        (regz(b"[1,2,3]"), |e| matches!(e, PersistError::Shape(_))),
        (regz(tampered.to_string().as_bytes()), |e| {
            matches!(e, PersistError::Checksum { .. })
        }),
        (regz(shapeless.to_string().as_bytes()), |e| {
            matches!(e, PersistError::Shape(_))
        }),
    ];
    for (blob, is) in cases {
        let e = hydrate(&blob, &cfg(), 1000).unwrap_err();
        assert!(is(&e), "{e}");
        assert!(!e.to_string().is_empty());
    }
    // A truncated blob (a crash mid-write).
    let blob = dehydrate(&good);
    assert!(hydrate(&blob[..blob.len() / 2], &cfg(), 1000).is_err());
}

#[test]
fn max_age_buster_and_size_limits() {
    let s = snapshot("s1", "u1", stores(json!([])), "deploy-1", 0);
    let blob = dehydrate(&s);
    let c = PersistConfig {
        buster: "deploy-1".into(),
        max_age_ms: 100,
        ..cfg()
    };
    assert!(hydrate(&blob, &c, 100).is_ok());
    assert!(matches!(
        hydrate(&blob, &c, 101),
        Err(PersistError::TooOld { .. })
    ));
    let c2 = PersistConfig {
        buster: "deploy-2".into(),
        ..cfg()
    };
    assert!(matches!(
        hydrate(&blob, &c2, 0),
        Err(PersistError::Busted { .. })
    ));
    // A "zip bomb": small blob, large output.
    let big = regz(&vec![b' '; 1 << 20]);
    let small = PersistConfig {
        bytes_max: 1000,
        ..cfg()
    };
    assert_eq!(hydrate(&big, &small, 0), Err(PersistError::TooLarge(1000)));
}

#[test]
fn migrates_v1_to_current_and_refuses_a_downgrade() {
    let v1_stores = json!({"tasks": [{"id": "t1", "completed": true, "projectID": "p"}, {"id": "t2", "completed": false}], "projects": [], "notes": [], "focus": null, "ui": {}});
    let v1 = json!({"id": "s", "version": 1, "timestamp": "2026-11-24T00:00:00.000Z", "userId": "u", "stores": v1_stores, "checksum": checksum(&v1_stores)});
    let now = Timestamp::parse("2026-11-24T01:00:00.000Z").unwrap().0;
    let s = hydrate(&regz(v1.to_string().as_bytes()), &cfg(), now).unwrap();
    assert_eq!(s.version, SCHEMA_VERSION);
    assert_eq!(
        s.stores.tasks,
        json!([{"id": "t1", "status": "done", "projectId": "p"}, {"id": "t2", "status": "todo"}])
    );
    assert_eq!(s.stores.focus, json!({}));
    let mut v9 = v1.clone();
    v9["version"] = json!(9);
    let e = hydrate(&regz(v9.to_string().as_bytes()), &cfg(), now).unwrap_err();
    assert_eq!(
        e,
        PersistError::Downgrade {
            found: 9,
            current: SCHEMA_VERSION
        }
    );
    assert!(e.keeps_stored_state());
    let mut bad = v1.clone();
    bad["stores"]["tasks"] = json!([{"id": "t", "completed": "yes"}]);
    bad["checksum"] = json!(checksum(&bad["stores"]));
    assert!(matches!(
        hydrate(&regz(bad.to_string().as_bytes()), &cfg(), now),
        Err(PersistError::Migration { from: 1, .. })
    ));
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 ]{0,12}".prop_map(Value::from)
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_state_round_trips(tasks in json_value(), ui in json_value(), sync in json_value()) {
        let st = SnapshotStores { tasks, projects: json!([]), notes: json!([]), focus: json!({}), ui, sync };
        let s = snapshot("s", "u", st, "", 5);
        let back = hydrate(&dehydrate(&s), &cfg(), 5).unwrap();
        prop_assert_eq!(back, s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let as_text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = hydrate(&as_text, &cfg(), 0);
        let _ = hydrate(&STANDARD.encode(&bytes), &cfg(), 0);
        let _ = hydrate(&regz(&bytes), &cfg(), 0);
    }

    #[test]
    fn a_flipped_byte_is_never_silently_accepted_as_different_state(pos in 0usize..4096, bit in 0u8..8) {
        let s = snapshot("s", "u", stores(json!([{"id": "t1", "title": "hello"}])), "", 0);
        let mut raw = STANDARD.decode(dehydrate(&s)).unwrap();
        let i = pos % raw.len();
        raw[i] ^= 1 << bit;
        // A flip in the gzip header's flags or mtime is harmless; any other is refused.
        if let Ok(back) = hydrate(&STANDARD.encode(&raw), &cfg(), 0) {
            prop_assert_eq!(back.stores, s.stores);
        }
    }
}
