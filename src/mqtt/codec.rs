//! Bytes <-> packets for MQTT 3.1, 3.1.1 and 5.0.
//!
//! `decode` parses one packet from the front of a buffer without copying
//! anything but the fields it returns (a PUBLISH costs exactly two
//! allocations: the topic and the payload). Every length a peer sends is
//! checked against the bytes actually present, and the total packet size
//! against the caller's maximum before any body byte is looked at.
//!
//! `encode` writes straight into the caller's buffer: lengths (including the
//! v5 property length) are computed first, then every field is appended
//! once. `encoded_len` runs the same length computation without writing.
//!
//! Property handling lives in `codec/props.rs`, encoding in
//! `codec/encode.rs` (child modules of this one); the tests in `codec/tests*.rs`.

use super::packet::*;
use std::rc::Rc;

mod props;

mod encode;
pub use encode::{encode, encoded_len};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_v5;

#[cfg(test)]
mod tests_reject;

use props::{ctx, read_properties};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Remaining length exceeds the maximum packet size given by the caller.
    /// Checked from the fixed header alone, before any body byte is
    /// needed/buffered. `size` is the whole packet (fixed header included).
    TooLarge { size: u32, max: u32 },
    /// Bytes do not form a valid packet (bad fixed-header flags, bad
    /// remaining-length encoding, truncated field inside a complete packet,
    /// trailing bytes, invalid UTF-8, property not allowed for the packet,
    /// unknown property, QoS 3, reserved bits in subscription options, etc).
    /// The string names exactly what is wrong, e.g. "PUBLISH topic is not
    /// valid UTF-8".
    Malformed(&'static str),
    /// Valid bytes but a protocol error per spec (e.g. packet id 0, wildcard
    /// in a PUBLISH topic, SUBSCRIBE with no filters, duplicated property,
    /// out-of-range property value, reason code not allowed for the packet).
    /// A second CONNECT is NOT detected here (it is decoded normally).
    Protocol(&'static str),
    /// CONNECT with an unknown protocol name/level; carries the level byte so
    /// the broker can answer with CONNACK 0x01 (3.1.1) / 0x84 (v5).
    UnsupportedVersion(u8),
}

use DecodeError::{Malformed, Protocol};

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            DecodeError::Malformed(m) => write!(f, "malformed packet: {m}"),
            DecodeError::Protocol(m) => write!(f, "protocol error: {m}"),
            DecodeError::UnsupportedVersion(l) => write!(f, "unsupported protocol level {l}"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------------------
// Reading primitives
// ---------------------------------------------------------------------------

/// Error messages for one UTF-8 string field.
struct Field {
    truncated: &'static str,
    utf8: &'static str,
    nul: &'static str,
}

/// `field!("PUBLISH topic")` -> the three messages for that field.
macro_rules! field {
    ($name:literal) => {
        &Field {
            truncated: concat!($name, " is truncated"),
            utf8: concat!($name, " is not valid UTF-8"),
            nul: concat!($name, " contains U+0000"),
        }
    };
}
use field;

/// A cursor over the body of one complete packet. Every read is checked;
/// running off the end is a Malformed packet (the packet is complete, so a
/// short field means the declared lengths are inconsistent).
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything not read yet.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn take(&mut self, n: usize, err: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(Malformed(err))?;
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, err: &'static str) -> Result<u8, DecodeError> {
        let (&b, tail) = self.buf.split_first().ok_or(Malformed(err))?;
        self.buf = tail;
        Ok(b)
    }

    fn u16(&mut self, err: &'static str) -> Result<u16, DecodeError> {
        let (head, tail) = self.buf.split_first_chunk::<2>().ok_or(Malformed(err))?;
        self.buf = tail;
        Ok(u16::from_be_bytes(*head))
    }

    fn u32(&mut self, err: &'static str) -> Result<u32, DecodeError> {
        let (head, tail) = self.buf.split_first_chunk::<4>().ok_or(Malformed(err))?;
        self.buf = tail;
        Ok(u32::from_be_bytes(*head))
    }

    /// Variable Byte Integer (at most 4 bytes; non-minimal forms accepted).
    fn varint(&mut self, truncated: &'static str, too_long: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8(truncated)?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed(too_long))
    }

    /// Binary Data: two-byte length then that many bytes.
    fn binary(&mut self, err: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(err)?;
        self.take(usize::from(n), err)
    }

    /// UTF-8 Encoded String [MQTT-1.5.3-1/2] (3.1.1) [MQTT-1.5.4-1/2] (5.0):
    /// well-formed UTF-8 without U+0000.
    fn string(&mut self, f: &Field) -> Result<&'a str, DecodeError> {
        let b = self.binary(f.truncated)?;
        let s = std::str::from_utf8(b).map_err(|_| Malformed(f.utf8))?;
        if b.contains(&0) {
            return Err(Malformed(f.nul));
        }
        Ok(s)
    }

    fn end(&self, err: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed(err))
        }
    }
}

