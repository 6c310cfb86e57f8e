//! Thresholds in k6's grammar: `ws_delivery_ms{phase:steady} = ["p(99)<100", "avg<20"]`.
//! Aggregations: `p(N)`, `avg`, `min`, `max`, `med`, `count`, `value` (a counter),
//! `rate` (a ratio); operators `<`, `<=`, `>`, `>=`, `==`, `!=`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    pub tags: BTreeMap<String, String>,
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (metric, tags) = match s.split_once('{') {
            None => (s, ""),
            Some((m, rest)) => (
                m,
                rest.strip_suffix('}')
                    .ok_or_else(|| format!("{s:?}: missing closing }}"))?,
            ),
        };
        let mut map = BTreeMap::new();
        for kv in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = kv
                .split_once(':')
                .ok_or_else(|| format!("{s:?}: tag {kv:?} is not key:value"))?;
            let k = k.trim();
            if k != "phase" && k != "group" {
                return Err(format!("{s:?}: unknown tag {k:?}; expected phase or group"));
            }
            map.insert(k.to_owned(), v.trim().to_owned());
        }
        if metric.is_empty() {
            return Err(format!("{s:?}: no metric name"));
        }
        Ok(Selector {
            metric: metric.to_owned(),
            tags: map,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Percentile(f64),
    Avg,
    Min,
    Max,
    Med,
    Count,
    Value,
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub text: String,
    pub agg: Agg,
    pub op: Op,
    pub bound: f64,
}

impl Condition {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (pos, len, op) = ops
            .iter()
            .filter_map(|(txt, op)| t.find(txt).map(|p| (p, txt.len(), *op)))
            .min_by_key(|(p, len, _)| (*p, usize::MAX - len))
            .ok_or_else(|| format!("{s:?}: expected AGG OP NUMBER, like p(99)<100"))?;
        let (lhs, rhs) = (&t[..pos], &t[pos + len..]);
        let bound: f64 = rhs
            .parse()
            .map_err(|_| format!("{s:?}: {rhs:?} is not a number"))?;
        let agg = match lhs {
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "med" => Agg::Med,
            "count" => Agg::Count,
            "value" => Agg::Value,
            "rate" => Agg::Rate,
            p if p.starts_with("p(") && p.ends_with(')') => {
                let q: f64 = p[2..p.len() - 1]
                    .parse()
                    .map_err(|_| format!("{s:?}: bad percentile {p:?}"))?;
                if !(0.0..=100.0).contains(&q) {
                    return Err(format!("{s:?}: percentile must be within 0..=100"));
                }
                Agg::Percentile(q)
            }
            other => {
                return Err(format!(
                    "{s:?}: unknown aggregation {other:?}; expected p(N), avg, min, max, med, count, value or rate"
                ));
            }
        };
        Ok(Condition {
            text: s.trim().to_owned(),
            agg,
            op,
            bound,
        })
    }

    pub fn holds(&self, observed: f64) -> bool {
        match self.op {
            Op::Lt => observed < self.bound,
            Op::Le => observed <= self.bound,
            Op::Gt => observed > self.bound,
            Op::Ge => observed >= self.bound,
            Op::Eq => observed == self.bound,
            Op::Ne => observed != self.bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k6_conditions_and_selectors() {
        let c = Condition::parse("p(99) < 100").unwrap();
        assert_eq!(
            (c.agg, c.op, c.bound),
            (Agg::Percentile(99.0), Op::Lt, 100.0)
        );
        assert!(c.holds(99.9) && !c.holds(100.0));
        assert_eq!(Condition::parse("count==0").unwrap().op, Op::Eq);
        assert_eq!(Condition::parse("rate>=0.8").unwrap().op, Op::Ge);
        assert_eq!(
            Condition::parse("p(99.9)<=5").unwrap().agg,
            Agg::Percentile(99.9)
        );
        for bad in ["p99<1", "avg", "avg<x", "p(101)<1", "mean<3"] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
        let s = Selector::parse("ws_delivery_ms{phase:steady, group:office}").unwrap();
        assert_eq!(s.metric, "ws_delivery_ms");
        assert_eq!(s.tags.get("group").map(String::as_str), Some("office"));
        assert!(Selector::parse("x{color:red}").is_err());
    }
}
