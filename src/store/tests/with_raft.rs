//! The stores under real raft-rs 0.7 nodes, driven through the Ready loop
//! in the order docs/PLATFORM.md gives. A three-node cluster where one
//! follower is cut off until the others have compacted past it, so the
//! leader must send it the stored snapshot (`Storage::snapshot`) and the
//! follower installs it (`install_snapshot`); then every node is rebuilt
//! from its store, as after a power cut, and the cluster carries on. This
//! checks the parts of the `Storage` contract that unit tests cannot: raft
//! accepting the stored state at restart (commit within the log, applied
//! at the snapshot) and reading a kept tail and a snapshot correctly.

use raft::eraftpb::{EntryType, Message};
use raft::{Config, RawNode, StateRole, Storage};

use super::{conf_state, set_commit, Harness, Mem, Redb};
use crate::store::RaftLog;

/// A node snapshots after applying this many entries beyond its last snapshot.
const SNAPSHOT_EVERY: u64 = 20;
/// Entries kept before a local snapshot for slightly lagging followers.
const KEEP_ENTRIES: u64 = 5;
const ROUNDS_MAX: usize = 400;

/// One node: raft over its store, and the "broker state" it applied: the
/// list of proposed numbers.
struct Node<L: RaftLog> {
    raw: RawNode<L>,
    values: Vec<u64>,
    applied: u64,
    snapshots_installed: u32,
}

fn encode_values(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_values(data: &[u8]) -> Vec<u64> {
    data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Builds a node on `store` as the broker would at start: restore the
/// applied state from the latest snapshot and tell raft where it stands.
fn start_node<L: RaftLog>(id: u64, store: L) -> Node<L> {
    let (values, applied) = match store.latest_snapshot().expect("latest_snapshot") {
        Some((index, _, _, data)) => (decode_values(&data), index),
        None => (Vec::new(), 0),
    };
    let config = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: 1024,
        max_inflight_msgs: 32,
        pre_vote: true,
        ..Default::default()
    };
    let mut raw = RawNode::new(&config, store, &logger()).expect("raft accepts the stored state");
    // Pinned within [election_tick, 2 * election_tick), so the first election
    // does not depend on thread_rng; node 1 fires first.
    raw.raft.set_randomized_election_timeout(10 + 3 * id as usize);
    Node { raw, values, applied, snapshots_installed: 0 }
}

fn apply<L: RaftLog>(node: &mut Node<L>, committed: Vec<raft::eraftpb::Entry>) {
    for e in committed {
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            let bytes: [u8; 8] = e.data[..].try_into().expect("proposals are 8 bytes");
            node.values.push(u64::from_le_bytes(bytes));
        }
        node.applied = e.index;
    }
}

fn handle_ready<L: RaftLog>(node: &mut Node<L>, outbox: &mut Vec<Message>) {
    if !node.raw.has_ready() {
        return;
    }
    let mut ready = node.raw.ready();
    outbox.extend(ready.take_messages());
    if !ready.snapshot().is_empty() {
        let snap = ready.snapshot().clone();
        node.raw.store().install_snapshot(&snap).expect("install_snapshot");
        node.values = decode_values(&snap.data);
        node.applied = snap.get_metadata().index;
        node.snapshots_installed += 1;
    }
    apply(node, ready.take_committed_entries());
    node.raw.store().persist(ready.entries(), ready.hs()).expect("persist");
    outbox.extend(ready.take_persisted_messages());
    let mut light = node.raw.advance(ready);
    if let Some(commit) = light.commit_index() {
        set_commit(node.raw.store(), commit).expect("set_commit");
    }
    outbox.extend(light.take_messages());
    apply(node, light.take_committed_entries());
    node.raw.advance_apply();

    let store = node.raw.store();
    let last_snapshot = store.latest_snapshot().expect("latest_snapshot").map_or(0, |s| s.0);
    if node.applied >= last_snapshot + SNAPSHOT_EVERY {
        let cs = store.initial_state().expect("initial_state").conf_state;
        store.save_snapshot(node.applied, &cs, encode_values(&node.values), KEEP_ENTRIES).expect("save_snapshot");
    }
}

struct Cluster<H: Harness> {
    disks: Vec<H>,
    nodes: Vec<Option<Node<H::Log>>>,
    /// Messages to and from this node are dropped.
    cut_off: Option<u64>,
}