/// What one pass over a PUBLISH topic found.
#[derive(Debug, PartialEq, Eq)]
struct TopicScan {
    /// U+0000, '#' or '+' (none may be in a topic name).
    forbidden: bool,
    /// A byte of 0x80 or more (else the topic is ASCII, so valid UTF-8).
    non_ascii: bool,
}

/// Scans eight bytes at a time: a per-byte loop cost 8 instructions a
/// byte, and topics are too short for the compiler's vector loop. A word
/// has a zero byte when `(w - 0x01..01) & !w & 0x80..80` is not zero (exact
/// for "any", which is all that is asked); '#' (0x23) and '+' (0x2B) are
/// the bytes `b` with `(b | 8) ^ 0x2B == 0`.
fn scan_topic(raw: &[u8]) -> TopicScan {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let check = |w: u64| has_zero(w) | has_zero((w | (0x08 * ONES)) ^ (0x2B * ONES));
    let mut forbidden = false;
    let mut bits = 0u64;
    let mut words = raw.chunks_exact(8);
    for c in &mut words {
        let w = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
        forbidden |= check(w);
        bits |= w;
    }
    // The tail, padded with a byte that is none of those looked for.
    let mut last = [b'a'; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    let w = u64::from_le_bytes(last);
    forbidden |= check(w);
    bits |= w;
    TopicScan { forbidden, non_ascii: bits & HIGH != 0 }
}

fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| b == b'+' || b == b'#')
}

// ---------------------------------------------------------------------------
// decode
// ---------------------------------------------------------------------------

/// Try to decode one packet from the front of `buf`.
///
/// `version` is None before the CONNECT has been received (then only a
/// CONNECT is valid: anything else is `Protocol("first packet must be
/// CONNECT")`, reported as soon as the first byte is there), Some(v)
/// afterwards (a CONNECT is still decoded, with its own version, so the
/// broker can reject a second one).
///
/// Returns Ok(None) when more bytes are needed, Ok(Some((packet,
/// consumed_bytes))) on success. Never panics; allocates only for the fields
/// it returns, all of which are bounded by the bytes of a packet no larger
/// than `max_packet_bytes`. Returns TooLarge as soon as the fixed header is
/// readable and 1 + len(varint) + remaining_length > max_packet_bytes.
///
/// Fixed-header flags and the packet type are checked from the first byte
/// alone (before the body arrives), except for CONNECT whose flags are
/// checked once its protocol level is known. For MQTT 3.1 sessions the
/// fixed-header flags of packets other than PUBLISH are ignored (3.1 gave
/// them DUP/QoS meaning and clients do set DUP on retried SUBSCRIBEs).
pub fn decode(
    buf: &[u8],
    version: Option<Version>,
    max_packet_bytes: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    decode_with(buf, version, max_packet_bytes, &mut TopicCache::default())
}

/// The topic of a connection's last PUBLISH. A client mostly publishes to
/// the same few topics: a PUBLISH whose topic equals the last one shares
/// it rather than allocating a copy (a comparison instead of an allocation
/// and its free). Holds one topic; nothing a peer can grow.
#[derive(Default)]
pub struct TopicCache(Option<Rc<str>>);

impl TopicCache {
    fn get(&mut self, topic: &str) -> Rc<str> {
        match &self.0 {
            Some(t) if **t == *topic => t.clone(),
            _ => {
                let t: Rc<str> = Rc::from(topic);
                self.0 = Some(t.clone());
                t
            }
        }
    }
}

