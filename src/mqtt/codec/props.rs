//! MQTT 5 properties (§2.2.2): decoding with the per-packet allow-list of
//! §2.2.2.2, duplicate and value checks; length computation and encoding.
//! Child module of `codec`.

use super::super::packet::Properties;
use super::encode::{put_bin, put_u16, put_u32, put_varint, varint_len};
use super::{field, DecodeError, Field, Reader};
use DecodeError::{Malformed, Protocol};

/// Packet (or Will) a property section belongs to; a property is accepted
/// only if its allow-mask has the bit of the context it appears in.
pub(super) mod ctx {
    pub const CONNECT: u16 = 1 << 0;
    pub const CONNACK: u16 = 1 << 1;
    pub const PUBLISH: u16 = 1 << 2;
    pub const WILL: u16 = 1 << 3;
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    pub const PUBRESP: u16 = 1 << 4;
    pub const SUBSCRIBE: u16 = 1 << 5;
    pub const SUBACK: u16 = 1 << 6;
    pub const UNSUBSCRIBE: u16 = 1 << 7;
    pub const UNSUBACK: u16 = 1 << 8;
    pub const DISCONNECT: u16 = 1 << 9;
    pub const AUTH: u16 = 1 << 10;
}
use ctx::*;

/// §2.2.2.2 table: where each property identifier may appear, and the
/// message for finding it anywhere else.
fn allowed(id: u8) -> Option<(u16, &'static str)> {
    macro_rules! table {
        ($($id:literal $name:literal $mask:expr;)*) => {
            match id {
                $($id => Some(($mask, concat!($name, " property is not allowed in this packet"))),)*
                _ => None,
            }
        };
    }
    table! {
        0x01 "Payload Format Indicator" PUBLISH | WILL;
        0x02 "Message Expiry Interval" PUBLISH | WILL;
        0x03 "Content Type" PUBLISH | WILL;
        0x08 "Response Topic" PUBLISH | WILL;
        0x09 "Correlation Data" PUBLISH | WILL;
        0x0B "Subscription Identifier" PUBLISH | SUBSCRIBE;
        0x11 "Session Expiry Interval" CONNECT | CONNACK | DISCONNECT;
        0x12 "Assigned Client Identifier" CONNACK;
        0x13 "Server Keep Alive" CONNACK;
        0x15 "Authentication Method" CONNECT | CONNACK | AUTH;
        0x16 "Authentication Data" CONNECT | CONNACK | AUTH;
        0x17 "Request Problem Information" CONNECT;
        0x18 "Will Delay Interval" WILL;
        0x19 "Request Response Information" CONNECT;
        0x1A "Response Information" CONNACK;
        0x1C "Server Reference" CONNACK | DISCONNECT;
        0x1F "Reason String" CONNACK | PUBRESP | SUBACK | UNSUBACK | DISCONNECT | AUTH;
        0x21 "Receive Maximum" CONNECT | CONNACK;
        0x22 "Topic Alias Maximum" CONNECT | CONNACK;
        0x23 "Topic Alias" PUBLISH;
        0x24 "Maximum QoS" CONNACK;
        0x25 "Retain Available" CONNACK;
        0x26 "User Property" CONNECT | CONNACK | PUBLISH | WILL | PUBRESP | SUBSCRIBE | SUBACK
            | UNSUBSCRIBE | UNSUBACK | DISCONNECT | AUTH;
        0x27 "Maximum Packet Size" CONNECT | CONNACK;
        0x28 "Wildcard Subscription Available" CONNACK;
        0x29 "Subscription Identifier Available" CONNACK;
        0x2A "Shared Subscription Available" CONNACK;
    }
}

/// Store a property that may appear at most once.
macro_rules! once {
    ($slot:expr, $value:expr, $name:literal) => {{
        let value = $value;
        if $slot.is_some() {
            return Err(Protocol(concat!("duplicate ", $name, " property")));
        }
        $slot = Some(value);
    }};
}

/// A byte property whose only values are 0 and 1.
macro_rules! flag {
    ($p:expr, $slot:expr, $name:literal) => {{
        let b = $p.u8(concat!($name, " property is truncated"))?;
        if b > 1 {
            return Err(Protocol(concat!($name, " must be 0 or 1")));
        }
        once!($slot, b, $name)
    }};
}

