//! `persistence false` on a lone node: the in-memory raft log forgets
//! applied entries (`RaftLog::forget_applied`) instead of holding one
//! Connect command per client until the next snapshot; and a node added
//! later still receives the whole state, because the membership change
//! forces a real snapshot. The simulation's stores are not volatile (a
//! simulated restart reads them), so this is checked here.

use std::rc::Rc;

use midge::broker::state::State;
use midge::broker::{Action, Broker, Settings};
use midge::cluster::{raft_logger, Node, NodeConfig};
use midge::config::Config;
use midge::mqtt::{Connect, Packet, Properties, Version};
use midge::store::MemLog;
use raft::Storage;

const CLIENTS: u64 = 300;

fn settings() -> Rc<Settings> {
    Rc::new(Settings::from_config(&Config::default(), None, None))
}

/// Ready passes until nothing is left to do; returns CONNACKs with code 0.
fn run(node: &mut Node<MemLog>, now: u64) -> usize {
    let mut accepted = 0;
    for _ in 0..100 {
        node.propose_pending();
        node.ready(now, &mut |_| {}).expect("ready");
        node.flush().expect("flush");
        for a in node.broker.take_actions() {
            if let Action::Send(_, Packet::ConnAck(c)) = a {
                assert_eq!(c.code, 0, "CONNACK refused");
                accepted += 1;
            }
        }
        if !node.has_work() {
            break;
        }
    }
    accepted
}

fn connect(node: &mut Node<MemLog>, conn: u64, now: u64) {
    node.broker.open(conn, "127.0.0.1:1".parse().unwrap(), now);
    let c = Connect {
        version: Version::V311,
        client_id: format!("client-{conn}"),
        clean_start: false,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    };
    node.broker.packet(conn, Packet::Connect(Box::new(c)), now);
}

#[test]
fn lone_volatile_node_forgets_applied_entries_and_snapshots_for_a_new_member() {
    let now = 1_700_000_000_000;
    let disk = MemLog::volatile();
    let mut node = Node::new(NodeConfig::single(1), disk.clone(), Broker::new(settings(), now), &raft_logger())
        .expect("node starts");
    run(&mut node, now);
    assert!(node.broker.serving(), "a lone node serves at once");

    let mut accepted = 0;
    for conn in 1..=CLIENTS {
        connect(&mut node, conn, now);
        accepted += run(&mut node, now);
    }
    assert_eq!(accepted as u64, CLIENTS);
    assert_eq!(node.broker.state.sessions.len() as u64, CLIENTS);

    // One entry per CONNECT was applied; all but the last few are gone.
    let (first, last) = (disk.first_index().unwrap(), disk.last_index().unwrap());
    assert!(last >= CLIENTS, "last index {last}");
    assert!(last - first < 64, "the log still holds {first}..={last}");
    // Raft is told the snapshot is not there (nobody asks while alone).
    assert!(disk.snapshot(0, 2).is_err());

    // Adding a member forces a real snapshot of the whole state.
    node.change_membership(true, 2, "127.0.0.1:1", true).expect("propose add");
    run(&mut node, now);
    assert_eq!(node.conf_state().voters, vec![1, 2]);
    let snap = disk.snapshot(0, 2).expect("a snapshot for the new member");
    let restored = State::restore(&snap.data).expect("snapshot decodes");
    assert_eq!(restored.sessions.len() as u64, CLIENTS);
    assert_eq!(restored.snapshot(), node.broker.state.snapshot());
}

#[test]
fn stores_that_are_read_back_never_forget() {
    use midge::store::RaftLog;
    let disk = MemLog::new();
    let now = 1_700_000_000_000;
    let mut node = Node::new(NodeConfig::single(1), disk.clone(), Broker::new(settings(), now), &raft_logger())
        .expect("node starts");
    run(&mut node, now);
    for conn in 1..=100 {
        connect(&mut node, conn, now);
        run(&mut node, now);
    }
    assert!(!disk.forget_applied(node.applied()).unwrap());
    // Below the snapshot interval (5,000): every entry is still there.
    assert_eq!(disk.first_index().unwrap(), 2);
}
