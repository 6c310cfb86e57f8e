//! Swarm scenarios (FoundationDB's and TigerBeetle's swarm testing): a scenario's
//! `[swarm]` table gives ranges or sets instead of values, and each seed draws its own,
//! so a sweep over thousands of seeds explores thousands of different situations
//! (docs/scenarios.md, "Swarm").
//!
//! ```toml
//! [swarm]
//! "workload.ops_per_s" = [0.2, 4.0]          # uniform (whole numbers if both ends are)
//! "workload.payload_bytes" = { log = [8, 60000] }   # log-uniform: small and large alike
//! "server.strategy_task" = { one_of = ["lww", "merge"] }
//! "groups.0.users" = [2, 300]                 # array elements by index
//!
//! [[swarm.faults]]                            # a fault that may happen
//! kind = ["partition", "hold"]                # one of these
//! group = ["office", "mobile"]                # on one of these groups (absent: all)
//! p = 0.7                                     # the chance it happens at all
//! at_s = [5, 30]
//! for_s = [1, 40]                             # then healed (partition → repair, …)
//! fraction = [0.1, 1.0]                       # client faults: share of tabs
//! latency_ms = { log = [20, 3000] }           # latency faults
//! node = { one_of = [0, 1, 2] }               # server and backplane faults: which node
//! ```
//!
//! The draws come from their own stream of the root seed (never the world's), in a
//! fixed order (parameters by path, then faults in file order), so they are a pure
//! function of (scenario, seed); every drawn value is reported.

use super::FaultKind;
use crate::record::round3;
use rtsync_client::rng::Rng;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Value;

/// Salt of the swarm's stream: the draws must not shift the world's random choices.
const SWARM_SALT: u64 = 0x5357_4152_4d21; // "SWARM!"

// No `deny_unknown_fields`: every other key is a parameter path (serde cannot combine
// it with `flatten`); a path that names no field is refused when the draws are read back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Swarm {
    /// Dotted path into the scenario → what to draw for it.
    #[serde(flatten)]
    pub params: BTreeMap<String, Value>,
    #[serde(default)]
    pub faults: Vec<SwarmFault>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmFault {
    /// A fault kind, or a list to pick one from.
    pub kind: Value,
    #[serde(default)]
    pub group: Option<Value>,
    /// The chance the fault happens at all in a seed.
    #[serde(default = "one")]
    pub p: f64,
    pub at_s: Value,
    /// How long until it heals (kinds that have a heal); absent: never (the end of the
    /// workload heals everything).
    #[serde(default)]
    pub for_s: Option<Value>,
    #[serde(default)]
    pub fraction: Option<Value>,
    #[serde(default)]
    pub latency_ms: Option<Value>,
    #[serde(default)]
    pub ops: Option<Value>,
    /// The server node a server or backplane fault acts on (a cluster's).
    #[serde(default)]
    pub node: Option<Value>,
}

fn one() -> f64 {
    1.0
}

/// What a seed drew, in the order drawn: `(path, value)` for display and `summary.json`.
pub type Drawn = Vec<(String, String)>;

/// Applies the swarm's draws for `seed` to the scenario's TOML table (the file without
/// its `[swarm]`); the caller deserialises and validates the result.
pub fn draw(
    swarm: &Swarm,
    base: &toml::Table,
    seed: u64,
) -> Result<(toml::Table, Drawn), (String, String)> {
    let mut rng = Rng::new(seed).fork(SWARM_SALT);
    let mut table = base.clone();
    let mut drawn = Drawn::new();
    for (path, spec) in &swarm.params {
        let field = format!("swarm.\"{path}\"");
        let v = pick(spec, &mut rng).map_err(|m| (field.clone(), m))?;
        set(&mut table, path, v.clone()).map_err(|m| (field, m))?;
        drawn.push((path.clone(), show(&v)));
    }
    let mut faults: Vec<Value> = match table.remove("faults") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(("faults".into(), "expected an array of tables".into())),
        None => Vec::new(),
    };
    for (i, f) in swarm.faults.iter().enumerate() {
        let (drawn_faults, words) = draw_fault(i, f, &mut rng, base)?;
        faults.extend(drawn_faults);
        drawn.push((format!("faults[{i}]"), words));
    }
    clamp_to_workload(&mut faults, &table);
    table.insert("faults".into(), Value::Array(faults));
    Ok((table, drawn))
}