/// Read a Property Length and the properties it covers, for context `ctx`
/// (one of the `ctx::*` bits).
pub(super) fn read_properties(r: &mut Reader<'_>, ctx: u16) -> Result<Properties, DecodeError> {
    let len = r.varint("property length is truncated", "property length is longer than 4 bytes")?;
    let mut p = Reader::new(r.take(len as usize, "property length exceeds the packet")?);
    let mut props = Properties::default();
    while !p.is_empty() {
        // The identifier is a Variable Byte Integer, but every defined one
        // fits in one byte: a first byte >= 0x80 is an unknown identifier.
        let id = p.u8("property identifier is missing")?;
        let (mask, not_allowed) = allowed(id).ok_or(Malformed("unknown property identifier"))?;
        if mask & ctx == 0 {
            return Err(Malformed(not_allowed));
        }
        match id {
            0x01 => flag!(p, props.payload_format_indicator, "Payload Format Indicator"),
            0x02 => once!(
                props.message_expiry_interval,
                p.u32("Message Expiry Interval property is truncated")?,
                "Message Expiry Interval"
            ),
            0x03 => once!(props.content_type, p.string(field!("Content Type property"))?.to_owned(), "Content Type"),
            0x08 => {
                let t = p.string(field!("Response Topic property"))?;
                // [MQTT-3.3.2-14]; a Topic Name is never empty [MQTT-4.7.3-1]
                if t.is_empty() || super::has_wildcard(t) {
                    return Err(Protocol("Response Topic is not a valid Topic Name"));
                }
                once!(props.response_topic, t.to_owned(), "Response Topic")
            }
            0x09 => once!(
                props.correlation_data,
                p.binary("Correlation Data property is truncated")?.to_vec(),
                "Correlation Data"
            ),
            0x0B => {
                let id = p.varint(
                    "Subscription Identifier property is truncated",
                    "Subscription Identifier is longer than 4 bytes",
                )?;
                if id == 0 {
                    return Err(Protocol("Subscription Identifier is 0"));
                }
                // May repeat in PUBLISH (server to client); once in SUBSCRIBE.
                if ctx == SUBSCRIBE && !props.subscription_identifiers.is_empty() {
                    return Err(Protocol("duplicate Subscription Identifier property"));
                }
                props.subscription_identifiers.push(id);
            }
            0x11 => once!(
                props.session_expiry_interval,
                p.u32("Session Expiry Interval property is truncated")?,
                "Session Expiry Interval"
            ),
            0x12 => once!(
                props.assigned_client_identifier,
                p.string(field!("Assigned Client Identifier property"))?.to_owned(),
                "Assigned Client Identifier"
            ),
            0x13 => {
                once!(props.server_keep_alive, p.u16("Server Keep Alive property is truncated")?, "Server Keep Alive")
            }
            0x15 => once!(
                props.authentication_method,
                p.string(field!("Authentication Method property"))?.to_owned(),
                "Authentication Method"
            ),
            0x16 => once!(
                props.authentication_data,
                p.binary("Authentication Data property is truncated")?.to_vec(),
                "Authentication Data"
            ),
            0x17 => flag!(p, props.request_problem_information, "Request Problem Information"),
            0x18 => once!(
                props.will_delay_interval,
                p.u32("Will Delay Interval property is truncated")?,
                "Will Delay Interval"
            ),
            0x19 => flag!(p, props.request_response_information, "Request Response Information"),
            0x1A => once!(
                props.response_information,
                p.string(field!("Response Information property"))?.to_owned(),
                "Response Information"
            ),
            0x1C => once!(
                props.server_reference,
                p.string(field!("Server Reference property"))?.to_owned(),
                "Server Reference"
            ),
            0x1F => once!(props.reason_string, p.string(field!("Reason String property"))?.to_owned(), "Reason String"),
            0x21 => {
                let v = p.u16("Receive Maximum property is truncated")?;
                if v == 0 {
                    return Err(Protocol("Receive Maximum is 0"));
                }
                once!(props.receive_maximum, v, "Receive Maximum")
            }
            0x22 => once!(
                props.topic_alias_maximum,
                p.u16("Topic Alias Maximum property is truncated")?,
                "Topic Alias Maximum"
            ),
            0x23 => {
                let v = p.u16("Topic Alias property is truncated")?;
                // [MQTT-3.3.2-8]
                if v == 0 {
                    return Err(Protocol("Topic Alias is 0"));
                }
                once!(props.topic_alias, v, "Topic Alias")
            }
            0x24 => flag!(p, props.maximum_qos, "Maximum QoS"),
            0x25 => flag!(p, props.retain_available, "Retain Available"),
            0x26 => {
                let k = p.string(field!("User Property name"))?;
                let v = p.string(field!("User Property value"))?;
                props.user_properties.push((k.to_owned(), v.to_owned()));
            }
            0x27 => {
                let v = p.u32("Maximum Packet Size property is truncated")?;
                if v == 0 {
                    return Err(Protocol("Maximum Packet Size is 0"));
                }
                once!(props.maximum_packet_size, v, "Maximum Packet Size")
            }
            0x28 => flag!(p, props.wildcard_subscription_available, "Wildcard Subscription Available"),
            0x29 => flag!(p, props.subscription_identifier_available, "Subscription Identifier Available"),
            0x2A => flag!(p, props.shared_subscription_available, "Shared Subscription Available"),
            // `allowed` knows no other identifier.
            _ => return Err(Malformed("unknown property identifier")),
        }
    }
    Ok(props)
}

