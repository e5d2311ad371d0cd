//! Conversations with the broker state machine at the packet level, each
//! tagged with the spec statement it checks. The byte-level and
//! third-party-client tests live in tests/.

use std::rc::Rc;

use super::*;
use crate::config::Config;
use crate::mqtt::{ConnAck, Connect, Properties, PubResp, Publish, RetainHandling, Subscribe, Will};

fn broker_with(f: impl FnOnce(&mut Config)) -> Broker {
    let mut c = Config::default();
    f(&mut c);
    Broker::new(Rc::new(c.broker_settings(None, None)), 1_000)
}

fn broker() -> Broker {
    broker_with(|_| {})
}

fn connect_packet(id: &str, version: Version, clean: bool) -> Packet {
    Packet::Connect(Box::new(Connect {
        version,
        client_id: id.into(),
        clean_start: clean,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    }))
}

fn sent(b: &mut Broker) -> Vec<(ConnId, Packet)> {
    b.take_actions()
        .filter_map(|a| match a {
            Action::Send(c, p) => Some((c, p)),
            Action::Close(_) => None,
        })
        .collect()
}

fn closed(b: &mut Broker) -> Vec<ConnId> {
    b.take_actions().filter_map(|a| if let Action::Close(c) = a { Some(c) } else { None }).collect()
}

fn connack(p: &Packet) -> &ConnAck {
    match p {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn connect(b: &mut Broker, conn: ConnId, id: &str, v: Version, clean: bool, now: u64) -> ConnAck {
    b.open(conn, "127.0.0.1:1".parse().unwrap(), now);
    b.packet(conn, connect_packet(id, v, clean), now);
    let out = sent(b);
    connack(&out[0].1).clone()
}

fn subscribe(b: &mut Broker, conn: ConnId, filter: &str, qos: QoS, now: u64) -> Vec<(ConnId, Packet)> {
    b.packet(
        conn,
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(filter.into(), SubOptions { qos, ..Default::default() })],
            properties: Properties::default(),
        }),
        now,
    );
    sent(b)
}

fn publish(topic: &str, payload: &[u8], qos: QoS, pid: Option<u16>, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: Rc::from(topic),
        packet_id: pid,
        payload: Rc::from(payload),
        properties: Properties::default(),
    })
}

