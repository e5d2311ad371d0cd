//! Codec tests, part 1: shared helpers, MQTT 3.1 / 3.1.1 golden packets,
//! framing (remaining length, maximum size, truncation) and the randomized
//! no-panic / round-trip test. Golden bytes are written by hand from the
//! packet layouts in the OASIS specs (3.1.1 §3, 5.0 §3), not produced by
//! `encode`.

use super::*;
use std::rc::Rc;

pub(super) const BIG: u32 = 1 << 20;

/// One golden packet: wire bytes, the session version, the value.
pub(super) struct Golden {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub version: Version,
    pub packet: Packet,
}

pub(super) fn g(name: &'static str, version: Version, bytes: &[u8], packet: Packet) -> Golden {
    Golden { name, bytes: bytes.to_vec(), version, packet }
}

/// decode == value, encode == bytes, encoded_len == len, and every strict
/// prefix is Ok(None) (or TooLarge once the fixed header is complete and
/// the maximum is one byte too small).
pub(super) fn check_golden(gd: &Golden) {
    let Golden { name, bytes, version: v, packet } = gd;
    let n = bytes.len();
    assert_eq!(decode(bytes, Some(*v), BIG), Ok(Some((packet.clone(), n))), "{name}: decode");
    if let Packet::Connect(_) = packet {
        assert_eq!(decode(bytes, None, BIG), Ok(Some((packet.clone(), n))), "{name}: decode as first packet");
    }
    let mut out = vec![0xEE]; // encode appends
    encode(packet, *v, &mut out);
    assert_eq!(&out[1..], &bytes[..], "{name}: encode");
    assert_eq!(encoded_len(packet, *v), n, "{name}: encoded_len");

    // A following packet is left alone.
    let mut two = bytes.clone();
    two.extend_from_slice(&[0xC0, 0x00]);
    assert_eq!(decode(&two, Some(*v), BIG), Ok(Some((packet.clone(), n))), "{name}: with trailing packet");

    // Maximum exactly the packet size is fine; one less is TooLarge.
    assert!(matches!(decode(bytes, Some(*v), n as u32), Ok(Some(_))), "{name}: max == size");
    let header = fixed_header_len(bytes);
    for i in 0..n {
        let prefix = &bytes[..i];
        assert_eq!(decode(prefix, Some(*v), BIG), Ok(None), "{name}: prefix {i}");
        if let Packet::Connect(_) = packet {
            assert_eq!(decode(prefix, None, BIG), Ok(None), "{name}: first-packet prefix {i}");
        }
        let small = decode(prefix, Some(*v), n as u32 - 1);
        if i >= header {
            assert_eq!(small, Err(DecodeError::TooLarge { size: n as u32, max: n as u32 - 1 }), "{name}: {i}");
        } else {
            assert_eq!(small, Ok(None), "{name}: small max prefix {i}");
        }
    }
}

/// Decode-only golden: a valid but non-canonical form (encode would pick a
/// shorter one). Also checks that the value re-encodes to something that
/// decodes to the same value.
pub(super) fn check_decode_only(v: Version, bytes: &[u8], packet: Packet) {
    assert_eq!(decode(bytes, Some(v), BIG), Ok(Some((packet.clone(), bytes.len()))));
    for i in 0..bytes.len() {
        assert_eq!(decode(&bytes[..i], Some(v), BIG), Ok(None));
    }
    let mut out = Vec::new();
    encode(&packet, v, &mut out);
    assert_eq!(decode(&out, Some(v), BIG), Ok(Some((packet, out.len()))));
}

fn fixed_header_len(bytes: &[u8]) -> usize {
    1 + bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1
}

/// Decode a complete packet expecting an error.
pub(super) fn err(v: Option<Version>, bytes: &[u8]) -> DecodeError {
    match decode(bytes, v, BIG) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02X?}, got {other:?}"),
    }
}

