//! `cluster_follower_mode proxy` with three nodes on one host, each with
//! its own ports (the layout of scripts/demo-cluster.sh): a follower
//! forwards a client to the leader's listener of the same kind, plain or
//! TLS, never to itself; clients forwarded while leadership moves find the
//! new leader. Real clients: mosquitto_pub / mosquitto_sub and rumqttc.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{ctl, Cluster};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Open descriptors of a process (Linux /proc).
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn pub_plain(port: u16, topic: &str, msg: &str) -> (Option<i32>, String) {
    let (code, _, err) = common::run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            msg,
            "-q",
            "1",
        ]),
        Duration::from_secs(10),
    );
    (code, err)
}

#[test]
fn followers_forward_plain_and_tls_clients_to_the_leader() {
    let tls =
        format!("listener {{tls}} 127.0.0.1\ncertfile {}\nkeyfile {}\n", fixture("server.pem"), fixture("server.key"));
    let c = Cluster::start_mode("proxy", &tls);
    let leader = c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let f: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // A subscriber through one follower, a plain and a TLS publisher
    // through the other.
    let sub_dir = common::tempdir();
    let sub_out = std::fs::File::create(sub_dir.path().join("out")).unwrap();
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.mqtt[f[0]].to_string(),
            "-t",
            "px/#",
            "-v",
            "-q",
            "1",
            "-C",
            "2",
            "-W",
            "20",
        ])
        .stdout(sub_out)
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    // The subscription is in place once the leader has seen the client.
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && !c.log(leader).contains("forwarded by") {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = pub_plain(c.mqtt[f[1]], "px/plain", "through-follower");
    assert_eq!(code, Some(0), "plain publish through a follower failed: {err}\n{}", c.logs());
    let (code, _, err) = common::run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "localhost",
            "-p",
            &c.tls[f[1]].to_string(),
            "--cafile",
            &fixture("ca.pem"),
            "-t",
            "px/tls",
            "-m",
            "sealed",
            "-q",
            "1",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "TLS publish through a follower failed: {err}\n{}", c.logs());
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = sub.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = sub.kill();
            let _ = sub.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let got = std::fs::read_to_string(sub_dir.path().join("out")).unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "subscriber did not get two messages: {got:?}\n{}", c.logs());
    assert!(got.contains("px/plain through-follower") && got.contains("px/tls sealed"), "{got:?}");
    // Each forwarded client reached the leader once, named by its own
    // address; no follower forwarded to itself.
    let forwarded = c.log(leader).matches("forwarded by").count();
    assert!((3..=4).contains(&forwarded), "{forwarded} forwarded connections at the leader\n{}", c.logs());
    for &i in &f {
        assert!(!c.log(i).contains("forwarded by"), "follower {} served a forwarded client\n{}", i + 1, c.logs());
        assert!(!c.log(i).contains("Too many open files"), "{}", c.logs());
    }
    for i in 0..3 {
        let pid = c.pid(i).unwrap();
        assert!(fds(pid) < 64, "node {} holds {} descriptors", i + 1, fds(pid));
    }
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// Read the subscriber's events until a PUBLISH with `payload` arrives
/// (rumqttc reconnects on the next poll after an error).
fn wait_for(conn: &mut rumqttc::Connection, payload: &[u8], within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if &p.payload[..] == payload => return true,
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            _ => {}
        }
    }
    false
}

#[test]
fn forwarded_clients_follow_a_leadership_change() {
    let pwdir = common::tempdir();
    let pw = common::password_file(pwdir.path(), &[("admin", "secret")]);
    let extra = format!("password_file {}\nadmin_listener {{admin}} 127.0.0.1\n", pw.display());
    let c = Cluster::start_mode("proxy", &extra);
    let old = c.leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let f: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    // A persistent QoS 1 subscriber, forwarded by follower f[0].
    let (client, mut conn) = Client::new(options("px-sub", c.mqtt[f[0]]), 16);
    client.subscribe("px/move", QoS::AtLeastOnce).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut subscribed = false;
    while !subscribed && Instant::now() < end {
        subscribed =
            matches!(conn.recv_timeout(Duration::from_millis(200)), Ok(Ok(Event::Incoming(Packet::SubAck(_)))));
    }
    assert!(subscribed, "no SUBACK through the follower\n{}", c.logs());
    let (code, err) = pub_plain(c.mqtt[f[1]], "px/move", "before");
    assert_eq!(code, Some(0), "{err}\n{}", c.logs());
    assert!(wait_for(&mut conn, b"before", Duration::from_secs(10)), "first message missing\n{}", c.logs());
    // Leadership moves to the other follower; the request goes to a
    // follower's admin listener, which names the leader's.
    let (ok, out) = ctl(c.admin[f[0]], &["transfer-leader", &(f[1] + 1).to_string()]);
    assert!(ok, "{out}\n{}", c.logs());
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && c.leader(Duration::from_millis(200)) != Some(f[1]) {}
    assert_eq!(c.leader(Duration::from_millis(500)), Some(f[1]), "leadership did not move\n{}", c.logs());
    // Published through the old leader, now a follower that forwards.
    let (code, err) = pub_plain(c.mqtt[old], "px/move", "after");
    assert_eq!(code, Some(0), "{err}\n{}", c.logs());
    assert!(
        wait_for(&mut conn, b"after", Duration::from_secs(15)),
        "the forwarded subscriber did not get the message after the change\n{}",
        c.logs()
    );
    assert!(c.log(f[1]).contains("forwarded by"), "{}", c.logs());
    let _ = client.disconnect();
}
