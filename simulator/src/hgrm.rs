//! HdrHistogram's text outputs: the percentile distribution (`.hgrm`) exactly as the
//! Java library's `outputPercentileDistribution` and wrk2 print it, and the interval
//! log (`.hlog`, format v1.3) via the hdrhistogram crate's writer, readable by the
//! standard HdrHistogram tools (HistogramLogProcessor, HdrHistogram plotter).

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Java's default: 5 reporting ticks per half distance to 100%.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// `outputPercentileDistribution(out, 5, 1.0)` of the Java library, byte for byte:
/// header, one row per iteration step (the last without the 1/(1-q) column), footer.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let p = h.sigfig() as usize;
    let mut s = String::new();
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{:>12.p$} {:>2.12} {:>10} {:>14.2}",
                v.value_iterated_to() as f64,
                q,
                total,
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(
                s,
                "{:>12.p$} {:>2.12} {:>10}",
                v.value_iterated_to() as f64,
                q,
                total
            );
        }
    }
    let sub_buckets = 2u64.pow((2.0 * 10f64.powi(p as i32)).log2().ceil() as u32);
    let _ = writeln!(
        s,
        "#[Mean    = {:>12.p$}, StdDeviation   = {:>12.p$}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        s,
        "#[Max     = {:>12.p$}, Total count    = {:>12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets
    );
    s
}

/// An interval log: one line per interval, each histogram V2-deflate encoded in base64.
/// `start_ms` is the simulated epoch, so the file is the same for the same seed.
pub fn interval_log(
    metric: &str,
    intervals: &BTreeMap<u64, Histogram<u64>>,
    interval_ms: u64,
    start_ms: u64,
) -> Vec<u8> {
    // The header as the Java writer prints it: version, StartTime, BaseTime, legend.
    let secs = format!("{}.{:03}", start_ms / 1000, start_ms % 1000);
    let mut out = format!(
        "#[Histogram log format version 1.3]\n#[StartTime: {secs} (seconds since epoch)]\n#[BaseTime: {secs} (seconds since epoch)]\n#rtsync simulator: {metric}, values in simulated milliseconds\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
    )
    .into_bytes();
    let mut ser = V2DeflateSerializer::new();
    {
        // No start or base time here: the writer then adds nothing before the rows.
        let mut builder = IntervalLogWriterBuilder::new();
        builder.with_max_value_divisor(1.0);
        let Ok(mut w) = builder.begin_log_with(&mut out, &mut ser) else {
            return Vec::new();
        };
        for (slot, h) in intervals {
            let at = Duration::from_millis(slot * interval_ms);
            let _ = w.write_histogram(h, at, Duration::from_millis(interval_ms), Tag::new(metric));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn known() -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).unwrap();
        for v in 1..=100u64 {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn hgrm_has_the_java_layout_line_by_line() {
        let text = percentile_distribution(&known());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First row: the minimum at quantile 0.
        assert_eq!(
            lines[2],
            "       1.000 0.000000000000          1           1.00"
        );
        // Every row: value with 3 decimals (the histogram's significant digits), a
        // 12-decimal quantile, a cumulative count; 1/(1-q) except on the last row.
        let rows = &lines[2..lines.len() - 3];
        for r in &rows[..rows.len() - 1] {
            let cols: Vec<&str> = r.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "{r}");
            assert_eq!(cols[0].split('.').nth(1).map(str::len), Some(3), "{r}");
            assert_eq!(cols[1].split('.').nth(1).map(str::len), Some(12), "{r}");
            assert_eq!(r.len(), 12 + 1 + 14 + 1 + 10 + 1 + 14, "{r}");
        }
        let last = rows[rows.len() - 1];
        assert_eq!(last, "     100.000 1.000000000000        100");
        let counts: Vec<u64> = rows
            .iter()
            .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative");
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =       50.500, StdDeviation   =       28.866]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =      100.000, Total count    =          100]"
        );
        assert_eq!(
            lines[lines.len() - 1],
            "#[Buckets =           12, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn hlog_round_trips_through_the_crates_reader() {
        let mut intervals = BTreeMap::new();
        intervals.insert(0u64, known());
        let mut second = Histogram::<u64>::new_with_bounds(1, 3_600_000, 2).unwrap();
        second.record(42).unwrap();
        intervals.insert(3u64, second.clone());
        let bytes = interval_log("ack_ms", &intervals, 1000, 1_795_000_000_000);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("#[Histogram log format version 1.3]\n#[StartTime: 1795000000.000"),
            "{text}"
        );
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""), "{text}");
        let mut de = Deserializer::new();
        let read: Vec<(f64, u64, u64)> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(i) => {
                    let b64 = i.encoded_histogram();
                    let raw =
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                            .unwrap();
                    let h: Histogram<u64> = de.deserialize(&mut raw.as_slice()).unwrap();
                    Some((i.start_timestamp().as_secs_f64(), h.len(), h.max()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].1, read[0].2), (100, 100));
        assert_eq!((read[1].0, read[1].1, read[1].2), (3.0, 1, 42));
    }
}
