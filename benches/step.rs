//! Criterion bench of the simulator itself: a small scenario end to end (the real
//! server and 12 tabs in turmoil for 10 simulated seconds), so a change that slows the
//! simulation shows up as a number.

use criterion::{Criterion, criterion_group, criterion_main};
use rtsync_simulator::run;
use rtsync_simulator::scenario::Scenario;
use std::time::Duration;

const SMALL: &str = r#"
name = "bench"
duration_s = 10
quiescence_s = 2
tick_ms = 5
[[groups]]
name = "office"
users = 12
workspaces = 2
[workload]
ops_per_s = 1.0
"#;

fn simulate(c: &mut Criterion) {
    let sc = Scenario::parse(SMALL, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("simulate_12_tabs_12_simulated_s", |b| {
        b.iter(|| {
            run::run(&sc, 1, &mut |_, _| {})
                .map(|o| o.recorder.counter("deliveries", None))
                .unwrap_or(0)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_millis(500));
    targets = simulate
}
criterion_main!(benches);
