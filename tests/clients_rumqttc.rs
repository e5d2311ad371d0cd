//! MQTT 3.1.1 behaviour seen through a real third-party client: rumqttc's
//! v4 API. Each test starts its own broker (see `common::Broker`).
//!
//! Run against Mosquitto: `MIDGE_TEST_BROKER=mosquitto cargo test --test clients_rumqttc`.

mod common;

use std::time::{Duration, Instant};

use common::v4::{opts, text, V4};
use common::{Broker, Raw, ReadOutcome};
use rumqttc::{ConnectReturnCode, ConnectionError, LastWill, QoS, SubscribeReasonCode};

/// Runs a test body on a fresh current-thread runtime, bounded to 60 s.
fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if tokio::time::timeout(Duration::from_secs(60), f).await.is_err() {
            panic!("test body did not finish within 60 s");
        }
    })
}

/// Every byte value, so payload equality also checks binary transparency.
fn binary_payload(tag: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.push(tag);
    v
}

#[test]
fn connect_gets_connack_accepted_without_session() {
    let b = Broker::start("");
    run(async {
        let (c, ack) = V4::connect(b.port, "c1", true).await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        assert!(!ack.session_present, "clean session must not report a session");
        c.disconnect().await;
    });
}

async fn round_trip(port: u16, pub_qos: u8, sub_qos: u8) {
    let topic = format!("rt/{pub_qos}/{sub_qos}");
    let (mut sub, _) = V4::connect(port, &format!("sub{pub_qos}{sub_qos}"), true).await;
    let ack = sub.subscribe(&topic, sub_qos).await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(common::v4::qos(sub_qos))]);
    let (mut publ, _) = V4::connect(port, &format!("pub{pub_qos}{sub_qos}"), true).await;
    let payload = binary_payload(pub_qos);
    publ.publish(&topic, pub_qos, false, payload.clone()).await;
    let m = sub.recv().await;
    assert_eq!(m.topic, topic);
    assert_eq!(&m.payload[..], &payload[..], "payload must arrive byte for byte");
    assert_eq!(m.qos, common::v4::qos(pub_qos.min(sub_qos)), "delivered QoS is min(publish, subscription)");
    assert!(!m.retain);
    assert!(!m.dup);
    // Exactly once: nothing more.
    sub.expect_nothing(Duration::from_millis(500)).await;
}

#[test]
fn qos0_round_trip() {
    let b = Broker::start("");
    run(round_trip(b.port, 0, 2));
}

#[test]
fn qos1_round_trip() {
    let b = Broker::start("");
    run(round_trip(b.port, 1, 2));
}

#[test]
fn qos2_round_trip() {
    let b = Broker::start("");
    run(round_trip(b.port, 2, 2));
}

#[test]
fn qos_is_downgraded_to_subscription_qos() {
    let b = Broker::start("");
    run(async {
        round_trip(b.port, 2, 0).await;
        round_trip(b.port, 2, 1).await;
        round_trip(b.port, 1, 0).await;
    });
}

#[test]
fn retained_message_delivered_replaced_and_cleared() {
    let b = Broker::start("");
    run(async {
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        p.publish("ret/t", 1, true, "first").await;

        let (mut s1, _) = V4::connect(b.port, "s1", true).await;
        s1.subscribe("ret/t", 1).await;
        let m = s1.recv().await;
        assert_eq!(text(&m), "first");
        assert!(m.retain, "a retained message sent because of a new subscription has RETAIN=1");

        // Replace it; the live copy to s1 has RETAIN=0 [MQTT-3.3.1-9].
        p.publish("ret/t", 1, true, "second").await;
        let live = s1.recv().await;
        assert_eq!(text(&live), "second");
        assert!(!live.retain, "live delivery of a retained publish must have RETAIN=0 in 3.1.1");

        let (mut s2, _) = V4::connect(b.port, "s2", true).await;
        s2.subscribe("ret/#", 1).await;
        let got = s2.collect_for(Duration::from_millis(700)).await;
        assert_eq!(got.len(), 1, "only the latest retained message: {got:?}");
        assert_eq!(text(&got[0]), "second");
        assert!(got[0].retain);

        // Clear it with an empty retained payload.
        p.publish("ret/t", 1, true, "").await;
        let (mut s3, _) = V4::connect(b.port, "s3", true).await;
        s3.subscribe("ret/t", 1).await;
        s3.expect_nothing(Duration::from_millis(700)).await;
    });
}

