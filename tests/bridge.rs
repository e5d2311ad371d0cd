//! Bridges (issue 19) against a real Mosquitto 2.0 as the upstream broker:
//! both directions at QoS 0/1/2 with prefixes, MQTT 3.1.1 and 5.0, TLS with
//! a client certificate, the upstream down under load (the queue fills to
//! its bound and everything queued arrives when it is back), and three
//! midge nodes whose leader is SIGKILLed while QoS 1 publishers run:
//! every message midge acknowledged reaches the upstream.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{health_json, Cluster};
use common::mosquitto_sub::publish_ok;
use common::upstream::{Upstream, Watch};
use common::{free_port, Broker};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// Polls `f` until it is true or `within` passed.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The `/health` entry of bridge `name`.
fn bridge_health(port: u16, name: &str) -> Option<serde_json::Value> {
    let j = health_json(port)?;
    j["bridges"].as_array()?.iter().find(|b| b["name"] == name).cloned()
}

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Both directions, QoS 0/1/2, prefixes, a `both` line that must not echo,
/// the local state notification and the upstream's will/birth.
fn both_directions(version: &str) {
    let mut up = Upstream::start("");
    let up_watch =
        Watch::start(up.port, &["-t", "site7/#", "-t", "echo/#", "-t", "$SYS/broker/connection/#", "-q", "2"]);
    let health = free_port();
    let midge = Broker::start(&format!(
        "health_listener {health} 127.0.0.1\n\
         connection cloud\n\
         address 127.0.0.1:{}\n\
         bridge_protocol_version {version}\n\
         restart_timeout 1\n\
         topic sensors/# out 2 \"\" site7/\n\
         topic cmd/# in 2 plant/ hq/\n\
         topic echo/# both 1\n",
        up.port
    ));
    let local =
        Watch::start(midge.port, &["-t", "plant/#", "-t", "echo/#", "-t", "$SYS/broker/connection/#", "-q", "2"]);
    // Connected: the local state (QoS 1; retained, or live if it came
    // after the subscription), the upstream's birth.
    let up_state = |x: &String| x.starts_with("$SYS/broker/connection/cloud/state 1 ") && x.ends_with(" 1");
    let l = local.wait(Duration::from_secs(10), |l| l.iter().any(up_state));
    assert!(l.iter().any(up_state), "local state: {l:?}\n{}", midge.log());
    let u = up_watch
        .wait(Duration::from_secs(5), |l| l.iter().any(|x| x.starts_with("$SYS/broker/connection/cloud/state")));
    assert!(u.iter().any(up_state), "{u:?}");
    assert!(
        eventually(Duration::from_secs(5), || up.log().contains("hq/cmd/#")),
        "no upstream SUBSCRIBE:\n{}",
        up.log()
    );
    if version == "mqttv311" {
        assert!(up.log().contains("New bridge connected"), "try_private: {}", up.log());
    }
    let h = bridge_health(health, "cloud").expect("bridge in /health");
    assert_eq!(h["connected"], true, "{h}");

    // Out: the message's QoS capped by the line's (2), topic remapped.
    for q in 0..=2 {
        publish_ok(
            midge.port,
            "mqttv311",
            &["-t", &format!("sensors/q{q}"), "-m", &format!("out{q}"), "-q", &q.to_string()],
        );
    }
    let want: Vec<String> = (0..=2).map(|q| format!("site7/sensors/q{q} {q} 0 out{q}")).collect();
    let u = up_watch.wait(Duration::from_secs(10), |l| want.iter().all(|w| l.contains(w)));
    for w in &want {
        assert_eq!(count(&u, w), 1, "{w} upstream: {u:?}\n{}", midge.log());
    }
    // In: upstream hq/cmd/x -> local plant/cmd/x, at the QoS it arrived with.
    for q in 0..=2 {
        publish_ok(
            up.port,
            "mqttv311",
            &["-t", &format!("hq/cmd/q{q}"), "-m", &format!("in{q}"), "-q", &q.to_string()],
        );
    }
    let want: Vec<String> = (0..=2).map(|q| format!("plant/cmd/q{q} {q} 0 in{q}")).collect();
    let l = local.wait(Duration::from_secs(10), |l| want.iter().all(|w| l.contains(w)));
    for w in &want {
        assert_eq!(count(&l, w), 1, "{w} locally: {l:?}\n{}", midge.log());
    }
    // Both: each side's message reaches the other once and is not echoed.
    publish_ok(midge.port, "mqttv311", &["-t", "echo/local", "-m", "L", "-q", "1"]);
    publish_ok(up.port, "mqttv311", &["-t", "echo/remote", "-m", "R", "-q", "1"]);
    let u = up_watch.wait(Duration::from_secs(10), |l| l.iter().any(|x| x == "echo/local 1 0 L"));
    let l = local.wait(Duration::from_secs(10), |l| l.iter().any(|x| x == "echo/remote 1 0 R"));
    std::thread::sleep(Duration::from_millis(500));
    let (u, l) = (up_watch.lines().len().max(u.len()), local.lines().len().max(l.len()));
    let (u_lines, l_lines) = (up_watch.lines(), local.lines());
    assert_eq!((count(&u_lines, "echo/local 1 0 L"), count(&u_lines, "echo/remote 1 0 R")), (1, 1), "{u} {u_lines:?}");
    assert_eq!((count(&l_lines, "echo/local 1 0 L"), count(&l_lines, "echo/remote 1 0 R")), (1, 1), "{l} {l_lines:?}");
    // A retained local message is retained upstream.
    publish_ok(midge.port, "mqttv311", &["-t", "sensors/kept", "-m", "R1", "-q", "1", "-r"]);
    assert!(
        eventually(Duration::from_secs(10), || {
            let (_, out, _) = common::run_with_timeout(
                std::process::Command::new("mosquitto_sub").args([
                    "-p",
                    &up.port.to_string(),
                    "-t",
                    "site7/sensors/kept",
                    "-C",
                    "1",
                    "-W",
                    "2",
                    "-F",
                    "%t %r %p",
                ]),
                Duration::from_secs(5),
            );
            out.trim() == "site7/sensors/kept 1 R1"
        }),
        "retained upstream"
    );
    // Nothing left in the queue, nothing dropped.
    assert!(eventually(Duration::from_secs(5), || bridge_health(health, "cloud").is_some_and(|h| h["queued"] == 0)));
    assert_eq!(bridge_health(health, "cloud").unwrap()["dropped"], 0);
    // An upstream that restarts without its retained store gets the
    // retained message again when the bridge reconnects (as Mosquitto's).
    up.stop();
    up.restart();
    assert!(
        eventually(Duration::from_secs(15), || {
            let (_, out, _) = common::run_with_timeout(
                std::process::Command::new("mosquitto_sub").args([
                    "-p",
                    &up.port.to_string(),
                    "-t",
                    "site7/sensors/kept",
                    "-C",
                    "1",
                    "-W",
                    "1",
                    "-F",
                    "%t %r %p",
                ]),
                Duration::from_secs(5),
            );
            out.trim() == "site7/sensors/kept 1 R1"
        }),
        "retained again after the upstream restarted:\n{}",
        midge.log()
    );
}