/// Decode a complete packet expecting success.
pub(super) fn ok(v: Option<Version>, bytes: &[u8]) -> Packet {
    match decode(bytes, v, BIG) {
        Ok(Some((p, n))) => {
            assert_eq!(n, bytes.len());
            p
        }
        other => panic!("expected a packet for {bytes:02X?}, got {other:?}"),
    }
}

/// Fixed header (with a computed one-byte/two-byte remaining length) +
/// body. Only for rejection tests; goldens spell their lengths out.
pub(super) fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            break;
        }
        v.push(b | 0x80);
    }
    v.extend_from_slice(body);
    v
}

pub(super) fn connect(version: Version, client_id: &str) -> Connect {
    Connect {
        version,
        client_id: client_id.into(),
        clean_start: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    }
}

pub(super) fn publish(qos: QoS, topic: &str, packet_id: Option<u16>, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: Rc::from(topic),
        packet_id,
        payload: Rc::from(payload),
        properties: Properties::default(),
    }
}

pub(super) fn resp(packet_id: u16) -> PubResp {
    PubResp { packet_id, code: 0, properties: Properties::default() }
}

pub(super) fn opts(qos: QoS) -> SubOptions {
    SubOptions { qos, ..SubOptions::default() }
}

use Version::{V31, V311};