#[test]
fn wildcards_plus_and_hash() {
    let b = Broker::start("");
    run(async {
        let (mut plus, _) = V4::connect(b.port, "plus", true).await;
        plus.subscribe("w/+/x", 0).await;
        let (mut hash, _) = V4::connect(b.port, "hash", true).await;
        hash.subscribe("w/#", 0).await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        for t in ["w/a/x", "w/b/y", "w/a/x/z", "other/a/x", "w", "w//x"] {
            p.publish(t, 1, false, t).await;
        }
        let mut pt: Vec<String> =
            plus.collect_for(Duration::from_millis(800)).await.iter().map(|m| m.topic.clone()).collect();
        pt.sort();
        assert_eq!(pt, vec!["w//x", "w/a/x"], "`+` matches exactly one (possibly empty) level");
        let mut ht: Vec<String> =
            hash.collect_for(Duration::from_millis(300)).await.iter().map(|m| m.topic.clone()).collect();
        ht.sort();
        assert_eq!(ht, vec!["w", "w//x", "w/a/x", "w/a/x/z", "w/b/y"], "`#` matches the parent and every level below");
    });
}

#[test]
fn sys_broker_version_published() {
    let b = Broker::start("sys_interval 1");
    run(async {
        let (mut s, _) = V4::connect(b.port, "sys", true).await;
        s.subscribe("$SYS/#", 0).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut topics = Vec::new();
        while Instant::now() < deadline {
            for m in s.collect_for(Duration::from_millis(500)).await {
                if m.topic == "$SYS/broker/version" {
                    let v = text(&m);
                    assert!(v.contains("version"), "unexpected $SYS/broker/version payload {v:?}");
                    return;
                }
                topics.push(m.topic);
            }
        }
        panic!("no $SYS/broker/version within 5 s; got topics {topics:?}");
    });
}

#[test]
fn hash_subscription_does_not_receive_sys_topics() {
    // [MQTT-4.7.2-1] filters starting with a wildcard do not match `$` topics.
    let b = Broker::start("sys_interval 1");
    run(async {
        let (mut s, _) = V4::connect(b.port, "all", true).await;
        s.subscribe("#", 0).await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        p.publish("plain/topic", 0, false, "x").await;
        let got = s.collect_for(Duration::from_millis(2500)).await;
        let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, vec!["plain/topic"], "`#` must see the plain message and no $SYS topic");
        // `+/broker/...` must not match either.
        s.subscribe("+/broker/#", 0).await;
        s.expect_nothing(Duration::from_millis(1500)).await;
    });
}

#[test]
fn persistent_session_queues_qos1_while_offline() {
    let b = Broker::start("");
    run(async {
        let (mut c, ack) = V4::connect(b.port, "persist", false).await;
        assert!(!ack.session_present);
        c.subscribe("ps/t", 1).await;
        c.disconnect().await;

        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        for i in 0..5 {
            p.publish("ps/t", 1, false, format!("m{i}")).await;
        }

        let (mut c, ack) = V4::connect(b.port, "persist", false).await;
        assert!(ack.session_present, "reconnect with clean_session=0 must find the session");
        let got: Vec<String> = c.recv_n(5).await.iter().map(text).collect();
        assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4"], "queued messages in order");
        c.expect_nothing(Duration::from_millis(500)).await;
        // Subscription survived too: a live message still arrives.
        p.publish("ps/t", 1, false, "live").await;
        assert_eq!(text(&c.recv().await), "live");
    });
}

#[test]
fn clean_session_discards_queued_messages() {
    let b = Broker::start("");
    run(async {
        let (mut c, _) = V4::connect(b.port, "cleaner", false).await;
        c.subscribe("cs/t", 1).await;
        c.disconnect().await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        for i in 0..3 {
            p.publish("cs/t", 1, false, format!("m{i}")).await;
        }
        let (mut c, ack) = V4::connect(b.port, "cleaner", true).await;
        assert!(!ack.session_present, "clean_session=1 must not resume the session");
        c.expect_nothing(Duration::from_millis(800)).await;
        c.disconnect().await;
        // And the old session is gone for good.
        let (mut c, ack) = V4::connect(b.port, "cleaner", false).await;
        assert!(!ack.session_present, "a clean session leaves nothing behind");
        c.expect_nothing(Duration::from_millis(500)).await;
    });
}

#[test]
fn offline_qos0_dropped_unless_queue_qos0_messages() {
    for (cfg, expect) in [("", vec!["q1"]), ("queue_qos0_messages true", vec!["q0", "q1"])] {
        let b = Broker::start(cfg);
        run(async {
            let (mut c, _) = V4::connect(b.port, "q0c", false).await;
            c.subscribe("q0/t", 1).await;
            c.disconnect().await;
            let (mut p, _) = V4::connect(b.port, "pub", true).await;
            p.publish("q0/t", 0, false, "q0").await;
            p.publish("q0/t", 1, false, "q1").await;
            let (mut c, ack) = V4::connect(b.port, "q0c", false).await;
            assert!(ack.session_present);
            let got: Vec<String> = c.collect_for(Duration::from_millis(1000)).await.iter().map(text).collect();
            assert_eq!(got, expect, "config {cfg:?}");
        });
    }
}

