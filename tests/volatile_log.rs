//! `persistence false` on a lone node: the in-memory raft log forgets
//! applied entries (`RaftLog::forget_applied`) instead of holding one
//! Connect command per client until the next snapshot; and a node added
//! later still receives the whole state, because the membership change
//! forces a real snapshot. The simulation's stores are not volatile (a
//! simulated restart reads them), so this is checked here.

use std::rc::Rc;

use midge::broker::state::State;
use midge::broker::{Action, Broker, Settings};
use midge::cluster::driver::CommitMode;
use midge::cluster::{raft_logger, Node, NodeConfig};
use midge::config::Config;
use midge::mqtt::{Connect, Packet, Properties, Version};
use midge::store::MemLog;
use raft::Storage;

const CLIENTS: u64 = 300;

fn settings() -> Rc<Settings> {
    Rc::new(Config::default().broker_settings(None, None))
}

/// Ready passes until nothing is left to do; returns CONNACKs with code 0.
fn run(node: &mut Node<MemLog>, now: u64) -> usize {
    let mut accepted = 0;
    for _ in 0..100 {
        node.propose_pending().expect("propose");
        node.ready(now, &mut |_| {}).expect("ready");
        node.flush().expect("flush");
        for a in node.broker_mut().take_actions() {
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

/// A 3.1.1 CONNECT of client `client-{conn}`.
fn connect_packet(conn: u64, clean_start: bool) -> Packet {
    Packet::Connect(Box::new(Connect {
        version: Version::V311,
        client_id: format!("client-{conn}"),
        clean_start,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    }))
}

fn connect(node: &mut Node<MemLog>, conn: u64, now: u64) {
    node.broker_mut().open(conn, "127.0.0.1:1".parse().unwrap(), now);
    node.broker_mut().packet(conn, connect_packet(conn, false), now);
}

#[test]
fn lone_volatile_node_forgets_applied_entries_and_snapshots_for_a_new_member() {
    let now = 1_700_000_000_000;
    let disk = MemLog::volatile();
    let mut node = Node::new(NodeConfig::single(1), disk.clone(), Broker::new(settings(), now), &raft_logger())
        .expect("node starts");
    run(&mut node, now);
    assert!(node.broker().serving(), "a lone node serves at once");

    let mut accepted = 0;
    for conn in 1..=CLIENTS {
        connect(&mut node, conn, now);
        accepted += run(&mut node, now);
    }
    assert_eq!(accepted as u64, CLIENTS);
    assert_eq!(node.broker().state().sessions().len() as u64, CLIENTS);

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
    assert_eq!(restored.sessions().len() as u64, CLIENTS);
    assert_eq!(restored.snapshot(), node.broker().state().snapshot());
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

/// Ready passes until nothing is left to do; returns every action. A hold
/// after a commit ends at once (the runtime ends it 200 us later).
fn settle(node: &mut Node<MemLog>, now: u64) -> Vec<Action> {
    let mut actions = Vec::new();
    for _ in 0..100 {
        node.release_hold();
        node.ready(now, &mut |_| {}).expect("ready");
        node.flush().expect("flush");
        actions.extend(node.broker_mut().take_actions());
        if !node.has_work() {
            break;
        }
    }
    actions
}

fn sends(actions: &[Action], to: u64, pred: impl Fn(&Packet) -> bool) -> usize {
    actions.iter().filter(|a| matches!(a, Action::Send(c, p) if *c == to && pred(p))).count()
}

fn publish(topic: &str, pid: u16) -> Packet {
    Packet::Publish(midge::mqtt::Publish {
        dup: false,
        qos: midge::mqtt::QoS::AtLeastOnce,
        retain: true,
        topic: Rc::from(topic),
        packet_id: Some(pid),
        payload: Rc::from(&b"m"[..]),
        properties: Properties::default(),
    })
}

/// The same conversation on a lone in-memory node that applies at propose
/// and on one that applies at commit: the first answers before its log
/// round, the second after it; the first logs none of its commands (no
/// follower and no restart would read them), the second logs each once;
/// both end in the same state. A membership change ends applying at
/// propose, and the new member receives the whole state by snapshot,
/// never the log from before it.
#[test]
fn lone_volatile_node_applies_at_propose_without_logging() {
    let now = 1_700_000_000_000;
    let (sub, publ) = (1, 2);
    let mut states = Vec::new();
    for early in [true, false] {
        let disk = MemLog::volatile();
        let mut node = Node::new(NodeConfig::single(1), disk.clone(), Broker::new(settings(), now), &raft_logger())
            .expect("node starts");
        node.set_commit_mode(if early { CommitMode::AtPropose } else { CommitMode::AtCommit });
        settle(&mut node, now);
        connect(&mut node, sub, now);
        connect(&mut node, publ, now);
        settle(&mut node, now);
        assert_eq!(node.broker_mut().applies_at_propose(), early);
        node.broker_mut().packet(
            sub,
            Packet::Subscribe(midge::mqtt::Subscribe {
                packet_id: 1,
                filters: vec![(
                    "t/#".into(),
                    midge::mqtt::SubOptions { qos: midge::mqtt::QoS::AtLeastOnce, ..Default::default() },
                )],
                properties: Properties::default(),
            }),
            now,
        );
        settle(&mut node, now);

        // Before any Ready pass: the delivery and the PUBACK are out only
        // when applying at propose; the command waits for the log.
        node.broker_mut().packet(publ, publish("t/1", 1), now);
        let before = node.broker_mut().take_actions().collect::<Vec<_>>();
        let is_publish = |p: &Packet| matches!(p, Packet::Publish(_));
        let is_puback = |p: &Packet| matches!(p, Packet::PubAck(_));
        assert_eq!(sends(&before, sub, is_publish), usize::from(early));
        assert_eq!(sends(&before, publ, is_puback), usize::from(early));
        assert!(node.broker_mut().has_proposals(), "the command waits for the log");
        let last_before = disk.last_index().unwrap();
        let after = settle(&mut node, now);
        let logged = disk.last_index().unwrap() - last_before;
        assert_eq!(logged, u64::from(!early), "logged only when applied at commit");
        assert_eq!(sends(&after, sub, is_publish), usize::from(!early), "delivered exactly once");
        assert_eq!(sends(&after, publ, is_puback), usize::from(!early), "acknowledged exactly once");

        // The subscriber goes away; its session queues each message once.
        node.broker_mut().closed(sub, now);
        settle(&mut node, now);
        for pid in 2..=6 {
            node.broker_mut().packet(publ, publish(&format!("t/{pid}"), pid), now);
            settle(&mut node, now);
        }
        let queued = node.broker().state().sessions().get("client-1").expect("session").queue.len();
        assert_eq!(queued, 5, "each publish queued once (early {early})");
        assert_eq!(node.broker().state().retained().len(), 6);
        assert_eq!(node.applied(), disk.last_index().unwrap(), "everything in the log is applied");
        assert!(!node.broker_mut().has_proposals());
        states.push(node.broker().state().snapshot());
        if early {
            // The log holds nothing older than the state (everything was
            // forgotten when the first command skipped it), so a new
            // member can only be sent a snapshot.
            assert!(disk.first_index().unwrap() > disk.last_index().unwrap(), "the log is empty");
            assert!(node.stats().unlogged >= 8, "unlogged {}", node.stats().unlogged);
        } else {
            assert_eq!(node.stats().unlogged, 0);
        }

        if early {
            // A proposal applied and not yet logged goes in before the
            // membership change, which ends applying at propose.
            node.broker_mut().packet(publ, publish("t/7", 7), now);
            assert_eq!(node.broker().proposals_applied(), 1);
            let forgotten = disk.last_index().unwrap();
            node.change_membership(true, 2, "127.0.0.1:1", true).expect("propose add");
            assert!(!node.broker_mut().applies_at_propose());
            assert_eq!(node.broker().proposals_applied(), 0);
            settle(&mut node, now);
            assert_eq!(node.conf_state().voters, vec![1, 2]);
            assert!(!node.broker_mut().applies_at_propose(), "not alone: commit is no longer certain");
            assert_eq!(node.broker().state().retained().len(), 7);
            let snap = disk.snapshot(0, 2).expect("a snapshot for the new member");
            let restored = State::restore(&snap.data).expect("snapshot decodes");
            assert_eq!(restored.snapshot(), node.broker().state().snapshot());
            assert_eq!(restored.retained().len(), 7, "the unlogged commands are in the snapshot");
            // What the log still holds came after every unlogged command
            // (the membership change): a new member that needs anything
            // older gets the snapshot.
            assert_eq!(disk.first_index().unwrap(), forgotten + 1, "nothing older to send");
            assert!(snap.get_metadata().index > forgotten);
        }
    }
    assert!(states[0] == states[1], "applying at propose and at commit end in the same state");
}

/// A lone in-memory node (`CommitMode::AtPropose`): a subscriber's PUBACK
/// applies at once (its window has room again) and asks for no run of the
/// driver task; its command is taken with the next input that proposes
/// (here the publisher's next PUBLISH), or by the driver's next pass.
#[test]
fn lone_volatile_node_logs_acknowledgements_with_the_next_input() {
    use midge::cluster::driver::Driver;
    use midge::config::FollowerMode;
    use midge::mqtt::PubResp;

    let now = 1_700_000_000_000;
    let (sub, publ) = (1, 2);
    let disk = MemLog::volatile();
    let node = Node::new(NodeConfig::single(1), disk.clone(), Broker::new(settings(), now), &raft_logger())
        .expect("node starts");
    let mut d = Driver::new(node, CommitMode::AtPropose, FollowerMode::Closed, None, 100, 0);
    let step = |d: &mut Driver<MemLog>| {
        for _ in 0..100 {
            if !d.step(now, 0, &|_| false).expect("step") {
                break;
            }
        }
        d.broker_mut().take_actions().collect::<Vec<_>>()
    };
    step(&mut d);
    for conn in [sub, publ] {
        d.with_broker(now, |b, now| {
            b.open(conn, "127.0.0.1:1".parse().unwrap(), now);
            b.packet(conn, connect_packet(conn, true), now)
        })
        .expect("connect");
    }
    d.with_broker(now, |b, now| {
        let filters =
            vec![("t/#".into(), midge::mqtt::SubOptions { qos: midge::mqtt::QoS::AtLeastOnce, ..Default::default() })];
        let s = midge::mqtt::Subscribe { packet_id: 1, filters, properties: Properties::default() };
        b.packet(sub, Packet::Subscribe(s), now)
    })
    .expect("subscribe");
    step(&mut d);
    assert!(d.broker().applies_at_propose());

    let delivered = |actions: &[Action]| {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Send(c, Packet::Publish(p)) if *c == sub => p.packet_id,
                _ => None,
            })
            .expect("delivered")
    };
    let puback = |pid| Packet::PubAck(PubResp { packet_id: pid, code: 0, properties: Properties::default() });
    d.with_broker(now, |b, now| b.packet(publ, publish("t/1", 1), now)).expect("publish");
    let pid = delivered(&d.broker_mut().take_actions().collect::<Vec<_>>());
    let commands = d.node().stats().commands;

    // The PUBACK alone: applied, not logged, no driver pass asked for.
    let ((), wake) = d.with_broker(now, |b, now| b.packet(sub, puback(pid), now)).expect("puback");
    assert!(!wake, "a lone in-memory node's acknowledgement wakes no driver pass");
    assert!(d.broker().has_proposals());
    assert_eq!(d.broker().proposals_applied(), 1, "applied at once");
    assert_eq!(d.node().stats().commands, commands);

    // The next PUBLISH takes it into its entry: two commands, one entry.
    let proposals = d.node().stats().proposals;
    d.with_broker(now, |b, now| b.packet(publ, publish("t/2", 2), now)).expect("publish");
    assert!(!d.broker().has_proposals());
    assert_eq!(d.node().stats().commands, commands + 2);
    assert_eq!(d.node().stats().proposals, proposals + 1);
    let pid = delivered(&d.broker_mut().take_actions().collect::<Vec<_>>());

    // A last PUBACK with nothing after it: the driver's next pass logs it.
    d.with_broker(now, |b, now| b.packet(sub, puback(pid), now)).expect("puback");
    assert!(d.broker().has_proposals());
    step(&mut d);
    assert!(!d.broker().has_proposals());
    assert_eq!(d.node().stats().commands, commands + 3);
    assert_eq!(d.node().applied(), disk.last_index().unwrap(), "everything in the log is applied");
    let session = d.broker().state().sessions().get("client-1").expect("session");
    assert!(session.inflight.is_empty(), "both deliveries acknowledged");
}