pub(super) fn goldens() -> Vec<Golden> {
    let mut full = connect(V311, "cid");
    full.keep_alive = 0x0102;
    full.will = Some(Will {
        topic: "w/t".into(),
        payload: vec![0x01, 0x02],
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    full.username = Some("user".into());
    full.password = Some(b"pw".to_vec());

    let mut v31 = connect(V31, "c31");
    v31.clean_start = false;
    v31.keep_alive = 10;
    v31.username = Some("u".into());
    v31.password = Some(b"p".to_vec());

    let mut v31_will = connect(V31, "");
    v31_will.will = Some(Will {
        topic: "lwt".into(),
        payload: Vec::new(),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: Properties::default(),
    });

    let mut dup_retain = publish(QoS::AtLeastOnce, "t", Some(10), &[0xFF]);
    dup_retain.dup = true;
    dup_retain.retain = true;

    let big_payload = vec![0x55; 200];
    let mut big = vec![
        0x30, 0xCB, 0x01, // PUBLISH QoS 0, remaining length 203 = 0x4B + 1*128
        0x00, 0x01, b't', // topic "t"
    ];
    big.extend_from_slice(&big_payload);

    vec![
        g(
            "CONNECT 3.1.1 minimal",
            V311,
            &[
                0x10, 15, // CONNECT, remaining length
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
                0x04, // level 4
                0x02, // flags: clean session
                0x00, 0x3C, // keep alive 60
                0x00, 0x03, b'a', b'b', b'c', // client id
            ],
            Packet::Connect(Box::new(connect(V311, "abc"))),
        ),
        g(
            "CONNECT 3.1.1 empty client id",
            V311,
            &[0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00],
            Packet::Connect(Box::new(connect(V311, ""))),
        ),
        g(
            "CONNECT 3.1.1 will, user name, password",
            V311,
            &[
                0x10, 34, //
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, //
                0xEE, // user name, password, will retain, will QoS 1, will, clean session
                0x01, 0x02, // keep alive 258
                0x00, 0x03, b'c', b'i', b'd', // client id
                0x00, 0x03, b'w', b'/', b't', // will topic
                0x00, 0x02, 0x01, 0x02, // will message
                0x00, 0x04, b'u', b's', b'e', b'r', // user name
                0x00, 0x02, b'p', b'w', // password
            ],
            Packet::Connect(Box::new(full)),
        ),
        g(
            "CONNECT 3.1 (MQIsdp)",
            V31,
            &[
                0x10, 23, //
                0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name
                0x03, // level 3
                0xC0, // user name, password, no clean session
                0x00, 0x0A, // keep alive 10
                0x00, 0x03, b'c', b'3', b'1', //
                0x00, 0x01, b'u', //
                0x00, 0x01, b'p',
            ],
            Packet::Connect(Box::new(v31)),
        ),
        g(
            "CONNECT 3.1 with will",
            V31,
            &[
                0x10, 21, //
                0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, //
                0x16, // will QoS 2, will, clean session
                0x00, 0x3C, //
                0x00, 0x00, // empty client id
                0x00, 0x03, b'l', b'w', b't', // will topic
                0x00, 0x00, // empty will message
            ],
            Packet::Connect(Box::new(v31_will)),
        ),
        g(
            "CONNACK 3.1.1 session present",
            V311,
            &[0x20, 0x02, 0x01, 0x00],
            Packet::ConnAck(ConnAck { session_present: true, code: 0, properties: Properties::default() }),
        ),
        g(
            "CONNACK 3.1.1 not authorized",
            V311,
            &[0x20, 0x02, 0x00, 0x05],
            Packet::ConnAck(ConnAck { session_present: false, code: 5, properties: Properties::default() }),
        ),
        g(
            "CONNACK 3.1",
            V31,
            &[0x20, 0x02, 0x00, 0x00],
            Packet::ConnAck(ConnAck { session_present: false, code: 0, properties: Properties::default() }),
        ),
        g(
            "PUBLISH 3.1.1 QoS 0",
            V311,
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
            Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
        ),
        g(
            "PUBLISH 3.1.1 QoS 1 dup retain",
            V311,
            &[0x3B, 0x06, 0x00, 0x01, b't', 0x00, 0x0A, 0xFF],
            Packet::Publish(dup_retain),
        ),
        g(
            "PUBLISH 3.1.1 QoS 2 empty payload",
            V311,
            &[0x34, 0x07, 0x00, 0x03, b'x', b'/', b'y', 0x12, 0x34],
            Packet::Publish(publish(QoS::ExactlyOnce, "x/y", Some(0x1234), b"")),
        ),
        g(
            "PUBLISH 3.1.1 two-byte remaining length",
            V311,
            &big,
            Packet::Publish(publish(QoS::AtMostOnce, "t", None, &big_payload)),
        ),
        g(
            "PUBLISH 3.1.1 UTF-8 topic with BOM kept [MQTT-1.5.4-3]",
            V311,
            &[0x30, 0x09, 0x00, 0x07, 0xEF, 0xBB, 0xBF, b'/', 0xC3, 0xA9, b'x'],
            Packet::Publish(publish(QoS::AtMostOnce, "\u{FEFF}/\u{e9}x", None, b"")),
        ),
        g("PUBACK 3.1.1", V311, &[0x40, 0x02, 0x00, 0x01], Packet::PubAck(resp(1))),
        g("PUBREC 3.1.1", V311, &[0x50, 0x02, 0x12, 0x34], Packet::PubRec(resp(0x1234))),
        g("PUBREL 3.1.1", V311, &[0x62, 0x02, 0x00, 0x07], Packet::PubRel(resp(7))),
        g("PUBCOMP 3.1.1", V311, &[0x70, 0x02, 0xFF, 0xFF], Packet::PubComp(resp(0xFFFF))),
        g(
            "SUBSCRIBE 3.1.1",
            V311,
            &[
                0x82, 12, //
                0x00, 0x0A, // packet id 10
                0x00, 0x03, b'a', b'/', b'b', 0x01, // "a/b" QoS 1
                0x00, 0x01, b'#', 0x02, // "#" QoS 2
            ],
            Packet::Subscribe(Subscribe {
                packet_id: 10,
                filters: vec![("a/b".into(), opts(QoS::AtLeastOnce)), ("#".into(), opts(QoS::ExactlyOnce))],
                properties: Properties::default(),
            }),
        ),
        g(
            "SUBSCRIBE 3.1",
            V31,
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'+', 0x00],
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![("+".into(), opts(QoS::AtMostOnce))],
                properties: Properties::default(),
            }),
        ),
        g(
            "SUBACK 3.1.1",
            V311,
            &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80],
            Packet::SubAck(SubAck { packet_id: 10, codes: vec![0x00, 0x02, 0x80], properties: Properties::default() }),
        ),
        g(
            "UNSUBSCRIBE 3.1.1",
            V311,
            &[0xA2, 10, 0x00, 0x0B, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'c'],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 11,
                filters: vec!["a/b".into(), "c".into()],
                properties: Properties::default(),
            }),
        ),
        g(
            "UNSUBACK 3.1.1",
            V311,
            &[0xB0, 0x02, 0x00, 0x0B],
            Packet::UnsubAck(UnsubAck { packet_id: 11, codes: Vec::new(), properties: Properties::default() }),
        ),
        g("PINGREQ 3.1.1", V311, &[0xC0, 0x00], Packet::PingReq),
        g("PINGRESP 3.1.1", V311, &[0xD0, 0x00], Packet::PingResp),
        g(
            "DISCONNECT 3.1.1",
            V311,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect { code: 0, properties: Properties::default() }),
        ),
        g("PINGREQ 3.1", V31, &[0xC0, 0x00], Packet::PingReq),
        g(
            "DISCONNECT 3.1",
            V31,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect { code: 0, properties: Properties::default() }),
        ),
    ]
}

