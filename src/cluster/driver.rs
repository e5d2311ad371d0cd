//! The commit pipeline, without I/O: one `Driver` owns the raft node (and
//! through it the broker) and decides when commands are proposed, when the
//! Ready loop runs, when the log is written, how long a commit holds the
//! next entry, and the per-tick upkeep (preferred leader, `$SYS` cluster
//! values, the redirect target). It takes inputs — the time, peer messages,
//! a finished write, broker input — and leaves what to do in `Out`: raft
//! messages for peers and membership changes for the transport. The
//! runtime (`src/net`) performs them, runs the write job it hands out on a
//! blocking thread, and wakes it at `next_wake_us`. The simulation
//! (`tests/sim_cluster.rs`) runs the same driver.
//!
//! Times: `now_ms` is wall-clock milliseconds (it goes into commands and
//! must agree across nodes); `now_us` is a monotonic microsecond clock for
//! the driver's own timing (ticks, the commit hold).

use std::collections::{BTreeSet, HashMap};

use log::info;
use raft::eraftpb::Message;

use super::admin;
use super::transport::Advertised;
use super::{MembershipEvent, Node, NodeError};
use crate::broker::{Action, Broker, ConnId};
use crate::config::FollowerMode;
use crate::mqtt::{Packet, QoS};
use crate::store::{FlushJob, FlushResult, RaftLog, StoreError};

/// How commands commit: one named mode, chosen once at start from where
/// the log lives and whether the node has peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// A lone node (no `cluster_peer` lines) with its log in memory: its
    /// own append commits an entry and cannot fail, so each command
    /// applies as the broker proposes it and its effects (a delivery, a
    /// PUBACK) leave at once; no follower or restart reads its log, so
    /// the applied commands are not logged (`Node::log_not_read`); the
    /// Ready loop runs at once after the broker's input, with no hold and
    /// nothing to batch for.
    AtPropose,
    /// Log in memory, with peers: commands apply when raft commits them;
    /// each Ready pass writes at once (there is no fsync to batch for);
    /// a commit holds the next entry briefly (see `COMMIT_HOLD`).
    AtCommit,
    /// Log on disk: commands apply when committed; Ready passes stage
    /// their writes and one durable write (one fsync) takes everything
    /// staged, on a blocking thread, while the passes go on (group
    /// commit); a commit holds the next entry briefly.
    AtCommitDurable,
}

impl CommitMode {
    /// The mode for a log on disk or not, with or without peers.
    pub fn choose(log_on_disk: bool, has_peers: bool) -> CommitMode {
        match (log_on_disk, has_peers) {
            (true, _) => CommitMode::AtCommitDurable,
            (false, true) => CommitMode::AtCommit,
            (false, false) => CommitMode::AtPropose,
        }
    }
}

/// How long after a commit a leader holds its next entry, for the clients
/// that commit answered to send more (see `Node::is_held`); a hold that
/// begins later than this after the last commit ends at once. Measured
/// with a windowed 1->1 QoS 1 load on three nodes (holds of 50 to 300 us);
/// see docs/CONFIG.md `persistence_fsync`.
pub const COMMIT_HOLD_US: u64 = 200;
/// Connections a commit's hold waits to hear from, at most.
const AWAITED_MAX: usize = 64;
/// How long a leader keeps the lead before handing it to the preferred one.
const PREFERRED_LEADER_GRACE_MS: u64 = 5_000;
/// Ready passes in one go, at most (the runtime is told to come back).
const READY_PASSES_MAX: usize = 8;
/// How often a write that found the disk full is tried again.
pub const STORE_FULL_RETRY_US: u64 = 1_000_000;
/// The raft tick of a node that is its cluster's only member, at least
/// (the runtime steps every driver once a second; a little less, so that
/// its jitter never skips one).
const LONE_TICK_US: u64 = 900_000;

/// What the runtime is to do after a call.
#[derive(Default)]
pub struct Out {
    /// Raft messages for peers.
    pub messages: Vec<Message>,
    /// Peers to start or stop talking to.
    pub membership: Vec<MembershipEvent>,
}

