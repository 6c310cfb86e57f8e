//! The log's bytes: a file header, then entries framed by length and checksum
//! (docs/durability.md, "Format").
//!
//! ```text
//! file   := MAGIC entry*
//! entry  := len: u32 LE | crc: u32 LE | payload: len bytes
//! crc    := CRC-32 (IEEE) of the 4 length bytes and the payload
//! ```
//!
//! In format 02 an entry's payload is one step: a JSON array of the `Record`s one core
//! step produced, so a crash keeps all of a step or none of it (format 01 framed each
//! record alone, and a write torn at a power loss kept a deletion without its event:
//! `27-server-kill-group` seed 3). Format 01 files are still read, one record per entry.
//!
//! [`scan`] reads a file back and classifies where it stops: at its end, at a torn
//! tail (a write the crash cut short — truncated on open), or at damage (an entry that
//! is whole but wrong — refused unless the operator accepts the loss). It never
//! panics, whatever the bytes (proptest in this module).

/// The first bytes of every log file: what it is and the format's version.
pub const MAGIC: &[u8; 8] = b"RTSLOG02";
/// The first format, one record per entry: read, and rewritten as 02 on open.
pub const MAGIC_01: &[u8; 8] = b"RTSLOG01";
/// Length and checksum before each payload.
pub const HEADER_BYTES: usize = 8;
/// A larger length is not one we wrote: damage (or a torn header).
pub const ENTRY_BYTES_MAX: usize = 64 << 20;

/// Appends one framed entry to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Where a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// At the end of the file, after a whole entry (or the header).
    Clean,
    /// A write cut short from `offset` on: the file ends inside an entry, or the entry
    /// runs into zeros a crash left where blocks were never written.
    Torn { offset: u64 },
    /// An entry at `offset` is wrong in a way no crash makes (a checksum mismatch on
    /// written bytes, an impossible length, a file that is not a log).
    Damaged { offset: u64, why: String },
}

/// The payloads of every whole entry before the scan stopped (with their offsets), the
/// file's format, and why the scan stopped.
#[derive(Debug)]
pub struct Scan<'a> {
    pub entries: Vec<(u64, &'a [u8])>,
    /// 1 or 2 (`MAGIC_01`, `MAGIC`); 2 for a file too short to say.
    pub format: u8,
    pub end: End,
}

impl Scan<'_> {
    /// The length of the file's good prefix (where a torn tail is cut).
    pub fn good_bytes(&self) -> u64 {
        match &self.end {
            End::Clean => u64::MAX,
            End::Torn { offset } | End::Damaged { offset, .. } => *offset,
        }
    }
}

/// Reads a whole file. An empty file is a log that was created and never written.
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    let mut entries = Vec::new();
    let stop = |entries, end| Scan {
        entries,
        format: 2,
        end,
    };
    if bytes.is_empty() {
        return stop(entries, End::Clean);
    }
    if bytes.len() < MAGIC.len() {
        let end = if MAGIC.starts_with(bytes) || bytes.iter().all(|&b| b == 0) {
            End::Torn { offset: 0 }
        } else {
            damaged(0, "not an rtsync log (bad header)")
        };
        return stop(entries, end);
    }
    let format = match &bytes[..MAGIC.len()] {
        h if h == MAGIC => 2,
        h if h == MAGIC_01 => 1,
        h if h.iter().all(|&b| b == 0) => return stop(entries, End::Torn { offset: 0 }),
        h if h.starts_with(b"RTSLOG") => {
            let v = String::from_utf8_lossy(&h[6..]);
            let why = format!("log format {v} is newer than this build reads (02)");
            return stop(entries, damaged(0, &why));
        }
        _ => return stop(entries, damaged(0, "not an rtsync log (bad header)")),
    };
    let mut at = MAGIC.len();
    let end = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break End::Clean;
        }
        let offset = at as u64;
        if rest.len() < HEADER_BYTES {
            break End::Torn { offset };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 && crc == 0 {
            // Zeros where a header should be: blocks of an unsynced write never landed.
            break End::Torn { offset };
        }
        if len == 0 || len > ENTRY_BYTES_MAX {
            break damaged(offset, &format!("impossible entry length {len}"));
        }
        let Some(payload) = rest.get(HEADER_BYTES..HEADER_BYTES + len) else {
            // Past the end: a write cut short — unless whole entries follow, in which
            // case the length itself is damaged and cutting here would drop them.
            if whole_entry_after(rest) {
                break damaged(
                    offset,
                    &format!("entry length {len} runs past the end, yet whole entries follow"),
                );
            }
            break End::Torn { offset };
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[..4]);
        h.update(payload);
        if h.finalize() != crc {
            // A payload is JSON and never ends in a zero byte: one that does ran into
            // a hole of a torn write. Anything else is damage.
            if payload.last() == Some(&0) {
                break End::Torn { offset };
            }
            break damaged(offset, "checksum mismatch");
        }
        entries.push((offset, payload));
        at += HEADER_BYTES + len;
    };
    Scan {
        entries,
        format,
        end,
    }
}

