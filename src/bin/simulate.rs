//! `simulate`: run scenarios in the deterministic simulator and judge them.

use anyhow::Context;
use clap::{Parser, Subcommand};
use rtsync_simulator::report::{self, EXIT_INVALID, EXIT_PASS};
use rtsync_simulator::run;
use rtsync_simulator::scenario::Scenario;
use rtsync_simulator::{compare, html, output, sweep};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `println!` that does not panic when the reader went away (`simulate | head`): the
/// run goes on without its console, writes its reports and exits with its verdict;
/// any other write error is returned.
macro_rules! say {
    ($($t:tt)*) => {
        quiet_if_gone(writeln!(std::io::stdout().lock(), $($t)*))?
    };
}

/// `print!`, likewise.
macro_rules! say_raw {
    ($($t:tt)*) => {
        quiet_if_gone(write!(std::io::stdout().lock(), $($t)*))?
    };
}

fn quiet_if_gone(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// A simulation allocates and frees small objects (frames, JSON values, entity copies)
/// for a thousand tabs at once; glibc's allocator spent a fifth of a large run walking
/// cold free lists. jemalloc keeps them local; mimalloc did too, but returned idle pages
/// to the OS after a second and paid for zeroing them again (measured: jemalloc ~7%
/// faster than mimalloc, ~25% faster than glibc on `25-large-workspace`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "simulate",
    version,
    about = "Run rtsync scenarios in a deterministic network simulation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Scenario files or folders of them (default: the whole embedded catalog).
    scenarios: Vec<PathBuf>,
    /// Override every scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where reports go (one folder per scenario).
    #[arg(long, default_value = "reports/out")]
    out: PathBuf,
    /// Run each scenario twice and fail unless the deterministic summaries are identical.
    #[arg(long)]
    check_determinism: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

/// `simulate live`: a scenario's tabs over real TCP against a server.
#[derive(clap::Args, Debug)]
struct LiveArgs {
    scenario: PathBuf,
    /// A running server speaking the protocol (started with
    /// `--jwt-secret rtsync-simulation-secret`), as HOST:PORT.
    #[arg(long, conflicts_with = "spawn_server")]
    target: Option<String>,
    /// Start the reference server on 127.0.0.1 with the scenario's settings (a cluster
    /// scenario's nodes over a local Redis, as --spawn-cluster does).
    #[arg(long)]
    spawn_server: bool,
    /// Start a cluster on 127.0.0.1: a local redis-server and N reference-server nodes
    /// with the scenario's settings; group i's tabs start on node i mod N.
    #[arg(long, value_name = "N", conflicts_with_all = ["target", "spawn_server"],
          value_parser = clap::value_parser!(u64).range(1..=8))]
    spawn_cluster: Option<u64>,
    /// With --spawn-cluster: add K node kills (SIGKILL), spread evenly after the warm-up,
    /// each node in turn, each restarted after half the gap to the next (at most 5 s).
    #[arg(
        long,
        value_name = "K",
        requires = "spawn_cluster",
        default_value_t = 0
    )]
    node_kills: usize,
    /// Connect straight to the server, without the per-group fault proxies (capacity
    /// runs: half the sockets; network faults are then skipped).
    #[arg(long)]
    direct: bool,
    /// Load-generator threads (tabs split by workspace); default: the machine's cores.
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value = "reports/live")]
    out: PathBuf,
    #[arg(long, short)]
    quiet: bool,
}

