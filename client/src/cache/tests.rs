use super::*;
use serde_json::json;

fn key(parts: &[&str]) -> QueryKey {
    parts.iter().map(|s| s.to_string()).collect()
}

fn cache(stale: u64) -> QueryCache {
    QueryCache::new(CacheConfig {
        stale_time_ms: stale,
        gc_time_ms: 1000,
        entries_max: 100,
    })
}

#[test]
fn stale_time_zero_refetches_every_time_but_serves_stale_data() {
    let mut c = cache(0);
    let k = key(&["tasks"]);
    assert_eq!(c.query(&k, 0), Lookup::Miss { fetch: true });
    c.resolve(&k, json!([1]), 0);
    assert!(matches!(c.query(&k, 0), Lookup::Stale { fetch: true, .. }));
    assert_eq!(c.stats.hits, 0);
}

#[test]
fn fresh_within_stale_time_is_a_hit() {
    let mut c = cache(100);
    let k = key(&["tasks"]);
    c.query(&k, 0);
    c.resolve(&k, json!([1]), 0);
    assert!(matches!(c.query(&k, 50), Lookup::Fresh(_)));
    assert!(matches!(c.query(&k, 100), Lookup::Stale { .. }));
    assert_eq!((c.stats.hits, c.stats.queries, c.stats.fetches), (1, 3, 2));
}

#[test]
fn concurrent_identical_queries_fetch_once() {
    let mut c = cache(0);
    let k = key(&["tasks", "p1"]);
    assert_eq!(c.query(&k, 0), Lookup::Miss { fetch: true });
    assert_eq!(c.query(&k, 1), Lookup::Miss { fetch: false });
    assert_eq!(c.query(&k, 2), Lookup::Miss { fetch: false });
    assert_eq!((c.stats.fetches, c.stats.deduplicated), (1, 2));
    assert!((c.stats.requests_per_query() - 1.0 / 3.0).abs() < 1e-9);
}

#[test]
fn unchanged_data_keeps_its_identity_and_counts_as_a_false_positive() {
    let mut c = cache(1000);
    let k = key(&["tasks"]);
    c.query(&k, 0);
    let first = c.resolve(&k, json!({"a": [1, 2]}), 0);
    assert_eq!(c.invalidate(Filter::Prefix(&key(&["tasks"]))).len(), 1);
    assert!(matches!(c.query(&k, 1), Lookup::Stale { fetch: true, .. }));
    let second = c.resolve(&k, json!({"a": [1, 2]}), 1);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(
        (c.stats.false_positives, c.stats.invalidated_refetched),
        (1, 1)
    );
    c.invalidate(Filter::Exact(&k));
    c.query(&k, 2);
    let third = c.resolve(&k, json!({"a": [1, 3]}), 2);
    assert!(!Arc::ptr_eq(&second, &third));
    assert_eq!(c.stats.false_positive_ratio(), 0.5);
}

#[test]
fn invalidation_by_prefix_exact_and_predicate() {
    let mut c = cache(1000);
    for k in [
        key(&["tasks", "p1"]),
        key(&["tasks", "p2"]),
        key(&["projects"]),
    ] {
        c.query(&k, 0);
        c.resolve(&k, json!(1), 0);
    }
    assert_eq!(c.invalidate(Filter::Prefix(&key(&["tasks"]))).len(), 2);
    assert_eq!(c.invalidate(Filter::Exact(&key(&["projects"]))).len(), 1);
    let pred = |k: &[String]| k.last().is_some_and(|s| s == "p2");
    assert_eq!(
        c.invalidate(Filter::Predicate(&pred)),
        vec![key(&["tasks", "p2"])]
    );
}

#[test]
fn gc_removes_only_unobserved_entries_and_reconnect_refetches_observed_ones() {
    let mut c = cache(1000);
    let (a, b) = (key(&["a"]), key(&["b"]));
    for k in [&a, &b] {
        c.query(k, 0);
        c.resolve(k, json!(1), 0);
    }
    c.subscribe(&a, 0);
    assert_eq!(c.gc(999), 0);
    assert_eq!(c.gc(1000), 1);
    assert_eq!(c.len(), 1);
    assert_eq!(c.on_reconnect(), vec![a.clone()]);
    assert!(matches!(
        c.query(&a, 1001),
        Lookup::Stale { fetch: true, .. }
    ));
}

#[test]
fn bounded_by_entries_and_bytes_are_tracked() {
    let mut c = QueryCache::new(CacheConfig {
        stale_time_ms: 1000,
        gc_time_ms: 1000,
        entries_max: 2,
    });
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let k = key(&[name]);
        c.query(&k, i as u64);
        c.resolve(&k, json!("x".repeat(100)), i as u64);
    }
    assert_eq!((c.len(), c.stats.evicted), (2, 1));
    assert!(c.bytes() > 200);
    let before = c.bytes();
    assert_eq!(c.cleanup(5000, 1000, 1), 2);
    assert!(c.bytes() < before);
    assert_eq!(c.bytes(), 0);
}

#[test]
fn trim_evicts_the_least_recently_used_unobserved_entries_to_a_budget() {
    let mut c = cache(1000);
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let k = key(&[name]);
        c.query(&k, i as u64);
        c.resolve(&k, json!("x".repeat(100)), i as u64);
    }
    c.subscribe(&key(&["a"]), 3);
    let per_entry = c.bytes() / 3;
    let freed = c.trim_to(per_entry * 2);
    assert_eq!(freed, per_entry);
    assert_eq!(c.len(), 2);
    assert!(
        matches!(c.query(&key(&["b"]), 4), Lookup::Miss { .. }),
        "b was the least recently used unobserved entry"
    );
    assert_eq!(c.trim_to(0), per_entry, "observed entries are kept");
}

