//! `cluster_mode dynsec_sync` (active-active) with three real `midge`
//! processes and Debian's `mosquitto_ctrl`, `mosquitto_pub` and
//! `mosquitto_sub`: every node serves at once; a client created through
//! one node logs in on the others; a client disabled through one node is
//! dropped on another; with one node down the other two serve and accept
//! changes; with two down the last serves known clients and refuses
//! changes with an error; restarted nodes catch up.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::health_ok;
use common::dynsec::{ctrl, eventually, logs_in, start_cluster};

const EXTRA: &str = "cluster_mode dynsec_sync\n";

#[test]
fn every_node_serves_and_dynamic_security_is_shared() {
    let mut c = start_cluster("proxy", EXTRA);
    // Every node answers its health check with 200 (a load balancer uses
    // all three), and says the mode.
    eventually("all three nodes serve", &c, || (0..3).all(|i| health_ok(c.health[i])));
    let (_, body, _) = common::run_with_timeout(
        Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/health", c.health[1])]),
        Duration::from_secs(5),
    );
    assert!(body.contains("\"mode\":\"dynsec_sync\""), "{body}");

    // Created through node 1, logs in on nodes 2 and 3 (the default access
    // first: a node where alice logs in applied it too, in log order).
    // (The first change may arrive before the group's leader imported the
    // file: "not loaded yet, try again".)
    eventually("a first change is accepted", &c, || {
        let (_, out) = ctrl(c.mqtt[0], &["setDefaultACLAccess", "subscribe", "allow"]);
        assert!(!out.contains("Error") || out.contains("not loaded yet"), "{out}");
        !out.contains("Error")
    });
    let (_, out) = ctrl(c.mqtt[0], &["createClient", "alice", "-p", "pw"]);
    assert!(!out.contains("Error"), "createClient through node 1: {out}\n{}", c.logs());
    for i in [1, 2] {
        eventually(&format!("alice logs in on node {}", i + 1), &c, || logs_in(c.mqtt[i], "alice", "pw"));
    }

    // Connected on node 2, disabled through node 3: dropped on node 2.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &c.mqtt[1].to_string(), "-u", "alice", "-P", "pw"])
        .args(["-V", "5", "-t", "a/#", "-d", "-W", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    eventually("alice's subscriber is connected on node 2", &c, || c.log(1).contains("u'alice'"));
    let (_, out) = ctrl(c.mqtt[2], &["disableClient", "alice"]);
    assert!(!out.contains("Error"), "disableClient through node 3: {out}");
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = sub.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = sub.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(status.is_some(), "alice was not disconnected on node 2: {text}\n{}", c.logs());
    assert!(text.contains("DISCONNECT (152)"), "administrative action (0x98): {text}");
    assert!(c.log(1).contains("its dynamic security client changed"), "{}", c.log(1));
    eventually("alice is refused on node 1", &c, || !logs_in(c.mqtt[0], "alice", "pw"));

    // One node down: the other two serve and accept changes.
    c.kill(0);
    let (_, out) = ctrl(c.mqtt[1], &["createClient", "carol", "-p", "pw2"]);
    assert!(!out.contains("Error"), "createClient with one node down: {out}\n{}", c.logs());
    eventually("carol logs in on node 3", &c, || logs_in(c.mqtt[2], "carol", "pw2"));

    // Two down: the last one serves the clients it knows, and refuses a
    // change with an error, within seconds, instead of making it alone.
    c.kill(1);
    assert!(logs_in(c.mqtt[2], "carol", "pw2"), "the last node serves known clients\n{}", c.logs());
    let t = Instant::now();
    let (_, out) = ctrl(c.mqtt[2], &["createClient", "dave", "-p", "pw3"]);
    assert!(out.contains("createClient: Error: The cluster has no quorum"), "{out}\n{}", c.logs());
    assert!(t.elapsed() < Duration::from_secs(10), "answered after {:?}", t.elapsed());
    assert!(!logs_in(c.mqtt[2], "dave", "pw3"), "no local-only change");

    // The two come back and catch up.
    c.spawn(0);
    c.spawn(1);
    eventually("carol logs in on node 1, which was down", &c, || logs_in(c.mqtt[0], "carol", "pw2"));
    let file = std::fs::read_to_string(c.path().join("ds1.json")).unwrap();
    assert!(file.contains("\"carol\""), "node 1 rewrote its file");
}

/// A data directory of one mode is refused by the other, with a message
/// that says so.
#[test]
fn a_data_directory_keeps_its_mode() {
    let dir = common::tempdir();
    let port = common::free_port();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("dynsec_sync")).unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\npersistence_location {}\n", data.display())).unwrap();
    let out = Command::new(common::midge_bin()).arg("-c").arg(&conf).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("holds the data of cluster_mode dynsec_sync, and this config says cluster_mode full_sync"),
        "{err}"
    );
}
