//! `max_qos` and `max_topic_alias` after a `listener` line are that
//! listener's (Mosquitto's per-listener options): an MQTT 5 client learns
//! them from its CONNACK, and a QoS above the listener's is refused there
//! only. Runs against Mosquitto too.

mod common;

use std::time::Duration;

use common::{connack_props, free_port, publish_v5, Broker, Raw};

const MAXIMUM_QOS: u8 = 0x24;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;

fn prop(body: &[u8], id: u8) -> Option<Vec<u8>> {
    connack_props(body).into_iter().find(|(k, _)| *k == id).map(|(_, v)| v)
}

#[test]
fn max_qos_and_max_topic_alias_belong_to_their_listener() {
    let limited = free_port();
    let b = Broker::start(&format!("listener {limited} 127.0.0.1\nmax_qos 1\nmax_topic_alias 0\n"));
    let (_r, ack) = Raw::connect_v5(limited, "limited", true, 60, &[]);
    assert_eq!(prop(&ack.body, MAXIMUM_QOS), Some(vec![1]), "{ack:02x?}");
    assert_eq!(prop(&ack.body, TOPIC_ALIAS_MAXIMUM), None, "no topic aliases: {ack:02x?}");
    let (_r, ack) = Raw::connect_v5(b.port, "free", true, 60, &[]);
    assert_eq!(prop(&ack.body, MAXIMUM_QOS), None, "QoS 2 on the other listener: {ack:02x?}");
    assert_eq!(prop(&ack.body, TOPIC_ALIAS_MAXIMUM), Some(vec![0, 10]), "{ack:02x?}");
    // QoS 2 where the listener allows QoS 1: DISCONNECT 0x9B (QoS not
    // supported).
    let (mut r, _) = Raw::connect_v5(limited, "too-high", true, 60, &[]);
    r.send(&publish_v5("t", 2, 1, b"x"));
    assert_eq!(r.outcome(Duration::from_secs(5)), "DISCONNECT 0x9b");
    let (mut r, _) = Raw::connect_v5(b.port, "fine", true, 60, &[]);
    r.send(&publish_v5("t", 2, 1, b"x"));
    let p = r.expect_packet(Duration::from_secs(5));
    assert_eq!(p.header, 0x50, "PUBREC: {p:02x?}");
}