/// `simulate conformance`.
#[derive(clap::Args, Debug)]
struct ConformanceArgs {
    /// The server to test, as HOST:PORT.
    #[arg(long, conflicts_with = "spawn_server", required_unless_present_any = ["spawn_server", "list"])]
    target: Option<String>,
    /// Test the reference server, started here on 127.0.0.1 (a 1 s heartbeat and
    /// presence grace, so every case runs).
    #[arg(long)]
    spawn_server: bool,
    /// The HS256 secret the target checks tokens with (the cases mint their own).
    #[arg(
        long,
        env = "RTSYNC_JWT_SECRET",
        default_value = "rtsync-simulation-secret",
        hide_env_values = true
    )]
    jwt_secret: String,
    /// Which cases run: `all`, `minimum` (what `simulate live` needs), or case ids and
    /// areas, comma-separated (`1,3.2,7`).
    #[arg(long, default_value = "all")]
    cases: String,
    /// Which cases must pass for exit 0 (same syntax).
    #[arg(long, default_value = "minimum")]
    required: String,
    /// `conformance.json` and `conformance.html` go here.
    #[arg(long, default_value = "reports/conformance")]
    out: PathBuf,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
    /// No line per case while running.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run scenarios over a range of seeds (A..B) on parallel threads and list the
    /// failing seeds with their replay lines. Exit non-zero when any seed fails.
    Sweep {
        /// Scenario files or folders of them (default: the whole embedded catalog).
        scenarios: Vec<PathBuf>,
        /// Seeds A..B (B excluded).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Runs at once (default: the machine's cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Reports of failing seeds go to `OUT/<scenario>/seed-<N>/`, the table to
        /// `OUT/sweep.json`; passing seeds leave nothing.
        #[arg(long, default_value = "reports/sweep")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run a scenario's tabs live, over real TCP in real time, against a server.
    Live(LiveArgs),
    /// The reference server as `live --spawn-server` runs it: a child process it can
    /// `kill -9` (config as JSON on stdin). Not for direct use.
    #[command(hide = true)]
    ServeChild {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Compare two runs (summary.json files or report folders): per metric the change of
    /// p99 and mean against a noise band. Exit 99 on a regression.
    Compare {
        base: PathBuf,
        new: PathBuf,
        /// Relative increase tolerated, in percent.
        #[arg(long, default_value_t = 10.0)]
        band_percent: f64,
        /// Absolute increase always tolerated, in ms.
        #[arg(long, default_value_t = 5.0)]
        band_ms: f64,
    },
    /// Run scenarios simulated and then live against a reference server this process
    /// spawns, and print their latency percentiles side by side with a tolerance
    /// (docs/performance.md, "Simulator fidelity"). Live runs take real time.
    Fidelity {
        /// Scenario files or folders of them (default: the whole embedded catalog).
        scenarios: Vec<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        /// Skip scenarios that run longer than this in real time (the hour-long soak).
        #[arg(long, default_value_t = 300)]
        max_s: u64,
        /// Live may differ from simulated by this many ms…
        #[arg(long, default_value_t = 5.0)]
        tolerance_ms: f64,
        /// …or by this share of the simulated figure, whichever is larger.
        #[arg(long, default_value_t = 50.0)]
        tolerance_percent: f64,
        /// Reports go to `OUT/sim/<scenario>/` and `OUT/live/<scenario>/`; the table to
        /// `OUT/fidelity.md` and `OUT/fidelity.json`.
        #[arg(long, default_value = "reports/fidelity")]
        out: PathBuf,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the protocol's numbered conformance cases against a server, one by one, and
    /// say which it gets right: PASS, FAIL (with the frames exchanged) or NOT IMPLEMENTED
    /// (docs/conformance.md). Exit 100 when a required case does not pass.
    Conformance(ConformanceArgs),
    /// List the scenarios in a folder (default: scenarios/), or the metrics.
    List {
        #[arg(default_value = "scenarios")]
        dir: PathBuf,
        #[arg(long)]
        metrics: bool,
    },
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B, e.g. 1..100")?;
    let (a, b): (u64, u64) = (
        a.parse().map_err(|_| "A is not a number")?,
        b.parse().map_err(|_| "B is not a number")?,
    );
    if a >= b {
        return Err("A must be less than B".into());
    }
    Ok((a, b))
}

fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

struct Ran {
    code: i32,
    deterministic_sha256: String,
}

/// Where a run happens: in the simulator, or live over real TCP against an address
/// (through fault proxies unless `direct`, from `threads` worker threads; `server` when
/// this process spawned it, so the timeline's server faults can reach it).
enum Mode<'a> {
    Simulated,
    Live {
        servers: rtsync_simulator::live::Servers<'a>,
        direct: bool,
        threads: usize,
    },
}

fn run_one(
    sc: &Scenario,
    source: &str,
    seed: u64,
    out_dir: &Path,
    quiet: bool,
) -> anyhow::Result<Ran> {
    run_in(Mode::Simulated, sc, source, seed, out_dir, quiet)
}

fn run_in(
    mode: Mode,
    sc: &Scenario,
    source: &str,
    seed: u64,
    out_dir: &Path,
    quiet: bool,
) -> anyhow::Result<Ran> {
    // Simulated (or, live, real) seconds of the run, with its speed and an ETA; drawn
    // only on a terminal, so logs and pipes get the report alone.
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((sc.duration_s + sc.quiescence_s).max(1))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("  {prefix}: [{bar:30}] {pos}/{len} s, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(sc.name.clone());
    let mut progress = |at: u64, total: u64| {
        // The liveness phase may run past the planned end.
        bar.set_length(total.max(at));
        bar.set_position(at);
    };
    let live = matches!(mode, Mode::Live { .. });
    let drawn = sc.for_seed(seed)?;
    let sc = &drawn;
    let out = match mode {
        Mode::Simulated => run::run(sc, seed, &mut progress)?,
        Mode::Live {
            servers,
            direct,
            threads,
        } => rtsync_simulator::live::run(sc, seed, servers, direct, threads, &mut progress)?,
    };
    bar.finish_and_clear();
    let verdict = report::evaluate(sc, &out.recorder);
    let replay = output::replay_line(source, seed, live);
    // The reports first: they are written even if the console's reader went away.
    let sha = output::write_reports(&out_dir.join(&sc.name), sc, seed, &out, &verdict, &replay)?;
    say!("{}", report::console(sc, seed, &out, &verdict, &replay));
    Ok(Ran {
        code: verdict.code,
        deterministic_sha256: sha,
    })
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(code) => std::process::ExitCode::from(code as u8),
        // The reader went away (`simulate list | head`): not an error of ours.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::List { dir, metrics }) => run_list(dir, metrics),
        Some(Cmd::Live(args)) => run_live(args),
        Some(Cmd::Conformance(args)) => run_conformance(args),
        Some(Cmd::ServeChild { listen, data_dir }) => {
            rtsync_simulator::live::serve_child(listen, data_dir)?;
            Ok(0)
        }
        Some(Cmd::Fidelity {
            scenarios,
            seed,
            max_s,
            tolerance_ms,
            tolerance_percent,
            out,
            quiet,
        }) => {
            let tol = rtsync_simulator::fidelity::Tolerance {
                absolute_ms: tolerance_ms,
                relative: tolerance_percent / 100.0,
            };
            run_fidelity(&scenarios, seed, max_s, &tol, &out, quiet)
        }
        Some(Cmd::Compare {
            base,
            new,
            band_percent,
            band_ms,
        }) => run_compare(&base, &new, band_percent, band_ms),
        Some(Cmd::Sweep {
            scenarios,
            seeds,
            jobs,
            out,
            quiet,
        }) => run_sweep(&scenarios, seeds.0..seeds.1, jobs, &out, quiet),
        None => run_catalog(&cli),
    }
}

/// `simulate list`: the scenarios of a folder, or the metric names.
fn run_list(dir: PathBuf, metrics: bool) -> anyhow::Result<i32> {
    // Written, not printed: a closed pipe is an error to return, not a panic.
    let mut out = std::io::stdout().lock();
    if metrics {
        use rtsync_simulator::metrics::*;
        writeln!(out, "histograms (ms): {}", HISTOGRAMS.join(", "))?;
        writeln!(out, "counters:        {}", COUNTERS.join(", "))?;
        writeln!(out, "invariants:      {}", INVARIANTS.join(", "))?;
        return Ok(EXIT_PASS);
    }
    for f in expand(&[dir])? {
        match Scenario::load(&f) {
            Ok(sc) => writeln!(
                out,
                "{:<40} {:>6} tabs  {:>5} s  {}",
                f.display(),
                sc.tabs(),
                sc.duration_s,
                sc.description
            )?,
            Err(e) => writeln!(out, "{:<40} INVALID: {e}", f.display())?,
        }
    }
    Ok(EXIT_PASS)
}

/// `simulate conformance`.
fn run_conformance(a: ConformanceArgs) -> anyhow::Result<i32> {
    use rtsync_simulator::conformance::{self, Selection, Verdict, cases, report};
    let selection = Selection::parse(&a.cases).map_err(|e| anyhow::anyhow!("--cases: {e}"))?;
    let required = Selection::parse(&a.required).map_err(|e| anyhow::anyhow!("--required: {e}"))?;
    if a.list {
        let mut out = std::io::stdout().lock();
        for c in cases::all() {
            let min = if c.minimum { "minimum" } else { "" };
            writeln!(out, "{:<5} {:<8} {}", c.id, min, c.title)?;
        }
        return Ok(EXIT_PASS);
    }
    let (spawned, addr, secret) = if a.spawn_server {
        let s = rtsync_simulator::live::SpawnedServer::with_config(
            conformance::reference_config(),
            Some(std::env::current_exe()?),
        )?;
        let addr = s.addr.to_string();
        (Some(s), addr, rtsync_simulator::auth::SECRET.to_vec())
    } else {
        let t = a
            .target
            .clone()
            .context("--target HOST:PORT or --spawn-server")?;
        (None, t, a.jwt_secret.into_bytes())
    };
    say!("  conformance: {addr}");
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let quiet = a.quiet;
    let results = rt.block_on(conformance::run(&addr, &secret, &tag, &selection, |r| {
        if !quiet {
            eprintln!("  {:<5} {:<16} {}", r.id, r.verdict.label(), r.title);
        }
    }));
    drop(spawned);
    let all = cases::all();
    let must: Vec<bool> = results
        .iter()
        .map(|r| all.iter().any(|c| c.id == r.id && required.contains(c)))
        .collect();
    print!("{}", report::console(&results, &must));
    report::write(&a.out, &addr, &results, &must)
        .with_context(|| format!("writing {}", a.out.display()))?;
    say!("  report: {}", a.out.join("conformance.html").display());
    let broken = results
        .iter()
        .zip(&must)
        .any(|(r, m)| *m && r.verdict != Verdict::Pass);
    Ok(if broken {
        rtsync_simulator::report::EXIT_INVARIANT
    } else {
        EXIT_PASS
    })
}

/// The reference server as the scenario runs it, started here as child processes of
/// this binary: one server, or (`server.nodes` above 1) a cluster over a local Redis.
fn spawn_for(sc: &Scenario) -> anyhow::Result<Box<dyn rtsync_simulator::live::Spawned>> {
    use rtsync_simulator::live::{SpawnedCluster, SpawnedServer};
    let exe = std::env::current_exe()?;
    Ok(if sc.server.nodes > 1 {
        let c = SpawnedCluster::start(sc, sc.server.nodes, Some(exe))?;
        say!(
            "  cluster: {} nodes over {}",
            sc.server.nodes,
            c.redis_url()
        );
        Box::new(c)
    } else {
        Box::new(SpawnedServer::start_child(sc, exe)?)
    })
}

/// `simulate live`: against `--target`, or a reference server spawned here.
fn run_live(a: LiveArgs) -> anyhow::Result<i32> {
    let sc = match Scenario::load(&a.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_INVALID);
        }
    };
    let seed = a.seed.unwrap_or(sc.seed);
    // A swarm scenario's server settings are drawn per seed, like the rest.
    let mut sc = sc.for_seed(seed)?;
    if let Some(n) = a.spawn_cluster {
        sc = match sc.on_cluster(n as usize, a.node_kills) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return Ok(EXIT_INVALID);
            }
        };
    }
    let mut spawned = if a.spawn_server || a.spawn_cluster.is_some() {
        Some(spawn_for(&sc)?)
    } else {
        None
    };
    let addr = match (&spawned, &a.target) {
        (Some(s), _) => s.addrs()[0],
        (None, Some(t)) => {
            use std::net::ToSocketAddrs;
            t.to_socket_addrs()
                .with_context(|| format!("--target {t}"))?
                .next()
                .with_context(|| format!("--target {t}: no address"))?
        }
        (None, None) => {
            anyhow::bail!("live mode needs --target HOST:PORT, --spawn-server or --spawn-cluster N")
        }
    };
    if spawned.is_none() {
        // A target missing part of the minimum gives a pile of symptoms, not a verdict:
        // say what is missing instead (docs/conformance.md).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let secret = rtsync_simulator::auth::SECRET;
        if let Err(why) = rt.block_on(rtsync_simulator::conformance::precheck(
            &addr.to_string(),
            secret,
        )) {
            eprintln!("{why}");
            return Ok(EXIT_INVALID);
        }
    }
    raise_nofile_for(&sc, a.direct);
    match &spawned {
        Some(s) if sc.server.nodes > 1 => say!(
            "  live: {} tabs against a {}-node cluster at {}",
            sc.tabs(),
            sc.server.nodes,
            s.addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => say!("  live: {} tabs against {addr}", sc.tabs()),
    }
    // The report's rerun line names the servers too.
    let rerun = match (a.spawn_cluster, &a.target) {
        (Some(n), _) => format!(
            "{} --spawn-cluster {n} --node-kills {}",
            a.scenario.display(),
            a.node_kills
        ),
        (None, Some(t)) => format!("{} --target {t}", a.scenario.display()),
        (None, None) => format!("{} --spawn-server", a.scenario.display()),
    };
    let servers = match spawned.as_deref_mut() {
        Some(s) => rtsync_simulator::live::Servers::Spawned(s),
        None => rtsync_simulator::live::Servers::At(addr),
    };
    let r = run_in(
        Mode::Live {
            servers,
            direct: a.direct,
            threads: a
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        },
        &sc,
        &rerun,
        seed,
        &a.out,
        a.quiet,
    )?;
    drop(spawned);
    Ok(r.code)
}