fn publishes(out: &[(ConnId, Packet)], to: ConnId) -> Vec<Publish> {
    out.iter()
        .filter_map(|(c, p)| match p {
            Packet::Publish(p) if *c == to => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn connack_before_anything_and_session_not_present_for_new_session() {
    let mut b = broker();
    let ack = connect(&mut b, 1, "a", Version::V311, false, 1000);
    assert_eq!(ack.code, 0);
    assert!(!ack.session_present); // [MQTT-3.2.2-3]
}

#[test]
fn second_connect_closes_the_connection() {
    // [MQTT-3.1.0-2]
    let mut b = broker();
    connect(&mut b, 1, "a", Version::V311, true, 1000);
    b.packet(1, connect_packet("a", Version::V311, true), 1001);
    assert_eq!(closed(&mut b), vec![1]);
}

#[test]
fn empty_client_id_needs_clean_session_in_311() {
    // [MQTT-3.1.3-8]
    let mut b = broker();
    let ack = connect(&mut b, 1, "", Version::V311, false, 1000);
    assert_eq!(ack.code, reason::V3_IDENTIFIER_REJECTED);
    // [MQTT-3.1.3-6]: with clean session the server assigns one.
    let ack = connect(&mut b, 2, "", Version::V311, true, 1000);
    assert_eq!(ack.code, 0);
}

#[test]
fn v5_empty_client_id_gets_assigned_identifier() {
    let mut b = broker();
    let ack = connect(&mut b, 1, "", Version::V5, true, 1000);
    assert_eq!(ack.code, 0);
    let id = ack.properties.assigned_client_identifier.clone().expect("assigned id");
    assert!(!id.is_empty());
    assert_eq!(ack.properties.receive_maximum, Some(20));
}

#[test]
fn qos1_is_acknowledged_and_delivered_once_per_session() {
    let mut b = broker();
    connect(&mut b, 1, "sub", Version::V311, true, 1000);
    let out = subscribe(&mut b, 1, "a/+", QoS::AtLeastOnce, 1000);
    assert!(matches!(&out[0].1, Packet::SubAck(s) if s.codes == vec![1]));
    connect(&mut b, 2, "pub", Version::V311, true, 1000);
    b.packet(2, publish("a/b", b"x", QoS::AtLeastOnce, Some(7), false), 1001);
    let out = sent(&mut b);
    let got = publishes(&out, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert!(out.iter().any(|(c, p)| *c == 2 && matches!(p, Packet::PubAck(r) if r.packet_id == 7)));
}

#[test]
fn overlapping_subscriptions_deliver_once_at_max_qos() {
    // [MQTT-3.3.4-2] (v5 [MQTT-3.3.4-3]): one message, highest QoS.
    let mut b = broker();
    connect(&mut b, 1, "sub", Version::V5, true, 1000);
    subscribe(&mut b, 1, "a/#", QoS::AtMostOnce, 1000);
    subscribe(&mut b, 1, "a/b", QoS::ExactlyOnce, 1000);
    connect(&mut b, 2, "pub", Version::V5, true, 1000);
    b.packet(2, publish("a/b", b"x", QoS::ExactlyOnce, Some(1), false), 1001);
    let got = publishes(&sent(&mut b), 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
}

#[test]
fn offline_persistent_session_queues_and_resends_with_dup() {
    let mut b = broker();
    connect(&mut b, 1, "sub", Version::V311, false, 1000);
    subscribe(&mut b, 1, "t", QoS::AtLeastOnce, 1000);
    connect(&mut b, 2, "pub", Version::V311, true, 1000);
    b.packet(2, publish("t", b"1", QoS::AtLeastOnce, Some(1), false), 1001);
    let first = publishes(&sent(&mut b), 1);
    assert_eq!(first.len(), 1);
    // Subscriber drops without acknowledging, then two more arrive offline.
    b.closed(1, 1002);
    b.packet(2, publish("t", b"2", QoS::AtLeastOnce, Some(2), false), 1003);
    b.packet(2, publish("t", b"3", QoS::AtLeastOnce, Some(3), false), 1003);
    sent(&mut b);
    let ack = connect(&mut b, 3, "sub", Version::V311, false, 1004);
    assert!(ack.session_present); // [MQTT-3.2.2-2]
    b.open(4, "127.0.0.1:9".parse().unwrap(), 1004); // another conn to flush nothing
    let _ = sent(&mut b);
    // Re-connect again to observe the resend order in one batch.
    b.closed(3, 1005);
    b.open(5, "127.0.0.1:2".parse().unwrap(), 1006);
    b.packet(5, connect_packet("sub", Version::V311, false), 1006);
    let out = sent(&mut b);
    let got = publishes(&out, 5);
    let payloads: Vec<&[u8]> = got.iter().map(|p| &*p.payload).collect();
    assert_eq!(payloads, vec![&b"1"[..], b"2", b"3"]);
    // [MQTT-4.4.0-1] unacknowledged messages are resent with DUP.
    assert!(got.iter().all(|p| p.dup));
}

#[test]
fn clean_session_discards_state() {
    let mut b = broker();
    connect(&mut b, 1, "sub", Version::V311, false, 1000);
    subscribe(&mut b, 1, "t", QoS::AtLeastOnce, 1000);
    b.closed(1, 1001);
    let ack = connect(&mut b, 2, "sub", Version::V311, true, 1002);
    assert!(!ack.session_present); // [MQTT-3.2.2-1]
    assert!(b.state.sessions().get("sub").is_some_and(|s| s.subs.is_empty()));
}

#[test]
fn retained_message_set_replaced_cleared() {
    let mut b = broker();
    connect(&mut b, 1, "pub", Version::V311, true, 1000);
    b.packet(1, publish("r", b"one", QoS::AtMostOnce, None, true), 1000);
    b.packet(1, publish("r", b"two", QoS::AtLeastOnce, Some(1), true), 1000);
    sent(&mut b);
    connect(&mut b, 2, "s1", Version::V311, true, 1000);
    let got = publishes(&subscribe(&mut b, 2, "r", QoS::AtLeastOnce, 1000), 2);
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].payload, b"two");
    assert!(got[0].retain); // [MQTT-3.3.1-8]
                            // [MQTT-3.3.1-10] empty payload clears.
    b.packet(1, publish("r", b"", QoS::AtMostOnce, None, true), 1000);
    sent(&mut b);
    connect(&mut b, 3, "s2", Version::V311, true, 1000);
    assert!(publishes(&subscribe(&mut b, 3, "r", QoS::AtLeastOnce, 1000), 3).is_empty());
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1]
    let mut b = broker();
    connect(&mut b, 1, "s", Version::V311, true, 1000);
    subscribe(&mut b, 1, "#", QoS::AtMostOnce, 1000);
    connect(&mut b, 2, "p", Version::V311, true, 1000);
    b.packet(2, publish("$x/y", b"1", QoS::AtMostOnce, None, false), 1000);
    assert!(publishes(&sent(&mut b), 1).is_empty());
}

#[test]
fn will_published_on_ungraceful_close_not_after_disconnect() {
    let mut b = broker();
    connect(&mut b, 1, "s", Version::V311, true, 1000);
    subscribe(&mut b, 1, "will", QoS::AtMostOnce, 1000);
    let mut c = Connect {
        version: Version::V311,
        client_id: "w".into(),
        clean_start: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: Some(Will {
            topic: "will".into(),
            payload: b"gone".to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }),
        properties: Properties::default(),
    };
    b.open(2, "127.0.0.1:9".parse().unwrap(), 1000);
    b.packet(2, Packet::Connect(Box::new(c.clone())), 1000);
    sent(&mut b);
    b.closed(2, 1001);
    assert_eq!(publishes(&sent(&mut b), 1).len(), 1); // [MQTT-3.1.2-8]
    c.client_id = "w2".into();
    b.open(3, "127.0.0.1:9".parse().unwrap(), 1000);
    b.packet(3, Packet::Connect(Box::new(c)), 1000);
    b.packet(3, Packet::Disconnect(Disconnect { code: 0, properties: Properties::default() }), 1001);
    b.closed(3, 1001);
    assert!(publishes(&sent(&mut b), 1).is_empty()); // [MQTT-3.1.2-10]
}

#[test]
fn keep_alive_timeout_closes_after_one_and_a_half_intervals() {
    // [MQTT-3.1.2-24]
    let mut b = broker();
    connect(&mut b, 1, "k", Version::V5, true, 0); // keep alive 60 s
    b.tick(89_000);
    assert!(closed(&mut b).is_empty());
    b.tick(90_001);
    let acts: Vec<Action> = b.take_actions().collect();
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Send(1, Packet::Disconnect(d)) if d.code == reason::KEEP_ALIVE_TIMEOUT)));
    assert!(acts.contains(&Action::Close(1)));
}

