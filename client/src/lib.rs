pub mod cache;
pub mod conflict;
pub mod connection;
pub mod crosstab;
pub mod outbox;
pub mod persist;
pub mod replica;
pub mod rng;
pub mod seq;

/// Approximate bytes a JSON value retains (for memory accounting; not exact, but
/// monotone in the data, which is what growth and ratio metrics need).
pub fn value_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 8,
        Value::Number(_) => 16,
        Value::String(s) => 24 + s.len(),
        Value::Array(a) => 24 + a.iter().map(value_bytes).sum::<usize>(),
        Value::Object(o) => {
            48 + o
                .iter()
                .map(|(k, v)| 24 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
    }
}
