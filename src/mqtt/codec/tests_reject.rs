//! Codec tests, part 3: every rejection rule, each tagged with the spec
//! statement it checks. "(3.1.1)" / "(5.0)" marks ids that differ between
//! the two specs; untagged ids are the same in both.

use super::tests::{err, ok, pkt};
use super::*;
use DecodeError::{Malformed, Protocol, UnsupportedVersion};
use Version::{V31, V311, V5};

const S311: Option<Version> = Some(V311);
const S5: Option<Version> = Some(V5);
const S31: Option<Version> = Some(V31);

fn is_malformed(e: DecodeError) -> bool {
    matches!(e, Malformed(_))
}

/// CONNECT body: "MQTT" level `level`, flags, keep alive 60, then `rest`.
fn connect_body(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, flags, 0x00, 0x3C];
    b.extend_from_slice(rest);
    b
}

fn connect_pkt(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    pkt(0x10, &connect_body(level, flags, rest))
}

// ---------------------------------------------------------------------------
// Packet type, fixed header flags, first packet
// ---------------------------------------------------------------------------

#[test]
fn first_packet_must_be_connect() {
    // [MQTT-3.1.0-1]: reported from the first byte alone.
    for first in [0x20u8, 0x30, 0x40, 0x62, 0x82, 0xC0, 0xE0, 0xF0, 0x00] {
        assert_eq!(decode(&[first], None, BIG), Err(Protocol("first packet must be CONNECT")));
    }
}

#[test]
fn second_connect_is_decoded() {
    // [MQTT-3.1.0-2] is the broker's job: the codec hands the CONNECT over.
    let c = connect_pkt(4, 0x02, &[0x00, 0x01, b'a']);
    for v in [S31, S311, S5] {
        assert!(matches!(ok(v, &c), Packet::Connect(_)));
    }
}

#[test]
fn reserved_packet_types() {
    assert_eq!(decode(&[0x00], S311, BIG), Err(Malformed("packet type 0 is reserved")));
    assert_eq!(decode(&[0x00, 0x00], S5, BIG), Err(Malformed("packet type 0 is reserved")));
    // AUTH (15) is reserved in 3.1.1.
    assert!(is_malformed(err(S311, &[0xF0, 0x00])));
    assert!(is_malformed(err(S31, &[0xF0, 0x00])));
}

use super::tests::BIG;

#[test]
fn fixed_header_flags() {
    // [MQTT-2.2.2-2] (3.1.1) / §2.1.3 (5.0): reserved flags must be exactly
    // as listed; anything else is malformed. Detected from the first byte.
    let bad: &[(u8, &[u8])] = &[
        (0x21, &[0x00, 0x00]),                         // CONNACK
        (0x48, &[0x00, 0x01]),                         // PUBACK
        (0x52, &[0x00, 0x01]),                         // PUBREC
        (0x60, &[0x00, 0x01]),                         // PUBREL [MQTT-3.6.1-1]
        (0x63, &[0x00, 0x01]),                         // PUBREL
        (0x6A, &[0x00, 0x01]),                         // PUBREL with DUP
        (0x71, &[0x00, 0x01]),                         // PUBCOMP
        (0x80, &[0x00, 0x01, 0x00, 0x01, b'a', 0x00]), // SUBSCRIBE [MQTT-3.8.1-1]
        (0x8A, &[0x00, 0x01, 0x00, 0x01, b'a', 0x00]), // SUBSCRIBE
        (0x91, &[0x00, 0x01, 0x00]),                   // SUBACK
        (0xA0, &[0x00, 0x01, 0x00, 0x01, b'a']),       // UNSUBSCRIBE [MQTT-3.10.1-1]
        (0xA3, &[0x00, 0x01, 0x00, 0x01, b'a']),       // UNSUBSCRIBE
        (0xB4, &[0x00, 0x01]),                         // UNSUBACK
        (0xC1, &[]),                                   // PINGREQ
        (0xD8, &[]),                                   // PINGRESP
        (0xE1, &[]),                                   // DISCONNECT [MQTT-3.14.1-1]
    ];
    for v in [S311, S5] {
        for (first, body) in bad {
            assert!(is_malformed(err(v, &pkt(*first, body))), "{first:02X} {v:?}");
            // From the first byte alone.
            assert!(is_malformed(decode(&[*first], v, BIG).unwrap_err()), "{first:02X}");
        }
    }
    // AUTH [MQTT-3.15.1-1]
    assert_eq!(decode(&[0xF1], S5, BIG), Err(Malformed("AUTH fixed header flags must be 0000")));
    assert_eq!(decode(&[0x60], S311, BIG), Err(Malformed("PUBREL fixed header flags must be 0010")));
    // CONNECT flags must be 0 (checked once the level is known).
    let mut c = connect_pkt(4, 0x02, &[0x00, 0x01, b'a']);
    c[0] = 0x12;
    assert_eq!(err(None, &c), Malformed("CONNECT fixed header flags must be 0000"));
    let mut c = connect_pkt(5, 0x02, &[0x00, 0x00, 0x01, b'a']);
    c[0] = 0x11;
    assert_eq!(err(None, &c), Malformed("CONNECT fixed header flags must be 0000"));
}

#[test]
fn mqtt31_ignores_non_publish_flags() {
    // MQTT 3.1 gave every packet DUP/QoS/RETAIN bits (a retried SUBSCRIBE
    // carries DUP); they mean nothing to the codec.
    let s = ok(S31, &pkt(0x8A, &[0x00, 0x01, 0x00, 0x01, b'a', 0x01]));
    assert!(matches!(s, Packet::Subscribe(_)));
    assert!(matches!(ok(S31, &pkt(0x6A, &[0x00, 0x01])), Packet::PubRel(_)));
    let mut c = pkt(0x10, &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00, 0x01, b'a']);
    c[0] = 0x12;
    assert!(matches!(ok(None, &c), Packet::Connect(_)));
}

