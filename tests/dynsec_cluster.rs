//! Dynamic security across three real `midge` processes, driven with
//! Debian's `mosquitto_ctrl`: a change made through the leader holds on
//! the next leader after the first is killed, a node that was down learns
//! it when it comes back (and rewrites its own copy of the file), and the
//! API works through a follower (proxy mode forwards the client).

mod common;

use std::time::Duration;

use common::dynsec::{ctrl, eventually, logs_in, start_cluster};

#[test]
fn a_change_survives_the_leader_and_reaches_a_node_that_was_down() {
    // Every node has its own copy of the file `init` wrote.
    let mut c = start_cluster("proxy", "");
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
    eventually("the leader's file has alice", &c, || file(leader).contains("\"alice\""));
    eventually("the follower's file has alice", &c, || file(up).contains("\"alice\""));
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
    eventually("the node that was down rewrote its file with alice", &c, || file(down).contains("\"alice\""));

    // A change through the new leader, with the old one still down.
    let (code, out) = ctrl(c.mqtt[next], &["disableClient", "alice"]);
    assert_eq!(code, Some(0), "disableClient: {out}");
    assert!(!logs_in(c.mqtt[next], "alice", "pw"), "a disabled client is refused\n{}", c.logs());
}