#[test]
fn receive_maximum_exceeded_disconnects_with_0x93() {
    let mut b = broker_with(|c| c.limits.inflight_messages_max = 2);
    connect(&mut b, 1, "p", Version::V5, true, 0);
    for pid in 1..=3u16 {
        b.packet(1, publish("t", b"x", QoS::ExactlyOnce, Some(pid), false), 1);
    }
    let acts: Vec<Action> = b.take_actions().collect();
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Send(1, Packet::Disconnect(d)) if d.code == reason::RECEIVE_MAXIMUM_EXCEEDED)));
}

#[test]
fn qos2_duplicate_publish_is_not_delivered_twice() {
    // [MQTT-4.3.3-10]
    let mut b = broker();
    connect(&mut b, 1, "s", Version::V311, true, 0);
    subscribe(&mut b, 1, "t", QoS::AtMostOnce, 0);
    connect(&mut b, 2, "p", Version::V311, true, 0);
    b.packet(2, publish("t", b"x", QoS::ExactlyOnce, Some(9), false), 1);
    b.packet(2, publish("t", b"x", QoS::ExactlyOnce, Some(9), false), 2);
    let out = sent(&mut b);
    assert_eq!(publishes(&out, 1).len(), 1);
    assert_eq!(out.iter().filter(|(c, p)| *c == 2 && matches!(p, Packet::PubRec(_))).count(), 2);
    b.packet(2, Packet::PubRel(PubResp { packet_id: 9, code: 0, properties: Properties::default() }), 3);
    assert!(sent(&mut b).iter().any(|(c, p)| *c == 2 && matches!(p, Packet::PubComp(r) if r.packet_id == 9)));
}

#[test]
fn shared_subscription_spreads_across_members() {
    let mut b = broker();
    connect(&mut b, 1, "m1", Version::V5, true, 0);
    subscribe(&mut b, 1, "$share/g/t", QoS::AtMostOnce, 0);
    connect(&mut b, 2, "m2", Version::V5, true, 0);
    subscribe(&mut b, 2, "$share/g/t", QoS::AtMostOnce, 0);
    connect(&mut b, 3, "p", Version::V5, true, 0);
    for _ in 0..10 {
        b.packet(3, publish("t", b"x", QoS::AtMostOnce, None, false), 1);
    }
    let out = sent(&mut b);
    let (a, c) = (publishes(&out, 1).len(), publishes(&out, 2).len());
    assert_eq!(a + c, 10);
    assert_eq!(a, 5);
}

#[test]
fn retain_handling_2_sends_no_retained() {
    let mut b = broker();
    connect(&mut b, 1, "p", Version::V5, true, 0);
    b.packet(1, publish("r", b"v", QoS::AtMostOnce, None, true), 0);
    connect(&mut b, 2, "s", Version::V5, true, 0);
    b.packet(
        2,
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![(
                "r".into(),
                SubOptions { retain_handling: RetainHandling::DoNotSend, ..Default::default() },
            )],
            properties: Properties::default(),
        }),
        0,
    );
    assert!(publishes(&sent(&mut b), 2).is_empty());
}

#[test]
fn outbound_window_honours_receive_maximum_and_queues_the_rest() {
    let mut b = broker();
    b.open(1, "127.0.0.1:9".parse().unwrap(), 0);
    let mut c = connect_packet("s", Version::V5, true);
    if let Packet::Connect(c) = &mut c {
        c.properties.receive_maximum = Some(2);
    }
    b.packet(1, c, 0);
    sent(&mut b);
    subscribe(&mut b, 1, "t", QoS::AtLeastOnce, 0);
    connect(&mut b, 2, "p", Version::V5, true, 0);
    for pid in 1..=5u16 {
        b.packet(2, publish("t", b"x", QoS::AtLeastOnce, Some(pid), false), 1);
    }
    let got = publishes(&sent(&mut b), 1);
    assert_eq!(got.len(), 2); // [MQTT-3.3.4-9]
    b.packet(
        1,
        Packet::PubAck(PubResp { packet_id: got[0].packet_id.unwrap(), code: 0, properties: Properties::default() }),
        2,
    );
    assert_eq!(publishes(&sent(&mut b), 1).len(), 1);
}