/// `simulate compare`: exit 99 on a regression beyond the noise band.
fn run_compare(base: &Path, new: &Path, band_percent: f64, band_ms: f64) -> anyhow::Result<i32> {
    let (b, n) = match (compare::load(base), compare::load(new)) {
        (Ok(b), Ok(n)) => (b, n),
        (Err(e), _) | (_, Err(e)) => anyhow::bail!(e),
    };
    let c = compare::compare(
        &b,
        &n,
        &compare::Band {
            relative: band_percent / 100.0,
            absolute_ms: band_ms,
        },
    );
    say_raw!("{}", c.table());
    if c.regressed() {
        say!("\nREGRESSION beyond the noise band ({band_percent}% and {band_ms} ms): exit 99");
        Ok(report::EXIT_THRESHOLD)
    } else {
        say!("\nno regression beyond the noise band ({band_percent}% and {band_ms} ms)");
        Ok(EXIT_PASS)
    }
}

/// `simulate [SCENARIOS]`: each scenario once (twice with `--check-determinism`), and
/// with more than one, an index page and a table of exit codes.
fn run_catalog(cli: &Cli) -> anyhow::Result<i32> {
    let sources = load_sources(&cli.scenarios)?;
    let mut worst = EXIT_PASS;
    let mut table = Vec::new();
    let mut names = Vec::new();
    for (source, sc) in sources {
        let sc = match sc {
            Ok(sc) => sc,
            Err(e) => {
                eprintln!("invalid scenario: {e}");
                worst = worst.max(EXIT_INVALID);
                names.push(String::new());
                table.push((source, EXIT_INVALID));
                continue;
            }
        };
        let seed = cli.seed.unwrap_or(sc.seed);
        for w in sc.warnings() {
            eprintln!("warning: {w}");
        }
        let code = run_checked(cli, &sc, &source, seed)?;
        worst = worst.max(code);
        let label = match &sc.expect.violation {
            Some(v) if code == EXIT_PASS => {
                format!("{} (canary: {v} found, as expected)", sc.name)
            }
            _ => sc.name.clone(),
        };
        names.push(sc.name.clone());
        table.push((label, code));
    }
    if table.len() > 1 {
        let entries: Vec<(String, i32, String)> = names
            .iter()
            .zip(&table)
            .map(|(n, (label, code))| (label.clone(), *code, format!("{n}/report.html")))
            .collect();
        std::fs::create_dir_all(&cli.out)?;
        std::fs::write(cli.out.join("index.html"), html::index(&entries))?;
        say!(
            "\n  catalog: {} scenarios   (reports: {})",
            table.len(),
            cli.out.join("index.html").display()
        );
        for (name, code) in &table {
            say!(
                "    {} {name} (exit {code})",
                if *code == 0 { "✓" } else { "✗" }
            );
        }
    }
    Ok(worst)
}