/// Whether a whole, checksummed entry starts anywhere after the first byte of `rest`.
/// Only a failing open calls this, so a byte-by-byte search is affordable.
fn whole_entry_after(rest: &[u8]) -> bool {
    (1..rest.len().saturating_sub(HEADER_BYTES)).any(|i| {
        let r = &rest[i..];
        let len = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
        let crc = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        len > 0
            && r.len() >= HEADER_BYTES + len
            && crc == {
                let mut h = crc32fast::Hasher::new();
                h.update(&r[..4]);
                h.update(&r[HEADER_BYTES..HEADER_BYTES + len]);
                h.finalize()
            }
    })
}

fn damaged(offset: u64, why: &str) -> End {
    End::Damaged {
        offset,
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn log(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for p in payloads {
            encode(p, &mut out);
        }
        out
    }

    #[test]
    fn reads_back_what_was_written() {
        let bytes = log(&[b"{\"a\":1}", b"{\"b\":2}"]);
        let s = scan(&bytes);
        assert_eq!(s.end, End::Clean);
        let got: Vec<&[u8]> = s.entries.iter().map(|(_, p)| *p).collect();
        assert_eq!(got, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(s.entries[1].0, (MAGIC.len() + HEADER_BYTES + 7) as u64);
    }

    #[test]
    fn the_header_names_the_format() {
        let mut v1 = log(&[b"{\"a\":1}"]);
        v1[..8].copy_from_slice(MAGIC_01);
        assert_eq!(scan(&v1).format, 1);
        assert_eq!(scan(&v1).entries.len(), 1);
        assert_eq!(scan(&log(&[b"{\"a\":1}"])).format, 2);
        let mut v3 = log(&[b"{\"a\":1}"]);
        v3[..8].copy_from_slice(b"RTSLOG03");
        let s = scan(&v3);
        assert!(s.entries.is_empty());
        assert!(
            matches!(&s.end, End::Damaged { offset: 0, why } if why.contains("newer")),
            "{:?}",
            s.end
        );
    }

    #[test]
    fn a_cut_tail_is_torn_at_the_last_whole_record() {
        let bytes = log(&[b"{\"a\":1}", b"{\"b\":2}"]);
        let second = scan(&bytes).entries[1].0;
        for cut in second as usize + 1..bytes.len() {
            let s = scan(&bytes[..cut]);
            assert_eq!(s.entries.len(), 1, "cut at {cut}");
            assert_eq!(s.end, End::Torn { offset: second }, "cut at {cut}");
        }
    }

    #[test]
    fn zeros_from_a_torn_write_are_a_tail_not_damage() {
        let mut bytes = log(&[b"{\"a\":1}", b"{\"b\":2}"]);
        let second = scan(&bytes).entries[1].0 as usize;
        // The second record's last 3 bytes never landed, a later block did.
        let n = bytes.len();
        bytes[n - 3..].fill(0);
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(
            scan(&bytes).end,
            End::Torn {
                offset: second as u64
            }
        );
        // A whole header of zeros.
        let mut bytes = log(&[b"{\"a\":1}"]);
        let end = bytes.len() as u64;
        bytes.extend_from_slice(&[0; 40]);
        assert_eq!(scan(&bytes).end, End::Torn { offset: end });
    }

    #[test]
    fn a_flipped_bit_in_a_whole_record_is_damage_with_its_offset() {
        let mut bytes = log(&[b"{\"a\":1}", b"{\"b\":2}", b"{\"c\":3}"]);
        let second = scan(&bytes).entries[1].0;
        bytes[second as usize + HEADER_BYTES + 2] ^= 0x20;
        let s = scan(&bytes);
        assert_eq!(s.entries.len(), 1);
        assert!(
            matches!(&s.end, End::Damaged { offset, why } if *offset == second && why.contains("checksum")),
            "{:?}",
            s.end
        );
        assert!(matches!(
            scan(b"GARBAGE!xx").end,
            End::Damaged { offset: 0, .. }
        ));
    }

    #[test]
    fn a_damaged_length_is_not_mistaken_for_a_torn_tail() {
        let mut bytes = log(&[b"{\"a\":1}", b"{\"b\":2}", b"{\"c\":3}"]);
        let second = scan(&bytes).entries[1].0;
        bytes[second as usize + 1] = 0x7f; // the length now runs past the end
        let s = scan(&bytes);
        assert_eq!(s.entries.len(), 1);
        assert!(
            matches!(&s.end, End::Damaged { offset, why } if *offset == second && why.contains("whole entries follow")),
            "{:?}",
            s.end
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_never_reads_past_the_end(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = scan(&bytes);
            for (off, p) in &s.entries {
                prop_assert!(*off as usize + HEADER_BYTES + p.len() <= bytes.len());
            }
        }

        #[test]
        fn any_garbage_after_a_good_prefix_keeps_the_prefix(
            payloads in proptest::collection::vec("[a-z]{1,20}", 1..6),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let ps: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
            let mut bytes = log(&ps);
            let good = bytes.len();
            bytes.extend_from_slice(&tail);
            let s = scan(&bytes);
            prop_assert!(s.entries.len() >= ps.len());
            for (i, p) in ps.iter().enumerate() {
                prop_assert_eq!(s.entries[i].1, *p);
            }
            prop_assert!(s.good_bytes() >= good as u64);
        }
    }
}