/// One swarm fault drawn: the faults it adds (with its heal when it has a duration)
/// and how the report words it. Every field is drawn whether or not the fault happens,
/// so one fault's chance never shifts the draws of the next.
fn draw_fault(
    i: usize,
    f: &SwarmFault,
    rng: &mut Rng,
    base: &toml::Table,
) -> Result<(Vec<Value>, String), (String, String)> {
    let field = |n: &str| format!("swarm.faults[{i}].{n}");
    if !(0.0..=1.0).contains(&f.p) {
        return Err((field("p"), "expected 0..=1".into()));
    }
    let happens = rng.chance(f.p);
    let kind_v = pick(&f.kind, rng).map_err(|m| (field("kind"), m))?;
    let kind: FaultKind = kind_v
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| (field("kind"), e.message().to_owned()))?;
    // An optional field is drawn only when the scenario gives it.
    let maybe = |v: &Option<Value>, name: &str, rng: &mut Rng| {
        v.as_ref()
            .map(|v| pick(v, rng).map_err(|m| (field(name), m)))
            .transpose()
    };
    let group = maybe(&f.group, "group", rng)?;
    let at_s = number(&pick(&f.at_s, rng).map_err(|m| (field("at_s"), m))?)
        .ok_or((field("at_s"), "expected a number".into()))?;
    let for_s = match &f.for_s {
        Some(v) => Some(
            number(&pick(v, rng).map_err(|m| (field("for_s"), m))?)
                .ok_or((field("for_s"), "expected a number".into()))?,
        ),
        None => None,
    };
    let fraction = maybe(&f.fraction, "fraction", rng)?;
    let latency = maybe(&f.latency_ms, "latency_ms", rng)?;
    let ops = maybe(&f.ops, "ops", rng)?;
    let node = maybe(&f.node, "node", rng)?;
    let mut words = format!("{} at {at_s} s", show(&kind_v));
    if !happens {
        return Ok((Vec::new(), "none".into()));
    }
    let mut fault = toml::Table::new();
    fault.insert("at_s".into(), Value::Float(at_s));
    fault.insert("kind".into(), kind_v.clone());
    if let Some(g) = &group {
        fault.insert("group".into(), g.clone());
        words.push_str(&format!(" on {}", show(g)));
    }
    if let Some(x) = &fraction {
        fault.insert("fraction".into(), x.clone());
        words.push_str(&format!(", fraction {}", show(x)));
    }
    if let Some(x) = &latency {
        fault.insert("latency_ms".into(), x.clone());
        words.push_str(&format!(", {} ms", show(x)));
    }
    if let Some(x) = &ops {
        fault.insert("ops".into(), x.clone());
        words.push_str(&format!(", {} ops", show(x)));
    }
    if let Some(x) = &node {
        fault.insert("node".into(), x.clone());
        words.push_str(&format!(" on node {}", show(x)));
    }
    let mut out = vec![Value::Table(fault.clone())];
    if let (Some(d), Some(heal)) = (for_s, kind.heal()) {
        let mut h = fault;
        let heal = toml::Value::try_from(heal).map_err(|e| (field("kind"), e.to_string()))?;
        h.insert("kind".into(), heal);
        h.insert("at_s".into(), Value::Float(round3(at_s + d)));
        if kind == FaultKind::Latency {
            // Back to the group's own latency, or the server's default.
            h.insert(
                "latency_ms".into(),
                Value::Integer(base_latency(base, group.as_ref())),
            );
        }
        out.push(Value::Table(h));
        words.push_str(&format!(" for {d} s"));
    }
    Ok((out, words))
}

/// Heals drawn past the end of the workload happen at its end (the heal phase).
fn clamp_to_workload(faults: &mut [Value], table: &toml::Table) {
    let duration = table
        .get("duration_s")
        .and_then(Value::as_integer)
        .unwrap_or(0) as f64;
    for f in faults.iter_mut() {
        if let Some(t) = f.get_mut("at_s")
            && number(t).is_some_and(|x| x > duration)
        {
            *t = Value::Float(duration);
        }
    }
}

