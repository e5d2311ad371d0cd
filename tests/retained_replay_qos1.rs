//! Retained messages replayed at QoS 1 on SUBSCRIBE are not cut off at the
//! session's queue bound: past `max_queued_messages` the replay waits and
//! goes on as the client acknowledges (issue 23). mosquitto_sub (Debian's
//! mosquitto-clients) subscribes to `r/#` at QoS 1 over 1,000 retained QoS 1
//! messages with `max_queued_messages 50`, and must get every one, once, in
//! topic order, with the retain flag.

mod common;

use std::time::Duration;

use common::mosquitto_sub::Sub;
use common::{is_mosquitto, publish_v311, Broker, Raw};

const MESSAGES: usize = 1_000;
const T: Duration = Duration::from_secs(5);

/// Publishes `MESSAGES` retained QoS 1 messages `r/0000`.. in bursts of 20,
/// each burst acknowledged before the next.
fn publish_retained(port: u16) {
    let mut p = Raw::connect_v311(port, "retainer", true, 60);
    for burst in 0..MESSAGES / 20 {
        let mut bytes = Vec::new();
        for i in burst * 20..(burst + 1) * 20 {
            bytes.extend(publish_v311(&format!("r/{i:04}"), 1, true, i as u16 + 1, format!("m{i}").as_bytes()));
        }
        p.send(&bytes);
        let mut acked = 0;
        while acked < 20 {
            if p.expect_packet(T).header == 0x40 {
                acked += 1;
            }
        }
    }
}

#[test]
fn qos1_subscriber_gets_every_retained_message_past_the_queue_bound() {
    if is_mosquitto() {
        // Mosquitto 2.0.11 queues the retained messages of a SUBSCRIBE like
        // any other and drops those past max_queued_messages (plus its
        // in-flight window): the client gets about the first 70 of 1,000.
        // That is the behaviour midge no longer has; nothing to compare.
        return;
    }
    let b = Broker::start("max_queued_messages 50\n");
    publish_retained(b.port);
    let sub = Sub::start(
        b.port,
        "mqttv311",
        &["-i", "replayer", "-t", "r/#", "-q", "1", "-v", "-C", &MESSAGES.to_string(), "-W", "30"],
    );
    let out = sub.finish();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("r/{i:04} m{i}")).collect();
    let got = out.messages.len();
    assert_eq!(out.messages, expected, "{got} of {MESSAGES} received; stderr {:?}", out.stderr);
    assert_eq!(out.code, Some(0), "mosquitto_sub exits once it has {MESSAGES}");
    // Every one with the retain flag [MQTT-3.3.1-8] ("r1" in -d's line).
    let received: Vec<&String> = out.all.iter().filter(|l| l.contains("received PUBLISH")).collect();
    assert_eq!(received.len(), MESSAGES);
    assert!(received.iter().all(|l| l.contains("q1, r1")), "{:?}", received.iter().find(|l| !l.contains("q1, r1")));
}
