//! Encoding side of the codec (child module of `codec`): `encode`,
//! `encoded_len` and the write primitives shared with `props.rs`.

use super::super::packet::*;
use super::props::{section_len, write_properties};

/// Number of bytes of a Variable Byte Integer holding `v` (as `put_varint`
/// writes it).
pub(super) fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub(super) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Two-byte length then the bytes. Callers keep fields <= 65535 bytes
/// (the length is truncated otherwise; `encoded_len` still matches).
pub(super) fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    put_u16(out, b.len() as u16);
    out.extend_from_slice(b);
}

/// The CONNECT layout is chosen by `Connect::version`; every other packet
/// follows the session's version.
fn effective_version(packet: &Packet, version: Version) -> Version {
    match packet {
        Packet::Connect(c) => c.version,
        _ => version,
    }
}

/// Remaining Length of `packet` for `v`.
fn body_len(packet: &Packet, v: Version) -> usize {
    let v5 = v.is_v5();
    let props = |p: &Properties| if v5 { section_len(p) } else { 0 };
    match packet {
        Packet::Connect(c) => {
            let name = if v == Version::V31 { 6 } else { 4 };
            let mut n = 2 + name + 1 + 1 + 2 + props(&c.properties) + 2 + c.client_id.len();
            if let Some(w) = &c.will {
                n += props(&w.properties) + 2 + w.topic.len() + 2 + w.payload.len();
            }
            if let Some(u) = &c.username {
                n += 2 + u.len();
            }
            if let Some(p) = &c.password {
                n += 2 + p.len();
            }
            n
        }
        Packet::ConnAck(a) => 2 + props(&a.properties),
        Packet::Publish(p) => {
            let id = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
            2 + p.topic.len() + id + props(&p.properties) + p.payload.len()
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            if !v5 || (r.code == 0 && r.properties.is_empty()) {
                2
            } else if r.properties.is_empty() {
                3
            } else {
                3 + section_len(&r.properties)
            }
        }
        Packet::Subscribe(s) => {
            2 + props(&s.properties) + s.filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props(&s.properties) + s.codes.len(),
        Packet::Unsubscribe(u) => 2 + props(&u.properties) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>(),
        Packet::UnsubAck(u) => {
            if v5 {
                2 + section_len(&u.properties) + u.codes.len()
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if !v5 || (d.code == 0 && d.properties.is_empty()) {
                0
            } else if d.properties.is_empty() {
                1
            } else {
                1 + section_len(&d.properties)
            }
        }
        Packet::Auth(a) => {
            if !v5 || (a.code == 0 && a.properties.is_empty()) {
                0
            } else {
                1 + section_len(&a.properties)
            }
        }
    }
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => 0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

/// Exact number of bytes `encode` would append (used by the broker to
/// respect a client's Maximum Packet Size without encoding).
pub fn encoded_len(packet: &Packet, version: Version) -> usize {
    let n = body_len(packet, effective_version(packet, version));
    1 + varint_len(n) + n
}

/// Append the encoding of `packet` for protocol `version` to `out`.
///
/// For V31/V311, v5-only fields (properties, reason codes on acks other than
/// CONNACK return code / SUBACK codes) are omitted. v5 short forms:
/// PUBACK/PUBREC/PUBREL/PUBCOMP with code 0 and no properties are encoded as
/// just the packet id (remaining length 2), with a non-zero code and no
/// properties as id + code (3); DISCONNECT with code 0 and no properties as
/// remaining length 0 (with a code and no properties: 1); AUTH with code 0
/// and no properties as remaining length 0.
///
/// A CONNECT is laid out for its own `Connect::version` (protocol name,
/// level and properties follow it), whatever `version` says. AUTH does not
/// exist before v5; asked for V31/V311 it is written as an empty AUTH.
/// Properties are written in identifier order, as present in the value
/// (the encoder does not filter them by packet type). Strings and binary
/// fields must be at most 65535 bytes and the whole body at most
/// 268435455 bytes; that is the caller's job.
pub fn encode(packet: &Packet, version: Version, out: &mut Vec<u8>) {
    let v = effective_version(packet, version);
    let v5 = v.is_v5();
    let n = body_len(packet, v);
    out.reserve(1 + varint_len(n) + n);
    out.push(first_byte(packet));
    put_varint(out, n);
    match packet {
        Packet::Connect(c) => {
            let (name, level): (&[u8], u8) = match v {
                Version::V31 => (b"MQIsdp", 3),
                Version::V311 => (b"MQTT", 4),
                Version::V5 => (b"MQTT", 5),
            };
            put_bin(out, name);
            out.push(level);
            let mut cf = u8::from(c.clean_start) << 1;
            if let Some(w) = &c.will {
                cf |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
            }
            if c.password.is_some() {
                cf |= 0x40;
            }
            if c.username.is_some() {
                cf |= 0x80;
            }
            out.push(cf);
            put_u16(out, c.keep_alive);
            if v5 {
                write_properties(out, &c.properties);
            }
            put_bin(out, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                if v5 {
                    write_properties(out, &w.properties);
                }
                put_bin(out, w.topic.as_bytes());
                put_bin(out, &w.payload);
            }
            if let Some(u) = &c.username {
                put_bin(out, u.as_bytes());
            }
            if let Some(p) = &c.password {
                put_bin(out, p);
            }
        }
        Packet::ConnAck(a) => {
            let sp = v != Version::V31 && a.session_present;
            out.push(u8::from(sp));
            out.push(a.code);
            if v5 {
                write_properties(out, &a.properties);
            }
        }
        Packet::Publish(p) => {
            put_bin(out, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                put_u16(out, p.packet_id.unwrap_or(0));
            }
            if v5 {
                write_properties(out, &p.properties);
            }
            out.extend_from_slice(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            put_u16(out, r.packet_id);
            if n >= 3 {
                out.push(r.code);
            }
            if n > 3 {
                write_properties(out, &r.properties);
            }
        }
        Packet::Subscribe(s) => {
            put_u16(out, s.packet_id);
            if v5 {
                write_properties(out, &s.properties);
            }
            for (f, o) in &s.filters {
                put_bin(out, f.as_bytes());
                let mut b = o.qos as u8;
                if v5 {
                    b |= (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | ((o.retain_handling as u8) << 4);
                }
                out.push(b);
            }
        }
        Packet::SubAck(s) => {
            put_u16(out, s.packet_id);
            if v5 {
                write_properties(out, &s.properties);
            }
            out.extend_from_slice(&s.codes);
        }
        Packet::Unsubscribe(u) => {
            put_u16(out, u.packet_id);
            if v5 {
                write_properties(out, &u.properties);
            }
            for f in &u.filters {
                put_bin(out, f.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            put_u16(out, u.packet_id);
            if v5 {
                write_properties(out, &u.properties);
                out.extend_from_slice(&u.codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { code, properties }) | Packet::Auth(Auth { code, properties }) => {
            if n >= 1 {
                out.push(*code);
            }
            if n > 1 {
                write_properties(out, properties);
            }
        }
    }
}