// ---------------------------------------------------------------------------
// Lengths inside a complete packet
// ---------------------------------------------------------------------------

#[test]
fn fields_must_fill_the_packet_exactly() {
    // PUBACK with remaining length 3 in 3.1.1.
    assert_eq!(err(S311, &[0x40, 0x03, 0x00, 0x01, 0x00]), Malformed("PUBACK remaining length must be 2"));
    assert_eq!(err(S311, &[0x50, 0x03, 0x00, 0x01, 0x00]), Malformed("PUBREC remaining length must be 2"));
    assert_eq!(err(S311, &[0x62, 0x03, 0x00, 0x01, 0x00]), Malformed("PUBREL remaining length must be 2"));
    assert_eq!(err(S311, &[0x70, 0x03, 0x00, 0x01, 0x00]), Malformed("PUBCOMP remaining length must be 2"));
    assert_eq!(err(S311, &[0xB0, 0x03, 0x00, 0x01, 0x00]), Malformed("UNSUBACK remaining length must be 2"));
    // Too short.
    assert_eq!(err(S311, &[0x40, 0x01, 0x00]), Malformed("PUBACK packet identifier is truncated"));
    assert_eq!(err(S5, &[0x40, 0x00]), Malformed("PUBACK packet identifier is truncated"));
    assert!(is_malformed(err(S311, &[0x20, 0x01, 0x00])));
    assert!(is_malformed(err(S311, &[0x20, 0x03, 0x00, 0x00, 0x00])));
    assert!(is_malformed(err(S311, &[0x90, 0x01, 0x00])));
    // PINGREQ / PINGRESP / 3.1.1 DISCONNECT have no body.
    assert_eq!(err(S311, &[0xC0, 0x01, 0x00]), Malformed("PINGREQ remaining length must be 0"));
    assert_eq!(err(S5, &[0xD0, 0x01, 0x00]), Malformed("PINGRESP remaining length must be 0"));
    assert_eq!(err(S311, &[0xE0, 0x01, 0x00]), Malformed("DISCONNECT remaining length must be 0"));
    // v5: bytes after the properties.
    assert!(is_malformed(err(S5, &[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00])));
    assert!(is_malformed(err(S5, &[0xE0, 0x03, 0x00, 0x00, 0x00])));
    assert!(is_malformed(err(S5, &[0x20, 0x04, 0x00, 0x00, 0x00, 0x00])));
    // Property length beyond the packet.
    assert_eq!(err(S5, &[0x40, 0x04, 0x00, 0x01, 0x00, 0x05]), Malformed("property length exceeds the packet"));
    // Property length that never ends (5-byte varint).
    assert!(is_malformed(err(S5, &[0x40, 0x08, 0x00, 0x01, 0x00, 0x80, 0x80, 0x80, 0x80, 0x01])));
    // Property value cut by the property length.
    assert!(is_malformed(err(S5, &[0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x1F, 0x00])));
}

// ---------------------------------------------------------------------------
// UTF-8 strings
// ---------------------------------------------------------------------------

#[test]
fn strings_must_be_well_formed_utf8() {
    // [MQTT-1.5.3-1] (3.1.1) / [MQTT-1.5.4-1] (5.0)
    let bad_utf8: [&[u8]; 6] = [
        &[0xFF],                   // never valid
        &[0xC0, 0x80],             // overlong NUL
        &[0xED, 0xA0, 0x80],       // surrogate U+D800
        &[0xC3],                   // truncated sequence
        &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
        &[b'a', 0x80],             // stray continuation
    ];
    for s in bad_utf8 {
        let mut body = vec![0x00, s.len() as u8];
        body.extend_from_slice(s);
        for v in [S311, S5] {
            let mut b = body.clone();
            if v == S5 {
                b.push(0x00);
            }
            assert_eq!(err(v, &pkt(0x30, &b)), Malformed("PUBLISH topic is not valid UTF-8"), "{s:02X?}");
        }
        // Client id, user name, will topic, filters, property strings.
        let mut cid = body.clone();
        assert_eq!(err(None, &connect_pkt(4, 0x02, &cid)), Malformed("CONNECT Client Identifier is not valid UTF-8"));
        cid.splice(0..0, [0x00]); // v5 property length
        assert_eq!(err(None, &connect_pkt(5, 0x02, &cid)), Malformed("CONNECT Client Identifier is not valid UTF-8"));
        let mut user = vec![0x00, 0x01, b'c'];
        user.extend_from_slice(&body);
        assert_eq!(err(None, &connect_pkt(4, 0x82, &user)), Malformed("CONNECT User Name is not valid UTF-8"));
        let mut will = vec![0x00, 0x01, b'c'];
        will.extend_from_slice(&body);
        will.extend_from_slice(&[0x00, 0x00]);
        assert_eq!(err(None, &connect_pkt(4, 0x06, &will)), Malformed("Will Topic is not valid UTF-8"));
        // [MQTT-3.8.3-1]
        let mut sub = vec![0x00, 0x01];
        sub.extend_from_slice(&body);
        sub.push(0x00);
        assert_eq!(err(S311, &pkt(0x82, &sub)), Malformed("SUBSCRIBE topic filter is not valid UTF-8"));
        // [MQTT-3.10.3-1]
        let mut unsub = vec![0x00, 0x01];
        unsub.extend_from_slice(&body);
        assert_eq!(err(S311, &pkt(0xA2, &unsub)), Malformed("UNSUBSCRIBE topic filter is not valid UTF-8"));
        let mut reason = vec![0x00, 0x01, 0x80, (body.len() + 1) as u8, 0x1F];
        reason.extend_from_slice(&body);
        assert_eq!(err(S5, &pkt(0x40, &reason)), Malformed("Reason String property is not valid UTF-8"));
        let mut user_prop = vec![0x00, 0x01, 0x80, (body.len() + 4) as u8, 0x26, 0x00, 0x01, b'k'];
        user_prop.extend_from_slice(&body);
        assert_eq!(err(S5, &pkt(0x40, &user_prop)), Malformed("User Property value is not valid UTF-8"));
    }
}