#[test]
fn both_directions_qos_0_1_2_with_prefixes_mqtt311() {
    both_directions("mqttv311");
}

#[test]
fn both_directions_qos_0_1_2_with_prefixes_mqtt5() {
    both_directions("mqttv50");
}

/// TLS with a client certificate (the upstream requires one); a bridge
/// with the wrong CA does not connect, says so once, and local clients
/// are unaffected.
#[test]
fn tls_upstream_with_client_certificate() {
    let tls_port = free_port();
    let up = Upstream::start(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {{dir}}/ca.pem\ncertfile {{dir}}/server.pem\nkeyfile {{dir}}/server.key\nrequire_certificate true\n"
    ));
    let up_watch = Watch::start(up.port, &["-t", "site7/#", "-q", "1"]);
    let midge = Broker::start(&format!(
        "connection cloud\naddress 127.0.0.1:{tls_port}\ntopic sensors/# out 1 \"\" site7/\nrestart_timeout 1\n\
         bridge_cafile {FIXTURES}/ca.pem\nbridge_certfile {FIXTURES}/client.pem\nbridge_keyfile {FIXTURES}/client.key\n\
         connection wrongca\naddress 127.0.0.1:{tls_port}\ntopic sensors/# out 1 \"\" other/\nrestart_timeout 1\n\
         bridge_cafile {FIXTURES}/other-ca.pem\n"
    ));
    assert!(
        eventually(Duration::from_secs(10), || midge.log().contains("Bridge cloud connected to 127.0.0.1:")),
        "{}\n{}",
        midge.log(),
        up.log()
    );
    assert!(midge.log().contains("(TLS)"));
    publish_ok(midge.port, "mqttv311", &["-t", "sensors/t", "-m", "over-tls", "-q", "1"]);
    let u = up_watch.wait(Duration::from_secs(10), |l| l.iter().any(|x| x == "site7/sensors/t 1 0 over-tls"));
    assert_eq!(count(&u, "site7/sensors/t 1 0 over-tls"), 1, "{u:?}\n{}", midge.log());
    // Several restart_timeouts later: one line for the failing bridge.
    std::thread::sleep(Duration::from_secs(3));
    let log = midge.log();
    let failures = log.matches("Bridge wrongca: cannot connect").count();
    assert_eq!(failures, 1, "logged once per state change:\n{log}");
    assert!(log.contains("TLS"), "{log}");
    assert!(!log.contains("Bridge wrongca connected"), "{log}");
    // Its local state is 0; the good bridge's is 1.
    let (_, out, _) = common::run_with_timeout(
        std::process::Command::new("mosquitto_sub").args([
            "-p",
            &midge.port.to_string(),
            "-t",
            "$SYS/broker/connection/+/state",
            "-C",
            "2",
            "-W",
            "3",
            "-v",
        ]),
        Duration::from_secs(5),
    );
    let mut states: Vec<&str> = out.lines().collect();
    states.sort();
    assert_eq!(states, ["$SYS/broker/connection/cloud/state 1", "$SYS/broker/connection/wrongca/state 0"]);
}