/// Every connection, idle or not, holds a `Conn`: it must stay within a
/// 96-byte heap block (88 bytes and glibc's 8-byte header).
#[test]
fn conn_fits_a_96_byte_block() {
    assert!(std::mem::size_of::<super::Conn>() <= 88, "{}", std::mem::size_of::<super::Conn>());
}

/// Until its Connect command applies (a replicated broker waits for the
/// commit), a connection's ACL checks use its CONNECT's user name: the
/// session does not hold it yet (here there is none).
#[test]
fn acl_uses_the_connect_user_name_before_the_session_has_it() {
    for (user, allowed) in [("alice", true), ("bob", false)] {
        let acl = crate::auth::acl::AclFile::parse_str("user alice\ntopic readwrite a/#\n", "acl").unwrap();
        let mut b = Broker::new(Rc::new(Config::default().broker_settings(None, Some(acl))), 1_000);
        b.set_replicated();
        b.set_serving(true, 1_000);
        b.open(1, "127.0.0.1:1".parse().unwrap(), 1_000);
        let Packet::Connect(mut cp) = connect_packet("c", Version::V5, true) else { unreachable!() };
        cp.username = Some(user.into());
        b.packet(1, Packet::Connect(cp), 1_000);
        b.packet(1, publish("a/b", b"x", QoS::AtLeastOnce, Some(1), false), 1_001);
        let out = sent(&mut b);
        let proposed = b.take_proposals().0.iter().any(|e| matches!(e.cmd, Command::Publish { .. }));
        if allowed {
            assert!(out.is_empty() && proposed, "{user}: {out:?}");
        } else {
            let refused = matches!(&out[..], [(1, Packet::PubAck(a))] if a.code == reason::NOT_AUTHORIZED);
            assert!(refused && !proposed, "{user}: {out:?}");
        }
    }
}

/// `$CONTROL/dynamic-security/v1` is answered, not routed: every subscriber
/// of the response topic gets an error per command in the plugin's
/// response shape (as the plugin publishes it); the request itself reaches
/// no one.
#[test]
fn dynamic_security_requests_are_answered_not_routed() {
    let mut b = broker();
    connect(&mut b, 1, "ctrl", Version::V5, true, 1000);
    subscribe(&mut b, 1, dynsec::RESPONSE_TOPIC, QoS::AtLeastOnce, 1000);
    connect(&mut b, 2, "other", Version::V5, true, 1000);
    subscribe(&mut b, 2, "$CONTROL/#", QoS::AtLeastOnce, 1000);
    let request = br#"{"commands":[{"command":"listClients","correlationData":"c1"},{"command":"getClient"}]}"#;
    b.packet(1, publish(dynsec::REQUEST_TOPIC, request, QoS::AtLeastOnce, Some(3), false), 1001);
    let out = sent(&mut b);
    assert!(out.iter().any(|(c, p)| *c == 1 && matches!(p, Packet::PubAck(r) if r.packet_id == 3 && r.code == 0)));
    let other = publishes(&out, 2);
    assert_eq!(other.len(), 1, "the answer, not the request: {out:?}");
    assert_eq!(&*other[0].topic, dynsec::RESPONSE_TOPIC);
    let got = publishes(&out, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].topic, dynsec::RESPONSE_TOPIC);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    let v: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    let e = dynsec::NOT_ENABLED;
    assert_eq!(
        v,
        serde_json::json!({"responses": [
            {"command": "listClients", "error": e, "correlationData": "c1"},
            {"command": "getClient", "error": e},
        ]})
    );

    // Not JSON: one response, as Mosquitto's plugin gives.
    b.packet(1, publish(dynsec::REQUEST_TOPIC, b"list", QoS::AtMostOnce, None, false), 1002);
    let got = publishes(&sent(&mut b), 1);
    let v: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(v, serde_json::json!({"responses": [{"command": "Unknown command", "error": e}]}));

    // Bounded: at most COMMANDS_MAX responses.
    let many = format!(r#"{{"commands":[{}]}}"#, vec![r#"{"command":"x"}"#; 1000].join(","));
    b.packet(1, publish(dynsec::REQUEST_TOPIC, many.as_bytes(), QoS::AtMostOnce, None, false), 1003);
    let got = publishes(&sent(&mut b), 1);
    let v: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(v["responses"].as_array().unwrap().len(), dynsec::COMMANDS_MAX_DISABLED);

    // A requester without a subscription gets nothing; the subscribers of
    // the response topic get the answer.
    connect(&mut b, 3, "nosub", Version::V5, true, 1000);
    b.packet(3, publish(dynsec::REQUEST_TOPIC, request, QoS::AtMostOnce, None, false), 1004);
    let out = sent(&mut b);
    assert!(publishes(&out, 3).is_empty(), "{out:?}");
    assert_eq!(publishes(&out, 1).len(), 1);
}