#[test]
fn strings_must_not_contain_nul() {
    // [MQTT-1.5.3-2] (3.1.1) / [MQTT-1.5.4-2] (5.0); topics: [MQTT-4.7.3-2]
    assert_eq!(err(S311, &pkt(0x30, &[0x00, 0x03, b'a', 0x00, b'b'])), Malformed("PUBLISH topic contains U+0000"));
    assert_eq!(err(S5, &pkt(0x30, &[0x00, 0x01, 0x00, 0x00])), Malformed("PUBLISH topic contains U+0000"));
    assert_eq!(
        err(None, &connect_pkt(4, 0x02, &[0x00, 0x02, b'a', 0x00])),
        Malformed("CONNECT Client Identifier contains U+0000")
    );
    assert_eq!(
        err(S311, &pkt(0x82, &[0x00, 0x01, 0x00, 0x01, 0x00, 0x00])),
        Malformed("SUBSCRIBE topic filter contains U+0000")
    );
    assert_eq!(
        err(S5, &pkt(0x40, &[0x00, 0x01, 0x80, 0x04, 0x1F, 0x00, 0x01, 0x00])),
        Malformed("Reason String property contains U+0000")
    );
    // U+0000 is only forbidden in strings, not in binary data.
    let p = ok(S311, &pkt(0x30, &[0x00, 0x01, b't', 0x00, 0x00]));
    assert!(matches!(p, Packet::Publish(ref p) if *p.payload == [0, 0]));
}

#[test]
fn string_length_beyond_packet() {
    assert_eq!(err(S311, &pkt(0x30, &[0x00, 0x05, b'a'])), Malformed("PUBLISH topic is truncated"));
    assert_eq!(err(S311, &pkt(0x30, &[0x00])), Malformed("PUBLISH topic is truncated"));
    assert_eq!(err(S311, &pkt(0x30, &[])), Malformed("PUBLISH topic is truncated"));
}

// ---------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------

#[test]
fn connect_protocol_name_and_level() {
    // [MQTT-3.1.2-1]: wrong name -> UnsupportedVersion with the level byte.
    let mut b = pkt(0x10, &[0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00]);
    assert_eq!(err(None, &b), UnsupportedVersion(4));
    b = pkt(0x10, &[0x00, 0x04, b'm', b'q', b't', b't', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00]);
    assert_eq!(err(None, &b), UnsupportedVersion(5));
    b = pkt(0x10, &[0x00, 0x00, 0x04]);
    assert_eq!(err(None, &b), UnsupportedVersion(4));
    // [MQTT-3.1.2-2]: unsupported level.
    assert_eq!(err(None, &connect_pkt(6, 0x02, &[0x00, 0x00])), UnsupportedVersion(6));
    assert_eq!(err(None, &connect_pkt(3, 0x02, &[0x00, 0x00])), UnsupportedVersion(3));
    assert_eq!(err(None, &connect_pkt(0x84, 0x02, &[0x00, 0x00])), UnsupportedVersion(0x84));
    // "MQIsdp" is level 3 only.
    b = pkt(0x10, &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00]);
    assert_eq!(err(None, &b), UnsupportedVersion(4));
    // Unknown name and level checked before anything else in the packet.
    b = pkt(0x10, &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x07]);
    assert_eq!(err(None, &b), UnsupportedVersion(7));
    // Name or level unreadable: malformed.
    assert_eq!(err(None, &pkt(0x10, &[0x00, 0x04, b'M', b'Q'])), Malformed("CONNECT protocol name is truncated"));
    assert_eq!(err(None, &pkt(0x10, &[0x00])), Malformed("CONNECT protocol name is truncated"));
    assert_eq!(err(None, &pkt(0x10, &[])), Malformed("CONNECT protocol name is truncated"));
    assert_eq!(
        err(None, &pkt(0x10, &[0x00, 0x04, b'M', b'Q', b'T', b'T'])),
        Malformed("CONNECT protocol level is missing")
    );
}

#[test]
fn connect_reserved_flag() {
    // [MQTT-3.1.2-3]: malformed in 5.0; a protocol violation in 3.1.1.
    assert_eq!(err(None, &connect_pkt(5, 0x03, &[0x00, 0x00, 0x00])), Malformed("CONNECT reserved flag must be 0"));
    assert_eq!(err(None, &connect_pkt(4, 0x03, &[0x00, 0x00])), Protocol("CONNECT reserved flag must be 0"));
}