pub struct Driver<L: RaftLog> {
    node: Node<L>,
    mode: CommitMode,
    steering: FollowerMode,
    preferred_leader: Option<u64>,
    tick_us: u64,
    next_tick_us: u64,
    /// When acknowledgements held back for the next write go alone.
    lazy_wake_us: Option<u64>,
    /// When held proposals go (see `Node::is_held`).
    hold_until_us: Option<u64>,
    /// How long a hold after a commit lasts at most.
    hold_us: u64,
    /// When the last Ready pass applied entries.
    last_applied_us: u64,
    /// Connections the last commit sent packets that call for an answer
    /// (see `expects_answer`), each with how many packets it has yet to
    /// send back (at most `AWAITED_MAX` connections).
    awaited: Vec<(ConnId, u32)>,
    /// A write job is out (between `begin_write` and `end_write`).
    writing: bool,
    /// The last write found the disk full: when it was last tried (us; 0
    /// until the next `step` sets it), and whether the next try is due
    /// (every `STORE_FULL_RETRY_US`).
    store_full: Option<u64>,
    retry_due: bool,
    /// The full disk was found by a write within a Ready pass (a conf
    /// state, a leader's snapshot): passes wait for the retry's time.
    full_in_pass: bool,
    /// The data store's file system has less free than
    /// `persistence_min_free` (see `set_free_space`).
    below_min_free: bool,
    last_transfer_ms: u64,
    /// (term, time) this node last became leader.
    leader_since: (u64, u64),
    /// Where peers serve, from their transport hello.
    advertised: HashMap<u64, Advertised>,
    /// Nodes allowed to talk raft to this one.
    known_peers: BTreeSet<u64>,
    out: Out,
    /// See `set_admin_elsewhere`.
    admin_elsewhere: bool,
    /// The `$SYS/broker/cluster/*` values of the last upkeep.
    last_sys: Vec<(&'static str, String)>,
    /// dynsec_sync's serving driver: the group's values (`set_group_sys`).
    group_sys: Vec<(&'static str, String)>,
}

/// Whether a client usually answers `p` with a packet: a PUBLISH with QoS
/// 1 or 2 with its acknowledgement, a PUBACK (and the rest of QoS 2) with
/// the next PUBLISH of a streaming publisher.
fn expects_answer(p: &Packet) -> bool {
    match p {
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => true,
        Packet::Publish(p) => p.qos != QoS::AtMostOnce,
        _ => false,
    }
}

impl<L: RaftLog> Driver<L> {
    pub fn new(
        mut node: Node<L>,
        mode: CommitMode,
        steering: FollowerMode,
        preferred_leader: Option<u64>,
        tick_ms: u64,
        now_us: u64,
    ) -> Driver<L> {
        node.set_commit_mode(mode);
        let mut known_peers = BTreeSet::new();
        known_peers.extend(node.conf_state().voters.iter().copied());
        known_peers.extend(node.conf_state().learners.iter().copied());
        Driver {
            node,
            mode,
            steering,
            preferred_leader,
            tick_us: tick_ms * 1000,
            next_tick_us: now_us + tick_ms * 1000,
            lazy_wake_us: None,
            hold_until_us: None,
            hold_us: COMMIT_HOLD_US,
            last_applied_us: now_us,
            awaited: Vec::new(),
            writing: false,
            store_full: None,
            retry_due: false,
            full_in_pass: false,
            below_min_free: false,
            last_transfer_ms: 0,
            leader_since: (0, 0),
            advertised: HashMap::new(),
            known_peers,
            out: Out::default(),
            admin_elsewhere: false,
            last_sys: Vec::new(),
            group_sys: Vec::new(),
        }
    }

    pub fn mode(&self) -> CommitMode {
        self.mode
    }

    pub fn node(&self) -> &Node<L> {
        &self.node
    }

    pub fn node_mut(&mut self) -> &mut Node<L> {
        &mut self.node
    }

    /// See `Node::cluster_id`.
    pub fn cluster_id(&self) -> u128 {
        self.node.cluster_id()
    }

    pub fn broker(&self) -> &Broker {
        &self.node.broker
    }

    pub fn broker_mut(&mut self) -> &mut Broker {
        &mut self.node.broker
    }

    /// What the runtime is to do (taken: the next call starts afresh).
    pub fn take_out(&mut self) -> Out {
        std::mem::take(&mut self.out)
    }

    /// Run `f` (client input, the broker's timers) on the broker, then
    /// answer management requests and, in `AtPropose` mode, run the Ready
    /// loop at once. True when the runtime should run `step` soon.
    pub fn with_broker<R>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&mut Broker, u64) -> R,
    ) -> Result<(R, bool), NodeError> {
        let r = f(&mut self.node.broker, now_ms);
        let mut wake = false;
        let control = if self.admin_elsewhere { Vec::new() } else { self.node.broker.take_control_requests() };
        for (conn, req) in control {
            let leader = self.node.leader_id();
            let leader_admin = self.advertised.get(&leader).and_then(|a| a.admin.clone());
            let reply = admin::handle(&mut self.node, leader_admin.as_deref(), &req);
            self.node.broker.admin_reply(conn, reply);
            wake = true;
        }
        let broker = &self.node.broker;
        if broker.has_proposals() {
            // Subscribers' acknowledgements alone wait for the driver's
            // pass: a PUBLISH that arrived with them is then read first
            // and both go into one entry (in a QoS 1 ping-pong the next
            // PUBLISH no longer waits for a raft round of the last PUBACK).
            let lazy = broker.proposals_lazy();
            if self.mode == CommitMode::AtPropose && lazy && broker.proposals_all_applied() {
                // Applied at propose already (the subscriber's window has
                // its room), and nothing waits for them. They are taken
                // with the next client input that proposes, or by the
                // driver's next pass (the runtime's once-a-second timer
                // rings it), without a run of the driver task of their
                // own (about 1.6k instructions per QoS 1 round trip).
            } else if self.mode == CommitMode::AtPropose && !lazy {
                // Commit at once instead of a hop through the driver task
                // (no fsync to batch for). This mode has no hold after a
                // commit, so the pass needs no clock (one read less per
                // client packet).
                let last = self.last_applied_us;
                wake |= self.ready_pass(now_ms, last)?;
            } else {
                wake = true;
            }
        }
        Ok((r, wake))
    }

