//! Codec tests, part 2: MQTT 5.0 golden packets (hand-written from the
//! layouts in MQTT 5.0 §3 and the property table §2.2.2.2) and the v5
//! non-canonical forms that must decode.

use super::tests::{check_decode_only, check_golden, connect, g, opts, publish, resp, Golden};
use super::*;

use Version::V5;

fn props() -> PropertyValues {
    PropertyValues::default()
}

fn up(k: &str, v: &str) -> (String, String) {
    (k.into(), v.into())
}

pub(super) fn goldens() -> Vec<Golden> {
    // CONNECT with every CONNECT property, a will with every will property,
    // user name and password.
    let mut full = connect(V5, "client-1");
    full.clean_start = false;
    full.keep_alive = 30;
    full.username = Some("u".into());
    full.password = Some(vec![0x00, 0x01]);
    full.properties = PropertyValues {
        session_expiry_interval: Some(3600),
        authentication_method: Some("SCRAM".into()),
        authentication_data: Some(vec![1, 2, 3]),
        request_problem_information: Some(0),
        request_response_information: Some(1),
        receive_maximum: Some(20),
        topic_alias_maximum: Some(10),
        user_properties: vec![up("k", "v")],
        maximum_packet_size: Some(1_048_576),
        ..props()
    }
    .into();
    full.will = Some(Will {
        topic: "will/t".into(),
        payload: b"bye".to_vec(),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: PropertyValues {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(120),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(vec![0xAA, 0xBB]),
            will_delay_interval: Some(30),
            user_properties: vec![up("a", "b")],
            ..props()
        }
        .into(),
    });

    let mut password_only = connect(V5, "p");
    password_only.keep_alive = 0;
    password_only.password = Some(b"secret".to_vec());

    let mut retained_will = connect(V5, "w");
    retained_will.will = Some(Will {
        topic: "t".into(),
        payload: Vec::new(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Properties::default(),
    });

    let connack_props = PropertyValues {
        session_expiry_interval: Some(0),
        assigned_client_identifier: Some("auto-1".into()),
        server_keep_alive: Some(60),
        response_information: Some("resp/".into()),
        reason_string: Some("ok".into()),
        receive_maximum: Some(100),
        topic_alias_maximum: Some(16),
        maximum_qos: Some(1),
        retain_available: Some(1),
        user_properties: vec![up("srv", "midge")],
        maximum_packet_size: Some(65_536),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(0),
        shared_subscription_available: Some(1),
        ..props()
    }
    .into();

    let mut pub_full = publish(QoS::AtLeastOnce, "a/b", Some(1), b"hello");
    pub_full.retain = true;
    pub_full.properties = PropertyValues {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        content_type: Some("json".into()),
        response_topic: Some("re/sp".into()),
        correlation_data: Some(vec![1, 2, 3, 4]),
        subscription_identifiers: vec![1, 300],
        topic_alias: Some(5),
        user_properties: vec![up("k1", "v1"), up("k1", "v2")],
        ..props()
    }
    .into();

    let mut pub_alias = publish(QoS::AtMostOnce, "", None, b"x");
    pub_alias.properties.topic_alias = Some(5);

    let mut pub_max_sub_id = publish(QoS::AtMostOnce, "t", None, b"");
    pub_max_sub_id.properties.subscription_identifiers = vec![268_435_455];

    vec![
        g(
            "CONNECT 5 minimal",
            V5,
            &[
                0x10, 16, //
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // protocol name, level 5
                0x02, // clean start
                0x00, 0x3C, // keep alive 60
                0x00, // property length 0
                0x00, 0x03, b'a', b'b', b'c', // client id
            ],
            Packet::Connect(Box::new(connect(V5, "abc"))),
        ),
        g(
            "CONNECT 5 with properties and will properties",
            V5,
            &[
                0x10, 126, //
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, //
                0xD4, // user name, password, will QoS 2, will flag
                0x00, 0x1E, // keep alive 30
                41,   // property length
                0x11, 0x00, 0x00, 0x0E, 0x10, // Session Expiry Interval 3600
                0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // Authentication Method
                0x16, 0x00, 0x03, 0x01, 0x02, 0x03, // Authentication Data
                0x17, 0x00, // Request Problem Information 0
                0x19, 0x01, // Request Response Information 1
                0x21, 0x00, 0x14, // Receive Maximum 20
                0x22, 0x00, 0x0A, // Topic Alias Maximum 10
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property
                0x27, 0x00, 0x10, 0x00, 0x00, // Maximum Packet Size 1048576
                0x00, 0x08, b'c', b'l', b'i', b'e', b'n', b't', b'-', b'1', // client id
                43,   // will property length
                0x01, 0x01, // Payload Format Indicator 1
                0x02, 0x00, 0x00, 0x00, 0x78, // Message Expiry Interval 120
                0x03, 0x00, 0x0A, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n', // Content Type
                0x08, 0x00, 0x03, b'r', b'/', b't', // Response Topic
                0x09, 0x00, 0x02, 0xAA, 0xBB, // Correlation Data
                0x18, 0x00, 0x00, 0x00, 0x1E, // Will Delay Interval 30
                0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // User Property
                0x00, 0x06, b'w', b'i', b'l', b'l', b'/', b't', // will topic
                0x00, 0x03, b'b', b'y', b'e', // will payload
                0x00, 0x01, b'u', // user name
                0x00, 0x02, 0x00, 0x01, // password
            ],
            Packet::Connect(Box::new(full)),
        ),
        g(
            "CONNECT 5 password without user name",
            V5,
            &[
                0x10, 22, //
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, //
                0x42, // password, clean start
                0x00, 0x00, 0x00, //
                0x00, 0x01, b'p', //
                0x00, 0x06, b's', b'e', b'c', b'r', b'e', b't',
            ],
            Packet::Connect(Box::new(password_only)),
        ),
        g(
            "CONNECT 5 retained will",
            V5,
            &[
                0x10, 20, //
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, //
                0x26, // will retain, will QoS 0, will flag, clean start
                0x00, 0x3C, 0x00, //
                0x00, 0x01, b'w', // client id
                0x00, // will property length
                0x00, 0x01, b't', 0x00, 0x00, // will topic, empty payload
            ],
            Packet::Connect(Box::new(retained_will)),
        ),
        g(
            "CONNACK 5 with server properties",
            V5,
            &[
                0x20, 67,   //
                0x01, // session present
                0x00, // success
                64,   // property length
                0x11, 0x00, 0x00, 0x00, 0x00, // Session Expiry Interval 0
                0x12, 0x00, 0x06, b'a', b'u', b't', b'o', b'-', b'1', // Assigned Client Identifier
                0x13, 0x00, 0x3C, // Server Keep Alive 60
                0x1A, 0x00, 0x05, b'r', b'e', b's', b'p', b'/', // Response Information
                0x1F, 0x00, 0x02, b'o', b'k', // Reason String
                0x21, 0x00, 0x64, // Receive Maximum 100
                0x22, 0x00, 0x10, // Topic Alias Maximum 16
                0x24, 0x01, // Maximum QoS 1
                0x25, 0x01, // Retain Available
                0x26, 0x00, 0x03, b's', b'r', b'v', 0x00, 0x05, b'm', b'i', b'd', b'g', b'e', // User Property
                0x27, 0x00, 0x01, 0x00, 0x00, // Maximum Packet Size 65536
                0x28, 0x01, // Wildcard Subscription Available
                0x29, 0x00, // Subscription Identifiers Available
                0x2A, 0x01, // Shared Subscription Available
            ],
            Packet::ConnAck(ConnAck { session_present: true, code: 0, properties: connack_props }),
        ),
        g(
            "CONNACK 5 not authorized",
            V5,
            &[0x20, 0x03, 0x00, 0x87, 0x00],
            Packet::ConnAck(ConnAck { session_present: false, code: 0x87, properties: Properties::default() }),
        ),
        g(
            "CONNACK 5 use another server",
            V5,
            &[
                0x20, 15, 0x00, 0x9C, 12, //
                0x1C, 0x00, 0x09, b's', b'r', b'v', b'2', b':', b'1', b'8', b'8', b'3', // Server Reference
            ],
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0x9C,
                properties: PropertyValues { server_reference: Some("srv2:1883".into()), ..props() }.into(),
            }),
        ),
        g(
            "PUBLISH 5 with all PUBLISH properties",
            V5,
            &[
                0x33, 68, // PUBLISH QoS 1 retain
                0x00, 0x03, b'a', b'/', b'b', // topic
                0x00, 0x01, // packet id
                55,   // property length
                0x01, 0x01, // Payload Format Indicator
                0x02, 0x00, 0x00, 0x0E, 0x10, // Message Expiry Interval 3600
                0x03, 0x00, 0x04, b'j', b's', b'o', b'n', // Content Type
                0x08, 0x00, 0x05, b'r', b'e', b'/', b's', b'p', // Response Topic
                0x09, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04, // Correlation Data
                0x0B, 0x01, // Subscription Identifier 1
                0x0B, 0xAC, 0x02, // Subscription Identifier 300
                0x23, 0x00, 0x05, // Topic Alias 5
                0x26, 0x00, 0x02, b'k', b'1', 0x00, 0x02, b'v', b'1', // User Property
                0x26, 0x00, 0x02, b'k', b'1', 0x00, 0x02, b'v', b'2', // same name again
                b'h', b'e', b'l', b'l', b'o', // payload
            ],
            Packet::Publish(pub_full),
        ),
        g(
            "PUBLISH 5 empty topic with Topic Alias",
            V5,
            &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'x'],
            Packet::Publish(pub_alias),
        ),
        g(
            "PUBLISH 5 no properties",
            V5,
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h'],
            Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"h")),
        ),
        g(
            "PUBLISH 5 largest Subscription Identifier",
            V5,
            &[0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F],
            Packet::Publish(pub_max_sub_id),
        ),
        g("PUBACK 5 short form", V5, &[0x40, 0x02, 0x00, 0x01], Packet::PubAck(resp(1))),
        g(
            "PUBACK 5 reason code only",
            V5,
            &[0x40, 0x03, 0x00, 0x01, 0x10],
            Packet::PubAck(PubResp { packet_id: 1, code: 0x10, properties: Properties::default() }),
        ),
        g(
            "PUBREC 5 reason string",
            V5,
            &[0x50, 11, 0x00, 0x02, 0x80, 0x07, 0x1F, 0x00, 0x04, b'f', b'a', b'i', b'l'],
            Packet::PubRec(PubResp {
                packet_id: 2,
                code: 0x80,
                properties: PropertyValues { reason_string: Some("fail".into()), ..props() }.into(),
            }),
        ),
        g(
            "PUBREL 5 user property",
            V5,
            &[0x62, 11, 0x00, 0x03, 0x92, 0x07, 0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b'],
            Packet::PubRel(PubResp {
                packet_id: 3,
                code: 0x92,
                properties: PropertyValues { user_properties: vec![up("a", "b")], ..props() }.into(),
            }),
        ),
        g("PUBREL 5 short form", V5, &[0x62, 0x02, 0x00, 0x03], Packet::PubRel(resp(3))),
        g("PUBCOMP 5 short form", V5, &[0x70, 0x02, 0x00, 0x04], Packet::PubComp(resp(4))),
        g(
            "PUBCOMP 5 packet identifier not found",
            V5,
            &[0x70, 0x03, 0x00, 0x04, 0x92],
            Packet::PubComp(PubResp { packet_id: 4, code: 0x92, properties: Properties::default() }),
        ),
        g(
            "SUBSCRIBE 5 with Subscription Identifier",
            V5,
            &[
                0x82, 36, //
                0x00, 0x01, // packet id
                10,   // property length
                0x0B, 0x96, 0x01, // Subscription Identifier 150
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property
                0x00, 0x03, b'a', b'/', b'b', 0x1E, // QoS 2, No Local, RAP, Retain Handling 1
                0x00, 0x01, b'#', 0x20, // QoS 0, Retain Handling 2
                0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'x', 0x09, // QoS 1, RAP
            ],
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![
                    (
                        "a/b".into(),
                        SubOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::SendIfNew,
                        },
                    ),
                    ("#".into(), SubOptions { retain_handling: RetainHandling::DoNotSend, ..opts(QoS::AtMostOnce) }),
                    ("$share/g/x".into(), SubOptions { retain_as_published: true, ..opts(QoS::AtLeastOnce) }),
                ],
                properties: PropertyValues {
                    subscription_identifiers: vec![150],
                    user_properties: vec![up("k", "v")],
                    ..props()
                }
                .into(),
            }),
        ),
        g(
            "SUBSCRIBE 5 no properties",
            V5,
            &[0x82, 0x07, 0x12, 0x34, 0x00, 0x00, 0x01, b'a', 0x01],
            Packet::Subscribe(Subscribe {
                packet_id: 0x1234,
                filters: vec![("a".into(), opts(QoS::AtLeastOnce))],
                properties: Properties::default(),
            }),
        ),
        g(
            "SUBACK 5",
            V5,
            &[0x90, 12, 0x00, 0x01, 0x05, 0x1F, 0x00, 0x02, b'o', b'k', 0x02, 0x00, 0x8F, 0xA2],
            Packet::SubAck(SubAck {
                packet_id: 1,
                codes: vec![0x02, 0x00, 0x8F, 0xA2],
                properties: PropertyValues { reason_string: Some("ok".into()), ..props() }.into(),
            }),
        ),
        g(
            "UNSUBSCRIBE 5",
            V5,
            &[
                0xA2, 18, 0x00, 0x02, //
                0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property
                0x00, 0x03, b'a', b'/', b'b', //
                0x00, 0x01, b'#',
            ],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                filters: vec!["a/b".into(), "#".into()],
                properties: PropertyValues { user_properties: vec![up("k", "v")], ..props() }.into(),
            }),
        ),
        g(
            "UNSUBACK 5",
            V5,
            &[0xB0, 0x05, 0x00, 0x02, 0x00, 0x00, 0x11],
            Packet::UnsubAck(UnsubAck { packet_id: 2, codes: vec![0x00, 0x11], properties: Properties::default() }),
        ),
        g(
            "UNSUBACK 5 reason string",
            V5,
            &[0xB0, 0x09, 0x00, 0x02, 0x05, 0x1F, 0x00, 0x02, b'n', b'o', 0x87],
            Packet::UnsubAck(UnsubAck {
                packet_id: 2,
                codes: vec![0x87],
                properties: PropertyValues { reason_string: Some("no".into()), ..props() }.into(),
            }),
        ),
        g("PINGREQ 5", V5, &[0xC0, 0x00], Packet::PingReq),
        g("PINGRESP 5", V5, &[0xD0, 0x00], Packet::PingResp),
        g(
            "DISCONNECT 5 short form",
            V5,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect { code: 0, properties: Properties::default() }),
        ),
        g(
            "DISCONNECT 5 with will",
            V5,
            &[0xE0, 0x01, 0x04],
            Packet::Disconnect(Disconnect { code: 0x04, properties: Properties::default() }),
        ),
        g(
            "DISCONNECT 5 reason and reason string",
            V5,
            &[
                0xE0, 21, 0x98, // Administrative action
                19,   // property length
                0x1C, 0x00, 0x05, b'h', b'o', b's', b't', b'2', // Server Reference
                0x1F, 0x00, 0x08, b's', b'h', b'u', b't', b'd', b'o', b'w', b'n', // Reason String
            ],
            Packet::Disconnect(Disconnect {
                code: 0x98,
                properties: PropertyValues {
                    server_reference: Some("host2".into()),
                    reason_string: Some("shutdown".into()),
                    ..props()
                }
                .into(),
            }),
        ),
        g(
            "DISCONNECT 5 session expiry",
            V5,
            &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3C],
            Packet::Disconnect(Disconnect {
                code: 0,
                properties: PropertyValues { session_expiry_interval: Some(60), ..props() }.into(),
            }),
        ),
        g("AUTH 5 short form", V5, &[0xF0, 0x00], Packet::Auth(Auth { code: 0, properties: Properties::default() })),
        g(
            "AUTH 5 continue",
            V5,
            &[
                0xF0, 22, 0x18, // Continue authentication
                20,   // property length
                0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // Authentication Method
                0x16, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04, // Authentication Data
                0x1F, 0x00, 0x02, b'h', b'i', // Reason String
            ],
            Packet::Auth(Auth {
                code: 0x18,
                properties: PropertyValues {
                    authentication_method: Some("SCRAM".into()),
                    authentication_data: Some(vec![1, 2, 3, 4]),
                    reason_string: Some("hi".into()),
                    ..props()
                }
                .into(),
            }),
        ),
        g(
            "AUTH 5 success with method",
            V5,
            &[0xF0, 0x0A, 0x00, 0x08, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M'],
            Packet::Auth(Auth {
                code: 0,
                properties: PropertyValues { authentication_method: Some("SCRAM".into()), ..props() }.into(),
            }),
        ),
    ]
}

