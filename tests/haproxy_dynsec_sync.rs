//! docs/examples/haproxy-dynsec-sync.cfg, unchanged, run by Debian's
//! haproxy in front of three `cluster_mode dynsec_sync` nodes: HAProxy
//! reads the client id from CONNECT and sends a client back to its node,
//! so a persistent session is present at every reconnect; when that node
//! dies the client lands on another node and starts a new session there
//! (what docs/HA.md says it sees).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{health_ok, Cluster};
use common::dynsec::start_cluster;
use common::{connect_v311, free_port, Raw, MAX_WAIT};

const EXTRA: &str = "cluster_mode dynsec_sync\n";

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CONNECT (3.1.1, clean session 0) through HAProxy; the CONNACK's session
/// present flag, then DISCONNECT. None: no CONNACK 0.
fn reconnect(port: u16, id: &str) -> Option<bool> {
    let mut r = Raw::connect(port);
    r.send(&connect_v311(id, false, 60));
    let p = r.expect_packet(MAX_WAIT);
    if p.header != 0x20 || p.body[1] != 0 {
        return None;
    }
    r.send(&[0xE0, 0x00]);
    let _ = r.expect_closed(MAX_WAIT);
    Some(p.body[0] & 1 == 1)
}

/// How many CONNECTs of `id` each node's log shows.
fn counts(c: &Cluster, id: &str) -> Vec<usize> {
    let needle = format!(" as {id} (");
    (0..3).map(|i| c.log(i).matches(&needle).count()).collect()
}

/// `reconnect`, and the node that took it (the one whose count grew).
fn reconnect_at(c: &Cluster, port: u16, id: &str) -> (Option<bool>, Option<usize>) {
    let before = counts(c, id);
    let r = reconnect(port, id);
    // The log line is written as the CONNECT is accepted, before CONNACK.
    let after = counts(c, id);
    (r, (0..3).find(|&i| after[i] > before[i]))
}

#[test]
fn haproxy_keeps_a_client_on_its_node_and_moves_it_when_the_node_dies() {
    let mut c = start_cluster("proxy", EXTRA);
    let end = Instant::now() + Duration::from_secs(20);
    while !(0..3).all(|i| health_ok(c.health[i])) {
        assert!(Instant::now() < end, "not all nodes serve\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    let bind = free_port();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/haproxy-dynsec-sync.cfg");
    let mut cmd = Command::new("haproxy");
    cmd.args(["-f", cfg, "-db"]).env("MIDGE_HAPROXY_BIND", format!("127.0.0.1:{bind}"));
    for i in 0..3 {
        cmd.env(format!("MIDGE_NODE{}", i + 1), format!("127.0.0.1:{}", c.mqtt[i]));
        cmd.env(format!("MIDGE_NODE{}_HEALTH", i + 1), c.health[i].to_string());
    }
    let log = std::fs::File::create(c.path().join("haproxy.log")).unwrap();
    let _haproxy = Haproxy(cmd.stdout(Stdio::null()).stderr(log).spawn().expect("start haproxy"));
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", bind)).is_err() {
        assert!(Instant::now() < end, "haproxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let its first health checks mark the nodes up (rise 2, inter 500 ms).
    std::thread::sleep(Duration::from_millis(1500));

    // Twenty reconnects: the same node each time, the session present.
    let id = "sticky-client";
    let (r, home) = reconnect_at(&c, bind, id);
    assert_eq!(r, Some(false), "a new session first");
    let home = home.expect("a node took the client");
    for n in 0..20 {
        let (r, at) = reconnect_at(&c, bind, id);
        assert_eq!(r, Some(true), "reconnect {n}: session not present\n{}", c.logs());
        assert_eq!(at, Some(home), "reconnect {n} went to another node");
    }
    // Other client ids spread over the nodes (leastconn for new ones).
    for k in 0..6 {
        assert_eq!(reconnect(bind, &format!("other-{k}")), Some(false));
    }

    // Its node dies: the client lands on another node, with a new session
    // there, and stays there.
    c.kill(home);
    let end = Instant::now() + Duration::from_secs(15);
    let (moved, new_home) = loop {
        match std::panic::catch_unwind(|| reconnect_at(&c, bind, id)) {
            Ok((Some(present), Some(at))) => break (present, at),
            _ => {
                assert!(Instant::now() < end, "no node took the client after its node died\n{}", c.logs());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert!(!moved, "a session on another node cannot be present");
    assert_ne!(new_home, home);
    for n in 0..5 {
        let (r, at) = reconnect_at(&c, bind, id);
        assert_eq!(r, Some(true), "after the move, reconnect {n}");
        assert_eq!(at, Some(new_home));
    }
    // The old node returns: the client stays where it is now.
    c.spawn(home);
    let end = Instant::now() + Duration::from_secs(15);
    while !health_ok(c.health[home]) {
        assert!(Instant::now() < end, "node {} did not come back\n{}", home + 1, c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500)); // HAProxy: rise 2
    let (r, at) = reconnect_at(&c, bind, id);
    assert_eq!((r, at), (Some(true), Some(new_home)), "back on the old node after it returned");
}
