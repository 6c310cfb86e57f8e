//! The metric and invariant names of docs/metrics.md, in one place.

/// Latency histograms, in simulated milliseconds.
pub const HISTOGRAMS: [&str; 13] = [
    "recovery_ms",
    "startup_sync_ms",
    "ws_delivery_ms",
    "sse_delivery_ms",
    "cross_tab_ms",
    "ack_ms",
    "conflict_resolution_ms",
    "reconnect_ms",
    "resync_ms",
    "offline_drain_ms",
    "dashboard_staleness_ms",
    "progress_staleness_ms",
    "focus_skew_ms",
];

/// Ratios and gauges computed at the end of a run (threshold with `value` or `rate`).
pub const GAUGES: [&str; 7] = [
    "cache_hit_ratio",
    "invalidation_false_positive_ratio",
    "requests_per_query_ratio",
    "cache_memory_ratio",
    "cleanup_success_ratio",
    "memory_growth_bytes_per_hour",
    "virtual_list_rows",
];

/// Counters and gauges (threshold with `count`/`value`/`rate`).
pub const COUNTERS: [&str; 23] = [
    "late_ops",
    "queries",
    "query_fetches",
    "reloads",
    "state_resets",
    "migrations",
    "ops_enqueued",
    "ops_acked",
    "ops_rolled_back",
    "ops_refused_full",
    "deliveries",
    "connections_opened",
    "connection_losses",
    "connect_failures",
    "resyncs_by_snapshot",
    "conflicts",
    "token_refreshes",
    "dashboard_updates",
    "progress_broadcasts",
    "note_edits",
    "focus_sessions_completed",
    "focus_takeovers",
    "writes_unavailable",
];

/// Correctness counters: every one must be 0 (a canary expects one not to be).
pub const INVARIANTS: [&str; 17] = [
    "lost_acked_writes",
    "duplicate_applies",
    "session_order_violations",
    "divergent_replicas",
    "replay_gaps",
    "replay_duplicates",
    "cross_workspace_leaks",
    "ghost_presences",
    "silent_queue_drops",
    "unconverged_clients",
    "stale_cache_entries",
    "dashboard_drift",
    "progress_drift",
    "lost_note_edits",
    "focus_miscounts",
    "focus_divergence",
    "fencing_violations",
];

pub fn is_known(name: &str) -> bool {
    HISTOGRAMS.contains(&name)
        || GAUGES.contains(&name)
        || COUNTERS.contains(&name)
        || INVARIANTS.contains(&name)
}