#[test]
fn golden_v3() {
    for gd in goldens() {
        check_golden(&gd);
    }
}

#[test]
fn v3_encode_drops_v5_fields() {
    // Reason codes and properties do not exist before v5.
    let props: Properties = PropertyValues { reason_string: Some("why".into()), ..Default::default() }.into();
    let ack = Packet::PubAck(PubResp { packet_id: 5, code: 0x80, properties: props.clone() });
    let mut out = Vec::new();
    encode(&ack, V311, &mut out);
    assert_eq!(out, [0x40, 0x02, 0x00, 0x05]);
    let d = Packet::Disconnect(Disconnect { code: 0x8E, properties: props.clone() });
    out.clear();
    encode(&d, V311, &mut out);
    assert_eq!(out, [0xE0, 0x00]);
    let u = Packet::UnsubAck(UnsubAck { packet_id: 3, codes: vec![0x11], properties: props.clone() });
    out.clear();
    encode(&u, V311, &mut out);
    assert_eq!(out, [0xB0, 0x02, 0x00, 0x03]);
    let mut p = publish(QoS::AtMostOnce, "t", None, b"x");
    p.properties = props.clone();
    out.clear();
    encode(&Packet::Publish(p), V311, &mut out);
    assert_eq!(out, [0x30, 0x04, 0x00, 0x01, b't', b'x']);
    // v5-only subscription options are dropped too.
    let s = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "a".into(),
            SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
        properties: props,
    });
    out.clear();
    encode(&s, V311, &mut out);
    assert_eq!(out, [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]);
    // 3.1 CONNACK has no Session Present bit.
    let a = Packet::ConnAck(ConnAck { session_present: true, code: 0, properties: Properties::default() });
    out.clear();
    encode(&a, V31, &mut out);
    assert_eq!(out, [0x20, 0x02, 0x00, 0x00]);
    for p in [ack, d, u, a, s] {
        for v in [V31, V311] {
            let mut o = Vec::new();
            encode(&p, v, &mut o);
            assert_eq!(encoded_len(&p, v), o.len());
        }
    }
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

#[test]
fn empty_buffer_needs_more() {
    for v in [None, Some(V31), Some(V311), Some(Version::V5)] {
        assert_eq!(decode(&[], v, BIG), Ok(None));
        assert_eq!(decode(&[], v, 0), Ok(None));
    }
}