impl<H: Harness> Cluster<H> {
    fn new(mut disks: Vec<H>) -> Cluster<H> {
        let nodes = disks
            .iter_mut()
            .enumerate()
            .map(|(i, disk)| {
                let store = disk.open();
                // Every node starts from the same membership (raft-rs's bootstrap).
                store.set_conf_state(&conf_state(&[1, 2, 3], &[])).expect("set_conf_state");
                Some(start_node(i as u64 + 1, store))
            })
            .collect();
        Cluster { disks, nodes, cut_off: None }
    }

    fn node(&mut self, id: u64) -> &mut Node<H::Log> {
        self.nodes[id as usize - 1].as_mut().expect("node is running")
    }

    fn round(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.raw.tick();
        }
        for _ in 0..20 {
            let mut outbox = Vec::new();
            for node in self.nodes.iter_mut().flatten() {
                handle_ready(node, &mut outbox);
            }
            if outbox.is_empty() {
                return;
            }
            for m in outbox {
                if self.cut_off.is_some_and(|id| m.from == id || m.to == id) {
                    continue;
                }
                if let Some(node) = self.nodes[m.to as usize - 1].as_mut() {
                    // A stale message may be refused; raft recovers by itself.
                    let _ = node.raw.step(m);
                }
            }
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes.iter().flatten().find(|n| n.raw.raft.state == StateRole::Leader).map(|n| n.raw.raft.id)
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..ROUNDS_MAX {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("no {what} after {ROUNDS_MAX} rounds");
    }

    fn propose(&mut self, value: u64) {
        self.run_until("leader", |c| c.leader().is_some());
        let leader = self.leader().expect("leader");
        self.node(leader).raw.propose(Vec::new(), value.to_le_bytes().to_vec()).expect("propose");
        self.round();
    }

    fn all_applied(&self, expected: &[u64]) -> bool {
        self.nodes.iter().flatten().all(|n| n.values == expected)
    }

    /// Every node loses power and is rebuilt from its store.
    fn restart_all(&mut self) {
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            drop(slot.take());
            *slot = Some(start_node(i as u64 + 1, self.disks[i].reopen()));
        }
    }
}

fn follower_catches_up_by_snapshot_and_survives_restarts<H: Harness>(disks: Vec<H>) {
    let mut cluster = Cluster::new(disks);
    cluster.node(1).raw.campaign().expect("campaign");
    cluster.run_until("leader", |c| c.leader() == Some(1));

    cluster.cut_off = Some(3);
    let expected: Vec<u64> = (1..=60).collect();
    for &v in &expected {
        cluster.propose(v);
    }
    cluster.run_until("commit on 1 and 2", |c| c.nodes[..2].iter().flatten().all(|n| n.values == expected));
    let leader_first = cluster.node(1).raw.store().first_index().unwrap();
    let behind_last = cluster.node(3).raw.store().last_index().unwrap();
    assert!(leader_first > behind_last + 1, "the leader compacted past node 3 ({leader_first} vs {behind_last})");

    cluster.cut_off = None;
    cluster.run_until("node 3 caught up", |c| c.all_applied(&expected));
    assert!(cluster.node(3).snapshots_installed >= 1, "node 3 caught up by snapshot");

    cluster.restart_all();
    let expected: Vec<u64> = (1..=75).collect();
    for &v in &expected[60..] {
        cluster.propose(v);
    }
    cluster.run_until("all applied after restart", |c| c.all_applied(&expected));

    // Once more, with node 3 restarted while it was cut off.
    cluster.cut_off = Some(3);
    let expected: Vec<u64> = (1..=100).collect();
    for &v in &expected[75..] {
        cluster.propose(v);
    }
    cluster.restart_all();
    cluster.cut_off = None;
    cluster.run_until("all applied after the second restart", |c| c.all_applied(&expected));
}

#[test]
fn raft_cluster_on_mem_log() {
    follower_catches_up_by_snapshot_and_survives_restarts(vec![Mem::default(), Mem::default(), Mem::default()]);
}

#[test]
fn raft_cluster_on_redb_log() {
    follower_catches_up_by_snapshot_and_survives_restarts(vec![Redb::new(true), Redb::new(true), Redb::new(true)]);
}