/// One scenario's run, and with `--check-determinism` a second whose deterministic
/// summary must hash the same; the exit code.
fn run_checked(cli: &Cli, sc: &Scenario, source: &str, seed: u64) -> anyhow::Result<i32> {
    let r = run_one(sc, source, seed, &cli.out, cli.quiet)?;
    let mut code = r.code;
    if cli.check_determinism {
        let again = run_one(sc, source, seed, &cli.out.join("determinism-check"), true)?;
        if again.deterministic_sha256 != r.deterministic_sha256 {
            eprintln!(
                "NOT DETERMINISTIC: {} seed {seed}: {} vs {}",
                sc.name, r.deterministic_sha256, again.deterministic_sha256
            );
            code = code.max(report::EXIT_INVARIANT);
        } else {
            say!(
                "  determinism: two runs, identical deterministic summary (sha256 {})",
                &r.deterministic_sha256[..16]
            );
        }
    }
    Ok(code)
}

/// Every tab holds a socket (two with the proxies): raises the open-file limit to what
/// the system allows, and says so if that is still too low.
fn raise_nofile_for(sc: &Scenario, direct: bool) {
    let want = (sc.tabs() as u64) * if direct { 1 } else { 2 } + 256;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < want => eprintln!(
            "warning: open-file limit is {got}, below the {want} this run needs; raise the hard limit (ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not raise the open-file limit: {e}"),
    }
}

