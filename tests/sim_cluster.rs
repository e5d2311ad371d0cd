//! Seeded, deterministic simulation of a three-node midge cluster: the
//! shipped commit pipeline (`cluster::driver::Driver`, in the durable
//! mode the server uses with `persistence true`, over `MemLog`) with the
//! real broker and raft state machines, over a simulated network, clock
//! and disk. From the seed it chooses
//! message loss, delay (reordering), partitions, crashes and restarts.
//! After each run it checks:
//!   1. every QoS 1 message the cluster acknowledged (PUBACK) reached the
//!      persistent subscriber;
//!   2. a persistent session is present after every reconnect once its
//!      SUBSCRIBE was acknowledged;
//!   3. all nodes' applied state is identical at the same applied index;
//!   4. no two nodes served clients in the same term;
//!   5. every dynamic-security change the cluster answered as done (an
//!      admin client creates users now and then, through whichever node
//!      serves) is in every node's state;
//!   6. every message the cluster acknowledged reached the upstream broker
//!      of a bridge (`topic t out 1 "" up/`): a simulated upstream takes
//!      the serving node's bridge queue from its start now and then (a
//!      new connection after any failover), and acknowledges some of what
//!      it got, which the serving node proposes as `BridgeAcked` (the run
//!      settles only once every node's bridge queue is empty).
//!
//! Dynamic security is on: the nodes start from Mosquitto's `init` file
//! (tests/fixtures/dynsec/init.json) with publish and subscribe allowed by
//! default, the first leader imports it, and invariant 3 covers its data.
//! `SIM_SEEDS=N` runs seeds 1..=N (default 200); `SIM_SEED=S` replays one.
//! A failure prints its seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use midge::bridge::{BridgeConfig, Direction, TopicLine};
use midge::broker::{Action, Broker, ConnId, Settings};
use midge::cluster::driver::{CommitMode, Driver};
use midge::cluster::{raft_logger, Node, NodeConfig};
use midge::config::Config;
use midge::config::FollowerMode;
use midge::dynsec::{import_json, DefaultAclType, DynsecState};
use midge::mqtt::{Connect, Packet, Properties, PubResp, Publish, QoS, SubOptions, Subscribe, Version};
use midge::store::{FlushResult, MemLog};
use raft::eraftpb::Message;

const NODES: usize = 3;
const STEP_MS: u64 = 5;
const TICK_MS: u64 = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

struct SimNode {
    node: Option<Driver<MemLog>>,
    disk: MemLog,
    cfg: NodeConfig,
    down_until: u64,
    /// A flush begun and not yet ended: its job ran (the simulated disk
    /// has the data), raft has not been told. Ready passes go on meanwhile.
    writing: Option<Option<FlushResult>>,
}

#[derive(Default)]
struct Client {
    conn: Option<(usize, ConnId)>,
    connacked: bool,
    /// To the broker, delivered on the next step.
    outbox: VecDeque<Packet>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    nodes: Vec<SimNode>,
    net: Vec<(u64, Message)>,
    /// Links cut in both directions, until a time.
    isolated: Option<(usize, u64)>,
    drop_per_million: u64,
    next_conn: ConnId,
    publisher: Client,
    subscriber: Client,
    sub_acked: bool,
    admin: Client,
    admin_subacked: bool,
    /// The user an unanswered createClient asks for.
    admin_pending: Option<String>,
    next_user: u32,
    /// Users whose createClient was answered without an error.
    created: BTreeSet<String>,
    next_seq: u64,
    total_msgs: u64,
    in_flight: BTreeMap<u16, u64>,
    acked: BTreeSet<u64>,
    received: BTreeSet<u64>,
    serving_terms: BTreeMap<u64, usize>,
    /// What the bridge's upstream received (message numbers).
    upstream: BTreeSet<u64>,
    faults: bool,
    log: Vec<String>,
}

fn settings() -> Rc<Settings> {
    let mut bridge = BridgeConfig::new("up", 100_000);
    bridge.addresses.push(("127.0.0.1".into(), 1));
    bridge.topics.push(TopicLine::new("t", Direction::Out, QoS::AtLeastOnce, Some("\"\""), Some("up/")).unwrap());
    let c = Config { dynsec_plugin: true, allow_anonymous: true, bridges: vec![bridge], ..Config::default() };
    Rc::new(c.broker_settings(None, None))
}

