//! The raft log's segment files: `<persistence_location>/raft-log/<seq>.seg`,
//! append-only, each a header and then records (format in
//! docs/FORMATS.md, "Log segments"; change it only together with
//! `SEGMENT_FORMAT_VERSION`, that document and the golden directory).
//!
//! Why not redb for the log: a redb commit rewrites a B-tree path, the
//! allocator state and its header, about eight 4 KiB pages even for one
//! 64-byte message (measured: 56 KB written per QoS 1 message at 10 msg/s).
//! An append writes the record and, with the fsync, the one or two pages
//! it touches.
//!
//! This module only encodes and checks bytes (no I/O), so what a damaged
//! or torn file does is tested and fuzzed without a disk.

/// The directory of the segments inside the data directory.
pub const SEGMENT_DIR: &str = "raft-log";
/// The segment file format (header and records).
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"MIDGELOG";
/// Magic, format version, reserved (0), sequence number.
pub const HEADER_BYTES: usize = 24;
/// Payload length (u32 LE), CRC-32 (u32 LE) of kind and payload, kind.
pub const RECORD_HEADER_BYTES: usize = 9;
/// A segment takes new records until it reaches this size; then the next
/// write starts a new one. Small enough that compaction frees space in
/// steps, large enough that creating files (a directory fsync each) is rare.
/// A new segment is allocated at this size when it is created (see
/// `redb_log`'s `preallocate`): its records are then written over
/// allocated zeros, so that an append's `fdatasync` need not also commit
/// a new file size to the file system's journal.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// A record holding one protobuf-encoded `eraftpb::Entry`.
pub const KIND_ENTRY: u8 = 1;
/// A record holding one protobuf-encoded `eraftpb::HardState`.
pub const KIND_HARD_STATE: u8 = 2;

/// The file name of segment `seq`: 20 digits, so names sort as numbers.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// The sequence number in a segment's file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn header(seq: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h
}

fn crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Appends one record to `out`.
pub fn encode_record(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(kind, payload).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The encoded size of a record with `payload_len` bytes of payload.
pub fn record_bytes(payload_len: usize) -> u64 {
    (RECORD_HEADER_BYTES + payload_len) as u64
}

/// One record found by `scan`: its kind and where its payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    /// Offset of the payload in the file.
    pub offset: u64,
    pub len: u32,
}

/// Where and why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Offset of the first byte that is not part of a whole, intact record.
    pub at: u64,
    pub reason: String,
}

/// Checks a segment's header: `Err` says what is wrong.
pub fn check_header(bytes: &[u8], seq: u64) -> Result<(), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("it is {} bytes, shorter than a segment header", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("it does not start with a midge log segment header".to_string());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!(
            "it has segment format version {version}; this midge reads version {SEGMENT_FORMAT_VERSION}"
        ));
    }
    let found = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    if found != seq {
        return Err(format!("its header says it is segment {found}"));
    }
    Ok(())
}

/// What `scan` found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The whole, intact records, in order.
    pub records: Vec<Record>,
    /// Where the records end: the next append's offset.
    pub end: u64,
    /// Why the records end before the last non-zero byte, if they do.
    pub torn: Option<Torn>,
}