/// An upstream that refuses the bridge (wrong password) and an address
/// where nothing listens: retried, each logged once however many attempts,
/// the local state "0", local clients unaffected and the message kept in
/// the queue; a bridge whose first address is down connects to its second.
#[test]
fn refusing_or_unreachable_upstream_is_retried_and_logged_once() {
    let pw_dir = common::tempdir();
    let passwd = common::password_file(pw_dir.path(), &[("gw", "right")]);
    let up = Upstream::start(&format!("allow_anonymous false\npassword_file {}\n", passwd.display()));
    let up_watch_port = up.port;
    let dead = free_port();
    let health = free_port();
    let midge = Broker::start(&format!(
        "health_listener {health} 127.0.0.1\n\
         connection refused\naddress 127.0.0.1:{dead} 127.0.0.1:{up}\ntopic a/# out 1\nrestart_timeout 1\n\
         remote_username gw\nremote_password wrong\n\
         connection second\naddress 127.0.0.1:{dead} 127.0.0.1:{up}\ntopic b/# out 1\nrestart_timeout 1\n\
         remote_username gw\nremote_password right\n",
        up = up.port
    ));
    let watch = Watch::start(up_watch_port, &["-t", "b/#", "-q", "1", "-u", "gw", "-P", "right"]);
    assert!(
        eventually(Duration::from_secs(15), || bridge_health(health, "second").is_some_and(|h| h["connected"] == true)),
        "{}",
        midge.log()
    );
    // Local clients are unaffected; the refused bridge keeps its message.
    let local = Watch::start(midge.port, &["-t", "a/#", "-q", "1"]);
    publish_ok(midge.port, "mqttv311", &["-t", "a/1", "-m", "kept", "-q", "1"]);
    publish_ok(midge.port, "mqttv311", &["-t", "b/1", "-m", "sent", "-q", "1"]);
    assert_eq!(local.wait(Duration::from_secs(5), |l| !l.is_empty()), ["a/1 1 0 kept"]);
    assert_eq!(watch.wait(Duration::from_secs(10), |l| !l.is_empty()), ["b/1 1 0 sent"]);
    std::thread::sleep(Duration::from_secs(4));
    let log = midge.log();
    let refused = format!("Bridge refused: cannot connect to 127.0.0.1:{}: refused (CONNACK code 0x05)", up.port);
    let unreachable = format!("Bridge refused: cannot connect to 127.0.0.1:{dead}: Connection refused");
    assert_eq!(log.matches(&refused).count(), 1, "{log}");
    assert_eq!(log.matches(&unreachable).count(), 1, "{log}");
    assert!(up.log().matches("Sending CONNACK to 127.0.0.1 (0, 5)").count() >= 2, "retried: {}", up.log());
    let h = bridge_health(health, "refused").unwrap();
    assert_eq!((h["connected"].as_bool(), h["queued"].as_u64()), (Some(false), Some(1)), "{h}");
    let (_, out, _) = common::run_with_timeout(
        std::process::Command::new("mosquitto_sub").args([
            "-p",
            &midge.port.to_string(),
            "-t",
            "$SYS/broker/connection/refused/state",
            "-C",
            "1",
            "-W",
            "3",
        ]),
        Duration::from_secs(5),
    );
    assert_eq!(out.trim(), "0");
}