    /// The batch window (`persistence_batch_window_ms`), for a log on
    /// disk: every commit then holds the next entry until each client it
    /// answered has sent again, or `window_us` after it. A client that
    /// answers at once (a PUBLISH after its PUBACK) ends the hold at once;
    /// clients that publish now and then (sensors) are quiet, and what
    /// others send meanwhile goes into one entry and one write, on every
    /// node: an fsync costs a page or two of the medium whatever it
    /// carries. The cost is at most `window_us` of latency for a message
    /// that arrives during a hold.
    pub fn set_batch_window_us(&mut self, window_us: u64) {
        let on = window_us > 0 && self.mode == CommitMode::AtCommitDurable;
        self.hold_us = if on { window_us.max(COMMIT_HOLD_US) } else { COMMIT_HOLD_US };
        self.node.set_hold_every_commit(on);
    }

    /// dynsec_sync's serving driver: management requests are left for the
    /// runtime, which hands them to the cluster group (`admin`).
    pub fn set_admin_elsewhere(&mut self, on: bool) {
        self.admin_elsewhere = on;
    }

    /// The `$SYS/broker/cluster/*` values of the last raft tick.
    pub fn cluster_sys(&self) -> &[(&'static str, String)] {
        &self.last_sys
    }

    /// dynsec_sync: the cluster group's `$SYS/broker/cluster/*` values,
    /// which the serving broker publishes (with its own batching counters).
    pub fn set_group_sys(&mut self, sys: &[(&'static str, String)]) {
        self.group_sys = sys.to_vec();
    }

    /// A management request (`midge ctl`) for this driver's raft group.
    pub fn admin(&mut self, req: &[u8]) -> Vec<u8> {
        let leader = self.node.leader_id();
        let leader_admin = self.advertised.get(&leader).and_then(|a| a.admin.clone());
        admin::handle(&mut self.node, leader_admin.as_deref(), req)
    }

    /// `packets` came in from `conn`: count them against what the last
    /// commit awaits from it.
    pub fn heard_from(&mut self, conn: ConnId, packets: u32) {
        if let Some(i) = self.awaited.iter().position(|(c, _)| *c == conn) {
            self.awaited[i].1 = self.awaited[i].1.saturating_sub(packets);
            if self.awaited[i].1 == 0 {
                self.awaited.swap_remove(i);
            }
        }
    }

    /// The link from peer `id` ended; true if that changed anything (see
    /// `Node::leader_link_lost`).
    pub fn peer_link_lost(&mut self, id: u64) -> bool {
        self.node.leader_link_lost(id)
    }

    /// A raft message from a peer.
    pub fn peer_message(&mut self, m: Message) {
        self.node.step(m);
    }

    /// A peer's hello: where it serves.
    pub fn peer_hello(&mut self, id: u64, a: Advertised) {
        self.advertised.insert(id, a);
    }

    /// Where peer `id` serves, as its hello said.
    pub fn advertised(&self, id: u64) -> Option<&Advertised> {
        self.advertised.get(&id)
    }

    /// Whether node `id` may talk raft to this one.
    pub fn is_known_peer(&self, id: u64) -> bool {
        self.known_peers.contains(&id)
    }

    /// Peers' raft addresses: `configured` (the `cluster_peer` lines) and
    /// those learnt from membership changes; the runtime dials them.
    pub fn peer_addrs(&mut self, configured: &[(u64, String)]) -> Vec<(u64, String)> {
        let mut all: std::collections::BTreeMap<u64, String> = configured.iter().cloned().collect();
        for (id, a) in self.node.broker.state().peer_addrs() {
            all.entry(*id).or_insert_with(|| a.clone());
        }
        self.known_peers.extend(all.keys().copied());
        all.into_iter().filter(|(id, _)| *id != self.node.id()).collect()
    }

    /// The current leader's first client listener, if another node leads
    /// (the Server Reference of `cluster_follower_mode redirect`).
    pub fn leader_client_addr(&self) -> Option<String> {
        let leader = self.node.leader_id();
        if leader == 0 || leader == self.node.id() {
            return None;
        }
        self.advertised.get(&leader).and_then(|a| a.listeners.first()).map(|l| l.addr.clone())
    }

    /// When the runtime must call `step` at the latest.
    pub fn next_wake_us(&self) -> u64 {
        // A lone node's tick waits for a step that comes anyway.
        let tick = if self.node.is_alone() { u64::MAX } else { self.next_tick_us };
        let wake = self.hold_until_us.map_or(tick, |t| t.min(tick));
        let wake = self.lazy_wake_us.map_or(wake, |t| t.min(wake));
        match self.store_full {
            Some(since) if !self.retry_due && !self.writing => wake.min(since + STORE_FULL_RETRY_US),
            _ => wake,
        }
    }

    /// Whether the disk was full at the last write (then the broker
    /// refuses what needs a new durable write, and the write is tried
    /// again every `STORE_FULL_RETRY_US`).
    pub fn store_full(&self) -> bool {
        self.store_full.is_some() || self.below_min_free
    }

    /// The runtime's look at the data store's file system (once a second,
    /// with `persistence_min_free` set): `free` bytes are free to this
    /// process, `min_free` must stay. Below it the broker refuses durable
    /// changes as on a full disk (0x97), and a leader hands the lead to a
    /// caught-up follower; raft's own writes go on, into the reserve.
    /// Logged once per change.
    pub fn set_free_space(&mut self, free: u64, min_free: u64) {
        let below = free < min_free;
        if below == self.below_min_free {
            return;
        }
        self.below_min_free = below;
        if below {
            log::error!(
                "The data store's file system has {free} bytes free, below persistence_min_free ({min_free}): \
                 refusing changes that need a durable write (MQTT 5 clients get 0x97 Quota exceeded) until there \
                 is room."
            );
        } else {
            log::warn!(
                "The data store's file system has {free} bytes free again (persistence_min_free {min_free}): \
                 durable changes are accepted again."
            );
        }
        let refusing = self.store_full();
        self.node.broker.set_store_full(refusing);
    }

    /// Timers and Ready passes: a raft tick when due (and the upkeep that
    /// goes with it), the end of a commit hold, then Ready passes until
    /// none is left (bounded). True when more work is ready. `connected`
    /// tells whether the transport's link to a peer is up ($SYS).
    pub fn step(&mut self, now_ms: u64, now_us: u64, connected: &dyn Fn(u64) -> bool) -> Result<bool, NodeError> {
        match self.store_full {
            Some(0) => self.store_full = Some(now_us),
            Some(since) if !self.writing && now_us >= since + STORE_FULL_RETRY_US => {
                self.retry_due = true;
                self.store_full = Some(now_us);
            }
            _ => {}
        }
        if now_us >= self.next_tick_us {
            self.node.tick();
            self.upkeep(now_ms, connected);
            // A node that is its cluster's only member has no election to
            // time and no one to send heartbeats: it ticks when the
            // runtime's once-a-second timer calls anyway (its $SYS
            // values), and sets no timer of its own, so that an idle
            // broker sleeps.
            let tick_us = if self.node.is_alone() { self.tick_us.max(LONE_TICK_US) } else { self.tick_us };
            self.next_tick_us += tick_us;
            if self.next_tick_us < now_us {
                self.next_tick_us = now_us + tick_us;
            }
        }
        // The hold ends at its time, or once every client the commit
        // answered has sent as many packets as it got.
        if self.hold_until_us.is_some_and(|t| now_us >= t || self.awaited.is_empty()) {
            self.hold_until_us = None;
            self.node.release_hold();
        }
        if self.full_in_pass && self.retry_due {
            // Try the pass's write again (`ready_pass` sets this again if
            // the disk is still full).
            self.full_in_pass = false;
            if !self.node.raw_writing() {
                self.retry_due = false;
            }
        }
        let more = self.ready_passes(now_ms, now_us)?;
        if !self.full_in_pass && !self.writing && self.store_full.is_some() && !self.node.raw_writing() {
            // The pass's write went in and no flush waits to be written
            // again: over.
            self.store_full = None;
            self.retry_due = false;
            log::warn!("The data store has room again: durable changes are accepted again.");
            self.node.broker.set_store_full(self.below_min_free);
        }
        // Acknowledgements waiting for the next write (`Node::lazy_deferred`)
        // go alone once their wait is over.
        self.lazy_wake_us = self.node.lazy_deferred().map(|until| now_us + until.saturating_sub(now_ms) * 1000);
        // While the disk is full, a Ready that installs a snapshot waits
        // for the unfinished write (see `Node::ready`): not work to run
        // again at once, or the driver would spin until there is room. New
        // peer messages, proposals and the retry's timer still wake it.
        Ok(more && self.store_full.is_none())
    }

    /// Whether a write should begin now (none is out and something is
    /// staged). The runtime lets its connections run first, so that what
    /// is already committed goes out before the fsync, then calls
    /// `begin_write`.
    pub fn wants_write(&self) -> bool {
        !self.writing
            && if self.store_full.is_some() {
                self.retry_due && !self.full_in_pass && self.node.raw_writing()
            } else {
                self.node.needs_flush()
            }
    }

    /// Stage what arrived meanwhile and hand out the write of everything
    /// staged (group commit); `None` when there was nothing to write (the
    /// flush is over at once: call `step` again).
    pub fn begin_write(&mut self, now_ms: u64, now_us: u64) -> Result<Option<FlushJob>, NodeError> {
        self.ready_passes(now_ms, now_us)?;
        if self.store_full.is_some() {
            // Only the unfinished write, again: what was staged meanwhile
            // follows once it is in.
            self.retry_due = false;
            self.writing = true;
            return self.node.begin_retry().map(Some);
        }
        match self.node.begin_flush()? {
            Some(job) => {
                self.writing = true;
                Ok(Some(job))
            }
            None => {
                self.end_write(None)?;
                Ok(None)
            }
        }
    }

    /// The write handed out by `begin_write` is done: raft learns what is
    /// on disk, and the messages that waited for it may leave. Call `step`
    /// next: the write may have committed entries.
    ///
    /// A full disk is not an error: the write stays pending and is tried
    /// again every `STORE_FULL_RETRY_US`; meanwhile the broker refuses
    /// what needs a new durable write (see `Broker::set_store_full`).
    /// Logged once when the disk fills and once when the write succeeds.
    pub fn end_write(&mut self, result: Option<FlushResult>) -> Result<(), NodeError> {
        self.writing = false;
        match self.node.end_flush(result) {
            Ok(msgs) => {
                self.out.messages.extend(msgs);
                if self.store_full.take().is_some() {
                    self.retry_due = false;
                    log::warn!("The data store has room again: durable changes are accepted again.");
                    self.node.broker.set_store_full(self.below_min_free);
                }
                Ok(())
            }
            Err(NodeError::Store(StoreError::Full(why))) => {
                self.disk_full(&why);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A write found the disk full: the broker refuses durable changes
    /// and the write is tried again every `STORE_FULL_RETRY_US`. Logged
    /// when the state begins.
    fn disk_full(&mut self, why: &str) {
        if self.store_full.is_none() {
            log::error!(
                "The data store is full ({why}): refusing changes that need a durable write (MQTT 5 clients get \
                 0x97 Quota exceeded) and trying the write again every {} s.",
                STORE_FULL_RETRY_US / 1_000_000
            );
            self.node.broker.set_store_full(true);
            self.store_full = Some(0);
        }
    }

    /// After a pass: start the hold that follows a commit, or end it at
    /// once if the commit is long past. True when more work is ready.
    pub fn settle(&mut self, now_us: u64) -> bool {
        if self.hold_until_us.is_none() && self.node.is_held() {
            let until = self.last_applied_us + self.hold_us;
            if until <= now_us || self.awaited.is_empty() {
                // Nobody the commit answered is still about to send (or
                // everyone has already sent again).
                self.node.release_hold();
                return true;
            }
            self.hold_until_us = Some(until);
        }
        false
    }

    fn ready_passes(&mut self, now_ms: u64, now_us: u64) -> Result<bool, NodeError> {
        for _ in 0..READY_PASSES_MAX {
            if !self.ready_pass(now_ms, now_us)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One pass of the raft Ready loop; true when more work is ready. With
    /// the log on disk the pass only stages its writes (`begin_write`
    /// writes them); in memory with peers there is nothing to batch for,
    /// so it writes at once and runs the pass that follows. (In
    /// `AtPropose` mode `Node::ready` writes and finishes its Ready
    /// itself.)
    fn ready_pass(&mut self, now_ms: u64, now_us: u64) -> Result<bool, NodeError> {
        if self.full_in_pass {
            return Ok(false);
        }
        let messages = &mut self.out.messages;
        let mut send = |msgs: Vec<Message>| messages.extend(msgs);
        let r = match self.node.ready(now_ms, &mut send) {
            Err(NodeError::Store(StoreError::Full(why))) => {
                // Before raft's Ready was taken (see `Node::ready`): the
                // retry's pass writes it.
                self.disk_full(&why);
                self.full_in_pass = true;
                return Ok(false);
            }
            r => r?,
        };
        let applied = r.applied_entries > 0;
        self.out.messages.extend(r.messages);
        if self.mode == CommitMode::AtCommit {
            let flushed = self.node.flush()?;
            self.out.messages.extend(flushed);
            let messages = &mut self.out.messages;
            let mut send = |msgs: Vec<Message>| messages.extend(msgs);
            let r = self.node.ready(now_ms, &mut send)?;
            self.out.messages.extend(r.messages);
        }
        if applied {
            self.last_applied_us = now_us;
            if self.mode != CommitMode::AtPropose {
                self.await_answers();
            }
        }
        self.out.membership.extend(self.node.take_membership_events().inspect(|ev| match ev {
            MembershipEvent::Added { id, .. } => {
                self.known_peers.insert(*id);
            }
            MembershipEvent::Removed { id } => {
                self.known_peers.remove(id);
            }
        }));
        Ok(self.node.has_work())
    }

    /// Whom this commit answers: the hold after it ends once each has
    /// spoken.
    fn await_answers(&mut self) {
        let w = &mut self.awaited;
        w.clear();
        for a in self.node.broker.actions() {
            if let Action::Send(id, p) = a {
                if !expects_answer(p) {
                    continue;
                }
                match w.iter().position(|(c, _)| c == id) {
                    Some(i) => w[i].1 += 1,
                    None if w.len() < AWAITED_MAX => w.push((*id, 1)),
                    None => {}
                }
            }
        }
    }

    /// Per tick: redirect target, $SYS cluster values, preferred leader.
    fn upkeep(&mut self, now_ms: u64, connected: &dyn Fn(u64) -> bool) {
        self.node.retry_forward(now_ms);
        if let Err(e) = self.node.snapshot_if_idle(now_ms) {
            log::warn!("Snapshot after a quiet spell not taken: {e}.");
        }
        let redirect = if self.steering == FollowerMode::Redirect { self.leader_client_addr() } else { None };
        let node = &mut self.node;
        node.broker.set_redirect(redirect);
        let st = node.status();
        let online = st.voters.iter().filter(|id| **id == st.node_id || connected(**id)).count();
        let mut sys = vec![
            ("role", st.role.to_string()),
            ("node_id", st.node_id.to_string()),
            ("leader_id", st.leader_id.to_string()),
            ("term", st.term.to_string()),
            ("voting_nodes/total", st.voters.len().to_string()),
            ("voting_nodes/online", online.to_string()),
            ("commit_index", st.commit_index.to_string()),
            ("applied_index", st.applied_index.to_string()),
            ("batch/proposals", node.stats.proposals.to_string()),
            ("batch/commands", node.stats.commands.to_string()),
            ("batch/persists", node.stats.persists.to_string()),
            ("batch/persisted_entries", node.stats.persisted_entries.to_string()),
            ("batch/written_bytes", node.raw.store().written_bytes().to_string()),
        ];
        if !st.cluster_id.is_empty() {
            // Until the first leader drew it, nothing (an empty retained
            // value would read as a deletion).
            sys.push(("id", st.cluster_id.clone()));
        }
        for (id, lag) in &st.peer_lag {
            let name: &'static str = match id {
                1 => "peers/1/lag",
                2 => "peers/2/lag",
                3 => "peers/3/lag",
                4 => "peers/4/lag",
                5 => "peers/5/lag",
                _ => "peers/other/lag",
            };
            sys.push((name, lag.to_string()));
        }
        self.last_sys.clone_from(&sys);
        if self.admin_elsewhere {
            // dynsec_sync's serving driver: the cluster's view is the
            // group's; only the batching counters are this node's own log.
            sys.retain(|(k, _)| k.starts_with("batch/"));
            sys.extend(self.group_sys.iter().filter(|(k, _)| !k.starts_with("batch/")).cloned());
        }
        node.broker.set_cluster_sys(sys);
        if node.is_leader() && self.leader_since.0 != node.term() {
            self.leader_since = (node.term(), now_ms);
        }
        let refusing = self.store_full.is_some() || self.below_min_free;
        if refusing && node.is_leader() && now_ms.saturating_sub(self.last_transfer_ms) > 3_000 {
            // A leader whose disk is full refuses every durable change its
            // clients ask for, although the others could commit them: it
            // hands the lead to a caught-up follower (one whose disk takes
            // writes: a full one cannot acknowledge, so is never caught up).
            let me = node.id();
            let to = node.conf_state().voters.iter().copied().find(|&id| id != me && node.caught_up(id));
            if let Some(to) = to {
                let why = if self.store_full.is_some() { "is full" } else { "is below persistence_min_free" };
                log::warn!("The data store {why}: handing leadership to node {to}.");
                self.last_transfer_ms = now_ms;
                node.transfer_leader(to);
            }
        }
        if let Some(p) = self.preferred_leader {
            // A leader keeps the lead for a while first, so that a manual
            // transfer (midge ctl) is not undone at once.
            if node.is_leader()
                && now_ms.saturating_sub(self.leader_since.1) > PREFERRED_LEADER_GRACE_MS
                && p != node.id()
                && node.caught_up(p)
                && now_ms.saturating_sub(self.last_transfer_ms) > 3_000
            {
                info!("Handing leadership to preferred leader node {p} (caught up).");
                self.last_transfer_ms = now_ms;
                node.transfer_leader(p);
            }
        }
    }

    /// The `/health` answer: whether this node serves, and its status as
    /// JSON.
    pub fn status_json(&self) -> (bool, String) {
        let st = self.node.status();
        let lag = st.commit_index.saturating_sub(st.applied_index);
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("lag".into(), lag.into());
            o.insert("store_full".into(), self.store_full().into());
            o.insert("below_min_free".into(), self.below_min_free.into());
            o.insert("batching".into(), serde_json::to_value(self.node.stats).unwrap_or_default());
        }
        (st.serving, v.to_string())
    }
}