/// `decode`, with the connection's `TopicCache`.
pub fn decode_with(
    buf: &[u8],
    version: Option<Version>,
    max_packet_bytes: u32,
    topics: &mut TopicCache,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let ptype = b0 >> 4;
    let flags = b0 & 0x0F;
    check_type_and_flags(ptype, flags, version)?;

    // Remaining Length: 1..=4 bytes, 7 bits each, low group first.
    let mut remaining: u32 = 0;
    let mut header = 1usize;
    loop {
        let Some(&b) = buf.get(header) else {
            return Ok(None);
        };
        remaining |= u32::from(b & 0x7F) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header == 5 {
            return Err(Malformed("Remaining Length is longer than 4 bytes"));
        }
    }
    // header <= 5 and remaining <= 268_435_455: no overflow.
    let size = header as u32 + remaining;
    if size > max_packet_bytes {
        return Err(DecodeError::TooLarge { size, max: max_packet_bytes });
    }
    let Some(body) = buf.get(header..size as usize) else {
        return Ok(None);
    };
    let packet = decode_body(ptype, flags, body, version, topics)?;
    Ok(Some((packet, size as usize)))
}

/// Checks that only need the first byte.
fn check_type_and_flags(ptype: u8, flags: u8, version: Option<Version>) -> Result<(), DecodeError> {
    // [MQTT-3.1.0-1] the first packet from a client must be CONNECT.
    let Some(v) = version else {
        return if ptype == 1 { Ok(()) } else { Err(Protocol("first packet must be CONNECT")) };
    };
    let (required, msg) = match ptype {
        0 => return Err(Malformed("packet type 0 is reserved")),
        // CONNECT flags depend on the CONNECT's own level; PUBLISH flags
        // carry DUP/QoS/RETAIN and are checked in decode_publish.
        1 | 3 => return Ok(()),
        2 => (0, "CONNACK fixed header flags must be 0000"),
        4 => (0, "PUBACK fixed header flags must be 0000"),
        5 => (0, "PUBREC fixed header flags must be 0000"),
        6 => (2, "PUBREL fixed header flags must be 0010"),
        7 => (0, "PUBCOMP fixed header flags must be 0000"),
        8 => (2, "SUBSCRIBE fixed header flags must be 0010"),
        9 => (0, "SUBACK fixed header flags must be 0000"),
        10 => (2, "UNSUBSCRIBE fixed header flags must be 0010"),
        11 => (0, "UNSUBACK fixed header flags must be 0000"),
        12 => (0, "PINGREQ fixed header flags must be 0000"),
        13 => (0, "PINGRESP fixed header flags must be 0000"),
        14 => (0, "DISCONNECT fixed header flags must be 0000"),
        _ => {
            if !v.is_v5() {
                return Err(Malformed("packet type 15 is reserved before MQTT 5"));
            }
            (0, "AUTH fixed header flags must be 0000")
        }
    };
    // [MQTT-2.2.2-2] (3.1.1), §2.1.3 (5.0): invalid flags => malformed.
    if v != Version::V31 && flags != required {
        return Err(Malformed(msg));
    }
    Ok(())
}