/// `notifications false` with a `notification_topic`: nothing about the
/// bridge's state upstream (no will, no birth), the local state on that
/// topic: "1" when connected, "0" when the upstream goes away.
#[test]
fn notifications_false_keeps_the_state_local() {
    let mut up = Upstream::start("");
    let up_watch = Watch::start(up.port, &["-t", "#", "-t", "$SYS/broker/connection/#", "-q", "1"]);
    let midge = Broker::start(&format!(
        "connection cloud\naddress 127.0.0.1:{}\ntopic up/# out 1\nrestart_timeout 1\nnotifications false\n\
         notification_topic bridges/gw7/state\n",
        up.port
    ));
    let local = Watch::start(midge.port, &["-t", "bridges/#", "-q", "1"]);
    let state = |l: &[String]| {
        l.iter()
            .rev()
            .find(|x| x.starts_with("bridges/gw7/state "))
            .and_then(|x| x.rsplit(' ').next().map(str::to_string))
    };
    let l = local.wait(Duration::from_secs(10), |l| state(l).as_deref() == Some("1"));
    assert_eq!(state(&l).as_deref(), Some("1"), "{l:?}\n{}", midge.log());
    publish_ok(midge.port, "mqttv311", &["-t", "up/x", "-m", "hello", "-q", "1"]);
    let u = up_watch.wait(Duration::from_secs(10), |l| l.iter().any(|x| x == "up/x 1 0 hello"));
    assert_eq!(u, ["up/x 1 0 hello"], "only the message upstream, no state");
    up.stop();
    let l = local.wait(Duration::from_secs(10), |l| state(l).as_deref() == Some("0"));
    assert_eq!(state(&l).as_deref(), Some("0"), "{l:?}\n{}", midge.log());
    assert!(!up_watch.stop().iter().any(|x| x.contains("state")));
}

/// An upstream that stops answering with its connection open (SIGSTOP)
/// is found out by the keep alive (`keepalive_interval 5`: within 1.5
/// times it), and the message sent into the silence arrives after it
/// answers again.
#[test]
fn silent_upstream_found_by_keepalive() {
    let up = Upstream::start("");
    let up_watch = Watch::start(up.port, &["-t", "up/#", "-q", "1"]);
    let midge = Broker::start(&format!(
        "connection cloud\naddress 127.0.0.1:{}\ntopic up/# out 1\nrestart_timeout 1\nkeepalive_interval 5\n",
        up.port
    ));
    assert!(eventually(Duration::from_secs(10), || midge.log().contains("Bridge cloud connected")));
    up.signal("-STOP");
    let t = Instant::now();
    publish_ok(midge.port, "mqttv311", &["-t", "up/x", "-m", "into-the-silence", "-q", "1"]);
    assert!(
        eventually(Duration::from_secs(12), || midge.log().contains("lost: no answer within the keep alive")),
        "{}",
        midge.log()
    );
    let found = t.elapsed();
    assert!(found < Duration::from_secs(9), "found out after {found:?}");
    up.signal("-CONT");
    let u = up_watch.wait(Duration::from_secs(20), |l| l.iter().any(|x| x == "up/x 1 0 into-the-silence"));
    assert!(u.iter().any(|x| x == "up/x 1 0 into-the-silence"), "{u:?}\n{}", midge.log());
    println!("silent upstream found out after {found:?}");
}

/// midge bridging to midge: the upstream midge refuses Mosquitto's bridge
/// protocol level (0x84) with CONNACK 1, and the bridge tries again with
/// plain MQTT 3.1.1 (try_private's fallback), once.
#[test]
fn try_private_falls_back_when_the_upstream_refuses_it() {
    let upstream = Broker::start("persistence false\n");
    let up_watch = Watch::start(upstream.port, &["-t", "up/#", "-q", "1"]);
    let midge = Broker::start(&format!(
        "connection peer\naddress 127.0.0.1:{}\ntopic up/# out 1\nrestart_timeout 1\n",
        upstream.port
    ));
    publish_ok(midge.port, "mqttv311", &["-t", "up/x", "-m", "to-midge", "-q", "1"]);
    let u = up_watch.wait(Duration::from_secs(10), |l| !l.is_empty());
    assert_eq!(u, ["up/x 1 0 to-midge"], "{}\n{}", midge.log(), upstream.log());
    let log = midge.log();
    assert_eq!(log.matches("refused the bridge protocol level; trying plain MQTT 3.1.1").count(), 1, "{log}");
    assert_eq!(log.matches("Bridge peer connected").count(), 1, "{log}");
}

/// A QoS 1 publisher that counts what midge acknowledged: connects to the
/// first of `ports` that answers, publishes `payload` and waits for its
/// PUBACK; on any failure it reconnects (rotating through `ports`) and
/// sends the same message again.
struct Publisher {
    ports: Vec<u16>,
    next: usize,
    conn: Option<TcpStream>,
    pid: u16,
    id: String,
    reconnects: u32,
}

impl Publisher {
    fn new(ports: Vec<u16>, id: &str) -> Publisher {
        Publisher { ports, next: 0, conn: None, pid: 0, id: id.into(), reconnects: 0 }
    }