#[test]
fn connect_will_flags() {
    // Will Flag 0: Will QoS must be 0 [MQTT-3.1.2-13] (3.1.1) [MQTT-3.1.2-11] (5.0)
    let e = Protocol("Will QoS must be 0 when the Will Flag is 0");
    assert_eq!(err(None, &connect_pkt(4, 0x0A, &[0x00, 0x00])), e);
    assert_eq!(err(None, &connect_pkt(5, 0x12, &[0x00, 0x00, 0x00])), e);
    assert_eq!(err(None, &connect_pkt(4, 0x1A, &[0x00, 0x00])), e);
    // Will Flag 0: Will Retain must be 0 [MQTT-3.1.2-15] (3.1.1) [MQTT-3.1.2-13] (5.0)
    let e = Protocol("Will Retain must be 0 when the Will Flag is 0");
    assert_eq!(err(None, &connect_pkt(4, 0x22, &[0x00, 0x00])), e);
    assert_eq!(err(None, &connect_pkt(5, 0x22, &[0x00, 0x00, 0x00])), e);
    // Will QoS 3 [MQTT-3.1.2-14] (3.1.1) [MQTT-3.1.2-12] (5.0)
    let will = [0x00, 0x00, 0x00, 0x01, b't', 0x00, 0x00];
    assert_eq!(err(None, &connect_pkt(4, 0x1E, &will)), Malformed("Will QoS 3 is invalid"));
    let will5 = [0x00, 0x00, 0x00, 0x00, 0x01, b't', 0x00, 0x00];
    assert_eq!(err(None, &connect_pkt(5, 0x1E, &will5)), Malformed("Will QoS 3 is invalid"));
    // Will Flag 1: Will Topic and Will Message must be present [MQTT-3.1.2-9]
    assert_eq!(err(None, &connect_pkt(4, 0x06, &[0x00, 0x00])), Malformed("Will Topic is truncated"));
    assert_eq!(
        err(None, &connect_pkt(4, 0x06, &[0x00, 0x00, 0x00, 0x01, b't'])),
        Malformed("Will Payload is truncated")
    );
    // (5.0) [MQTT-3.1.2-9]: Will Properties first.
    assert_eq!(err(None, &connect_pkt(5, 0x06, &[0x00, 0x00, 0x00])), Malformed("property length is truncated"));
    // The Will Topic is a Topic Name: [MQTT-4.7.1-1] (3.1.1) [MQTT-4.7.0-1] (5.0), [MQTT-4.7.3-1]
    let wild = [0x00, 0x00, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x00];
    assert_eq!(err(None, &connect_pkt(4, 0x06, &wild)), Protocol("Will Topic contains a wildcard character"));
    let empty = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    assert_eq!(err(None, &connect_pkt(4, 0x06, &empty)), Protocol("Will Topic is empty"));
}

#[test]
fn connect_user_name_and_password_flags() {
    // [MQTT-3.1.2-22] (3.1.1): password flag requires user name flag.
    let e = Protocol("Password Flag is set without the User Name Flag");
    assert_eq!(err(None, &connect_pkt(4, 0x42, &[0x00, 0x00, 0x00, 0x01, b'p'])), e);
    let b31 = [0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'p'];
    assert_eq!(err(None, &pkt(0x10, &b31)), e);
    // ... but 5.0 allows it (§3.1.2.9).
    assert!(matches!(ok(None, &connect_pkt(5, 0x42, &[0x00, 0x00, 0x00, 0x00, 0x01, b'p'])), Packet::Connect(_)));
    // Flag set, field missing: [MQTT-3.1.2-19]/[MQTT-3.1.2-21] (3.1.1) [MQTT-3.1.2-17]/[MQTT-3.1.2-19] (5.0)
    assert_eq!(err(None, &connect_pkt(4, 0x82, &[0x00, 0x00])), Malformed("CONNECT User Name is truncated"));
    assert_eq!(
        err(None, &connect_pkt(4, 0xC2, &[0x00, 0x00, 0x00, 0x01, b'u'])),
        Malformed("CONNECT Password is truncated")
    );
    assert_eq!(err(None, &connect_pkt(5, 0x42, &[0x00, 0x00, 0x00])), Malformed("CONNECT Password is truncated"));
    // Flag clear, field present: [MQTT-3.1.2-18]/[MQTT-3.1.2-20] (3.1.1) [MQTT-3.1.2-16]/[MQTT-3.1.2-18] (5.0)
    let e = Malformed("CONNECT has bytes after its last field");
    assert_eq!(err(None, &connect_pkt(4, 0x02, &[0x00, 0x00, 0x00, 0x01, b'u'])), e);
    assert_eq!(err(None, &connect_pkt(5, 0x82, &[0x00, 0x00, 0x00, 0x00, 0x01, b'u', 0x00, 0x01, b'p'])), e);
    // Trailing garbage.
    assert_eq!(err(None, &connect_pkt(4, 0x02, &[0x00, 0x01, b'a', 0xFF])), e);
}

#[test]
fn connect_client_id() {
    // [MQTT-3.1.3-3]: the Client Identifier must be present.
    assert_eq!(err(None, &connect_pkt(4, 0x02, &[])), Malformed("CONNECT Client Identifier is truncated"));
    assert_eq!(err(None, &connect_pkt(5, 0x02, &[0x00])), Malformed("CONNECT Client Identifier is truncated"));
    // May be empty (the broker decides [MQTT-3.1.3-6..8]).
    assert!(matches!(ok(None, &connect_pkt(4, 0x00, &[0x00, 0x00])), Packet::Connect(_)));
    // Keep alive truncated.
    assert_eq!(
        err(None, &pkt(0x10, &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00])),
        Malformed("CONNECT keep alive is truncated")
    );
}

#[test]
fn connect_properties() {
    // §2.2.2.2: Topic Alias is not a CONNECT property.
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x03, 0x23, 0x00, 0x01, 0x00, 0x00])),
        Malformed("Topic Alias property is not allowed in this packet")
    );
    // Will Delay Interval belongs to the Will Properties, not CONNECT's.
    assert!(is_malformed(err(None, &connect_pkt(5, 0x02, &[0x05, 0x18, 0, 0, 0, 1, 0x00, 0x00]))));
    // Session Expiry Interval is not a Will property.
    let will = [0x00, 0x00, 0x00, 0x05, 0x11, 0, 0, 0, 1, 0x00, 0x01, b't', 0x00, 0x00];
    assert_eq!(
        err(None, &connect_pkt(5, 0x06, &will)),
        Malformed("Session Expiry Interval property is not allowed in this packet")
    );
    // Authentication Data without Authentication Method (§3.1.2.11.10).
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x04, 0x16, 0x00, 0x01, 0xAA, 0x00, 0x00])),
        Protocol("Authentication Data without Authentication Method")
    );
    // Value ranges.
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x03, 0x21, 0x00, 0x00, 0x00, 0x00])),
        Protocol("Receive Maximum is 0")
    );
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x05, 0x27, 0, 0, 0, 0, 0x00, 0x00])),
        Protocol("Maximum Packet Size is 0")
    );
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x02, 0x17, 0x02, 0x00, 0x00])),
        Protocol("Request Problem Information must be 0 or 1")
    );
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x02, 0x19, 0x02, 0x00, 0x00])),
        Protocol("Request Response Information must be 0 or 1")
    );
    // Duplicates.
    assert_eq!(
        err(None, &connect_pkt(5, 0x02, &[0x0A, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2, 0x00, 0x00])),
        Protocol("duplicate Session Expiry Interval property")
    );
    // Will properties: PFI range and a wildcard Response Topic [MQTT-3.3.2-14]
    let will = [0x00, 0x00, 0x00, 0x02, 0x01, 0x02, 0x00, 0x01, b't', 0x00, 0x00];
    assert_eq!(err(None, &connect_pkt(5, 0x06, &will)), Protocol("Payload Format Indicator must be 0 or 1"));
    let will = [0x00, 0x00, 0x00, 0x04, 0x08, 0x00, 0x01, b'+', 0x00, 0x01, b't', 0x00, 0x00];
    assert_eq!(err(None, &connect_pkt(5, 0x06, &will)), Protocol("Response Topic is not a valid Topic Name"));
}