#[test]
fn max_queued_messages_bounds_offline_queue() {
    // Mosquitto keeps the first max_queued_messages and drops the rest.
    let b = Broker::start("max_queued_messages 3");
    run(async {
        let (mut c, _) = V4::connect(b.port, "mq", false).await;
        c.subscribe("mq/t", 1).await;
        c.disconnect().await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        for i in 0..8 {
            p.publish("mq/t", 1, false, format!("m{i}")).await;
        }
        let (mut c, _) = V4::connect(b.port, "mq", false).await;
        let got: Vec<String> = c.collect_for(Duration::from_millis(1500)).await.iter().map(text).collect();
        assert_eq!(got, vec!["m0", "m1", "m2"]);
    });
}

#[test]
fn unsubscribe_stops_delivery() {
    let b = Broker::start("");
    run(async {
        let (mut s, _) = V4::connect(b.port, "uns", true).await;
        s.subscribe("u/t", 1).await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        p.publish("u/t", 1, false, "before").await;
        assert_eq!(text(&s.recv().await), "before");
        s.unsubscribe("u/t").await;
        p.publish("u/t", 1, false, "after").await;
        s.expect_nothing(Duration::from_millis(700)).await;
    });
}

#[test]
fn keepalive_silent_client_is_disconnected() {
    // [MQTT-3.1.2-24] no control packet within 1.5 x keep alive -> closed.
    // MOSQUITTO QUIRK: Mosquitto 2.0.11 checks keep-alives on a coarse
    // timer and closes a silent keepalive-1 client after ~5.3 s (measured;
    // keepalive 5 -> ~12 s). midge is held to the spec's 1.5 s plus slack.
    let b = Broker::start("");
    let mut r = Raw::connect_v311(b.port, "ka", true, 1);
    let limit = if common::is_mosquitto() { Duration::from_secs(7) } else { Duration::from_millis(3000) };
    let took = r.expect_closed(limit + Duration::from_secs(1));
    assert!(took >= Duration::from_millis(1000), "closed too early: {took:?}");
    assert!(took <= limit, "closed too late: {took:?} (limit {limit:?})");
}

#[test]
fn keepalive_pinging_client_stays_connected() {
    let b = Broker::start("");
    let mut r = Raw::connect_v311(b.port, "ka2", true, 1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(500));
        r.send(&[0xC0, 0x00]);
        let p = r.expect_packet(Duration::from_secs(2));
        assert_eq!(p.bytes(), vec![0xD0, 0x00], "PINGRESP");
    }
    r.send(&[0xC0, 0x00]);
    assert_eq!(r.read(Duration::from_secs(2)), ReadOutcome::Packet(common::RawPacket { header: 0xD0, body: vec![] }));
}

fn will_opts(port: u16, id: &str) -> rumqttc::MqttOptions {
    let mut o = opts(port, id);
    o.set_last_will(LastWill::new("will/t", "gone", QoS::AtLeastOnce, false));
    o
}

#[test]
fn will_published_when_connection_drops() {
    let b = Broker::start("");
    run(async {
        let (mut w, _) = V4::connect(b.port, "watcher", true).await;
        w.subscribe("will/#", 1).await;
        let (dying, _) = V4::connect_with(will_opts(b.port, "dying")).await;
        w.expect_nothing(Duration::from_millis(300)).await;
        drop(dying); // TCP closed without DISCONNECT
        let m = w.recv().await;
        assert_eq!(m.topic, "will/t");
        assert_eq!(text(&m), "gone");
        assert_eq!(m.qos, QoS::AtLeastOnce);
    });
}

#[test]
fn will_not_published_after_disconnect() {
    let b = Broker::start("");
    run(async {
        let (mut w, _) = V4::connect(b.port, "watcher", true).await;
        w.subscribe("will/#", 1).await;
        let (polite, _) = V4::connect_with(will_opts(b.port, "polite")).await;
        polite.disconnect().await;
        w.expect_nothing(Duration::from_millis(1500)).await;
    });
}

#[test]
fn will_published_on_keepalive_timeout() {
    let b = Broker::start("");
    run(async {
        let (mut w, _) = V4::connect(b.port, "watcher", true).await;
        w.subscribe("will/#", 0).await;
        // Raw CONNECT with will flag, keepalive 1, then silence.
        let mut body = common::mqtt_str("MQTT");
        body.extend([4, 0x02 | 0x04, 0, 1]);
        body.extend(common::mqtt_str("kawill"));
        body.extend(common::mqtt_str("will/ka"));
        body.extend(common::mqtt_str("timeout"));
        let mut r = Raw::connect(b.port);
        r.send(&common::packet(0x10, &body));
        assert_eq!(r.expect_packet(Duration::from_secs(5)).bytes(), vec![0x20, 2, 0, 0]);
        let m = w.recv().await;
        assert_eq!((m.topic.as_str(), text(&m).as_str()), ("will/ka", "timeout"));
    });
}