/// Any other topic under `$CONTROL/dynamic-security/` is refused (v5: 0x90
/// Topic Name invalid) and never routed.
#[test]
fn other_dynamic_security_topics_are_refused() {
    let mut b = broker();
    connect(&mut b, 1, "sub", Version::V5, true, 1000);
    subscribe(&mut b, 1, "$CONTROL/#", QoS::AtLeastOnce, 1000);
    connect(&mut b, 2, "v5", Version::V5, true, 1000);
    connect(&mut b, 3, "v3", Version::V311, true, 1000);
    b.packet(2, publish(dynsec::RESPONSE_TOPIC, b"{}", QoS::AtLeastOnce, Some(5), false), 1001);
    b.packet(2, publish("$CONTROL/dynamic-security/v2", b"{}", QoS::ExactlyOnce, Some(6), false), 1001);
    b.packet(3, publish("$CONTROL/dynamic-security/x", b"{}", QoS::AtLeastOnce, Some(7), false), 1001);
    b.packet(3, publish("$CONTROL/dynamic-security/x", b"{}", QoS::AtMostOnce, None, false), 1001);
    let out = sent(&mut b);
    assert!(publishes(&out, 1).is_empty(), "routed: {out:?}");
    assert!(out.iter().any(|(c, p)| *c == 2 && matches!(p, Packet::PubAck(r) if r.packet_id == 5 && r.code == 0x90)));
    assert!(out.iter().any(|(c, p)| *c == 2 && matches!(p, Packet::PubRec(r) if r.packet_id == 6 && r.code == 0x90)));
    // 3.1.1 has no negative acknowledgement: acknowledged, discarded.
    assert!(out.iter().any(|(c, p)| *c == 3 && matches!(p, Packet::PubAck(r) if r.packet_id == 7 && r.code == 0)));
    assert!(closed(&mut b).is_empty());
}

/// Retained replay at QoS 0 is paced by the output bound: however many
/// SUBSCRIBEs come before the runtime writes anything, the connection is
/// handed at most `out_buffer_bytes_max` (one message always fits an empty
/// buffer); as the runtime reports bytes written, the replays go on where
/// they stopped, until every retained message went out once per SUBSCRIBE.
/// Nothing is dropped. The count is exact: every packet handed out
/// (CONNACK, SUBACK, PUBLISH) counts, every byte written comes off.
#[test]
fn retained_qos0_replay_is_paced_by_the_output_bound() {
    let mut b = broker_with(|c| c.limits.out_buffer_bytes_max = 4096);
    connect(&mut b, 1, "pub", Version::V311, true, 1000);
    for i in 0..100 {
        b.packet(1, publish(&format!("r/{i:03}"), &[b'x'; 100], QoS::AtMostOnce, None, true), 1000);
    }
    sent(&mut b);
    connect(&mut b, 2, "sub", Version::V311, true, 1000);
    let mut topics = Vec::new();
    let mut bytes = 4; // the CONNACK
    for _ in 0..5 {
        let out = subscribe(&mut b, 2, "r/#", QoS::AtMostOnce, 1000);
        bytes += out.iter().map(|(_, p)| crate::mqtt::codec::encoded_len(p, Version::V311)).sum::<usize>();
        topics.extend(publishes(&out, 2).into_iter().map(|p| p.topic.to_string()));
    }
    // CONNACK 4 + SUBACK 5, then PUBLISHes of 2 + 2 + 5 + 100 = 109
    // bytes: 37 fit in 4,096; the later SUBACKs go out all the same.
    assert_eq!(topics.len(), 37);
    assert_eq!(b.stats.dropped_qos0, 0);
    assert_eq!(b.out_buffered(2), bytes);
    assert_eq!(b.out_buffered_total(), bytes as u64 + b.out_buffered(1) as u64);
    // Part written: the replay fills the bound again, no more.
    b.written(2, bytes - 100, 1000);
    topics.extend(publishes(&sent(&mut b), 2).into_iter().map(|p| p.topic.to_string()));
    assert!(b.out_buffered(2) <= 4096 && topics.len() > 37, "{} held, {} sent", b.out_buffered(2), topics.len());
    // Written out, again and again: every replay goes on to its end.
    for _ in 0..100 {
        let held = b.out_buffered(2);
        if held == 0 {
            break;
        }
        b.written(2, held, 1000);
        topics.extend(publishes(&sent(&mut b), 2).into_iter().map(|p| p.topic.to_string()));
    }
    assert_eq!(topics.len(), 500, "five replays of 100");
    for i in 0..100 {
        assert_eq!(topics.iter().filter(|t| **t == format!("r/{i:03}")).count(), 5, "r/{i:03}");
    }
    assert_eq!(b.stats.dropped_qos0, 0);
    // A closed connection's unwritten output no longer counts.
    subscribe(&mut b, 2, "r/#", QoS::AtMostOnce, 1000);
    let before = b.out_buffered_total();
    let held = b.out_buffered(2) as u64;
    assert!(held > 0);
    b.closed(2, 1000);
    assert_eq!(b.out_buffered_total(), before - held);
    assert!(b.replays.is_empty(), "the replay ended with the connection");
}

