//! The leader's hold after a commit (`Node::is_held`): commands that
//! waited for the committed entry do not go out alone at once; they wait
//! until the runtime releases the hold, and what arrives meanwhile joins
//! them in one entry. Driven by hand on a lone node whose log counts as on
//! disk (commit follows the flush), so each step is visible.

use std::rc::Rc;

use midge::broker::{Action, Broker};
use midge::cluster::driver::CommitMode;
use midge::cluster::{raft_logger, Node, NodeConfig};
use midge::config::Config;
use midge::mqtt::{Connect, Packet, Properties, Publish, QoS, Version};
use midge::store::MemLog;

const NOW: u64 = 1_700_000_000_000;
const PUBLISHER: u64 = 1;

fn node() -> Node<MemLog> {
    let settings = Rc::new(Config::default().broker_settings(None, None));
    let mut node = Node::new(NodeConfig::single(1), MemLog::new(), Broker::new(settings, NOW), &raft_logger())
        .expect("node starts");
    // As the server runs a log on disk: staged writes, a hold after commits.
    node.set_commit_mode(CommitMode::AtCommitDurable);
    settle(&mut node);
    assert!(node.broker_mut().serving());
    node.broker_mut().open(PUBLISHER, "127.0.0.1:1".parse().unwrap(), NOW);
    let c = Connect {
        version: Version::V311,
        client_id: "publisher".into(),
        clean_start: true,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    };
    node.broker_mut().packet(PUBLISHER, Packet::Connect(Box::new(c)), NOW);
    settle(&mut node);
    node
}

/// Ready passes and flushes until nothing is left, releasing holds as the
/// runtime does after `COMMIT_HOLD`; returns the packet ids of the PUBACKs
/// sent.
fn settle(node: &mut Node<MemLog>) -> Vec<u16> {
    let mut acked = Vec::new();
    for _ in 0..20 {
        node.release_hold();
        node.ready(NOW, &mut |_| {}).expect("ready");
        node.flush().expect("flush");
        node.ready(NOW, &mut |_| {}).expect("ready");
        acked.extend(pubacks(node));
        if !node.has_work() && !node.needs_flush() && !node.is_held() {
            break;
        }
    }
    acked
}

fn pubacks(node: &mut Node<MemLog>) -> Vec<u16> {
    node.broker_mut()
        .take_actions()
        .filter_map(|a| match a {
            Action::Send(_, Packet::PubAck(r)) => Some(r.packet_id),
            _ => None,
        })
        .collect()
}

fn publish(node: &mut Node<MemLog>, packet_id: u16) {
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Rc::from("t"),
        packet_id: Some(packet_id),
        payload: Rc::from(&b"x"[..]),
        properties: Properties::default(),
    };
    node.broker_mut().packet(PUBLISHER, Packet::Publish(p), NOW);
}

/// Publish 1 is proposed; 2 arrives while it is in flight; 1 commits;
/// then 3 arrives. Returns (entries proposed for 2 and 3, PUBACKs).
fn scenario(node: &mut Node<MemLog>, release: bool) -> (u64, Vec<u16>) {
    assert!(!node.is_held());
    publish(node, 1);
    node.ready(NOW, &mut |_| {}).expect("ready");
    if node.is_held() {
        // Held after the CONNECT's commit, long ago: the runtime lets it
        // go at once.
        node.release_hold();
        node.ready(NOW, &mut |_| {}).expect("ready");
    }
    assert!(!node.broker_mut().has_proposals(), "1 is proposed (and staged)");
    publish(node, 2); // waits: 1 is in flight
    node.ready(NOW, &mut |_| {}).expect("ready");
    assert!(node.broker_mut().has_proposals(), "2 waits while 1 is in flight");
    let before = node.stats().proposals;
    node.flush().expect("flush"); // 1 is on disk: committed
    node.ready(NOW, &mut |_| {}).expect("ready");
    let mut acked = pubacks(node);
    assert_eq!(acked, vec![1]);
    let _ = node.has_work(); // where a runtime asks whether to run again
    publish(node, 3);
    if release {
        assert!(node.is_held(), "2 waited for 1: the next entry is held");
        node.ready(NOW, &mut |_| {}).expect("ready");
        assert_eq!(node.stats().proposals, before, "nothing proposed while held");
        node.release_hold();
    }
    acked.extend(settle(node));
    (node.stats().proposals - before, acked)
}

#[test]
fn commands_held_after_a_commit_go_out_together_once_released() {
    let mut n = node();
    let (entries, acked) = scenario(&mut n, true);
    assert_eq!(entries, 1, "2 and 3 share one entry");
    assert_eq!(acked, vec![1, 2, 3]);
}
