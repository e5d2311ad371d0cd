//! Dynamic security across three real `midge` processes, driven with
//! Debian's `mosquitto_ctrl`: a change made through the leader holds on
//! the next leader after the first is killed, a node that was down learns
//! it when it comes back (and rewrites its own copy of the file), and the
//! API works through a follower (proxy mode forwards the client).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;

const PLUGIN: &str =
    "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file {dir}/ds{node}.json\n";

/// `mosquitto_ctrl dynsec ARGS` as admin against `port`: exit code and
/// stdout + stderr (without mosquitto_ctrl's warning about plain text).
fn ctrl(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let (code, out, err) = common::run_with_timeout(
        Command::new("mosquitto_ctrl")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "admin", "-P", "adminpass", "dynsec"])
            .args(args),
        Duration::from_secs(15),
    );
    let text: String = format!("{out}{err}")
        .lines()
        .filter(|l| !l.starts_with("Warning: You are running") && !l.starts_with("This means all of the"))
        .collect::<Vec<_>>()
        .join("\n");
    (code, text)
}

/// Whether `user`/`password` can log in through `port` (mosquitto_pub
/// exits 0 only after CONNACK 0).
fn logs_in(port: u16, user: &str, password: &str) -> bool {
    let (code, _, _) = common::run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            password,
            "-t",
            "x",
            "-m",
            "1",
        ]),
        Duration::from_secs(10),
    );
    code == Some(0)
}

fn wait_for(what: &str, c: &Cluster, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}\n{}", c.logs());
}

#[test]
fn a_change_survives_the_leader_and_reaches_a_node_that_was_down() {
    // Every node has its own copy of the file `init` wrote.
    let mut c = Cluster::prepare("proxy", PLUGIN);
    let first = c.path().join("ds1.json");
    let (code, out, err) = common::run_with_timeout(
        Command::new("mosquitto_ctrl").args(["dynsec", "init", first.to_str().unwrap(), "admin", "adminpass"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    for i in 1..3 {
        std::fs::copy(&first, c.path().join(format!("ds{}.json", i + 1))).unwrap();
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (up, down) = (followers[0], followers[1]);

    // One follower is down; the change commits on the leader and the other.
    c.kill(down);
    let (code, out) = ctrl(c.mqtt[leader], &["createClient", "alice", "-p", "pw"]);
    assert_eq!(code, Some(0), "createClient: {out}\n{}", c.logs());
    assert!(!out.contains("Error"), "createClient: {out}");
    // Through the follower that is up (proxy mode forwards to the leader).
    let (_, out) = ctrl(c.mqtt[up], &["getClient", "alice"]);
    assert!(out.contains("Username: alice"), "getClient through a follower: {out}");
    assert!(logs_in(c.mqtt[leader], "alice", "pw"), "alice logs in\n{}", c.logs());
    let dir = c.path().to_path_buf();
    let file = |i: usize| std::fs::read_to_string(dir.join(format!("ds{}.json", i + 1))).unwrap_or_default();
    wait_for("the leader's file has alice", &c, || file(leader).contains("\"alice\""));
    wait_for("the follower's file has alice", &c, || file(up).contains("\"alice\""));
    assert!(!file(down).contains("\"alice\""), "the node that was down cannot know yet");

    // The leader dies; the node that was down comes back: the two form a
    // majority, and the one that was down learns the change.
    c.kill(leader);
    c.spawn(down);
    let next = c.leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no new leader\n{}", c.logs()));
    assert_ne!(next, leader);
    assert!(logs_in(c.mqtt[next], "alice", "pw"), "alice logs in on the new leader\n{}", c.logs());
    assert!(!logs_in(c.mqtt[next], "alice", "wrong"), "a wrong password is refused");
    let (_, out) = ctrl(c.mqtt[next], &["getClient", "alice"]);
    assert!(out.contains("Username: alice"), "getClient on the new leader: {out}");
    wait_for("the node that was down rewrote its file with alice", &c, || file(down).contains("\"alice\""));

    // A change through the new leader, with the old one still down.
    let (code, out) = ctrl(c.mqtt[next], &["disableClient", "alice"]);
    assert_eq!(code, Some(0), "disableClient: {out}");
    assert!(!logs_in(c.mqtt[next], "alice", "pw"), "a disabled client is refused\n{}", c.logs());
}