/// `memory_limit` covers the connections' unwritten output: past it, QoS 0
/// deliveries are dropped and a QoS 1 PUBLISH is refused (v5: PUBACK 0x97),
/// although the stored messages alone are far below it.
#[test]
fn memory_limit_counts_unwritten_output() {
    let mut b = broker_with(|c| {
        c.limits.memory_bytes_max = 8192;
        c.limits.out_buffer_bytes_max = 1 << 20;
    });
    connect(&mut b, 1, "pub", Version::V5, true, 1000);
    connect(&mut b, 2, "sub", Version::V311, true, 1000);
    subscribe(&mut b, 2, "t", QoS::AtMostOnce, 1000);
    let mut delivered = 0;
    for _ in 0..20 {
        b.packet(1, publish("t", &[b'x'; 1000], QoS::AtMostOnce, None, false), 1000);
        delivered += publishes(&sent(&mut b), 2).len();
    }
    assert!(b.state.stored_bytes() < 1000, "nothing is stored: {}", b.state.stored_bytes());
    assert!(delivered < 9, "{delivered} deliveries of 1 KiB held under a limit of 8 KiB");
    assert_eq!(b.stats.dropped_qos0, 20 - delivered as u64);
    b.packet(1, publish("t", &[b'x'; 200], QoS::AtLeastOnce, Some(7), false), 1000);
    let out = sent(&mut b);
    assert!(
        out.iter().any(|(c, p)| *c == 1 && matches!(p, Packet::PubAck(r) if r.packet_id == 7 && r.code == 0x97)),
        "{out:?}"
    );
    // Written out: room again.
    b.written(2, b.out_buffered(2), 1000);
    b.written(1, b.out_buffered(1), 1000);
    b.packet(1, publish("t", &[b'x'; 200], QoS::AtLeastOnce, Some(8), false), 1000);
    let out = sent(&mut b);
    assert!(
        out.iter().any(|(c, p)| *c == 1 && matches!(p, Packet::PubAck(r) if r.packet_id == 8 && r.code < 0x80)),
        "{out:?}"
    );
}

mod dynsec_api;

/// SIGHUP's reload: a client whose user left the password file, or whose
/// entry changed, is disconnected (v5: 0x98, no will); the others stay; the
/// new file decides the next logins. ACL changes apply to the next check.
#[test]
fn reload_auth_disconnects_users_whose_entry_went_and_applies_new_rules() {
    use crate::auth::acl::AclFile;
    use crate::auth::password::PasswordFile;
    let text = include_str!("../../tests/fixtures/passwd");
    let line = |user: &str| text.lines().find(|l| l.starts_with(&format!("{user}:"))).unwrap().to_string();
    let pw = |lines: &[String]| PasswordFile::parse_str(&lines.join("\n"), "passwd").unwrap();
    let acl = AclFile::parse_str("user alice\ntopic readwrite a/#\n", "acl").unwrap();
    let cfg = Config { allow_anonymous: false, ..Config::default() };
    let settings = cfg.broker_settings(Some(pw(&[line("alice"), line("bob"), line("legacy")])), Some(acl));
    let mut b = Broker::new(Rc::new(settings), 1_000);
    let login = |b: &mut Broker, conn: ConnId, user: &str, pass: &str| {
        b.open(conn, "127.0.0.1:1".parse().unwrap(), 1_000);
        let Packet::Connect(mut cp) = connect_packet(&format!("c{conn}"), Version::V5, true) else { unreachable!() };
        cp.username = Some(user.into());
        cp.password = Some(pass.as_bytes().to_vec());
        b.packet(conn, Packet::Connect(cp), 1_000);
        connack(&sent(b)[0].1).code
    };
    assert_eq!(login(&mut b, 1, "alice", "correct horse"), reason::SUCCESS);
    assert_eq!(login(&mut b, 2, "bob", "s3cr3t!"), reason::SUCCESS);
    assert_eq!(login(&mut b, 3, "legacy", "old-style"), reason::SUCCESS);
    assert_eq!(login(&mut b, 9, "carol smith", "pässwörd ünïcode"), reason::NOT_AUTHORIZED);
    closed(&mut b);

    // bob removed, legacy's entry replaced (by bob's hash), carol added;
    // alice may now publish on b/# only.
    let legacy_changed = line("bob").replacen("bob:", "legacy:", 1);
    let new_pw = pw(&[line("alice"), legacy_changed, line("carol smith")]);
    let new_acl = AclFile::parse_str("user alice\ntopic readwrite b/#\n", "acl").unwrap();
    assert_eq!(b.reload_auth(Some(new_pw), Some(new_acl), Vec::new(), 2_000), 2);
    let out = b.take_actions().collect::<Vec<_>>();
    for conn in [2, 3] {
        let kicked = out.iter().any(
            |a| matches!(a, Action::Send(c, Packet::Disconnect(d)) if *c == conn && d.code == reason::ADMINISTRATIVE_ACTION),
        );
        assert!(kicked && out.iter().any(|a| matches!(a, Action::Close(c) if *c == conn)), "{conn}: {out:?}");
    }
    assert!(!out.iter().any(|a| matches!(a, Action::Close(1) | Action::Send(1, _))), "{out:?}");
    assert_eq!(login(&mut b, 4, "carol smith", "pässwörd ünïcode"), reason::SUCCESS);
    assert_eq!(login(&mut b, 5, "bob", "s3cr3t!"), reason::NOT_AUTHORIZED);
    closed(&mut b);
    b.packet(1, publish("a/x", b"x", QoS::AtLeastOnce, Some(1), false), 2_001);
    let refused = matches!(&sent(&mut b)[..], [(1, Packet::PubAck(a))] if a.code == reason::NOT_AUTHORIZED);
    assert!(refused, "a/# is no longer alice's: the new ACL applies");

    // None keeps what is in force.
    assert_eq!(b.reload_auth(None, None, Vec::new(), 3_000), 0);
    assert_eq!(login(&mut b, 6, "carol smith", "pässwörd ünïcode"), reason::SUCCESS);
}

