//! UTC timestamps as the seed writes them: `JSON.stringify(new Date())`, i.e.
//! `"2026-11-24T22:43:09.123Z"`. Kept as milliseconds since the Unix epoch so that
//! simulated time (a simulated epoch plus elapsed ms) and real time look the same.
//!
//! The calendar is the `time` crate's: written in exactly the browser's format, read
//! as RFC 3339 in UTC, and leniently as a number (a browser may send `Date.now()`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected UTC ISO-8601 like 2026-11-24T22:43:09.123Z ({why})")]
pub struct TimestampError {
    input: String,
    why: String,
}

/// How the seed's `Date.toJSON()` writes: always three fraction digits, always `Z`.
const WRITTEN: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

impl Timestamp {
    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Parses RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SS[.fff…]Z`, years 1970..=9999).
    /// Fractions beyond milliseconds are truncated, as `Date.parse` does; an offset
    /// other than `Z` is refused (the protocol's times are UTC).
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let err = |why: String| TimestampError {
            input: s.chars().take(64).collect(),
            why,
        };
        if !s.ends_with('Z') {
            return Err(err("must end with Z".into()));
        }
        if s.as_bytes().get(10) != Some(&b'T') {
            return Err(err("T expected between date and time".into()));
        }
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| err(e.to_string()))?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms)
            .map(Timestamp)
            .map_err(|_| err("before 1970".into()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Any u64 of milliseconds up to year 9999 fits `time`'s range; later ones are
        // clamped there rather than failing a write.
        let nanos = i128::from(self.0.min(MAX_MS)) * 1_000_000;
        let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| fmt::Error)?;
        let text = t.format(WRITTEN).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// 9999-12-31T23:59:59.999Z, the last instant four-digit years can write.
const MAX_MS: u64 = 253_402_300_799_999;

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
            "1969-12-31T23:59:59.999Z",
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