/// `simulate fidelity`: each scenario simulated, then live through its fault proxies
/// against a freshly spawned reference server; then the side-by-side table.
fn run_fidelity(
    paths: &[PathBuf],
    seed: Option<u64>,
    max_s: u64,
    tol: &rtsync_simulator::fidelity::Tolerance,
    out: &Path,
    quiet: bool,
) -> anyhow::Result<i32> {
    use rtsync_simulator::{compare, fidelity};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut skipped = Vec::new();
    for (source, sc) in load_sources(paths)? {
        let sc = sc.map_err(|e| anyhow::anyhow!("invalid scenario: {e}"))?;
        let real_s = sc.duration_s + sc.quiescence_s;
        if real_s > max_s {
            skipped.push(format!(
                "{}: {real_s} s in real time (--max-s {max_s})",
                sc.name
            ));
            continue;
        }
        let seed = seed.unwrap_or(sc.seed);
        run_one(&sc, &source, seed, &out.join("sim"), quiet)?;
        let sc = sc.for_seed(seed)?;
        let mut server = spawn_for(&sc)?;
        raise_nofile_for(&sc, false);
        let mode = Mode::Live {
            servers: rtsync_simulator::live::Servers::Spawned(server.as_mut()),
            direct: false,
            threads,
        };
        run_in(mode, &sc, &source, seed, &out.join("live"), quiet)?;
    }
    let (sim, live) = match (
        compare::load(&out.join("sim")),
        compare::load(&out.join("live")),
    ) {
        (Ok(s), Ok(l)) => (s, l),
        (Err(e), _) | (_, Err(e)) => anyhow::bail!(e),
    };
    let rows = fidelity::rows(&sim, &live, tol);
    let mut md = fidelity::table(&rows);
    for s in &skipped {
        md.push_str(&format!("\nskipped: {s}"));
    }
    say!("\n{md}");
    std::fs::write(out.join("fidelity.md"), &md)?;
    let json = serde_json::json!({"tolerance": tol, "rows": rows, "skipped": skipped});
    std::fs::write(
        out.join("fidelity.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let beyond = rows.iter().filter(|r| r.within == Some(false)).count();
    say!(
        "  fidelity: {} rows, {beyond} beyond the tolerance ({} ms or {:.0}%); table in {}",
        rows.len(),
        tol.absolute_ms,
        tol.relative * 100.0,
        out.join("fidelity.md").display()
    );
    Ok(EXIT_PASS)
}

/// The scenarios to run: the files and folders given, or the embedded catalog; each
/// parsed, or the reason it was refused.
fn load_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Result<Scenario, String>)>> {
    Ok(if paths.is_empty() {
        rtsync_simulator::catalog::CATALOG
            .iter()
            .map(|(file, text)| {
                let path = format!("scenarios/{file}");
                let sc = Scenario::parse(text, &path).map_err(|e| e.to_string());
                (path, sc)
            })
            .collect()
    } else {
        expand(paths)?
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    Scenario::load(&p).map_err(|e| e.to_string()),
                )
            })
            .collect()
    })
}