/// `mount_point`: a mounted connection's topics live under the prefix
/// (publish, subscribe, shared subscribe, unsubscribe) and lose it on the
/// way out; other connections see the whole topic.
#[test]
fn a_mounted_connection_lives_under_its_prefix() {
    let mut b = broker();
    b.open(1, "127.0.0.1:1".parse().unwrap(), 1000);
    b.set_conn_options(1, ConnOptions { mount_point: Some(Rc::from("site1/")), ..Default::default() });
    b.packet(1, connect_packet("inside", Version::V311, true), 1000);
    assert_eq!(connack(&sent(&mut b)[0].1).code, 0);
    connect(&mut b, 2, "outside", Version::V311, true, 1000);
    subscribe(&mut b, 1, "a/#", QoS::AtMostOnce, 1000);
    subscribe(&mut b, 1, "$share/g/b", QoS::AtMostOnce, 1000);
    subscribe(&mut b, 2, "site1/#", QoS::AtMostOnce, 1000);
    let subs: Vec<String> = b.state.sessions()[&Rc::from("inside")].subs.keys().cloned().collect();
    assert_eq!(subs, ["$share/g/site1/b", "site1/a/#"]);
    b.packet(1, publish("a/x", b"in", QoS::AtMostOnce, None, false), 1000);
    let out = sent(&mut b);
    let topics = |to: ConnId| publishes(&out, to).iter().map(|p| p.topic.to_string()).collect::<Vec<_>>();
    assert_eq!(topics(1), ["a/x"], "the prefix is taken off");
    assert_eq!(topics(2), ["site1/a/x"]);
    b.packet(2, publish("a/y", b"out", QoS::AtMostOnce, None, false), 1000);
    assert!(publishes(&sent(&mut b), 1).is_empty(), "outside the mount point");
    b.packet(
        1,
        Packet::Unsubscribe(crate::mqtt::Unsubscribe {
            packet_id: 2,
            filters: vec!["a/#".into()],
            properties: Properties::default(),
        }),
        1000,
    );
    sent(&mut b);
    let subs: Vec<String> = b.state.sessions()[&Rc::from("inside")].subs.keys().cloned().collect();
    assert_eq!(subs, ["$share/g/site1/b"], "unsubscribed under the mount point");
}

/// A bridge's inbound message reaches local subscribers, is acknowledged
/// upstream only after its commit (here: at once, one node in memory),
/// and does not go back out over the bridge; a local QoS 0 message on a
/// bridged topic goes through the log into the bridge's queue.
#[test]
fn bridge_inbound_outbound_and_no_echo() {
    let c = Config::parse_str("connection up\naddress 127.0.0.1:1\ntopic echo/# both 1\n", "t.conf").unwrap();
    let mut b = Broker::new(Rc::new(c.broker_settings(None, None)), 1_000);
    connect(&mut b, 1, "sub", Version::V311, true, 1_000);
    subscribe(&mut b, 1, "echo/#", QoS::AtLeastOnce, 1_000);
    let origin: Rc<str> = Rc::from("$bridge/up");
    let Packet::Publish(p) = publish("echo/in", b"x", QoS::AtLeastOnce, Some(9), false) else { unreachable!() };
    b.bridge_publish(&origin, &p, 1_001).unwrap();
    let out = sent(&mut b);
    assert_eq!(publishes(&out, 1).len(), 1, "delivered locally: {out:?}");
    let (_, acks) = b.take_bridge_events();
    assert_eq!(acks, [bridge::BridgeAck { origin: origin.clone(), packet_id: 9, qos: QoS::AtLeastOnce }]);
    assert!(b.state().bridge_queue("up").is_none_or(|q| q.items.is_empty()), "not sent back out");
    // A local QoS 0 message on a bridged topic is queued for the bridge.
    b.packet(1, publish("echo/local", b"y", QoS::AtMostOnce, None, false), 1_002);
    let (wake, _) = b.take_bridge_events();
    assert!(wake);
    let q = b.state().bridge_queue("up").expect("queued");
    assert_eq!(q.items.len(), 1);
    assert_eq!((&*q.items[0].msg.topic, q.items[0].msg.qos), ("echo/local", QoS::AtMostOnce));
    // The upstream acknowledged it: it leaves the queue.
    b.bridge_acked("up", vec![q.items[0].seq], 1_003);
    assert!(b.state().bridge_queue("up").unwrap().items.is_empty());
    // A node that does not serve takes nothing from the bridge.
    b.set_serving(false, 1_004);
    assert_eq!(b.bridge_publish(&origin, &p, 1_005), Err(bridge::BridgeRefusal::NotServing));
}

