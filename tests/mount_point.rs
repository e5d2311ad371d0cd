//! `mount_point` on a listener: its clients' topics live under the prefix
//! (what they publish and subscribe to), so they see only that part of the
//! tree, and clients of other listeners reach them through the prefix.
//! Driven by mosquitto_pub / mosquitto_sub; runs against Mosquitto too,
//! which (2.0.11) does not take the prefix off the topics it delivers to a
//! mounted client, although its documentation says it does.

mod common;

use common::mosquitto_sub::{publish_ok, Sub};
use common::{free_port, is_mosquitto, Broker};

#[test]
fn a_mounted_listener_sees_its_part_of_the_tree() {
    let mounted = free_port();
    // The harness's plain listener comes first; the second is mounted.
    let b = Broker::start(&format!("listener {mounted} 127.0.0.1\nmount_point site1/\n"));
    let inside = Sub::start(mounted, "mqttv311", &["-t", "a/#", "-v", "-C", "2", "-W", "10"]);
    let outside = Sub::start(b.port, "mqttv311", &["-t", "site1/#", "-v", "-C", "1", "-W", "10"]);
    // Outside the mount: not for the mounted client.
    publish_ok(b.port, "mqttv311", &["-t", "a/x", "-m", "elsewhere"]);
    // Published by the mounted client: under the prefix for the others.
    publish_ok(mounted, "mqttv311", &["-t", "a/z", "-m", "from inside"]);
    // Published under the prefix from outside: reaches the mounted client.
    publish_ok(b.port, "mqttv311", &["-t", "site1/a/y", "-m", "from outside"]);
    let inside = inside.finish();
    let outside = outside.finish();
    assert_eq!(outside.messages, ["site1/a/z from inside"], "{outside:?}");
    let expected: [&str; 2] = if is_mosquitto() {
        ["site1/a/z from inside", "site1/a/y from outside"]
    } else {
        ["a/z from inside", "a/y from outside"]
    };
    assert_eq!(inside.messages, expected, "{inside:?}");
}

/// A retained message under the prefix is replayed to a mounted
/// subscriber, and an unsubscribe under the mount point ends its
/// subscription (Mosquitto 2.0.11 forgets the prefix on UNSUBSCRIBE).
#[test]
fn retained_messages_and_unsubscribe_under_the_mount_point() {
    let mounted = free_port();
    let b = Broker::start(&format!("listener {mounted} 127.0.0.1\nmount_point site1/\n"));
    publish_ok(b.port, "mqttv311", &["-t", "site1/r", "-m", "kept", "-r", "-q", "1"]);
    let got = Sub::start(mounted, "mqttv311", &["-t", "r", "-v", "-C", "1", "-W", "10"]).finish();
    let topic = if is_mosquitto() { "site1/r" } else { "r" };
    assert_eq!(got.messages, [format!("{topic} kept")], "{got:?}");
    if is_mosquitto() {
        return;
    }
    // Subscribe and unsubscribe on one connection: the UNSUBACK, then no
    // message (mosquitto_sub -U unsubscribes right after subscribing).
    let sub = Sub::start_until(mounted, "mqttv311", &["-t", "u/#", "-U", "u/#", "-v", "-W", "3"], "received UNSUBACK");
    publish_ok(b.port, "mqttv311", &["-t", "site1/u/1", "-m", "late"]);
    let out = sub.finish();
    assert!(out.messages.is_empty(), "unsubscribed, yet got {:?}", out.messages);
}