fn run_sweep(
    paths: &[PathBuf],
    seeds: std::ops::Range<u64>,
    jobs: Option<usize>,
    out: &Path,
    quiet: bool,
) -> anyhow::Result<i32> {
    let mut entries = Vec::new();
    for (source, sc) in load_sources(paths)? {
        match sc {
            Ok(scenario) => entries.push(sweep::Entry { source, scenario }),
            Err(e) => {
                eprintln!("invalid scenario: {e}");
                return Ok(EXIT_INVALID);
            }
        }
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let seeds_n = seeds.end - seeds.start;
    let runs = seeds_n * entries.len() as u64;
    // Earlier sweeps' failing-seed reports would read as this sweep's.
    for e in &entries {
        let dir = out.join(&e.scenario.name);
        if let Ok(list) = std::fs::read_dir(&dir) {
            for d in list.flatten() {
                if d.file_name().to_string_lossy().starts_with("seed-") {
                    std::fs::remove_dir_all(d.path())?;
                }
            }
        }
    }
    eprintln!(
        "sweep: {} scenarios × seeds {}..{} = {runs} runs on {jobs} threads",
        entries.len(),
        seeds.start,
        seeds.end
    );
    let started = std::time::Instant::now(); // measured only: the sweep's wall time
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(runs)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} runs, {msg} ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message("0 failing");
    let mut failing = 0usize;
    let results = sweep::run(&entries, seeds.clone(), jobs, out, |r| {
        if r.code != EXIT_PASS {
            failing += 1;
            bar.set_message(format!("{failing} failing"));
            bar.suspend(|| {
                eprintln!(
                    "  ✗ {} seed {} (exit {})",
                    entries[r.entry].scenario.name, r.seed, r.code
                )
            });
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64();
    say_raw!("{}", sweep::table(&entries, seeds_n, &results, 10));
    std::fs::create_dir_all(out)?;
    let json = sweep::summary_json(&entries, &seeds, &results);
    std::fs::write(out.join("sweep.json"), serde_json::to_string_pretty(&json)?)?;
    say!(
        "\n  {runs} runs, {failing} failing, in {wall_s:.0} s ({:.0} seeds per hour of the whole set; reports of failing seeds and sweep.json in {})",
        seeds_n as f64 / wall_s.max(1e-9) * 3600.0,
        out.display()
    );
    Ok(results.iter().map(|r| r.code).max().unwrap_or(EXIT_PASS))
}