#[test]
fn session_takeover_disconnects_first_client() {
    // [MQTT-3.1.4-2] a second CONNECT with the same client id closes the first.
    let b = Broker::start("");
    run(async {
        let (mut first, _) = V4::connect(b.port, "same-id", true).await;
        first.subscribe("take/t", 1).await;
        let (mut second, _) = V4::connect(b.port, "same-id", true).await;
        let err = first.expect_error(Duration::from_secs(5)).await;
        assert!(
            matches!(err, ConnectionError::Io(_) | ConnectionError::MqttState(_)),
            "first client should see its connection closed, got {err:?}"
        );
        // The new connection works.
        second.subscribe("take/t", 1).await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        p.publish("take/t", 1, false, "hi").await;
        assert_eq!(text(&second.recv().await), "hi");
    });
}

#[test]
fn takeover_keeps_persistent_session() {
    let b = Broker::start("");
    run(async {
        let (mut first, _) = V4::connect(b.port, "keep", false).await;
        first.subscribe("keep/t", 1).await;
        let (mut second, ack) = V4::connect(b.port, "keep", false).await;
        assert!(ack.session_present, "taking over a persistent session resumes it");
        first.expect_error(Duration::from_secs(5)).await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        p.publish("keep/t", 1, false, "still subscribed").await;
        assert_eq!(text(&second.recv().await), "still subscribed");
    });
}

#[test]
fn connect_refused_bad_credentials_v4() {
    let dir = common::tempdir();
    common::password_file(dir.path(), &[("alice", "secret")]);
    let b = Broker::start_in(dir, "allow_anonymous false\npassword_file {dir}/passwd");
    run(async {
        let mut o = opts(b.port, "bad");
        o.set_credentials("alice", "wrong");
        let (client, ev) = rumqttc::AsyncClient::new(o, 10);
        let mut c = V4 { client, ev, inbox: Default::default(), id: "bad".into() };
        match c.try_connect().await {
            Err(ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(code, ConnectReturnCode::NotAuthorized, "3.1.1 return code 5");
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        let mut o = opts(b.port, "good");
        o.set_credentials("alice", "secret");
        let (c, ack) = V4::connect_with(o).await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        c.disconnect().await;
    });
}

#[test]
fn retained_will_is_kept_for_later_subscribers() {
    let b = Broker::start("");
    run(async {
        let mut o = opts(b.port, "rwill");
        o.set_last_will(LastWill::new("rwill/status", "offline", QoS::AtLeastOnce, true));
        let (c, _) = V4::connect_with(o).await;
        drop(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut late, _) = V4::connect(b.port, "late", true).await;
        late.subscribe("rwill/#", 1).await;
        let m = late.recv().await;
        assert_eq!((m.topic.as_str(), text(&m).as_str(), m.retain), ("rwill/status", "offline", true));
    });
}

#[test]
fn qos1_messages_arrive_in_order() {
    // [MQTT-4.6.0-6] ordered topic: messages are delivered in publish order.
    let b = Broker::start("");
    run(async {
        let (mut s, _) = V4::connect(b.port, "ord-sub", true).await;
        s.subscribe("ord/t", 1).await;
        let (mut p, _) = V4::connect(b.port, "ord-pub", true).await;
        // Pipelined: 20 requests queued at a time, then their PUBACKs.
        for chunk in 0..5 {
            for i in chunk * 20..(chunk + 1) * 20 {
                p.client.publish("ord/t", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
            }
            for _ in 0..20 {
                p.until("PUBACK", |e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(()))
                    .await;
            }
        }
        let got: Vec<String> = s.recv_n(100).await.iter().map(text).collect();
        assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    });
}

#[test]
fn persistent_client_expiration_option_accepted() {
    // Mosquitto's unit is hours or more, so only acceptance and the normal
    // persistent-session behaviour inside the window are checked.
    let b = Broker::start("persistent_client_expiration 1h");
    run(async {
        let (mut c, _) = V4::connect(b.port, "pce", false).await;
        c.subscribe("pce/t", 1).await;
        c.disconnect().await;
        let (mut p, _) = V4::connect(b.port, "pub", true).await;
        p.publish("pce/t", 1, false, "queued").await;
        let (mut c, ack) = V4::connect(b.port, "pce", false).await;
        assert!(ack.session_present);
        assert_eq!(text(&c.recv().await), "queued");
    });
}
