//! Target `packet_reader`: the codec as a connection uses it.
//!
//! Input: one selector byte, then the bytes a peer sends.
//! * bits 0-1: the session version handed to `decode`: None (no CONNECT
//!   yet), V31, V311, V5;
//! * bits 2-3: `max_packet_bytes`: 2, 64, 1 MiB (the broker's default) or
//!   u32::MAX;
//! * bit 4 set: stay at None after a CONNECT (otherwise, like a
//!   connection, the CONNECT's own version is used from then on).
//!
//! The rest is decoded packet after packet until more bytes are needed or
//! an error (a connection is closed on the first error). Checks, for every
//! packet decoded:
//! * `decode` never panics; consumed size is in 2..=available and <= max;
//! * streaming: the same packet decodes from exactly its own bytes, and
//!   one byte less is `Ok(None)` (needs more), never an error;
//! * `encode` then `decode` gives back the same packet, and `encoded_len`
//!   is the number of bytes `encode` wrote.
//!
//! And for an error: appending bytes does not change it (an error depends
//! only on bytes already there).

use midge::mqtt::codec::{decode, encode, encoded_len, DecodeError};
use midge::mqtt::{Packet, Version};

pub const MAX_SIZES: [u32; 4] = [2, 64, 1024 * 1024, u32::MAX];

/// Selector byte for a version (None = before CONNECT) and a max index.
pub fn selector(version: Option<Version>, max_index: u8, stay_none: bool) -> u8 {
    let v = match version {
        None => 0,
        Some(Version::V31) => 1,
        Some(Version::V311) => 2,
        Some(Version::V5) => 3,
    };
    v | ((max_index & 3) << 2) | (u8::from(stay_none) << 4)
}

pub fn run(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let mut version = match sel & 3 {
        0 => None,
        1 => Some(Version::V31),
        2 => Some(Version::V311),
        _ => Some(Version::V5),
    };
    let max = MAX_SIZES[usize::from((sel >> 2) & 3)];
    let follow_connect = sel & 0x10 == 0;

    while !rest.is_empty() {
        match decode(rest, version, max) {
            Ok(Some((p, used))) => {
                assert!(used >= 2 && used <= rest.len(), "decode consumed {used} of {} bytes", rest.len());
                assert!(used as u64 <= u64::from(max), "decode returned a {used}-byte packet over max {max}");
                check_streaming(rest, used, version, max, &p);
                check_roundtrip(&p, version);
                if let (None, Packet::Connect(c), true) = (version, &p, follow_connect) {
                    version = Some(c.version);
                }
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(e) => {
                check_error_stable(rest, version, max, &e);
                break;
            }
        }
    }
}

fn check_streaming(buf: &[u8], used: usize, version: Option<Version>, max: u32, p: &Packet) {
    match decode(&buf[..used], version, max) {
        Ok(Some((q, n))) => {
            assert_eq!(n, used, "packet decoded from its own bytes has another size");
            assert_eq!(&q, p, "packet decoded from its own bytes differs");
        }
        other => panic!("a packet's own {used} bytes do not decode alone: {other:?}"),
    }
    let short = decode(&buf[..used - 1], version, max);
    assert!(matches!(short, Ok(None)), "a packet less its last byte gives {short:?}, not Ok(None)");
}

/// What a packet becomes after `encode` for `version` and `decode`: for
/// levels 3 and 4 the encoder drops what those levels cannot carry
/// (properties, reason codes of acks and DISCONNECT, UNSUBACK codes, and in
/// 3.1 the CONNACK Session Present flag).
pub fn expected_after_roundtrip(p: &Packet, version: Version) -> Packet {
    if version.is_v5() {
        return p.clone();
    }
    let mut q = p.clone();
    match &mut q {
        Packet::Connect(_) => {} // laid out for its own version
        Packet::ConnAck(a) => {
            a.properties = Default::default();
            if version == Version::V31 {
                a.session_present = false;
            }
        }
        Packet::Publish(x) => x.properties = Default::default(),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            r.code = 0;
            r.properties = Default::default();
        }
        Packet::Subscribe(s) => {
            s.properties = Default::default();
            for (_, o) in &mut s.filters {
                *o = midge::mqtt::SubOptions { qos: o.qos, ..Default::default() };
            }
        }
        Packet::SubAck(s) => s.properties = Default::default(),
        Packet::Unsubscribe(u) => u.properties = Default::default(),
        Packet::UnsubAck(u) => {
            u.codes.clear();
            u.properties = Default::default();
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            d.code = 0;
            d.properties = Default::default();
        }
        Packet::Auth(_) => {} // does not exist before v5: decoding back fails
    }
    q
}

/// `encode` + `encoded_len` + `decode` back. `version` is the session's
/// (None: only a CONNECT is possible, laid out for its own version).
pub fn check_roundtrip(p: &Packet, version: Option<Version>) {
    let v = version.unwrap_or(Version::V311);
    let mut out = vec![0xEE]; // encode appends: keep a byte in front
    encode(p, v, &mut out);
    let out = &out[1..];
    assert_eq!(out.len(), encoded_len(p, v), "encoded_len differs from what encode wrote for {}", p.name());
    match decode(out, version, u32::MAX) {
        Ok(Some((q, n))) => {
            assert_eq!(n, out.len(), "re-decoding {} consumed {n} of {} bytes", p.name(), out.len());
            let want = match version {
                Some(v) => expected_after_roundtrip(p, v),
                None => p.clone(),
            };
            assert_eq!(q, want, "{} changed through encode/decode ({v:?}); bytes {out:02x?}", p.name());
        }
        other => panic!("{} encoded for {v:?} does not decode back: {other:?}; bytes {out:02x?}", p.name()),
    }
}

fn check_error_stable(buf: &[u8], version: Option<Version>, max: u32, e: &DecodeError) {
    let mut more = buf.to_vec();
    more.extend_from_slice(&[0x00, 0xFF, 0x30]);
    let again = decode(&more, version, max);
    assert_eq!(again, Err(e.clone()), "the error changed when bytes were appended");
}