/// Mosquitto's `init` file (admin, password "secret"), with publish and
/// subscribe allowed by default for the anonymous publisher and subscriber.
fn dynsec_file() -> DynsecState {
    let mut st = import_json(include_str!("fixtures/dynsec/init.json")).expect("fixture").state;
    st.default_access.set(DefaultAclType::PublishClientSend, true);
    st.default_access.set(DefaultAclType::Subscribe, true);
    st
}

const REQUEST: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";

/// A node as the server runs one with `persistence true`: its log on
/// "disk", staged writes flushed by a write job, a hold after commits.
fn new_node(cfg: &NodeConfig, disk: &MemLog, now: u64) -> Driver<MemLog> {
    let mut broker = Broker::new(settings(), now);
    broker.set_dynsec_file(dynsec_file());
    let node = Node::new(cfg.clone(), disk.clone(), broker, &raft_logger()).expect("node starts");
    Driver::new(node, CommitMode::AtCommitDurable, FollowerMode::Proxy, None, TICK_MS, now * 1000)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let now = 1_700_000_000_000;
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let id = i as u64 + 1;
            let mut cfg = NodeConfig::single(id);
            cfg.voters = (1..=NODES as u64).collect();
            cfg.heartbeat_ticks = 1;
            // Pinned election timeout per node, from the seed.
            cfg.election_ticks = 6 + rng.below(6) as usize;
            cfg.election_ticks_max = cfg.election_ticks + 1;
            cfg.snapshot_entries = 50 + rng.below(200);
            cfg.snapshot_keep_entries = 10;
            let disk = MemLog::new();
            let node = new_node(&cfg, &disk, now);
            nodes.push(SimNode { node: Some(node), disk, cfg, down_until: 0, writing: None });
        }
        let drop_per_million = rng.below(50_000);
        Sim {
            seed,
            rng,
            now,
            nodes,
            net: Vec::new(),
            isolated: None,
            drop_per_million,
            next_conn: 1,
            publisher: Client::default(),
            subscriber: Client::default(),
            sub_acked: false,
            admin: Client::default(),
            admin_subacked: false,
            admin_pending: None,
            next_user: 0,
            created: BTreeSet::new(),
            next_seq: 0,
            total_msgs: 5_000,
            in_flight: BTreeMap::new(),
            acked: BTreeSet::new(),
            received: BTreeSet::new(),
            upstream: BTreeSet::new(),
            serving_terms: BTreeMap::new(),
            faults: true,
            log: Vec::new(),
        }
    }

    fn fail(&self, what: &str) -> ! {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(n) = &n.node {
                eprintln!("node {}: {}", i + 1, n.node().describe());
            }
        }
        let tail: Vec<&String> = self.log.iter().rev().take(30).collect();
        panic!("seed {} failed: {what}\nlast events (newest first):\n{tail:#?}\nreplay: SIM_SEED={} cargo test --test sim_cluster", self.seed, self.seed);
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        matches!(self.isolated, Some((i, _)) if i == a || i == b) && a != b
    }

    fn step(&mut self) {
        self.now += STEP_MS;
        let now = self.now;
        if self.faults {
            self.inject_faults();
        }
        // Restarts.
        for i in 0..NODES {
            if self.nodes[i].node.is_none() && self.nodes[i].down_until <= now {
                let n = new_node(&self.nodes[i].cfg, &self.nodes[i].disk, now);
                self.nodes[i].node = Some(n);
                self.log.push(format!("{now}: node {} restarted", i + 1));
            }
        }
        if matches!(self.isolated, Some((_, until)) if until <= now) {
            self.log.push(format!("{now}: partition healed"));
            self.isolated = None;
        }
        // Deliver due network messages.
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].0 <= now {
                due.push(self.net.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| (m.to, m.from, m.index, m.term, m.get_msg_type() as i32));
        for m in due {
            let to = m.to as usize - 1;
            if let Some(n) = self.nodes[to].node.as_mut() {
                n.peer_message(m);
            }
        }
        // The broker's timers (the server's once-a-second ticker) and
        // client traffic; raft ticks come from the driver.
        if now % 1000 < STEP_MS {
            for i in 0..NODES {
                if let Some(n) = self.nodes[i].node.as_mut() {
                    match n.with_broker(now, |b, now| b.tick(now)) {
                        Ok(_) => {}
                        Err(e) => self.fail(&format!("node {} failed: {e}", i + 1)),
                    }
                    let actions: Vec<Action> = n.broker_mut().take_actions().collect();
                    self.handle_actions(i, actions);
                }
            }
        }
        self.clients();
        self.upstream_bridge();
        for i in 0..NODES {
            self.run_ready(i);
        }
        // Invariant 4.
        for i in 0..NODES {
            if let Some(n) = &self.nodes[i].node {
                if n.broker().serving() {
                    let t = n.node().term();
                    if let Some(other) = self.serving_terms.insert(t, i) {
                        if other != i {
                            self.fail(&format!("nodes {} and {} both served clients in term {t}", other + 1, i + 1));
                        }
                    }
                }
            }
        }
    }

    /// The server's driver loop, with the simulation's choices: a write
    /// begins now or, a third of the time, a step later (a crash in
    /// between loses it, as a crash during a real write would); a begun
    /// write ends at once or, half the time, later, while the driver's
    /// passes (and the next staging) go on.
    fn run_ready(&mut self, i: usize) {
        for _ in 0..10 {
            let (now, now_us) = (self.now, self.now * 1000);
            let sn = &mut self.nodes[i];
            let Some(n) = sn.node.as_mut() else { return };
            let mut more = false;
            if sn.writing.is_some() && !self.rng.chance(330_000) {
                if let Err(e) = n.end_write(sn.writing.take().flatten()) {
                    self.fail(&format!("node {} flush failed: {e}", i + 1));
                }
                more = true;
            }
            let sn = &mut self.nodes[i];
            let Some(n) = sn.node.as_mut() else { return };
            match n.step(now, now_us, &|_| true) {
                Ok(m) => more |= m,
                Err(e) => self.fail(&format!("node {} ready failed: {e}", i + 1)),
            }
            let sn = &mut self.nodes[i];
            let Some(n) = sn.node.as_mut() else { return };
            if n.wants_write() && !self.rng.chance(330_000) {
                let job = match n.begin_write(now, now_us) {
                    Ok(job) => job,
                    Err(e) => self.fail(&format!("node {} flush failed: {e}", i + 1)),
                };
                let sn = &mut self.nodes[i];
                let Some(n) = sn.node.as_mut() else { return };
                if let Some(job) = job {
                    let result = Some(job.run());
                    if self.rng.chance(500_000) {
                        sn.writing = Some(result);
                    } else if let Err(e) = n.end_write(result) {
                        self.fail(&format!("node {} flush failed: {e}", i + 1));
                    }
                }
                more = true;
            }
            let sn = &mut self.nodes[i];
            let Some(n) = sn.node.as_mut() else { return };
            more |= n.settle(now_us);
            let actions: Vec<Action> = n.broker_mut().take_actions().collect();
            let out = n.take_out();
            for m in out.messages {
                self.check_durable_before_sent(i, &m);
                let to = m.to as usize - 1;
                if self.cut(i, to) || self.rng.chance(self.drop_per_million) {
                    continue;
                }
                let delay = 1 + self.rng.below(15);
                self.net.push((now + delay, m));
            }
            self.handle_actions(i, actions);
            if !more {
                break;
            }
        }
    }

    /// Invariant 5: what a node's message promises is on its disk before
    /// the message leaves (the entries it acknowledges, the vote it
    /// grants): a crash must not take back a promise others counted on.
    fn check_durable_before_sent(&self, i: usize, m: &raft::eraftpb::Message) {
        use raft::eraftpb::MessageType;
        use raft::Storage;
        let disk = &self.nodes[i].disk;
        match m.get_msg_type() {
            MessageType::MsgAppendResponse if !m.reject => {
                let last = disk.last_index().unwrap_or(0);
                if m.index > last {
                    self.fail(&format!(
                        "node {} acknowledged entries up to {} with only {last} on disk",
                        i + 1,
                        m.index
                    ));
                }
            }
            MessageType::MsgRequestVoteResponse if !m.reject => {
                let hs = disk.initial_state().map(|s| s.hard_state).unwrap_or_default();
                if hs.vote != m.to || hs.term < m.term {
                    self.fail(&format!(
                        "node {} granted its vote to {} in term {} before writing it (disk: vote {} term {})",
                        i + 1,
                        m.to,
                        m.term,
                        hs.vote,
                        hs.term
                    ));
                }
            }
            _ => {}
        }
    }

    fn inject_faults(&mut self) {
        let now = self.now;
        let down = self.nodes.iter().filter(|n| n.node.is_none()).count();
        // A crash now and then (at most one node down at a time).
        if down == 0 && self.rng.chance(2_000) {
            let i = self.rng.below(NODES as u64) as usize;
            self.nodes[i].node = None;
            self.nodes[i].writing = None;
            self.nodes[i].down_until = now + 200 + self.rng.below(2_000);
            self.net.retain(|(_, m)| m.to as usize != i + 1);
            for c in [&mut self.publisher, &mut self.subscriber] {
                if matches!(c.conn, Some((n, _)) if n == i) {
                    c.conn = None;
                    c.connacked = false;
                }
            }
            self.log.push(format!("{now}: node {} crashed", i + 1));
        }
        if self.isolated.is_none() && self.rng.chance(1_000) {
            let i = self.rng.below(NODES as u64) as usize;
            self.isolated = Some((i, now + 300 + self.rng.below(3_000)));
            self.log.push(format!("{now}: node {} isolated", i + 1));
        }
    }

    fn serving_node(&self) -> Option<usize> {
        (0..NODES).find(|&i| self.nodes[i].node.as_ref().is_some_and(|n| n.broker().serving()))
    }

    fn connect(&mut self, publisher: bool) {
        self.connect_as(if publisher { Who::Publisher } else { Who::Subscriber })
    }

    fn connect_as(&mut self, who: Who) {
        let Some(i) = self.serving_node() else { return };
        if self.isolated.is_some_and(|(iso, _)| iso == i) {
            return; // the client cannot reach it either
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let now = self.now;
        let (id, clean) = match who {
            Who::Publisher => ("pub", true),
            Who::Subscriber => ("sub", false),
            Who::Admin => ("admin", true),
        };
        let n = self.nodes[i].node.as_mut().unwrap();
        n.broker_mut().open(conn, "127.0.0.1:1".parse().unwrap(), now);
        let admin = who == Who::Admin;
        let c = Connect {
            version: Version::V311,
            client_id: id.into(),
            clean_start: clean,
            keep_alive: 0,
            username: admin.then(|| "admin".into()),
            password: admin.then(|| b"secret".to_vec()),
            will: None,
            properties: Properties::default(),
        };
        let client = match who {
            Who::Publisher => &mut self.publisher,
            Who::Subscriber => &mut self.subscriber,
            Who::Admin => {
                self.admin_subacked = false;
                self.admin_pending = None;
                &mut self.admin
            }
        };
        client.conn = Some((i, conn));
        client.connacked = false;
        client.outbox.clear();
        if let Err(e) = n.with_broker(now, |b, now| b.packet(conn, Packet::Connect(Box::new(c)), now)) {
            self.fail(&format!("node {} failed: {e}", i + 1));
        }
        self.log.push(format!("{now}: {id} connects to node {} as conn {conn}", i + 1));
        let n = self.nodes[i].node.as_mut().unwrap();
        let actions: Vec<Action> = n.broker_mut().take_actions().collect();
        self.handle_actions(i, actions);
    }

    fn clients(&mut self) {
        let now = self.now;
        if self.publisher.conn.is_none() {
            self.in_flight.clear();
            self.connect(true);
        }
        if self.subscriber.conn.is_none() {
            self.connect(false);
        }
        if self.admin.conn.is_none() && self.rng.chance(2_000) {
            self.connect_as(Who::Admin);
        }
        // Admin: now and then a new user, one request at a time.
        if self.admin.connacked && self.admin_subacked && self.admin_pending.is_none() && self.rng.chance(2_000) {
            let user = format!("user{}", self.next_user);
            self.next_user += 1;
            let body = format!(
                r#"{{"commands":[{{"command":"createClient","username":"{user}","password":"pw"}},{{"command":"getClient","username":"{user}"}}]}}"#
            );
            self.log.push(format!("{now}: admin asks for {user}"));
            self.admin_pending = Some(user);
            self.admin.outbox.push_back(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: Rc::from(REQUEST),
                packet_id: Some(1),
                payload: Rc::from(body.as_bytes()),
                properties: Properties::default(),
            }));
        }
        // Publisher: a window of 8 QoS 1 messages.
        if self.sub_acked
            && self.publisher.connacked
            && self.in_flight.len() < 8
            && self.next_seq < self.total_msgs
            && self.rng.chance(300_000)
        {
            let seq = self.next_seq;
            self.next_seq += 1;
            let pid = (seq % 60_000) as u16 + 1;
            self.in_flight.insert(pid, seq);
            self.publisher.outbox.push_back(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: Rc::from("t"),
                packet_id: Some(pid),
                payload: Rc::from(seq.to_be_bytes().as_slice()),
                properties: Properties::default(),
            }));
        }
        for who in [Who::Publisher, Who::Subscriber, Who::Admin] {
            let c = match who {
                Who::Publisher => &mut self.publisher,
                Who::Subscriber => &mut self.subscriber,
                Who::Admin => &mut self.admin,
            };
            let Some((i, conn)) = c.conn else { continue };
            if self.isolated.is_some_and(|(iso, _)| iso == i) {
                continue; // packets wait until the partition heals or the conn dies
            }
            let packets: Vec<Packet> = c.outbox.drain(..).collect();
            let Some(n) = self.nodes[i].node.as_mut() else { continue };
            for p in packets {
                if let Err(e) = n.with_broker(now, |b, now| b.packet(conn, p, now)) {
                    self.fail(&format!("node {} failed: {e}", i + 1));
                }
            }
            let Some(n) = self.nodes[i].node.as_mut() else { continue };
            let actions: Vec<Action> = n.broker_mut().take_actions().collect();
            self.handle_actions(i, actions);
        }
    }

    /// The bridge's upstream broker: now and then it receives the first
    /// messages of the serving node's bridge queue (as a bridge resends
    /// its queue from the start on each new connection), and acknowledges
    /// some of them, which that node proposes as `BridgeAcked`.
    fn upstream_bridge(&mut self) {
        if !self.rng.chance(500_000) {
            return;
        }
        let Some(i) = self.serving_node() else { return };
        if self.isolated.is_some_and(|(iso, _)| iso == i) {
            return;
        }
        let now = self.now;
        let n = self.nodes[i].node.as_mut().unwrap();
        let sent: Vec<(u64, u64)> = n.broker().state().bridge_queue("up").map_or_else(Vec::new, |q| {
            q.after(None, 64).map(|m| (m.seq, u64::from_be_bytes(m.msg.payload[..8].try_into().unwrap()))).collect()
        });
        if sent.is_empty() {
            return;
        }
        self.upstream.extend(sent.iter().map(|(_, msg)| *msg));
        // Now and then acknowledgements are lost with the connection.
        let keep = if self.rng.chance(200_000) { self.rng.below(sent.len() as u64) as usize } else { sent.len() };
        let seqs: Vec<u64> = sent[..keep].iter().map(|(seq, _)| *seq).collect();
        if let Err(e) = n.with_broker(now, |b, now| b.bridge_acked("up", seqs, now)) {
            self.fail(&format!("node {} failed: {e}", i + 1));
        }
        let n = self.nodes[i].node.as_mut().unwrap();
        let actions: Vec<Action> = n.broker_mut().take_actions().collect();
        self.handle_actions(i, actions);
    }

    fn handle_actions(&mut self, node: usize, actions: Vec<Action>) {
        let now = self.now;
        for a in actions {
            match a {
                Action::Send(conn, p) => {
                    if self.publisher.conn == Some((node, conn)) {
                        match p {
                            Packet::ConnAck(a) if a.code == 0 => self.publisher.connacked = true,
                            Packet::PubAck(r) => {
                                if let Some(seq) = self.in_flight.remove(&r.packet_id) {
                                    self.acked.insert(seq);
                                }
                            }
                            _ => {}
                        }
                    } else if self.subscriber.conn == Some((node, conn)) {
                        match p {
                            Packet::ConnAck(a) if a.code == 0 => {
                                if self.sub_acked && !a.session_present {
                                    self.fail("subscriber's session was not present after reconnect");
                                }
                                self.subscriber.connacked = true;
                                if !self.sub_acked {
                                    self.subscriber.outbox.push_back(Packet::Subscribe(Subscribe {
                                        packet_id: 1,
                                        filters: vec![(
                                            "t".into(),
                                            SubOptions { qos: QoS::AtLeastOnce, ..Default::default() },
                                        )],
                                        properties: Properties::default(),
                                    }));
                                }
                            }
                            Packet::SubAck(_) => self.sub_acked = true,
                            Packet::Publish(p) => {
                                let seq = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                                self.received.insert(seq);
                                if let Some(pid) = p.packet_id {
                                    self.subscriber.outbox.push_back(Packet::PubAck(PubResp {
                                        packet_id: pid,
                                        code: 0,
                                        properties: Properties::default(),
                                    }));
                                }
                            }
                            _ => {}
                        }
                    } else if self.admin.conn == Some((node, conn)) {
                        match p {
                            Packet::ConnAck(a) if a.code == 0 => {
                                self.admin.connacked = true;
                                self.admin.outbox.push_back(Packet::Subscribe(Subscribe {
                                    packet_id: 2,
                                    filters: vec![(RESPONSE.into(), SubOptions::default())],
                                    properties: Properties::default(),
                                }));
                            }
                            Packet::ConnAck(a) => self.fail(&format!("admin refused: CONNACK {}", a.code)),
                            Packet::SubAck(s) if s.codes == vec![0] => self.admin_subacked = true,
                            Packet::SubAck(s) => self.fail(&format!("admin's subscription refused: {:?}", s.codes)),
                            Packet::Publish(p) if &*p.topic == RESPONSE => self.admin_answer(&p.payload),
                            _ => {}
                        }
                    }
                }
                Action::Close(conn) => {
                    for c in [&mut self.publisher, &mut self.subscriber, &mut self.admin] {
                        if c.conn == Some((node, conn)) {
                            c.conn = None;
                            c.connacked = false;
                        }
                    }
                    self.log.push(format!("{now}: node {} closed conn {conn}", node + 1));
                    if let Some(n) = self.nodes[node].node.as_mut() {
                        if let Err(e) = n.with_broker(now, |b, now| b.closed(conn, now)) {
                            self.fail(&format!("node {} failed: {e}", node + 1));
                        }
                        let n = self.nodes[node].node.as_mut().unwrap();
                        let more: Vec<Action> = n.broker_mut().take_actions().collect();
                        self.handle_actions(node, more);
                    }
                }
            }
        }
    }

    /// The answer to a createClient + getClient request.
    fn admin_answer(&mut self, payload: &[u8]) {
        let Some(user) = self.admin_pending.take() else { self.fail("an answer nobody asked for") };
        let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON answer");
        let r = &v["responses"];
        self.log.push(format!("{}: admin got {v}", self.now));
        if r[0]["command"] != "createClient" || r[1]["command"] != "getClient" {
            self.fail(&format!("answer out of order: {v}"));
        }
        if r[0].get("error").is_none() {
            // The read in the same request sees the change before it.
            if r[1]["data"]["client"]["username"] != user.as_str() {
                self.fail(&format!("getClient after createClient did not see {user}: {v}"));
            }
            self.created.insert(user);
        }
    }

    fn run(&mut self) {
        let fault_until = self.now + 30_000;
        while self.now < fault_until {
            self.step();
        }
        // Heal and settle.
        self.faults = false;
        self.isolated = None;
        self.log.push(format!("{}: faults stop", self.now));
        let settle_until = self.now + 20_000;
        while self.now < settle_until {
            self.step();
            if self.settled() {
                break;
            }
        }
        // Then no new messages: what is in flight and queued drains (the
        // bridge's upstream takes only committed, acknowledged ones).
        self.total_msgs = self.total_msgs.min(self.next_seq);
        let drain_until = self.now + 20_000;
        while self.now < drain_until && !self.settled() {
            self.step();
        }
        // Invariant 1.
        let lost: Vec<u64> = self.acked.difference(&self.received).copied().collect();
        if !lost.is_empty() {
            self.fail(&format!(
                "{} acknowledged messages never delivered: {:?}",
                lost.len(),
                &lost[..lost.len().min(20)]
            ));
        }
        if self.acked.len() < 10 {
            self.fail(&format!("only {} messages were acknowledged: the cluster made no progress", self.acked.len()));
        }
        // Invariant 3: compare at a moment all nodes applied the same index
        // (periodic Tick commands keep the log moving).
        let mut applied: Vec<u64> = Vec::new();
        for _ in 0..2_000 {
            applied = self.nodes.iter().map(|n| n.node.as_ref().unwrap().node().applied()).collect();
            if applied.iter().all(|a| *a == applied[0]) {
                break;
            }
            self.step();
        }
        if applied.iter().any(|a| *a != applied[0]) {
            self.fail(&format!("nodes did not converge: applied indexes {applied:?}"));
        }
        let snaps: Vec<Vec<u8>> =
            self.nodes.iter().map(|n| n.node.as_ref().unwrap().broker().state().snapshot()).collect();
        if snaps.iter().any(|s| *s != snaps[0]) {
            self.fail(&format!("applied state differs between nodes at index {}", applied[0]));
        }
        // Invariant 6.
        let lost: Vec<u64> = self.acked.difference(&self.upstream).copied().collect();
        if !lost.is_empty() {
            let queues: Vec<Vec<(u64, u64)>> = self
                .nodes
                .iter()
                .map(|n| {
                    n.node.as_ref().unwrap().broker().state().bridge_queue("up").map_or_else(Vec::new, |q| {
                        q.items
                            .iter()
                            .map(|m| (m.seq, u64::from_be_bytes(m.msg.payload[..8].try_into().unwrap())))
                            .collect()
                    })
                })
                .collect();
            self.fail(&format!(
                "{} acknowledged messages never reached the bridge's upstream: {:?}; queues (seq, message) {queues:?}",
                lost.len(),
                &lost[..lost.len().min(20)]
            ));
        }
        // Invariant 5.
        for (i, n) in self.nodes.iter().enumerate() {
            let st = n.node.as_ref().unwrap().broker().state();
            let Some(ds) = st.dynsec() else { self.fail(&format!("node {} has no dynamic-security data", i + 1)) };
            let missing: Vec<&String> = self.created.iter().filter(|u| !ds.clients.contains_key(*u)).collect();
            if !missing.is_empty() {
                self.fail(&format!("node {} lost answered dynamic-security changes: {missing:?}", i + 1));
            }
        }
    }

    fn settled(&self) -> bool {
        let all_up = self.nodes.iter().all(|n| n.node.is_some());
        let applied: Vec<u64> = self.nodes.iter().filter_map(|n| n.node.as_ref().map(|n| n.node().applied())).collect();
        all_up
            && applied.iter().all(|a| *a == applied[0])
            && self.next_seq >= self.total_msgs
            && self.in_flight.is_empty()
            && self.acked.is_subset(&self.received)
            && self.net.is_empty()
            && self.nodes.iter().all(|n| {
                n.node
                    .as_ref()
                    .is_some_and(|n| n.broker().state().bridge_queue("up").is_none_or(|q| q.items.is_empty()))
            })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Publisher,
    Subscriber,
    Admin,
}

#[test]
fn simulated_three_node_cluster_loses_nothing() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
            (1..=n).collect()
        }
    };
    let mut acked_total = 0;
    let mut created_total = 0;
    for seed in seeds {
        let mut sim = Sim::new(seed);
        sim.run();
        let crashes = sim.log.iter().filter(|l| l.contains("crashed")).count();
        let partitions = sim.log.iter().filter(|l| l.contains("isolated")).count();
        let connects = sim.log.iter().filter(|l| l.contains("connects")).count();
        println!(
            "seed {seed}: {} acked, {} received, {} upstream, {} users created, {crashes} crashes, {partitions} partitions, {connects} client connects, {} serving terms, applied index {}",
            sim.acked.len(),
            sim.received.len(),
            sim.upstream.len(),
            sim.created.len(),
            sim.serving_terms.len(),
            sim.nodes[0].node.as_ref().unwrap().node().applied()
        );
        acked_total += sim.acked.len();
        created_total += sim.created.len();
    }
    assert!(acked_total > 0);
    assert!(created_total > 0, "no dynamic-security change was answered in any run");
}