    fn connect(&mut self) -> Option<TcpStream> {
        let port = self.ports[self.next % self.ports.len()];
        self.next += 1;
        let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.set_nodelay(true).ok()?;
        s.write_all(&common::connect_v311(&self.id, true, 30)).ok()?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).ok()?;
        (ack[0] == 0x20 && ack[3] == 0).then_some(s)
    }

    /// Sends until acknowledged or `deadline`; true when acknowledged.
    fn publish(&mut self, topic: &str, payload: &str, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if self.conn.is_none() {
                self.conn = self.connect();
                if self.conn.is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                self.reconnects += 1;
            }
            self.pid = self.pid.wrapping_add(1).max(1);
            let s = self.conn.as_mut().unwrap();
            let mut ack = [0u8; 4];
            let ok = s.write_all(&common::publish_v311(topic, 1, false, self.pid, payload.as_bytes())).is_ok()
                && s.read_exact(&mut ack).is_ok()
                && ack == [0x40, 0x02, (self.pid >> 8) as u8, self.pid as u8];
            if ok {
                return true;
            }
            self.conn = None;
        }
        false
    }
}

/// The upstream is down while messages arrive: the queue fills to
/// bridge_max_queued_messages and no further, the drops are counted, the
/// failure is logged once, and everything queued arrives when the upstream
/// is back (its persistent subscriber finds them, in order).
#[test]
fn upstream_down_queue_bounded_then_delivered() {
    let down = Duration::from_secs(std::env::var("BRIDGE_DOWN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5));
    let mut up = Upstream::start("persistence true\npersistence_location {dir}/\n");
    // The persistent session that will collect the messages.
    drop(Watch::start(up.port, &["-t", "site/#", "-q", "1", "-c", "-i", "collector"]).stop());
    let health = free_port();
    let midge = Broker::start(&format!(
        "health_listener {health} 127.0.0.1\nsys_interval 1\nconnection cloud\naddress 127.0.0.1:{}\ntopic load/# out 1 \"\" site/\n\
         restart_timeout 1\nbridge_max_queued_messages 50\n",
        up.port
    ));
    assert!(
        eventually(Duration::from_secs(10), || bridge_health(health, "cloud").is_some_and(|h| h["connected"] == true))
    );
    up.stop();
    assert!(
        eventually(Duration::from_secs(10), || bridge_health(health, "cloud").is_some_and(|h| h["connected"] == false))
    );
    let started = Instant::now();
    // Under load for the whole time it is down.
    let mut p = Publisher::new(vec![midge.port], "loader");
    for i in 0..80 {
        assert!(p.publish("load/x", &format!("m{i:03}"), Instant::now() + Duration::from_secs(10)), "message {i}");
        std::thread::sleep(down.saturating_sub(Duration::from_secs(2)) / 80);
    }
    let h = bridge_health(health, "cloud").unwrap();
    assert_eq!((h["queued"].as_u64(), h["dropped"].as_u64()), (Some(50), Some(30)), "{h}");
    // $SYS says the same (every second here).
    let sys = Watch::start(midge.port, &["-t", "$SYS/broker/bridge/cloud/+"]);
    // The last value of each (retained or live): "topic qos retain payload".
    let last = |l: &[String], t: &str| {
        l.iter().rev().find(|x| x.starts_with(t)).and_then(|x| x.rsplit(' ').next().map(str::to_string))
    };
    let ok = |l: &[String]| {
        last(l, "$SYS/broker/bridge/cloud/queued ").as_deref() == Some("50")
            && last(l, "$SYS/broker/bridge/cloud/dropped ").as_deref() == Some("30")
    };
    let got = sys.wait(Duration::from_secs(5), ok);
    assert!(ok(&got), "{got:?}");
    std::thread::sleep(down.saturating_sub(started.elapsed()));
    assert!(midge.log().contains("Outgoing messages are being dropped for bridge cloud"), "{}", midge.log());
    assert_eq!(midge.log().matches("Bridge cloud: cannot connect").count(), 1, "{}", midge.log());
    up.restart();
    assert!(
        eventually(Duration::from_secs(20), || bridge_health(health, "cloud").is_some_and(|h| h["queued"] == 0)),
        "{}",
        midge.log()
    );
    let w = Watch::start(up.port, &["-t", "site/#", "-q", "1", "-c", "-i", "collector"]);
    let got = w.wait(Duration::from_secs(10), |l| l.len() >= 50);
    let want: Vec<String> = (0..50).map(|i| format!("site/load/x 1 0 m{i:03}")).collect();
    assert_eq!(got, want, "the first 50, in order, once each");
    println!("upstream down {:?}: 80 published, 50 queued and delivered, 30 dropped", down.max(started.elapsed()));
}

/// Three nodes bridge to Mosquitto; three QoS 1 publishers run on the
/// cluster and a persistent subscriber on the upstream; the leader is
/// SIGKILLed three times (and started again). Every message midge
/// acknowledged reaches the upstream; duplicates are counted.
#[test]
fn failover_loses_no_acknowledged_message() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let up = Upstream::start("");
    let watch = Watch::start(up.port, &["-t", "site/#", "-q", "1", "-c", "-i", "collector"]);
    let mut c = Cluster::start_mode(
        "proxy",
        &format!("connection cloud\naddress 127.0.0.1:{}\ntopic load/# out 1 \"\" site/\nrestart_timeout 1\n", up.port),
    );
    let leader = c.leader(Duration::from_secs(30)).expect("a leader");
    assert!(eventually(Duration::from_secs(10), || bridge_health(c.health[leader], "cloud")
        .is_some_and(|h| h["connected"] == true)));
    let per_publisher = 400usize;
    let publishers = 3usize;
    let total = per_publisher * publishers;
    let kills = 3;
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..publishers)
        .map(|k| {
            let ports = c.mqtt.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut p = Publisher::new(ports, &format!("loader{k}"));
                p.next = k;
                let mut acked = Vec::new();
                for i in 0..per_publisher {
                    let payload = format!("p{k}-{i:04}");
                    if p.publish(&format!("load/{k}"), &payload, Instant::now() + Duration::from_secs(30)) {
                        acked.push(payload);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (acked, p.reconnects)
            })
        })
        .collect();
    let started = Instant::now();
    let mut failovers = Vec::new();
    let mut queued_at_kill = Vec::new();
    for k in 0..kills {
        // Let a share of the messages through, then kill the leader.
        let at = total * (k + 1) / (kills + 1);
        assert!(eventually(Duration::from_secs(60), || done.load(Ordering::Relaxed) >= at), "publishers stalled");
        let l = c.leader(Duration::from_secs(30)).expect("a leader");
        queued_at_kill.push(bridge_health(c.health[l], "cloud").map_or(-1, |h| h["queued"].as_i64().unwrap_or(-1)));
        let t = Instant::now();
        c.kill(l);
        let next = c.leader(Duration::from_secs(30)).expect("a new leader");
        failovers.push(t.elapsed());
        assert_ne!(next, l);
        c.spawn(l);
    }
    let mut acked = Vec::new();
    let mut reconnects = 0;
    for t in threads {
        let (a, r) = t.join().unwrap();
        acked.extend(a);
        reconnects += r;
    }
    let elapsed = started.elapsed();
    let payloads = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("site/load/").and_then(|r| r.split(' ').nth(3)).map(str::to_string))
            .collect()
    };
    let got = watch.wait(Duration::from_secs(60), |l| {
        let p: std::collections::BTreeSet<String> = payloads(l).into_iter().collect();
        acked.iter().all(|w| p.contains(w))
    });
    let got = payloads(&got);
    let set: std::collections::BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|w| !set.contains(w)).collect();
    let duplicates = got.len() - set.len();
    println!(
        "failover: {total} published by {publishers} QoS 1 publishers, {} acknowledged by midge, {} received upstream \
         ({} distinct), {duplicates} duplicates, {} missing; {kills} leader kills, new leader after {failovers:?}, \
         bridge queue at each kill {queued_at_kill:?}, {reconnects} publisher connections, {elapsed:?}",
        acked.len(),
        got.len(),
        set.len(),
        missing.len()
    );
    assert!(acked.len() >= total * 9 / 10, "most messages acknowledged: {}\n{}", acked.len(), c.logs());
    assert!(missing.is_empty(), "acknowledged but never upstream: {missing:?}\n{}", c.logs());
    // Nothing left behind on the last leader.
    let l = c.leader(Duration::from_secs(30)).expect("a leader");
    assert!(
        eventually(Duration::from_secs(10), || bridge_health(c.health[l], "cloud").is_some_and(|h| h["queued"] == 0))
    );
}