fn decode_body(
    ptype: u8,
    flags: u8,
    body: &[u8],
    version: Option<Version>,
    topics: &mut TopicCache,
) -> Result<Packet, DecodeError> {
    if ptype == 1 {
        return decode_connect(flags, body).map(|c| Packet::Connect(Box::new(c)));
    }
    let Some(v) = version else {
        return Err(Protocol("first packet must be CONNECT"));
    };
    let p = match ptype {
        2 => Packet::ConnAck(decode_connack(body, v)?),
        3 => Packet::Publish(decode_publish(flags, body, v, topics)?),
        4 => Packet::PubAck(decode_pubresp(body, v, &PUBACK)?),
        5 => Packet::PubRec(decode_pubresp(body, v, &PUBREC)?),
        6 => Packet::PubRel(decode_pubresp(body, v, &PUBREL)?),
        7 => Packet::PubComp(decode_pubresp(body, v, &PUBCOMP)?),
        8 => Packet::Subscribe(decode_subscribe(body, v)?),
        9 => Packet::SubAck(decode_suback(body, v)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(body, v)?),
        11 => Packet::UnsubAck(decode_unsuback(body, v)?),
        12 => {
            Reader::new(body).end("PINGREQ remaining length must be 0")?;
            Packet::PingReq
        }
        13 => {
            Reader::new(body).end("PINGRESP remaining length must be 0")?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(decode_disconnect(body, v)?),
        15 => Packet::Auth(decode_auth(body)?),
        _ => return Err(Malformed("packet type 0 is reserved")),
    };
    Ok(p)
}

/// Packet Identifier of SUBSCRIBE, UNSUBSCRIBE, PUBLISH QoS>0 and of the
/// acknowledgements: non-zero [MQTT-2.3.1-1] (3.1.1) [MQTT-2.2.1-3] (5.0).
fn packet_id(r: &mut Reader<'_>, truncated: &'static str, zero: &'static str) -> Result<u16, DecodeError> {
    let id = r.u16(truncated)?;
    if id == 0 {
        return Err(Protocol(zero));
    }
    Ok(id)
}

fn decode_connect(flags: u8, body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let name = r.binary("CONNECT protocol name is truncated")?;
    let level = r.u8("CONNECT protocol level is missing")?;
    let version = match (name, level) {
        (b"MQIsdp", 3) => Version::V31,
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        // [MQTT-3.1.2-1] / [MQTT-3.1.2-2]
        _ => return Err(DecodeError::UnsupportedVersion(level)),
    };
    let v5 = version.is_v5();
    if version != Version::V31 && flags != 0 {
        return Err(Malformed("CONNECT fixed header flags must be 0000"));
    }
    let cf = r.u8("CONNECT flags are missing")?;
    // [MQTT-3.1.2-3]: a Malformed Packet in 5.0; in 3.1.1 "disconnect".
    if cf & 0x01 != 0 {
        return Err(if v5 {
            Malformed("CONNECT reserved flag must be 0")
        } else {
            Protocol("CONNECT reserved flag must be 0")
        });
    }
    let clean_start = cf & 0x02 != 0;
    let will_flag = cf & 0x04 != 0;
    let will_qos = (cf >> 3) & 0x03;
    let will_retain = cf & 0x20 != 0;
    let password_flag = cf & 0x40 != 0;
    let username_flag = cf & 0x80 != 0;
    if !will_flag {
        // [MQTT-3.1.2-13] (3.1.1) [MQTT-3.1.2-11] (5.0)
        if will_qos != 0 {
            return Err(Protocol("Will QoS must be 0 when the Will Flag is 0"));
        }
        // [MQTT-3.1.2-15] (3.1.1) [MQTT-3.1.2-13] (5.0)
        if will_retain {
            return Err(Protocol("Will Retain must be 0 when the Will Flag is 0"));
        }
    }
    // [MQTT-3.1.2-14] (3.1.1) [MQTT-3.1.2-12] (5.0)
    let Some(will_qos) = QoS::from_u8(will_qos) else {
        return Err(Malformed("Will QoS 3 is invalid"));
    };
    // [MQTT-3.1.2-22] (3.1.1 only; 5.0 allows a password without user name)
    if password_flag && !username_flag && !v5 {
        return Err(Protocol("Password Flag is set without the User Name Flag"));
    }
    let keep_alive = r.u16("CONNECT keep alive is truncated")?;
    let properties = if v5 {
        let p = read_properties(&mut r, ctx::CONNECT)?;
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            return Err(Protocol("Authentication Data without Authentication Method"));
        }
        p
    } else {
        Properties::default()
    };
    // [MQTT-3.1.3-3] [MQTT-3.1.3-4]
    let client_id = r.string(field!("CONNECT Client Identifier"))?.to_owned();
    let will = if will_flag {
        let wp = if v5 { read_properties(&mut r, ctx::WILL)? } else { Properties::default() };
        let topic = r.string(field!("Will Topic"))?;
        // A Will Topic is a Topic Name: [MQTT-4.7.3-1] [MQTT-4.7.1-1]/[MQTT-4.7.0-1]
        if topic.is_empty() {
            return Err(Protocol("Will Topic is empty"));
        }
        if has_wildcard(topic) {
            return Err(Protocol("Will Topic contains a wildcard character"));
        }
        let payload = r.binary("Will Payload is truncated")?.to_vec();
        Some(Will { topic: topic.to_owned(), payload, qos: will_qos, retain: will_retain, properties: wp })
    } else {
        None
    };
    let username = if username_flag { Some(r.string(field!("CONNECT User Name"))?.to_owned()) } else { None };
    let password = if password_flag { Some(r.binary("CONNECT Password is truncated")?.to_vec()) } else { None };
    r.end("CONNECT has bytes after its last field")?;
    Ok(Connect { version, client_id, clean_start, keep_alive, username, password, will, properties })
}