#[test]
fn golden_v5() {
    for gd in goldens() {
        check_golden(&gd);
    }
}

#[test]
fn v5_long_forms_decode() {
    // Remaining length 3 with reason code 0 (§3.4.2.1: code 0 may be sent).
    check_decode_only(V5, &[0x40, 0x03, 0x00, 0x01, 0x00], Packet::PubAck(resp(1)));
    // Remaining length 4: code 0 + empty property length.
    check_decode_only(V5, &[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], Packet::PubAck(resp(1)));
    check_decode_only(V5, &[0x62, 0x04, 0x00, 0x01, 0x92, 0x00], {
        Packet::PubRel(PubResp { packet_id: 1, code: 0x92, properties: Properties::default() })
    });
    // DISCONNECT: remaining length 1 and 2 with code 0 (§3.14.2.1).
    let normal = Packet::Disconnect(Disconnect { code: 0, properties: Properties::default() });
    check_decode_only(V5, &[0xE0, 0x01, 0x00], normal.clone());
    check_decode_only(V5, &[0xE0, 0x02, 0x00, 0x00], normal);
    // Non-minimal property length.
    check_decode_only(
        V5,
        &[0x30, 0x05, 0x00, 0x01, b't', 0x80, 0x00],
        Packet::Publish(publish(QoS::AtMostOnce, "t", None, b"")),
    );
    // Properties in any order.
    check_decode_only(
        V5,
        &[0x20, 0x0A, 0x00, 0x00, 0x07, 0x24, 0x00, 0x11, 0x00, 0x00, 0x00, 0x05],
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0,
            properties: PropertyValues { maximum_qos: Some(0), session_expiry_interval: Some(5), ..props() }.into(),
        }),
    );
    // Non-minimal Subscription Identifier varint (value 1 in two bytes).
    let mut p = publish(QoS::AtMostOnce, "t", None, b"");
    p.properties.subscription_identifiers = vec![1];
    check_decode_only(V5, &[0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x0B, 0x81, 0x00], Packet::Publish(p));
}