// ---------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------

#[test]
fn publish_qos_3() {
    // [MQTT-3.3.1-4]
    for v in [S31, S311, S5] {
        assert_eq!(err(v, &pkt(0x36, &[0x00, 0x01, b't', 0x00, 0x01, 0x00])), Malformed("PUBLISH QoS 3 is invalid"));
    }
}

#[test]
fn publish_dup_with_qos_0() {
    // [MQTT-3.3.1-2]
    for v in [S311, S5] {
        assert_eq!(
            err(v, &pkt(0x38, &[0x00, 0x01, b't', 0x00])),
            Malformed("PUBLISH DUP flag is set on a QoS 0 message")
        );
    }
}

#[test]
fn publish_packet_id() {
    // [MQTT-2.3.1-1] (3.1.1) / [MQTT-2.2.1-3] (5.0): non-zero for QoS > 0.
    assert_eq!(err(S311, &pkt(0x32, &[0x00, 0x01, b't', 0x00, 0x00])), Protocol("PUBLISH packet identifier is 0"));
    assert_eq!(err(S5, &pkt(0x34, &[0x00, 0x01, b't', 0x00, 0x00, 0x00])), Protocol("PUBLISH packet identifier is 0"));
    // Missing entirely.
    assert_eq!(err(S311, &pkt(0x32, &[0x00, 0x01, b't', 0x00])), Malformed("PUBLISH packet identifier is truncated"));
}

#[test]
fn publish_topic_wildcards() {
    // [MQTT-3.3.2-2]
    for t in [&b"a/+"[..], b"#", b"a/#", b"+", b"a+b"] {
        let mut b = vec![0x00, t.len() as u8];
        b.extend_from_slice(t);
        assert_eq!(err(S311, &pkt(0x30, &b)), Protocol("PUBLISH topic contains a wildcard character"));
        b.push(0x00);
        assert_eq!(err(S5, &pkt(0x30, &b)), Protocol("PUBLISH topic contains a wildcard character"));
    }
}

#[test]
fn publish_empty_topic() {
    // [MQTT-4.7.3-1] (3.1.1): topic names are at least one character.
    assert_eq!(err(S311, &pkt(0x30, &[0x00, 0x00, b'x'])), Protocol("PUBLISH topic is empty"));
    assert_eq!(err(S31, &pkt(0x30, &[0x00, 0x00])), Protocol("PUBLISH topic is empty"));
    // 5.0 §3.3.2.3.4: empty only together with a Topic Alias.
    assert_eq!(
        err(S5, &pkt(0x30, &[0x00, 0x00, 0x00, b'x'])),
        Protocol("PUBLISH topic is empty and there is no Topic Alias")
    );
    assert!(matches!(ok(S5, &pkt(0x30, &[0x00, 0x00, 0x03, 0x23, 0x00, 0x01])), Packet::Publish(_)));
}

#[test]
fn publish_properties() {
    let p = |props: &[u8]| {
        let mut b = vec![0x00, 0x01, b't', props.len() as u8];
        b.extend_from_slice(props);
        b.extend_from_slice(b"payload");
        pkt(0x30, &b)
    };
    // [MQTT-3.3.2-8]
    assert_eq!(err(S5, &p(&[0x23, 0x00, 0x00])), Protocol("Topic Alias is 0"));
    // §3.3.2.3.4: at most once.
    assert_eq!(err(S5, &p(&[0x23, 0x00, 0x01, 0x23, 0x00, 0x02])), Protocol("duplicate Topic Alias property"));
    // §3.3.2.3.2: 0 or 1.
    assert_eq!(err(S5, &p(&[0x01, 0x02])), Protocol("Payload Format Indicator must be 0 or 1"));
    assert_eq!(err(S5, &p(&[0x01, 0x00, 0x01, 0x01])), Protocol("duplicate Payload Format Indicator property"));
    assert_eq!(
        err(S5, &p(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1])),
        Protocol("duplicate Message Expiry Interval property")
    );
    assert_eq!(err(S5, &p(&[0x03, 0, 1, b'a', 0x03, 0, 1, b'b'])), Protocol("duplicate Content Type property"));
    assert_eq!(err(S5, &p(&[0x09, 0, 0, 0x09, 0, 0])), Protocol("duplicate Correlation Data property"));
    // [MQTT-3.3.2-14]: no wildcards in the Response Topic.
    assert_eq!(
        err(S5, &p(&[0x08, 0x00, 0x03, b'a', b'/', b'#'])),
        Protocol("Response Topic is not a valid Topic Name")
    );
    assert_eq!(err(S5, &p(&[0x08, 0, 1, b'a', 0x08, 0, 1, b'b'])), Protocol("duplicate Response Topic property"));
    // §3.3.2.3.8: Subscription Identifier 0 is a protocol error; it may repeat in PUBLISH.
    assert_eq!(err(S5, &p(&[0x0B, 0x00])), Protocol("Subscription Identifier is 0"));
    assert!(matches!(ok(S5, &p(&[0x0B, 0x01, 0x0B, 0x02, 0x0B, 0x01])), Packet::Publish(_)));
    // Subscription Identifier longer than 4 bytes.
    assert!(is_malformed(err(S5, &p(&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]))));
    // §2.2.2.2: properties of other packets, and unknown identifiers.
    for (props, msg) in [
        (&[0x11, 0, 0, 0, 1][..], "Session Expiry Interval property is not allowed in this packet"),
        (&[0x1F, 0, 0][..], "Reason String property is not allowed in this packet"),
        (&[0x18, 0, 0, 0, 1][..], "Will Delay Interval property is not allowed in this packet"),
        (&[0x21, 0, 1][..], "Receive Maximum property is not allowed in this packet"),
    ] {
        assert_eq!(err(S5, &p(props)), Malformed(msg));
    }
    for id in [0x00u8, 0x04, 0x0A, 0x10, 0x14, 0x1B, 0x1D, 0x20, 0x2B, 0x7F, 0x80, 0xFF] {
        assert_eq!(err(S5, &p(&[id, 0x00, 0x00])), Malformed("unknown property identifier"), "{id:02X}");
    }
    // Truncated values.
    assert_eq!(err(S5, &p(&[0x02, 0x00, 0x00])), Malformed("Message Expiry Interval property is truncated"));
    assert_eq!(err(S5, &p(&[0x23, 0x00])), Malformed("Topic Alias property is truncated"));
    assert_eq!(err(S5, &p(&[0x26, 0x00, 0x01, b'k'])), Malformed("User Property value is truncated"));
}