fn decode_connack(body: &[u8], v: Version) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let ack_flags = r.u8("CONNACK acknowledge flags are missing")?;
    let code = r.u8("CONNACK return code is missing")?;
    // MQTT 3.1 has no Session Present: the first byte is unused.
    let session_present = if v == Version::V31 {
        false
    } else {
        // [MQTT-3.2.2-1] (5.0); 3.1.1 §3.2.2.1 "reserved and MUST be set to 0"
        if ack_flags & 0xFE != 0 {
            return Err(Malformed("CONNACK reserved acknowledge flags must be 0"));
        }
        ack_flags & 0x01 != 0
    };
    let properties = if v.is_v5() {
        if !reason_ok(CONNACK_CODES, code) {
            return Err(Protocol("CONNACK reason code is not a CONNACK reason code"));
        }
        read_properties(&mut r, ctx::CONNACK)?
    } else {
        if code > 5 {
            return Err(Protocol("CONNACK return code is reserved"));
        }
        Properties::default()
    };
    // [MQTT-3.2.2-4] (3.1.1) [MQTT-3.2.2-6] (5.0)
    if session_present && code != 0 {
        return Err(Protocol("CONNACK Session Present must be 0 with a non-zero code"));
    }
    r.end("CONNACK has bytes after its last field")?;
    Ok(ConnAck { session_present, code, properties })
}

fn decode_publish(flags: u8, body: &[u8], v: Version, topics: &mut TopicCache) -> Result<Publish, DecodeError> {
    // [MQTT-3.3.1-4]
    let Some(qos) = QoS::from_u8((flags >> 1) & 0x03) else {
        return Err(Malformed("PUBLISH QoS 3 is invalid"));
    };
    let dup = flags & 0x08 != 0;
    // [MQTT-3.3.1-2]
    if dup && qos == QoS::AtMostOnce {
        return Err(Malformed("PUBLISH DUP flag is set on a QoS 0 message"));
    }
    let retain = flags & 0x01 != 0;
    let mut r = Reader::new(body);
    // [MQTT-3.3.2-1], as `Reader::string`, and [MQTT-3.3.2-2], in one pass
    // (`scan_topic`). An ASCII topic (nearly all) needs no UTF-8 decoding
    // after it: that was a fifth of decoding a PUBLISH.
    let f = field!("PUBLISH topic");
    let raw = r.binary(f.truncated)?;
    let scan = scan_topic(raw);
    let topic = if !scan.non_ascii {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(raw) }
    } else {
        std::str::from_utf8(raw).map_err(|_| Malformed(f.utf8))?
    };
    if scan.forbidden {
        if raw.contains(&0) {
            return Err(Malformed(f.nul));
        }
        return Err(Protocol("PUBLISH topic contains a wildcard character"));
    }
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(&mut r, "PUBLISH packet identifier is truncated", "PUBLISH packet identifier is 0")?)
    };
    let properties = if v.is_v5() { read_properties(&mut r, ctx::PUBLISH)? } else { Properties::default() };
    if topic.is_empty() {
        // [MQTT-4.7.3-1]; in 5.0 an empty topic requires a Topic Alias (§3.3.2.3.4)
        if !v.is_v5() {
            return Err(Protocol("PUBLISH topic is empty"));
        }
        if properties.topic_alias.is_none() {
            return Err(Protocol("PUBLISH topic is empty and there is no Topic Alias"));
        }
    }
    Ok(Publish { dup, qos, retain, topic: topics.get(topic), packet_id, payload: Rc::from(r.rest()), properties })
}

/// Per-type messages and reason codes for PUBACK/PUBREC/PUBREL/PUBCOMP.
struct PubRespSpec {
    truncated: &'static str,
    zero: &'static str,
    v3_len: &'static str,
    trailing: &'static str,
    bad_code: &'static str,
    codes: &'static [u8],
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B,
    0x9C, 0x9D, 0x9F,
];
const SUBACK_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn reason_ok(codes: &[u8], code: u8) -> bool {
    codes.contains(&code)
}