/// Bytes of all properties (without the Property Length itself).
fn props_len(p: &Properties) -> usize {
    fn s(o: &Option<String>) -> usize {
        o.as_ref().map_or(0, |s| 3 + s.len())
    }
    fn b(o: &Option<Vec<u8>>) -> usize {
        o.as_ref().map_or(0, |b| 3 + b.len())
    }
    fn n<T>(o: &Option<T>, size: usize) -> usize {
        if o.is_some() {
            1 + size
        } else {
            0
        }
    }
    n(&p.payload_format_indicator, 1)
        + n(&p.message_expiry_interval, 4)
        + s(&p.content_type)
        + s(&p.response_topic)
        + b(&p.correlation_data)
        + p.subscription_identifiers.iter().map(|&i| 1 + varint_len(i as usize)).sum::<usize>()
        + n(&p.session_expiry_interval, 4)
        + s(&p.assigned_client_identifier)
        + n(&p.server_keep_alive, 2)
        + s(&p.authentication_method)
        + b(&p.authentication_data)
        + n(&p.request_problem_information, 1)
        + n(&p.will_delay_interval, 4)
        + n(&p.request_response_information, 1)
        + s(&p.response_information)
        + s(&p.server_reference)
        + s(&p.reason_string)
        + n(&p.receive_maximum, 2)
        + n(&p.topic_alias_maximum, 2)
        + n(&p.topic_alias, 2)
        + n(&p.maximum_qos, 1)
        + n(&p.retain_available, 1)
        + p.user_properties.iter().map(|(k, v)| 5 + k.len() + v.len()).sum::<usize>()
        + n(&p.maximum_packet_size, 4)
        + n(&p.wildcard_subscription_available, 1)
        + n(&p.subscription_identifier_available, 1)
        + n(&p.shared_subscription_available, 1)
}

/// Property Length varint plus the properties.
pub(super) fn section_len(p: &Properties) -> usize {
    let n = props_len(p);
    varint_len(n) + n
}

/// Write the Property Length and the properties, in identifier order
/// (User Properties keep their order; Subscription Identifiers too).
pub(super) fn write_properties(out: &mut Vec<u8>, p: &Properties) {
    fn st(o: &Option<String>) -> Option<&[u8]> {
        o.as_deref().map(str::as_bytes)
    }
    put_varint(out, props_len(p));
    let byte = |out: &mut Vec<u8>, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            out.push(id);
            out.push(v);
        }
    };
    let two = |out: &mut Vec<u8>, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            out.push(id);
            put_u16(out, v);
        }
    };
    let four = |out: &mut Vec<u8>, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            out.push(id);
            put_u32(out, v);
        }
    };
    let bin = |out: &mut Vec<u8>, id: u8, v: Option<&[u8]>| {
        if let Some(v) = v {
            out.push(id);
            put_bin(out, v);
        }
    };
    byte(out, 0x01, p.payload_format_indicator);
    four(out, 0x02, p.message_expiry_interval);
    bin(out, 0x03, st(&p.content_type));
    bin(out, 0x08, st(&p.response_topic));
    bin(out, 0x09, p.correlation_data.as_deref());
    for &id in &p.subscription_identifiers {
        out.push(0x0B);
        put_varint(out, id as usize);
    }
    four(out, 0x11, p.session_expiry_interval);
    bin(out, 0x12, st(&p.assigned_client_identifier));
    two(out, 0x13, p.server_keep_alive);
    bin(out, 0x15, st(&p.authentication_method));
    bin(out, 0x16, p.authentication_data.as_deref());
    byte(out, 0x17, p.request_problem_information);
    four(out, 0x18, p.will_delay_interval);
    byte(out, 0x19, p.request_response_information);
    bin(out, 0x1A, st(&p.response_information));
    bin(out, 0x1C, st(&p.server_reference));
    bin(out, 0x1F, st(&p.reason_string));
    two(out, 0x21, p.receive_maximum);
    two(out, 0x22, p.topic_alias_maximum);
    two(out, 0x23, p.topic_alias);
    byte(out, 0x24, p.maximum_qos);
    byte(out, 0x25, p.retain_available);
    for (k, v) in &p.user_properties {
        out.push(0x26);
        put_bin(out, k.as_bytes());
        put_bin(out, v.as_bytes());
    }
    four(out, 0x27, p.maximum_packet_size);
    byte(out, 0x28, p.wildcard_subscription_available);
    byte(out, 0x29, p.subscription_identifier_available);
    byte(out, 0x2A, p.shared_subscription_available);
}