/// The records of a segment whose header `check_header` accepted, in
/// order, up to the end of `bytes`, the start of the zeros that fill the
/// rest of it (space allocated and never written: a preallocated segment,
/// or a file system that extended the file without writing it) or the
/// first record that is not whole and intact (`Torn`): a length past the
/// end, a CRC that does not match, or an unknown kind. What follows such a
/// record is not read: records are only ever appended, so it is the end of
/// a write that did not finish.
pub fn scan(bytes: &[u8]) -> Scanned {
    let mut records = Vec::new();
    let mut at = HEADER_BYTES;
    while at < bytes.len() {
        if bytes[at..].iter().all(|&b| b == 0) {
            break;
        }
        let torn = |records, reason| Scanned { records, end: at as u64, torn: Some(Torn { at: at as u64, reason }) };
        let Some(head) = bytes.get(at..at + RECORD_HEADER_BYTES) else {
            return torn(records, format!("{} bytes of a record header", bytes.len() - at));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let kind = head[8];
        let start = at + RECORD_HEADER_BYTES;
        let Some(payload) = start.checked_add(len as usize).and_then(|end| bytes.get(start..end)) else {
            return torn(records, format!("a record of {len} bytes, but only {} follow", bytes.len() - start));
        };
        if crc(kind, payload) != sum {
            return torn(records, "a record whose checksum does not match".to_string());
        }
        if kind != KIND_ENTRY && kind != KIND_HARD_STATE {
            return torn(records, format!("a record of unknown kind {kind}"));
        }
        records.push(Record { kind, offset: start as u64, len });
        at = start + len as usize;
    }
    Scanned { records, end: at as u64, torn: None }
}

/// Checks one record read back from `offset` (its header and payload) and
/// returns the payload.
pub fn check_record(bytes: &[u8], kind: u8) -> Result<&[u8], String> {
    let head = bytes.get(..RECORD_HEADER_BYTES).ok_or("a record shorter than its header")?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let payload = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len).ok_or("a record cut short")?;
    if head[8] != kind || crc(kind, payload) != sum {
        return Err("a record whose checksum or kind does not match".to_string());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = header(7).to_vec();
        for (kind, payload) in records {
            encode_record(*kind, payload, &mut out);
        }
        out
    }

    #[test]
    fn names_sort_as_numbers_and_parse_back() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert!(segment_name(9) < segment_name(10));
        for bad in ["42.seg", "0000000000000000004x.seg", "00000000000000000042.log", ""] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn records_read_back_in_order() {
        let bytes = segment(&[(KIND_ENTRY, b"one"), (KIND_HARD_STATE, b""), (KIND_ENTRY, &[9u8; 300])]);
        check_header(&bytes, 7).unwrap();
        let Scanned { records, end, torn } = scan(&bytes);
        assert_eq!(torn, None);
        assert_eq!(end, bytes.len() as u64);
        assert_eq!(records.len(), 3);
        assert_eq!((records[0].kind, records[0].len), (KIND_ENTRY, 3));
        assert_eq!(&bytes[records[0].offset as usize..][..3], b"one");
        assert_eq!((records[1].kind, records[1].len), (KIND_HARD_STATE, 0));
        let r = records[2];
        let start = r.offset as usize - RECORD_HEADER_BYTES;
        assert_eq!(check_record(&bytes[start..], KIND_ENTRY).unwrap(), &[9u8; 300][..]);
        assert!(check_record(&bytes[start..], KIND_HARD_STATE).is_err());
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_scan_where_it_starts() {
        let whole = segment(&[(KIND_ENTRY, b"first"), (KIND_ENTRY, b"second record")]);
        let second_at = (HEADER_BYTES + RECORD_HEADER_BYTES + 5) as u64;
        // Cut anywhere inside the second record.
        for cut in second_at as usize + 1..whole.len() {
            let Scanned { records, end, torn } = scan(&whole[..cut]);
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(torn.expect("torn").at, second_at, "cut at {cut}");
            assert_eq!(end, second_at, "cut at {cut}");
        }
        // A flipped bit in the payload, the length or the kind.
        for flip in [second_at as usize, second_at as usize + 8, whole.len() - 1] {
            let mut damaged = whole.clone();
            damaged[flip] ^= 0x10;
            let Scanned { records, torn, .. } = scan(&damaged);
            assert_eq!(records.len(), 1, "flip at {flip}");
            assert_eq!(torn.expect("torn").at, second_at, "flip at {flip}");
        }
        // The same, torn, followed by the zeros of a preallocated segment.
        let mut torn_then_zeros = whole[..whole.len() - 3].to_vec();
        torn_then_zeros.extend([0u8; 100]);
        let Scanned { records, end, torn } = scan(&torn_then_zeros);
        assert_eq!((records.len(), end), (1, second_at));
        assert_eq!(torn.expect("torn").at, second_at);
    }

    #[test]
    fn zeros_after_the_last_record_are_space_never_written() {
        // A preallocated segment, or a file system that extended the file
        // and did not write it: the records end where the zeros begin.
        let whole = segment(&[(KIND_ENTRY, b"first"), (KIND_ENTRY, b"second record")]);
        for zeros in [1, 8, 9, 10, 4096] {
            let mut bytes = whole.clone();
            bytes.extend(vec![0u8; zeros]);
            let Scanned { records, end, torn } = scan(&bytes);
            assert_eq!((records.len(), end, torn), (2, whole.len() as u64, None), "{zeros} zeros");
        }
        // An empty, preallocated segment: no records, the first append
        // goes right after the header.
        let mut empty = header(7).to_vec();
        empty.extend([0u8; 4096]);
        assert_eq!(scan(&empty), Scanned { records: vec![], end: HEADER_BYTES as u64, torn: None });
        // Anything but zeros after them is an unfinished write: a record
        // whose header did not reach the disk while a later page did.
        for garbage_at in [0, 9, 100, 4095] {
            let mut bytes = whole.clone();
            bytes.extend(vec![0u8; 4096]);
            bytes[whole.len() + garbage_at] = 0x42;
            let Scanned { records, end, torn } = scan(&bytes);
            assert_eq!((records.len(), end), (2, whole.len() as u64), "garbage at {garbage_at}");
            assert_eq!(torn.expect("torn").at, whole.len() as u64, "garbage at {garbage_at}");
        }
    }

    #[test]
    fn headers_are_checked() {
        let good = header(7);
        check_header(&good, 7).unwrap();
        assert!(check_header(&good, 8).unwrap_err().contains("segment 7"));
        assert!(check_header(&good[..10], 7).unwrap_err().contains("shorter"));
        let mut other = good;
        other[8] = 9;
        assert!(check_header(&other, 7).unwrap_err().contains("version 9"));
        other[0] = b'X';
        assert!(check_header(&other, 7).unwrap_err().contains("header"));
    }
}