fn base_latency(base: &toml::Table, group: Option<&Value>) -> i64 {
    let of_group = group.and_then(Value::as_str).and_then(|name| {
        base.get("groups")?
            .as_array()?
            .iter()
            .find(|g| g.get("name").and_then(Value::as_str) == Some(name))?
            .get("latency_ms")?
            .as_integer()
    });
    let server = base
        .get("server")
        .and_then(|s| s.get("latency_ms"))
        .and_then(Value::as_integer);
    of_group.or(server).unwrap_or(5)
}

/// Draws one value: `[a, b]` uniform (whole numbers when both ends are), `{ log = [a, b] }`
/// log-uniform, `{ one_of = [...] }` one of the set; anything else is a constant.
fn pick(spec: &Value, rng: &mut Rng) -> Result<Value, String> {
    match spec {
        Value::Array(ends) if ends.len() == 2 => range(&ends[0], &ends[1], false, rng),
        Value::Array(_) => Err("a range is [low, high]; a set is { one_of = [...] }".into()),
        Value::Table(t) if t.len() == 1 => {
            let (how, v) = t.iter().next().expect("one entry");
            match (how.as_str(), v) {
                ("log", Value::Array(e)) if e.len() == 2 => range(&e[0], &e[1], true, rng),
                ("one_of", Value::Array(set)) if !set.is_empty() => {
                    Ok(set[rng.below(set.len() as u64) as usize].clone())
                }
                _ => Err(format!(
                    "expected {{ log = [low, high] }} or {{ one_of = [...] }}, got {{ {how} = {} }}",
                    show(v)
                )),
            }
        }
        v => Ok(v.clone()),
    }
}

fn range(lo: &Value, hi: &Value, log: bool, rng: &mut Rng) -> Result<Value, String> {
    let (a, b) = match (number(lo), number(hi)) {
        (Some(a), Some(b)) if a <= b => (a, b),
        _ => {
            return Err(format!(
                "expected [low, high] with numbers low <= high, got [{}, {}]",
                show(lo),
                show(hi)
            ));
        }
    };
    if log && a <= 0.0 {
        return Err("a log range needs low > 0".into());
    }
    let u = rng.unit();
    let x = if log {
        (a.ln() + u * (b.ln() - a.ln())).exp()
    } else {
        a + u * (b - a)
    };
    Ok(match (lo, hi) {
        (Value::Integer(_), Value::Integer(_)) => {
            Value::Integer((x.round() as i64).clamp(a as i64, b as i64))
        }
        _ => Value::Float(round3(x)),
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A value as a person reads it (toml's own `Display` is a feature we do not build).
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{k} = {}", show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Datetime(d) => format!("{d:?}"),
    }
}

/// Sets `path` (dots between keys; a number indexes an array) in `table`. A table may gain
/// a key, an array no element; a misspelt key is refused when the scenario is read back
/// (unknown fields are refused), so a typo is never a silently ignored parameter.
fn set(table: &mut toml::Table, path: &str, v: Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        table.insert(path.to_owned(), v);
        return Ok(());
    };
    let mut here = table
        .entry(*first)
        .or_insert_with(|| Value::Table(toml::Table::new()));
    for p in middle {
        here = step(here, p)?;
    }
    match here {
        Value::Table(t) => {
            t.insert((*last).to_owned(), v);
            Ok(())
        }
        Value::Array(_) => {
            *step(here, last)? = v;
            Ok(())
        }
        _ => Err(format!("{path}: not a table or an array")),
    }
}

/// One step down a path: a table's key (created if missing) or an array's element.
fn step<'a>(v: &'a mut Value, key: &str) -> Result<&'a mut Value, String> {
    match v {
        Value::Table(t) => Ok(t
            .entry(key)
            .or_insert_with(|| Value::Table(toml::Table::new()))),
        Value::Array(a) => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("{key:?} is not an index"))?;
            a.get_mut(i).ok_or(format!("no element {i}"))
        }
        _ => Err(format!("{key:?}: not a table or an array")),
    }
}