#[test]
fn remaining_length_longer_than_4_bytes_is_malformed() {
    // §2.2.3 (3.1.1) / §1.5.5 (5.0): at most four bytes.
    let e = DecodeError::Malformed("Remaining Length is longer than 4 bytes");
    assert_eq!(decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], Some(V311), u32::MAX), Err(e.clone()));
    assert_eq!(decode(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], Some(V311), u32::MAX), Err(e.clone()));
    // Known as soon as the fourth byte says "continue".
    assert_eq!(decode(&[0x30, 0x80, 0x80, 0x80, 0x80], Some(V311), u32::MAX), Err(e.clone()));
    assert_eq!(decode(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF], None, u32::MAX), Err(e));
    // Three continuation bytes: still waiting.
    assert_eq!(decode(&[0x30, 0x80, 0x80, 0x80], Some(V311), u32::MAX), Ok(None));
}

#[test]
fn too_large_from_fixed_header_alone() {
    // 268435455 remaining bytes announced, none present.
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], Some(V311), 1024),
        Err(DecodeError::TooLarge { size: 5 + 268_435_455, max: 1024 })
    );
    assert_eq!(
        decode(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F], None, 1024),
        Err(DecodeError::TooLarge { size: 5 + 268_435_455, max: 1024 })
    );
    // 1 + 2 + 200 = 203 > 202; == 203 waits for the body.
    assert_eq!(decode(&[0x30, 0xC8, 0x01], Some(V311), 202), Err(DecodeError::TooLarge { size: 203, max: 202 }));
    assert_eq!(decode(&[0x30, 0xC8, 0x01], Some(V311), 203), Ok(None));
    // The size counts the fixed header: PINGREQ is 2 bytes.
    assert_eq!(decode(&[0xC0, 0x00], Some(V311), 1), Err(DecodeError::TooLarge { size: 2, max: 1 }));
    assert_eq!(decode(&[0xC0, 0x00], Some(V311), 2), Ok(Some((Packet::PingReq, 2))));
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    // PINGREQ with remaining length 0 written in two bytes.
    assert_eq!(decode(&[0xC0, 0x80, 0x00], Some(V311), BIG), Ok(Some((Packet::PingReq, 3))));
    // PUBACK, remaining length 2 in four bytes.
    assert_eq!(
        decode(&[0x40, 0x82, 0x80, 0x80, 0x00, 0x00, 0x09], Some(V311), BIG),
        Ok(Some((Packet::PubAck(resp(9)), 7)))
    );
}

#[test]
fn back_to_back_packets() {
    let mut buf = Vec::new();
    let packets =
        [Packet::Publish(publish(QoS::AtLeastOnce, "a", Some(1), b"x")), Packet::PingReq, Packet::PubRel(resp(1))];
    for p in &packets {
        encode(p, V311, &mut buf);
    }
    let mut at = 0;
    for p in &packets {
        let (q, n) = decode(&buf[at..], Some(V311), BIG).unwrap().unwrap();
        assert_eq!(&q, p);
        at += n;
    }
    assert_eq!(at, buf.len());
}

// ---------------------------------------------------------------------------
// Randomized: no panics, round trips
// ---------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn all_goldens() -> Vec<Golden> {
    let mut all = goldens();
    all.extend(super::tests_v5::goldens());
    all
}

/// Decode `buf`; if a packet comes out, check the consumed length and that
/// encoding it and decoding again gives the same packet.
fn fuzz_one(buf: &[u8], v: Option<Version>, max: u32, decoded: &mut usize) {
    if let Ok(Some((p, n))) = decode(buf, v, max) {
        *decoded += 1;
        assert!(n <= buf.len());
        assert!(n <= max as usize);
        // A CONNECT is encoded for its own version; anything else for the
        // session's.
        let ev = match (&p, v) {
            (Packet::Connect(c), _) => c.version,
            (_, Some(v)) => v,
            (_, None) => unreachable!("only CONNECT decodes before CONNECT"),
        };
        let mut out = Vec::new();
        encode(&p, ev, &mut out);
        assert_eq!(out.len(), encoded_len(&p, ev), "encoded_len of {p:?}");
        assert_eq!(decode(&out, v, u32::MAX), Ok(Some((p.clone(), out.len()))), "round trip of {buf:02X?}");
    }
}