/// Counts the PUBLISH packets that reach a QoS 0 subscription to `filter`
/// on `port` (a thread reading raw MQTT 3.1.1).
fn counter(port: u16, filter: &str) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, std::thread::JoinHandle<()>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&common::connect_v311("bench-counter", true, 60)).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    s.write_all(&common::subscribe_v311(1, filter, 0)).unwrap();
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).unwrap();
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let Ok(k) = s.read(&mut buf) else { return };
            if k == 0 {
                return;
            }
            pending.extend_from_slice(&buf[..k]);
            let mut at = 0;
            while let Some(&h) = pending.get(at) {
                let (mut len, mut mult, mut i) = (0usize, 1usize, at + 1);
                let mut complete = false;
                while let Some(&b) = pending.get(i) {
                    len += (b & 0x7f) as usize * mult;
                    mult *= 128;
                    i += 1;
                    if b & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if !complete || pending.len() < i + len {
                    break;
                }
                if h >> 4 == 3 {
                    n2.fetch_add(1, Ordering::Relaxed);
                }
                at = i + len;
            }
            pending.drain(..at);
        }
    });
    (n, t)
}

/// Publishes `n` QoS 1 messages to `port`, up to `window` unacknowledged.
fn publish_windowed(port: u16, topic: &str, n: usize, window: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&common::connect_v311("bench-pub", true, 60)).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < n {
        let mut out = Vec::new();
        while sent < n && sent - acked < window {
            let pid = (sent % 65535 + 1) as u16;
            out.extend(common::publish_v311(topic, 1, false, pid, format!("{sent:016}").as_bytes()));
            sent += 1;
        }
        s.write_all(&out).unwrap();
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack[0], 0x40);
        acked += 1;
    }
}