// ---------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP
// ---------------------------------------------------------------------------

#[test]
fn ack_packet_id_zero() {
    // Packet identifiers are never 0 [MQTT-2.3.1-1] (3.1.1) [MQTT-2.2.1-3] (5.0).
    assert_eq!(err(S311, &[0x40, 0x02, 0x00, 0x00]), Protocol("PUBACK packet identifier is 0"));
    assert_eq!(err(S5, &[0x50, 0x02, 0x00, 0x00]), Protocol("PUBREC packet identifier is 0"));
    assert_eq!(err(S311, &[0x62, 0x02, 0x00, 0x00]), Protocol("PUBREL packet identifier is 0"));
    assert_eq!(err(S5, &[0x70, 0x02, 0x00, 0x00]), Protocol("PUBCOMP packet identifier is 0"));
    assert_eq!(err(S311, &[0x90, 0x03, 0x00, 0x00, 0x00]), Protocol("SUBACK packet identifier is 0"));
    assert_eq!(err(S311, &[0xB0, 0x02, 0x00, 0x00]), Protocol("UNSUBACK packet identifier is 0"));
}

#[test]
fn ack_reason_codes() {
    // [MQTT-3.4.2-1]
    assert_eq!(err(S5, &[0x40, 0x03, 0x00, 0x01, 0x01]), Protocol("PUBACK reason code is not a PUBACK reason code"));
    assert_eq!(err(S5, &[0x40, 0x03, 0x00, 0x01, 0x92]), Protocol("PUBACK reason code is not a PUBACK reason code"));
    // [MQTT-3.5.2-1]
    assert_eq!(err(S5, &[0x50, 0x03, 0x00, 0x01, 0x81]), Protocol("PUBREC reason code is not a PUBREC reason code"));
    // [MQTT-3.6.2-1]
    assert_eq!(err(S5, &[0x62, 0x03, 0x00, 0x01, 0x10]), Protocol("PUBREL reason code is not a PUBREL reason code"));
    // [MQTT-3.7.2-1]
    assert_eq!(err(S5, &[0x70, 0x03, 0x00, 0x01, 0x80]), Protocol("PUBCOMP reason code is not a PUBCOMP reason code"));
    for code in [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
        assert!(matches!(ok(S5, &[0x40, 0x03, 0x00, 0x01, code]), Packet::PubAck(_)));
        assert!(matches!(ok(S5, &[0x50, 0x03, 0x00, 0x01, code]), Packet::PubRec(_)));
    }
}

#[test]
fn ack_properties() {
    // Only Reason String and User Property (§3.4.2.2).
    assert_eq!(
        err(S5, &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01]),
        Malformed("Topic Alias property is not allowed in this packet")
    );
    assert_eq!(
        err(S5, &[0x62, 0x0A, 0x00, 0x01, 0x00, 0x06, 0x1F, 0x00, 0x00, 0x1F, 0x00, 0x00]),
        Protocol("duplicate Reason String property")
    );
    // User Property may repeat.
    assert!(matches!(
        ok(S5, &[0x70, 0x12, 0x00, 0x01, 0x00, 0x0E, 0x26, 0, 1, b'a', 0, 1, b'b', 0x26, 0, 1, b'a', 0, 1, b'b']),
        Packet::PubComp(ref r) if r.properties.user_properties.len() == 2
    ));
}

// ---------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ---------------------------------------------------------------------------

#[test]
fn subscribe_needs_a_filter() {
    // [MQTT-3.8.3-3] (3.1.1) / [MQTT-3.8.3-2] (5.0)
    assert_eq!(err(S311, &pkt(0x82, &[0x00, 0x01])), Protocol("SUBSCRIBE has no topic filters"));
    assert_eq!(err(S5, &pkt(0x82, &[0x00, 0x01, 0x00])), Protocol("SUBSCRIBE has no topic filters"));
    // Filter without its options byte.
    assert_eq!(
        err(S311, &pkt(0x82, &[0x00, 0x01, 0x00, 0x01, b'a'])),
        Malformed("SUBSCRIBE subscription options are missing")
    );
    // Packet identifier [MQTT-2.3.1-1] (3.1.1) [MQTT-2.2.1-3] (5.0)
    assert_eq!(
        err(S311, &pkt(0x82, &[0x00, 0x00, 0x00, 0x01, b'a', 0x00])),
        Protocol("SUBSCRIBE packet identifier is 0")
    );
}