#[test]
fn randomized_no_panic_and_round_trip() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let versions = [None, Some(V31), Some(V311), Some(Version::V5)];
    let goldens = all_goldens();
    let mut decoded = 0usize;
    let mut buf = Vec::new();
    for round in 0..6000 {
        buf.clear();
        if round % 3 == 0 {
            // Pure noise, biased towards plausible first bytes and lengths.
            let len = rng.below(48);
            for i in 0..len {
                let b = rng.next() as u8;
                buf.push(match i {
                    1 => b & 0x3F,
                    _ => b,
                });
            }
        } else {
            // A mutated golden packet: flip, overwrite, insert, delete or
            // truncate a few bytes, then fix up nothing.
            let gd = &goldens[rng.below(goldens.len())];
            buf.extend_from_slice(&gd.bytes);
            for _ in 0..1 + rng.below(3) {
                if buf.is_empty() {
                    break;
                }
                let at = rng.below(buf.len());
                match rng.below(6) {
                    0 => buf[at] ^= 1 << rng.below(8),
                    1 => buf[at] = rng.next() as u8,
                    2 => buf.insert(at, rng.next() as u8),
                    3 => {
                        buf.remove(at);
                    }
                    4 => buf.truncate(at),
                    _ => {
                        // Keep the remaining length consistent when the
                        // body is changed, so the body parsers get exercised.
                        let body_at = fixed_header_len(&gd.bytes);
                        if at >= body_at {
                            buf[at] = rng.next() as u8;
                        }
                    }
                }
            }
        }
        for v in versions {
            for max in [u32::MAX, 64] {
                fuzz_one(&buf, v, max, &mut decoded);
            }
        }
    }
    // The mutations keep enough packets valid to exercise the round trip.
    assert!(decoded > 2000, "only {decoded} packets decoded");
}

#[test]
fn every_single_byte_mutation_of_goldens() {
    // Exhaustive: every byte position of every golden set to every value.
    let mut decoded = 0usize;
    for gd in all_goldens().iter().filter(|g| g.bytes.len() <= 80) {
        let mut buf = gd.bytes.clone();
        for at in 0..buf.len() {
            let orig = buf[at];
            for b in 0..=255u8 {
                buf[at] = b;
                fuzz_one(&buf, Some(gd.version), u32::MAX, &mut decoded);
            }
            buf[at] = orig;
        }
    }
    assert!(decoded > 1000);
}

/// The word-at-a-time topic scan against its per-byte definition: every
/// byte value at every position of topics of 0 to 24 bytes (so every tail
/// length), among bytes that are none of those looked for.
#[test]
fn topic_scan_agrees_with_the_per_byte_definition() {
    let naive = |t: &[u8]| TopicScan {
        forbidden: t.iter().any(|&b| b == 0 || b == b'#' || b == b'+'),
        non_ascii: t.iter().any(|&b| b >= 0x80),
    };
    for len in 0..=24 {
        let base: Vec<u8> = (0..len).map(|i| b"abc/xyz-09"[i % 10]).collect();
        assert_eq!(scan_topic(&base), naive(&base), "{base:?}");
        for pos in 0..len {
            for b in 0..=255u8 {
                let mut t = base.clone();
                t[pos] = b;
                assert_eq!(scan_topic(&t), naive(&t), "byte {b:#04x} at {pos} of {len}");
            }
        }
    }
    // Two of them in one word, and a zero after a byte that borrows.
    for t in [&b"a+#b"[..], b"\x01\x00", b"\x00\x01", b"\xff\x00abcdefgh", b"\x80\x2b", b"/#"] {
        assert_eq!(scan_topic(t), naive(t), "{t:?}");
    }
}
