//! Arrival order across connections: a PUBLISH that reaches the broker
//! after another client's SUBSCRIBE is routed with that subscription in
//! place, whatever the commit mode (request and response: the responder
//! subscribes, the requester publishes at once, neither waits for the
//! SUBACK). Raw bytes on two connections; runs against Mosquitto too
//! (`MIDGE_TEST_BROKER=mosquitto`), which passes it.
//!
//! The publisher is busy first (a burst of QoS 1 messages), as a gateway's
//! requester usually is: the subscriber's connection was idle (midge
//! parks it), and its SUBSCRIBE used to be read only after the busy
//! connection's next PUBLISH, which then found no subscriber (28 of 30
//! rounds lost it with `persistence true` before the fix). The publisher
//! waits `ORDER_GAP_MS` (20) after its burst. A shorter gap than the
//! broker's work on the burst leaves a known window open: a connection
//! that is still reading its burst reads again in the same turn and can
//! take bytes that arrived after another socket's (with 3 ms and two CPU
//! hogs beside the test, 1 of 30 rounds in some runs); reading every
//! connection only through the reactor closes it but cost 22% more
//! instructions per QoS 1 round trip, so it was not done.

mod common;

use std::time::{Duration, Instant};

use common::{packet, publish_v311, subscribe_v311, Broker, Raw, ReadOutcome};

const ROUNDS: usize = 30;

fn gap_ms() -> u64 {
    std::env::var("ORDER_GAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn rounds(b: &Broker) -> usize {
    let mut missed = 0;
    for i in 0..ROUNDS {
        let mut sub = Raw::connect_v311(b.port, &format!("order-sub-{i}"), true, 30);
        let mut publ = Raw::connect_v311(b.port, &format!("order-pub-{i}"), true, 30);
        for k in 0..20u16 {
            publ.send(&publish_v311("order/busy", 1, false, k + 1, b"x"));
        }
        std::thread::sleep(Duration::from_millis(gap_ms()));
        let topic = format!("order/{i}");
        sub.send(&subscribe_v311(1, &topic, 1));
        publ.send(&publish_v311(&topic, 1, false, 100, b"request"));
        let end = Instant::now() + Duration::from_secs(3);
        let mut got = false;
        while !got && Instant::now() < end {
            match sub.read(Duration::from_millis(200)) {
                ReadOutcome::Packet(p) => got = p.kind() == 3 && p.body.ends_with(b"request"),
                ReadOutcome::Closed => break,
                ReadOutcome::Timeout => {}
            }
        }
        missed += usize::from(!got);
        sub.send(&packet(0xE0, &[]));
        publ.send(&packet(0xE0, &[]));
    }
    missed
}

#[test]
fn publish_after_subscribe_is_delivered_durable() {
    let b = Broker::start("persistence true\npersistence_location {dir}/\n");
    let missed = rounds(&b);
    assert_eq!(missed, 0, "{missed} of {ROUNDS} publishes sent after a SUBSCRIBE missed it");
}

#[test]
fn publish_after_subscribe_is_delivered_in_memory() {
    let b = Broker::start("persistence false\n");
    let missed = rounds(&b);
    assert_eq!(missed, 0, "{missed} of {ROUNDS} publishes sent after a SUBSCRIBE missed it");
}