macro_rules! pubresp_spec {
    ($name:literal, $codes:expr) => {
        PubRespSpec {
            truncated: concat!($name, " packet identifier is truncated"),
            zero: concat!($name, " packet identifier is 0"),
            v3_len: concat!($name, " remaining length must be 2"),
            trailing: concat!($name, " has bytes after its properties"),
            bad_code: concat!($name, " reason code is not a ", $name, " reason code"),
            codes: $codes,
        }
    };
}

// [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1]
static PUBACK: PubRespSpec = pubresp_spec!("PUBACK", PUBACK_CODES);
static PUBREC: PubRespSpec = pubresp_spec!("PUBREC", PUBACK_CODES);
static PUBREL: PubRespSpec = pubresp_spec!("PUBREL", PUBREL_CODES);
static PUBCOMP: PubRespSpec = pubresp_spec!("PUBCOMP", PUBREL_CODES);

fn decode_pubresp(body: &[u8], v: Version, spec: &PubRespSpec) -> Result<PubResp, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r, spec.truncated, spec.zero)?;
    if !v.is_v5() {
        r.end(spec.v3_len)?;
        return Ok(PubResp { packet_id, code: 0, properties: Properties::default() });
    }
    // Remaining length 2: code 0; 3: code only; >= 4: code + properties.
    let code = if r.is_empty() { 0 } else { r.u8(spec.truncated)? };
    if !reason_ok(spec.codes, code) {
        return Err(Protocol(spec.bad_code));
    }
    let properties = if r.is_empty() { Properties::default() } else { read_properties(&mut r, ctx::PUBRESP)? };
    r.end(spec.trailing)?;
    Ok(PubResp { packet_id, code, properties })
}

fn decode_subscribe(body: &[u8], v: Version) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r, "SUBSCRIBE packet identifier is truncated", "SUBSCRIBE packet identifier is 0")?;
    let properties = if v.is_v5() { read_properties(&mut r, ctx::SUBSCRIBE)? } else { Properties::default() };
    let mut filters = Vec::new();
    while !r.is_empty() {
        // [MQTT-3.8.3-1]
        let filter = r.string(field!("SUBSCRIBE topic filter"))?;
        let o = r.u8("SUBSCRIBE subscription options are missing")?;
        let opts = if v.is_v5() {
            // [MQTT-3.8.3-5]
            if o & 0xC0 != 0 {
                return Err(Malformed("SUBSCRIBE subscription options reserved bits must be 0"));
            }
            let qos = QoS::from_u8(o & 0x03).ok_or(Malformed("SUBSCRIBE requested QoS 3 is invalid"))?;
            let retain_handling = match (o >> 4) & 0x03 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                // §3.8.3.1 "It is a Protocol Error to send a Retain Handling value of 3"
                _ => return Err(Protocol("SUBSCRIBE Retain Handling 3 is invalid")),
            };
            let no_local = o & 0x04 != 0;
            // [MQTT-3.8.3-4]
            if no_local && filter.starts_with("$share/") {
                return Err(Protocol("SUBSCRIBE No Local is set on a shared subscription"));
            }
            SubOptions { qos, no_local, retain_as_published: o & 0x08 != 0, retain_handling }
        } else {
            // [MQTT-3-8.3-4] (sic, 3.1.1)
            if o & 0xFC != 0 {
                return Err(Malformed("SUBSCRIBE requested QoS byte reserved bits must be 0"));
            }
            let qos = QoS::from_u8(o).ok_or(Malformed("SUBSCRIBE requested QoS 3 is invalid"))?;
            SubOptions { qos, ..SubOptions::default() }
        };
        filters.push((filter.to_owned(), opts));
    }
    // [MQTT-3.8.3-3] (3.1.1) [MQTT-3.8.3-2] (5.0)
    if filters.is_empty() {
        return Err(Protocol("SUBSCRIBE has no topic filters"));
    }
    Ok(Subscribe { packet_id, filters, properties })
}