/// Bridged throughput, midge -> Mosquitto against Mosquitto -> Mosquitto:
/// QoS 1 messages (16 bytes, a publisher with 64 in flight) published on
/// the bridging broker until the upstream's subscriber has them all.
/// `BENCH_MESSAGES` (default 20000); MIDGE_BIN for a release build.
/// `MIDGE_BIN=target/release/midge cargo test --test bridge bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_bridged_throughput_vs_mosquitto() {
    use std::sync::atomic::Ordering;
    let n: usize = std::env::var("BENCH_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let mut rates = Vec::new();
    for who in ["mosquitto", "midge persistence true", "midge persistence false", "midge three nodes"] {
        let up = Upstream::start("max_queued_messages 0\n");
        let (count, _t) = counter(up.port, "site/#");
        let bridge = format!(
            "connection bench\naddress 127.0.0.1:{}\ntopic load/# out 1 \"\" site/\nrestart_timeout 1\n",
            up.port
        );
        // Mosquitto's bridge gets the window midge's has (100) and no
        // queue bound; midge a queue bound above the run.
        let (port, _mosq, _midge, _cluster) = if who == "mosquitto" {
            let m = Upstream::start(&format!("max_inflight_messages 100\nmax_queued_messages 0\n{bridge}"));
            (m.port, Some(m), None, None)
        } else if who == "midge three nodes" {
            let c = Cluster::start_mode("proxy", &format!("{bridge}bridge_max_queued_messages {}\n", n * 2));
            let l = c.leader(Duration::from_secs(30)).expect("a leader");
            (c.mqtt[l], None, None, Some(c))
        } else {
            let persistence = if who.ends_with("true") { "true" } else { "false" };
            let m =
                Broker::start(&format!("persistence {persistence}\n{bridge}bridge_max_queued_messages {}\n", n * 2));
            (m.port, None, Some(m), None)
        };
        // Wait until a probe goes through.
        assert!(eventually(Duration::from_secs(15), || {
            publish_ok(port, "mqttv311", &["-t", "load/probe", "-m", "p", "-q", "1"]);
            std::thread::sleep(Duration::from_millis(200));
            count.load(Ordering::Relaxed) > 0
        }));
        std::thread::sleep(Duration::from_millis(500));
        let base = count.load(Ordering::Relaxed);
        let t0 = Instant::now();
        publish_windowed(port, "load/x", n, 64);
        let acked = t0.elapsed();
        assert!(
            eventually(Duration::from_secs(120), || count.load(Ordering::Relaxed) >= base + n),
            "{who}: {} of {n} arrived",
            count.load(Ordering::Relaxed) - base
        );
        let all = t0.elapsed();
        let rate = n as f64 / all.as_secs_f64();
        println!(
            "RESULT bridge={who:?} messages={n} publisher_acked_s={:.3} upstream_all_s={:.3} rate={rate:.0}/s",
            acked.as_secs_f64(),
            all.as_secs_f64()
        );
        rates.push((who, rate));
    }
    for (who, r) in &rates[1..] {
        println!("RATIO {who} / mosquitto = {:.2}", r / rates[0].1);
    }
}