#[test]
fn a_byte_budget_holds_after_every_fetch_observed_entries_included() {
    let mut c = cache(1000);
    let home = key(&["home"]);
    c.subscribe(&home, 0);
    c.query(&home, 0);
    c.resolve(&home, json!("x".repeat(300)), 0);
    let budget = c.bytes() / 2;
    c.set_bytes_max(Some(budget));
    assert!(c.bytes() <= budget, "the observed entry's data goes too");
    assert_eq!(c.query(&home, 1), Lookup::Miss { fetch: true });
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let k = key(&[name]);
        c.query(&k, 2 + i as u64);
        c.resolve(&k, json!("x".repeat(100)), 2 + i as u64);
        assert!(c.bytes() <= budget);
    }
    c.set_bytes_max(None);
    c.resolve(&home, json!("x".repeat(300)), 9);
    assert!(c.bytes() > budget, "lifted");
}

#[test]
fn an_unchanged_refetch_is_a_false_positive_unless_its_change_was_superseded() {
    let mut c = cache(60_000);
    let k = key(&["tasks", "p0"]);
    c.query(&k, 0);
    c.resolve(&k, json!([]), 0);
    // Invalidated, refetched, the same data: a false positive.
    c.invalidate(Filter::Exact(&k));
    c.query(&k, 1);
    c.resolve(&k, json!([]), 1);
    assert_eq!((c.stats.false_positives, c.stats.superseded), (1, 0));
    // Invalidated by a create that a delete undid before the refetch: not one.
    c.invalidate(Filter::Exact(&k));
    c.query(&k, 2);
    c.resolve_with(&k, json!([]), 2, true);
    assert_eq!((c.stats.false_positives, c.stats.superseded), (1, 1));
    assert_eq!(c.stats.invalidated_refetched, 2);
    assert!((c.stats.false_positive_ratio() - 0.5).abs() < 1e-9);
    // A changed answer is neither.
    c.invalidate(Filter::Exact(&k));
    c.query(&k, 3);
    c.resolve_with(&k, json!([1]), 3, true);
    assert_eq!((c.stats.false_positives, c.stats.superseded), (1, 1));
    assert!(c.data(&k).is_some());
}

#[test]
fn a_patch_changes_cached_data_in_place_and_keeps_it_fresh() {
    let mut c = cache(100);
    let k = key(&["tasks", "p1"]);
    assert!(
        !c.patch(&k, 0, Arc::new(|_| Some(json!([9])))),
        "nothing cached"
    );
    c.query(&k, 0);
    c.resolve(&k, json!([1]), 0);
    assert!(!c.patch(&k, 10, Arc::new(|_| None)), "no change");
    assert!(c.patch(&k, 90, Arc::new(|d| Some(json!([d[0].clone(), 2])))));
    // Fresh again for a whole stale time from the patch, with the patched data.
    assert_eq!(c.query(&k, 150), Lookup::Fresh(Arc::new(json!([1, 2]))));
    assert_eq!(c.fresh(150).count(), 1);
    assert_eq!(c.fresh(190).count(), 0);
    assert_eq!((c.stats.patched, c.stats.fetches), (1, 1));
    assert!(c.bytes() > 0);
}

/// Adds 2 to a list that lacks it (idempotent, as a patch must be).
fn add_two() -> Patch {
    Arc::new(|d: &Value| {
        let mut l = d.as_array()?.clone();
        (!l.contains(&json!(2))).then(|| {
            l.push(json!(2));
            Value::Array(l)
        })
    })
}

#[test]
fn patches_made_while_a_fetch_is_in_flight_are_replayed_onto_its_answer() {
    for cached in [true, false] {
        let mut c = cache(1000);
        let k = key(&["tasks", "p1"]);
        if cached {
            c.query(&k, 0);
            c.resolve(&k, json!([1]), 0);
            c.invalidate(Filter::Exact(&k));
        }
        c.query(&k, 1); // the fetch starts
        c.patch(&k, 2, add_two()); // a change arrives while it is in flight
        // Its answer predates the change: the replayed patch brings it in.
        assert_eq!(
            *c.resolve(&k, json!([1]), 3),
            json!([1, 2]),
            "cached: {cached}"
        );
        assert!(matches!(c.query(&k, 4), Lookup::Fresh(_)));
        // An answer that already has it is left alone.
        c.invalidate(Filter::Exact(&k));
        c.query(&k, 5);
        c.patch(&k, 6, add_two());
        assert_eq!(*c.resolve(&k, json!([1, 2]), 7), json!([1, 2]));
    }
}

#[test]
fn an_answer_to_a_fetch_overtaken_by_an_invalidation_is_kept_stale() {
    let mut c = cache(1000);
    let k = key(&["tasks", "p1"]);
    c.query(&k, 0);
    c.resolve(&k, json!([1]), 0);
    c.invalidate(Filter::Exact(&k));
    assert!(matches!(c.query(&k, 1), Lookup::Stale { fetch: true, .. }));
    c.invalidate(Filter::Exact(&k)); // while the fetch is in flight
    c.resolve(&k, json!([1]), 3);
    assert!(matches!(c.query(&k, 4), Lookup::Stale { fetch: true, .. }));
    c.resolve(&k, json!([1, 2]), 5);
    assert!(matches!(c.query(&k, 6), Lookup::Fresh(_)));
}

#[test]
fn past_the_replay_bound_an_answer_is_refetched_instead() {
    let mut c = cache(1000);
    let k = key(&["tasks", "p1"]);
    c.query(&k, 0);
    for _ in 0..=REPLAY_MAX {
        c.patch(&k, 1, add_two());
    }
    c.resolve(&k, json!([1]), 2);
    assert!(matches!(c.query(&k, 3), Lookup::Stale { fetch: true, .. }));
}