/// `per_listener_settings true`: a session offline is routed to by the
/// rules of the listener its client last connected on; a session whose
/// listener is unknown (after a restart) by the strictest rules of all.
#[test]
fn offline_sessions_get_what_their_listeners_rules_allow() {
    use crate::auth::acl::AclFile;
    let mut settings = Config::default().broker_settings(None, None);
    let rules = |acl: Option<&str>| ListenerRules {
        allow_anonymous: true,
        passwords: None,
        acl: acl.map(|a| AclFile::parse_str(a, "acl").unwrap()),
    };
    // Listener 0: no ACL. Listener 1: a/secret is not for its clients.
    settings.listener_rules = vec![Some(rules(None)), Some(rules(Some("topic readwrite a/#\ntopic deny a/secret\n")))];
    let mut b = Broker::new(Rc::new(settings), 1_000);
    let on = |b: &mut Broker, conn: ConnId, listener: usize, id: &str| {
        b.open(conn, "127.0.0.1:1".parse().unwrap(), 1_000);
        b.set_conn_options(conn, ConnOptions { listener: Some(listener), ..Default::default() });
        b.packet(conn, connect_packet(id, Version::V311, false), 1_000);
        assert_eq!(connack(&sent(b)[0].1).code, 0);
    };
    on(&mut b, 1, 0, "s0");
    subscribe(&mut b, 1, "a/#", QoS::AtLeastOnce, 1_000);
    on(&mut b, 2, 1, "s1");
    subscribe(&mut b, 2, "a/#", QoS::AtLeastOnce, 1_000);
    b.closed(1, 1_001);
    b.closed(2, 1_001);
    on(&mut b, 3, 0, "pub");
    b.packet(3, publish("a/secret", b"s", QoS::AtLeastOnce, Some(1), false), 1_002);
    b.packet(3, publish("a/open", b"o", QoS::AtLeastOnce, Some(2), false), 1_002);
    sent(&mut b);
    let queued = |b: &Broker, id: &str| b.state.sessions()[&Rc::from(id)].queue.len();
    assert_eq!((queued(&b, "s0"), queued(&b, "s1")), (2, 1), "s1's listener denies a/secret");

    // Unknown (no client connected since start): both listeners' rules.
    let s = b.settings().clone();
    let unknown = settings::ClientScopes::new();
    assert!(s.read_allowed(&unknown, None, "s9", None, "a/open"));
    assert!(!s.read_allowed(&unknown, None, "s9", None, "a/secret"));
    assert!(s.read_allowed(&b.client_scopes, None, "s0", None, "a/secret"));
}

/// A node that cannot serve because its disk is full (its election write
/// waits for room) refuses clients with the full disk's reason, not with
/// "not the leader": MQTT 5 0x97 Quota exceeded, 3.1.1 code 3.
#[test]
fn a_node_not_serving_for_a_full_disk_says_so() {
    let mut b = broker();
    b.set_serving(false, 1_000);
    assert_eq!(connect(&mut b, 1, "a", Version::V5, true, 1_000).code, reason::SERVER_UNAVAILABLE);
    b.set_store_full(true);
    assert_eq!(connect(&mut b, 2, "b", Version::V5, true, 1_001).code, reason::QUOTA_EXCEEDED);
    assert_eq!(connect(&mut b, 3, "c", Version::V311, true, 1_002).code, reason::V3_SERVER_UNAVAILABLE);
}

/// A lone in-memory node hands each taken batch's buffer back; the buffer
/// of a burst (thousands of acknowledgements of a fan-out) must not stay
/// allocated after the load.
#[test]
fn only_small_batch_buffers_are_kept_for_the_next_commands() {
    let mut b = broker();
    b.recycle_proposals(Vec::with_capacity(10_000));
    assert_eq!(b.proposals.capacity(), 0, "a burst's buffer is freed");
    b.recycle_proposals(Vec::with_capacity(8));
    assert_eq!(b.proposals.capacity(), 8, "a small one is reused");
}