/// A persistent QoS 1 subscriber (MQTT 3.1.1, clean session false) that
/// reconnects by itself, through each of `ports` in turn, until stopped:
/// mosquitto_sub gives up when a reconnect meets CONNACK 3 (no leader yet).
/// Returns the payloads it received, in order, duplicates included.
struct ResilientSub {
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl ResilientSub {
    fn start(ports: Vec<u16>, id: &str, filter: &str) -> ResilientSub {
        use std::sync::atomic::Ordering;
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st, id, filter) = (got.clone(), stop.clone(), id.to_string(), filter.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut sessions = 0u32;
            let mut next = 0usize;
            while !st.load(Ordering::Relaxed) {
                let port = ports[next % ports.len()];
                next += 1;
                let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
                else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut ack = [0u8; 4];
                let ok = s.write_all(&common::connect_v311(&id, false, 30)).is_ok()
                    && s.read_exact(&mut ack).is_ok()
                    && ack[0] == 0x20
                    && ack[3] == 0
                    && s.write_all(&common::subscribe_v311(1, &filter, 1)).is_ok();
                if !ok {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                sessions += 1;
                let _ = ready_tx.send(());
                let mut pending: Vec<u8> = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                'conn: while !st.load(Ordering::Relaxed) {
                    let k = match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            continue
                        }
                        Err(_) => break,
                    };
                    pending.extend_from_slice(&buf[..k]);
                    let mut at = 0;
                    while let Some(&h) = pending.get(at) {
                        let (mut len, mut mult, mut i, mut complete) = (0usize, 1usize, at + 1, false);
                        while let Some(&b) = pending.get(i) {
                            len += (b & 0x7f) as usize * mult;
                            mult *= 128;
                            i += 1;
                            if b & 0x80 == 0 {
                                complete = true;
                                break;
                            }
                        }
                        if !complete || pending.len() < i + len {
                            break;
                        }
                        let body = &pending[i..i + len];
                        if h >> 4 == 3 {
                            let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                            let qos = (h >> 1) & 3;
                            let mut off = 2 + tl;
                            if qos > 0 {
                                let pid = [body[off], body[off + 1]];
                                off += 2;
                                if s.write_all(&[0x40, 0x02, pid[0], pid[1]]).is_err() {
                                    break 'conn;
                                }
                            }
                            g.lock().unwrap().push(String::from_utf8_lossy(&body[off..]).into_owned());
                        }
                        at = i + len;
                    }
                    pending.drain(..at);
                }
            }
            sessions
        });
        ready_rx.recv_timeout(Duration::from_secs(15)).expect("subscriber connected");
        ResilientSub { got, stop, thread: Some(thread) }
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Stops it; returns how many connections it made.
    fn stop(mut self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for ResilientSub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Inbound across failovers: a QoS 1 publisher on the upstream, a
/// persistent QoS 1 subscriber on the cluster (it reconnects by itself),
/// the leader SIGKILLed three times. The bridge acknowledges upstream only
/// after the local commit, and the upstream keeps the bridge's session
/// (`cleansession false`): every message the upstream acknowledged to its
/// publisher reaches the local subscriber.
#[test]
fn failover_inbound_loses_no_upstream_message() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let up = Upstream::start("");
    let mut c = Cluster::start_mode(
        "proxy",
        &format!("connection cloud\naddress 127.0.0.1:{}\ntopic cmd/# in 1 plant/ hq/\nrestart_timeout 1\n", up.port),
    );
    let leader = c.leader(Duration::from_secs(30)).expect("a leader");
    assert!(eventually(Duration::from_secs(10), || bridge_health(c.health[leader], "cloud")
        .is_some_and(|h| h["connected"] == true)));
    assert!(eventually(Duration::from_secs(5), || up.log().contains("hq/cmd/#")), "{}", up.log());
    // A persistent subscriber on the cluster that reconnects by itself.
    let local = ResilientSub::start(c.mqtt.clone(), "local-sub", "plant/#");
    std::thread::sleep(Duration::from_millis(300));
    let total = 600usize;
    let kills = 3;
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let up_port = up.port;
    let publisher = std::thread::spawn(move || {
        let mut p = Publisher::new(vec![up_port], "upstream-pub");
        let mut acked = Vec::new();
        for i in 0..total {
            let payload = format!("c{i:04}");
            if p.publish("hq/cmd/x", &payload, Instant::now() + Duration::from_secs(30)) {
                acked.push(payload);
            }
            d2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
        }
        acked
    });
    let mut failovers = Vec::new();
    for k in 0..kills {
        let at = total * (k + 1) / (kills + 1);
        assert!(eventually(Duration::from_secs(60), || done.load(Ordering::Relaxed) >= at), "publisher stalled");
        let l = c.leader(Duration::from_secs(30)).expect("a leader");
        let t = Instant::now();
        c.kill(l);
        let next = c.leader(Duration::from_secs(30)).expect("a new leader");
        failovers.push(t.elapsed());
        assert_ne!(next, l);
        c.spawn(l);
    }
    let acked = publisher.join().unwrap();
    eventually(Duration::from_secs(60), || {
        let p: std::collections::BTreeSet<String> = local.got().into_iter().collect();
        acked.iter().all(|w| p.contains(w))
    });
    let got = local.got();
    let set: std::collections::BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|w| !set.contains(w)).collect();
    println!(
        "failover inbound: {total} published upstream, {} acknowledged by Mosquitto, {} received on the cluster \
         ({} distinct), {} duplicates, {} missing; new leader after {failovers:?}; the subscriber connected {} times",
        acked.len(),
        got.len(),
        set.len(),
        got.len() - set.len(),
        missing.len(),
        local.stop()
    );
    assert_eq!(acked.len(), total, "Mosquitto acknowledges everything");
    assert!(
        missing.is_empty(),
        "upstream messages never delivered: {} from {:?}\n--- upstream\n{}\n{}",
        missing.len(),
        missing.first(),
        up.log().lines().rev().take(40).collect::<Vec<_>>().join("\n"),
        c.logs()
    );
}