#[test]
fn v5_encode_forms() {
    // Non-zero code, no properties: id + code (3); DISCONNECT: code (1).
    let mut out = Vec::new();
    encode(&Packet::PubRec(PubResp { packet_id: 9, code: 0x97, properties: Properties::default() }), V5, &mut out);
    assert_eq!(out, [0x50, 0x03, 0x00, 0x09, 0x97]);
    out.clear();
    encode(&Packet::Disconnect(Disconnect { code: 0x8E, properties: Properties::default() }), V5, &mut out);
    assert_eq!(out, [0xE0, 0x01, 0x8E]);
    // AUTH with a code is always code + property length.
    out.clear();
    encode(&Packet::Auth(Auth { code: 0x19, properties: Properties::default() }), V5, &mut out);
    assert_eq!(out, [0xF0, 0x02, 0x19, 0x00]);
    // A CONNECT keeps its own layout whatever the session version says.
    let c = Packet::Connect(Box::new(connect(V5, "abc")));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    encode(&c, V5, &mut a);
    encode(&c, Version::V311, &mut b);
    assert_eq!(a, b);
    assert_eq!(encoded_len(&c, Version::V311), a.len());
}

#[test]
fn large_property_section_uses_multi_byte_lengths() {
    // 40 user properties of 2+2+2+2+1 = 9 bytes: property length 360
    // (two-byte varint), remaining length > 127 (two bytes).
    let mut p = publish(QoS::AtLeastOnce, "t", Some(7), &[0u8; 100]);
    p.properties.user_properties = (0..40).map(|i| up(&format!("k{}", i % 10), &format!("v{}", i % 10))).collect();
    let pkt = Packet::Publish(p);
    let mut out = Vec::new();
    encode(&pkt, V5, &mut out);
    assert_eq!(out.len(), encoded_len(&pkt, V5));
    // remaining = 3 + 2 + (2 + 360) + 100 = 467 = 0xD3 0x03
    assert_eq!(&out[..3], &[0x32, 0xD3, 0x03]);
    assert_eq!(&out[8..10], &[0xE8, 0x02]); // 360
    assert_eq!(decode(&out, Some(V5), super::tests::BIG), Ok(Some((pkt, out.len()))));
}
