//! UTC timestamps as the seed writes them: `JSON.stringify(new Date())`, i.e.
//! `"2026-11-24T22:43:09.123Z"`. Kept as milliseconds since the Unix epoch so that
//! simulated time (a simulated epoch plus elapsed ms) and real time look the same.
//!
//! Hand-rolled rather than pulling a date crate: we need exactly one format, strictly
//! written and leniently read (a browser may also send `Date.now()` as a number).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected UTC ISO-8601 like 2026-11-24T22:43:09.123Z ({why})")]
pub struct TimestampError {
    input: String,
    why: &'static str,
}

impl Timestamp {
    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff…]Z` (years 1970..=9999). Fractions beyond
    /// milliseconds are truncated, as `Date.parse` does.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let err = |why| TimestampError {
            input: s.chars().take(64).collect(),
            why,
        };
        let b = s.as_bytes();
        if b.len() < 20 || !b.ends_with(b"Z") {
            return Err(err("must end with Z"));
        }
        let num = |from: usize, to: usize| -> Result<u64, TimestampError> {
            let part = s.get(from..to).ok_or_else(|| err("truncated"))?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err("digit expected"));
            }
            part.parse().map_err(|_| err("digit expected"))
        };
        for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
            if b[i] != c {
                return Err(err("separator expected"));
            }
        }
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if year < 1970 || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
            return Err(err("field out of range"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(err("day out of range"));
        }
        let frac = &s[19..s.len() - 1];
        let millis = match frac.strip_prefix('.') {
            None if frac.is_empty() => 0,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
                let mut ms = 0u64;
                for (i, c) in digits.bytes().take(3).enumerate() {
                    ms += u64::from(c - b'0') * [100, 10, 1][i];
                }
                ms
            }
            _ => return Err(err("bad fraction of a second")),
        };
        let days = days_from_civil(year as i64, month as u32, day as u32) as u64;
        Ok(Timestamp(
            ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis,
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1000 % 60,
            rem % 1000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// Accepts the ISO string and, leniently, a number of milliseconds (`Date.now()`),
    /// which the seed's heartbeat sends. A visitor, not an untagged enum: every event
    /// carries timestamps, and untagged enums build an error per variant they reject.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO-8601 UTC timestamp or milliseconds since the epoch")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                u64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("timestamp must be non-negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(Timestamp(v as u64))
                } else {
                    Err(E::custom("timestamp must be non-negative"))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms (public domain), days relative to 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_json_stringify_date() {
        // new Date(1795646589123).toJSON() in a browser
        assert_eq!(
            Timestamp(1_795_646_589_123).to_string(),
            "2026-11-25T22:43:09.123Z"
        );
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_browser_strings_and_numbers() {
        let t: Timestamp = serde_json::from_str("\"2026-11-25T22:43:09.123Z\"").unwrap();
        assert_eq!(t.0, 1_795_646_589_123);
        let t: Timestamp = serde_json::from_str("1795646589123").unwrap();
        assert_eq!(t.0, 1_795_646_589_123);
        assert_eq!(
            Timestamp::parse("2026-11-25T22:43:09Z").unwrap().0,
            1_795_646_589_000
        );
        assert_eq!(
            Timestamp::parse("2026-11-25T22:43:09.1239Z").unwrap().0,
            1_795_646_589_123
        );
    }

    #[test]
    fn refuses_malformed_strings_with_a_reason() {
        for bad in [
            "2026-11-25 19:23:09.123Z",
            "2026-11-25T22:43:09.123+01:00",
            "2026-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-11-25T22:43:09.Z",
            "yesterday",
            "",
        ] {
            let e = Timestamp::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("expected UTC ISO-8601"),
                "{bad}: {e}"
            );
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(ms in 0u64..253_402_300_799_999) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }
}