#[test]
fn subscribe_options_v311() {
    // [MQTT-3-8.3-4] (3.1.1): upper six bits reserved, QoS not 3.
    for o in [0x04u8, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFC] {
        assert_eq!(
            err(S311, &pkt(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', o])),
            Malformed("SUBSCRIBE requested QoS byte reserved bits must be 0"),
            "{o:02X}"
        );
    }
    assert_eq!(
        err(S311, &pkt(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', 0x03])),
        Malformed("SUBSCRIBE requested QoS 3 is invalid")
    );
    assert_eq!(
        err(S31, &pkt(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', 0x03])),
        Malformed("SUBSCRIBE requested QoS 3 is invalid")
    );
}

#[test]
fn subscribe_options_v5() {
    let sub = |o: u8, filter: &[u8]| {
        let mut b = vec![0x00, 0x01, 0x00, 0x00, filter.len() as u8];
        b.extend_from_slice(filter);
        b.push(o);
        pkt(0x82, &b)
    };
    // [MQTT-3.8.3-5]: bits 6 and 7 reserved.
    for o in [0x40u8, 0x80, 0xC1] {
        assert_eq!(err(S5, &sub(o, b"a")), Malformed("SUBSCRIBE subscription options reserved bits must be 0"));
    }
    // §3.8.3.1: QoS 3 is malformed; Retain Handling 3 is a protocol error.
    assert_eq!(err(S5, &sub(0x03, b"a")), Malformed("SUBSCRIBE requested QoS 3 is invalid"));
    assert_eq!(err(S5, &sub(0x30, b"a")), Protocol("SUBSCRIBE Retain Handling 3 is invalid"));
    // [MQTT-3.8.3-4]: No Local on a shared subscription.
    assert_eq!(err(S5, &sub(0x04, b"$share/g/a")), Protocol("SUBSCRIBE No Local is set on a shared subscription"));
    assert!(matches!(ok(S5, &sub(0x04, b"a")), Packet::Subscribe(_)));
    assert!(matches!(ok(S5, &sub(0x2A, b"$share/g/a")), Packet::Subscribe(_)));
}

#[test]
fn subscribe_filters_are_not_judged_here() {
    // Wildcard placement and emptiness are checked by the broker (topic.rs)
    // so it can answer with a per-filter SUBACK failure.
    let b = pkt(0x82, &[0x00, 0x01, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00, 0x00, 0x00, 0x01]);
    match ok(S311, &b) {
        Packet::Subscribe(s) => {
            assert_eq!(s.filters[0].0, "a/#/b");
            assert_eq!(s.filters[1].0, "");
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn subscribe_properties() {
    let sub = |props: &[u8]| {
        let mut b = vec![0x00, 0x01, props.len() as u8];
        b.extend_from_slice(props);
        b.extend_from_slice(&[0x00, 0x01, b'a', 0x00]);
        pkt(0x82, &b)
    };
    // §3.8.2.1.2: Subscription Identifier 0, or more than once.
    assert_eq!(err(S5, &sub(&[0x0B, 0x00])), Protocol("Subscription Identifier is 0"));
    assert_eq!(err(S5, &sub(&[0x0B, 0x01, 0x0B, 0x02])), Protocol("duplicate Subscription Identifier property"));
    assert_eq!(err(S5, &sub(&[0x1F, 0x00, 0x00])), Malformed("Reason String property is not allowed in this packet"));
}

#[test]
fn unsubscribe_rules() {
    // [MQTT-3.10.3-2]
    assert_eq!(err(S311, &pkt(0xA2, &[0x00, 0x01])), Protocol("UNSUBSCRIBE has no topic filters"));
    assert_eq!(err(S5, &pkt(0xA2, &[0x00, 0x01, 0x00])), Protocol("UNSUBSCRIBE has no topic filters"));
    assert_eq!(err(S311, &pkt(0xA2, &[0x00, 0x00, 0x00, 0x01, b'a'])), Protocol("UNSUBSCRIBE packet identifier is 0"));
    // §3.10.2.1: only User Property.
    assert_eq!(
        err(S5, &pkt(0xA2, &[0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, b'a'])),
        Malformed("Subscription Identifier property is not allowed in this packet")
    );
    assert_eq!(
        err(S311, &pkt(0xA2, &[0x00, 0x01, 0x00, 0x02, b'a'])),
        Malformed("UNSUBSCRIBE topic filter is truncated")
    );
}

// ---------------------------------------------------------------------------
// Server to client packets
// ---------------------------------------------------------------------------

#[test]
fn connack_rules() {
    // Reserved acknowledge flags: 3.1.1 §3.2.2.1, [MQTT-3.2.2-1] (5.0)
    assert_eq!(err(S311, &[0x20, 0x02, 0x02, 0x00]), Malformed("CONNACK reserved acknowledge flags must be 0"));
    assert_eq!(err(S5, &[0x20, 0x03, 0x80, 0x00, 0x00]), Malformed("CONNACK reserved acknowledge flags must be 0"));
    // [MQTT-3.2.2-4] (3.1.1) [MQTT-3.2.2-6] (5.0)
    let e = Protocol("CONNACK Session Present must be 0 with a non-zero code");
    assert_eq!(err(S311, &[0x20, 0x02, 0x01, 0x05]), e);
    assert_eq!(err(S5, &[0x20, 0x03, 0x01, 0x80, 0x00]), e);
    // 3.1.1 return codes 6..=255 are reserved (§3.2.2.3).
    assert_eq!(err(S311, &[0x20, 0x02, 0x00, 0x06]), Protocol("CONNACK return code is reserved"));
    // 5.0 §3.2.2.2: only CONNACK reason codes.
    for code in [0x01u8, 0x04, 0x10, 0x8B, 0x8E, 0xFF] {
        assert_eq!(
            err(S5, &[0x20, 0x03, 0x00, code, 0x00]),
            Protocol("CONNACK reason code is not a CONNACK reason code")
        );
    }
    // 5.0 §3.2.2.3 value ranges and duplicates.
    let c = |props: &[u8]| {
        let mut b = vec![0x00, 0x00, props.len() as u8];
        b.extend_from_slice(props);
        pkt(0x20, &b)
    };
    assert_eq!(err(S5, &c(&[0x24, 0x02])), Protocol("Maximum QoS must be 0 or 1"));
    assert_eq!(err(S5, &c(&[0x25, 0x02])), Protocol("Retain Available must be 0 or 1"));
    assert_eq!(err(S5, &c(&[0x28, 0x02])), Protocol("Wildcard Subscription Available must be 0 or 1"));
    assert_eq!(err(S5, &c(&[0x29, 0x02])), Protocol("Subscription Identifier Available must be 0 or 1"));
    assert_eq!(err(S5, &c(&[0x2A, 0x02])), Protocol("Shared Subscription Available must be 0 or 1"));
    assert_eq!(err(S5, &c(&[0x21, 0x00, 0x00])), Protocol("Receive Maximum is 0"));
    assert_eq!(err(S5, &c(&[0x27, 0, 0, 0, 0])), Protocol("Maximum Packet Size is 0"));
    assert_eq!(err(S5, &c(&[0x13, 0, 1, 0x13, 0, 1])), Protocol("duplicate Server Keep Alive property"));
    assert_eq!(
        err(S5, &c(&[0x12, 0, 1, b'a', 0x12, 0, 1, b'b'])),
        Protocol("duplicate Assigned Client Identifier property")
    );
    assert_eq!(err(S5, &c(&[0x23, 0x00, 0x01])), Malformed("Topic Alias property is not allowed in this packet"));
    assert_eq!(
        err(S5, &c(&[0x17, 0x01])),
        Malformed("Request Problem Information property is not allowed in this packet")
    );
}

#[test]
fn suback_rules() {
    // [MQTT-3.9.3-2]
    assert_eq!(err(S311, &[0x90, 0x03, 0x00, 0x01, 0x03]), Protocol("SUBACK return code is not a SUBACK return code"));
    assert_eq!(err(S311, &[0x90, 0x03, 0x00, 0x01, 0x87]), Protocol("SUBACK return code is not a SUBACK return code"));
    assert_eq!(
        err(S5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x03]),
        Protocol("SUBACK return code is not a SUBACK return code")
    );
    assert!(matches!(ok(S5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x87]), Packet::SubAck(_)));
    // One code per filter, so at least one [MQTT-3.8.4-5] (3.1.1) [MQTT-3.8.4-6] (5.0).
    assert_eq!(err(S311, &[0x90, 0x02, 0x00, 0x01]), Protocol("SUBACK has no return codes"));
    assert_eq!(err(S5, &[0x90, 0x03, 0x00, 0x01, 0x00]), Protocol("SUBACK has no return codes"));
}

#[test]
fn unsuback_rules() {
    // [MQTT-3.11.3-2] (5.0)
    assert_eq!(
        err(S5, &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01]),
        Protocol("UNSUBACK reason code is not an UNSUBACK reason code")
    );
    assert_eq!(err(S5, &[0xB0, 0x03, 0x00, 0x01, 0x00]), Protocol("UNSUBACK has no reason codes"));
    assert!(is_malformed(err(S5, &[0xB0, 0x02, 0x00, 0x01])));
}

// ---------------------------------------------------------------------------
// DISCONNECT / AUTH
// ---------------------------------------------------------------------------

#[test]
fn disconnect_rules() {
    // [MQTT-3.14.2-1]
    for code in [0x01u8, 0x10, 0x84, 0x85, 0x91, 0xFF] {
        assert_eq!(
            err(S5, &[0xE0, 0x01, code]),
            Protocol("DISCONNECT reason code is not a DISCONNECT reason code"),
            "{code:02X}"
        );
    }
    // §3.14.2.2: Session Expiry Interval, Reason String, User Property, Server Reference.
    assert_eq!(
        err(S5, &[0xE0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01]),
        Malformed("Topic Alias property is not allowed in this packet")
    );
    assert_eq!(
        err(S5, &[0xE0, 0x0C, 0x00, 0x0A, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
        Protocol("duplicate Session Expiry Interval property")
    );
    assert_eq!(
        err(S5, &[0xE0, 0x08, 0x00, 0x06, 0x1C, 0, 0, 0x1C, 0, 0]),
        Protocol("duplicate Server Reference property")
    );
}

#[test]
fn auth_rules() {
    // [MQTT-3.15.2-1]
    assert_eq!(err(S5, &[0xF0, 0x02, 0x04, 0x00]), Protocol("AUTH reason code is not an AUTH reason code"));
    // §3.15.2.2.2: the Authentication Method must be there (except in the
    // remaining-length-0 short form) and only once.
    assert_eq!(err(S5, &[0xF0, 0x01, 0x18]), Protocol("AUTH has no Authentication Method"));
    assert_eq!(err(S5, &[0xF0, 0x02, 0x18, 0x00]), Protocol("AUTH has no Authentication Method"));
    assert_eq!(
        err(S5, &[0xF0, 0x0A, 0x18, 0x08, 0x15, 0, 1, b'a', 0x15, 0, 1, b'b']),
        Protocol("duplicate Authentication Method property")
    );
    // §3.15.2.2.4: Authentication Data at most once.
    assert_eq!(
        err(S5, &[0xF0, 0x0C, 0x18, 0x0A, 0x15, 0, 1, b'a', 0x16, 0, 0, 0x16, 0, 0]),
        Protocol("duplicate Authentication Data property")
    );
    assert_eq!(
        err(S5, &[0xF0, 0x08, 0x18, 0x06, 0x15, 0, 1, b'a', 0x01, 0x01]),
        Malformed("Payload Format Indicator property is not allowed in this packet")
    );
}