fn decode_suback(body: &[u8], v: Version) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r, "SUBACK packet identifier is truncated", "SUBACK packet identifier is 0")?;
    let properties = if v.is_v5() { read_properties(&mut r, ctx::SUBACK)? } else { Properties::default() };
    let codes = r.rest();
    if codes.is_empty() {
        return Err(Protocol("SUBACK has no return codes"));
    }
    // [MQTT-3.9.3-2] (both versions)
    let allowed: &[u8] = if v.is_v5() { SUBACK_CODES } else { &[0x00, 0x01, 0x02, 0x80] };
    if !codes.iter().all(|&c| reason_ok(allowed, c)) {
        return Err(Protocol("SUBACK return code is not a SUBACK return code"));
    }
    Ok(SubAck { packet_id, codes: codes.to_vec(), properties })
}

fn decode_unsubscribe(body: &[u8], v: Version) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id =
        packet_id(&mut r, "UNSUBSCRIBE packet identifier is truncated", "UNSUBSCRIBE packet identifier is 0")?;
    let properties = if v.is_v5() { read_properties(&mut r, ctx::UNSUBSCRIBE)? } else { Properties::default() };
    let mut filters = Vec::new();
    while !r.is_empty() {
        // [MQTT-3.10.3-1]
        filters.push(r.string(field!("UNSUBSCRIBE topic filter"))?.to_owned());
    }
    // [MQTT-3.10.3-2]
    if filters.is_empty() {
        return Err(Protocol("UNSUBSCRIBE has no topic filters"));
    }
    Ok(Unsubscribe { packet_id, filters, properties })
}

fn decode_unsuback(body: &[u8], v: Version) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r, "UNSUBACK packet identifier is truncated", "UNSUBACK packet identifier is 0")?;
    if !v.is_v5() {
        r.end("UNSUBACK remaining length must be 2")?;
        return Ok(UnsubAck { packet_id, codes: Vec::new(), properties: Properties::default() });
    }
    let properties = read_properties(&mut r, ctx::UNSUBACK)?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(Protocol("UNSUBACK has no reason codes"));
    }
    // [MQTT-3.11.3-2]
    if !codes.iter().all(|&c| reason_ok(UNSUBACK_CODES, c)) {
        return Err(Protocol("UNSUBACK reason code is not an UNSUBACK reason code"));
    }
    Ok(UnsubAck { packet_id, codes: codes.to_vec(), properties })
}

fn decode_disconnect(body: &[u8], v: Version) -> Result<Disconnect, DecodeError> {
    let mut r = Reader::new(body);
    if !v.is_v5() {
        // [MQTT-3.14.1-1] (3.1.1): no variable header, no payload.
        r.end("DISCONNECT remaining length must be 0")?;
        return Ok(Disconnect { code: 0, properties: Properties::default() });
    }
    // Remaining length 0: code 0; 1: code only; >= 2: code + properties.
    let code = if r.is_empty() { 0 } else { r.u8("DISCONNECT reason code is missing")? };
    // [MQTT-3.14.2-1]
    if !reason_ok(DISCONNECT_CODES, code) {
        return Err(Protocol("DISCONNECT reason code is not a DISCONNECT reason code"));
    }
    let properties = if r.is_empty() { Properties::default() } else { read_properties(&mut r, ctx::DISCONNECT)? };
    r.end("DISCONNECT has bytes after its properties")?;
    Ok(Disconnect { code, properties })
}

fn decode_auth(body: &[u8]) -> Result<Auth, DecodeError> {
    let mut r = Reader::new(body);
    // Remaining length 0: code 0 (§3.15.2.1); otherwise code, then properties.
    let code = if r.is_empty() { 0 } else { r.u8("AUTH reason code is missing")? };
    // [MQTT-3.15.2-1]
    if !reason_ok(AUTH_CODES, code) {
        return Err(Protocol("AUTH reason code is not an AUTH reason code"));
    }
    if body.is_empty() {
        return Ok(Auth { code, properties: Properties::default() });
    }
    let properties = if r.is_empty() { Properties::default() } else { read_properties(&mut r, ctx::AUTH)? };
    r.end("AUTH has bytes after its properties")?;
    // §3.15.2.2.2: "It is a Protocol Error to omit the Authentication Method"
    // (only the remaining-length-0 short form carries no properties).
    if properties.authentication_method.is_none() {
        return Err(Protocol("AUTH has no Authentication Method"));
    }
    Ok(Auth { code, properties })
}
