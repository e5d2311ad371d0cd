//! The raft driver: one `Node` owns a raft-rs `RawNode` over a `RaftLog`
//! and the `Broker` whose commands it replicates. It proposes the broker's
//! commands (one raft entry per batch), runs the Ready loop in the order
//! raft-rs documents, applies committed batches to the broker and takes
//! snapshots. It does no network I/O: raft messages go in through `step`
//! and come out of `ready`, so the deterministic simulation drives it as
//! the server does.

pub mod admin;
mod batch;
pub mod driver;
mod error;
mod node_config;
pub mod status;
pub mod transport;

pub use batch::{decode_batch, encode_batch, BATCH_FORMAT_VERSION};
pub use error::NodeError;
pub use node_config::NodeConfig;
/// A message between the nodes' raft instances (what the transport
/// carries; the runtime only passes it on).
pub use raft::eraftpb::Message as PeerMessage;
pub use status::ClusterStatus;

use log::{info, warn};
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use serde::Serialize;

use crate::broker::state::{Command, Entry, State};
use crate::broker::Broker;
use crate::store::{FlushJob, FlushResult, RaftLog, Staged, StoreError};

/// Entries this leader keeps proposed and not yet committed before it
/// holds new commands back for the next one (see `propose_pending`).
const PROPOSALS_IN_FLIGHT: usize = 1;

/// How long subscribers' final acknowledgements alone may wait for a
/// command that needs a write anyway, when the log is on disk (see
/// `Node::lazy_deferred`).
pub const LAZY_WAIT_MS: u64 = 250;

/// See `Node::snapshot_if_idle`.
const IDLE_SNAPSHOT_MS: u64 = 10_000;

/// Batches this leader proposed and keeps decoded until they are applied
/// (see `Node::proposed`).
const PROPOSED_KEPT: usize = 16;

/// What one pass of the Ready loop produced.
#[derive(Default)]
pub struct ReadyOutput {
    /// Raft messages to send to peers.
    pub messages: Vec<Message>,
    /// Entries applied in this pass.
    pub applied_entries: u64,
}

pub struct Node<L: RaftLog> {
    raw: RawNode<Staged<L>>,
    broker: Broker,
    cfg: NodeConfig,
    applied: u64,
    snapshot_index: u64,
    conf_state: ConfState,
    /// Term for which this node proposed its LeaderStart.
    leader_start_term: u64,
    /// Membership changes applied since the runtime last looked.
    membership_events: Vec<MembershipEvent>,
    force_snapshot: bool,
    /// A membership change applied whose conf state the store could not
    /// write (disk full): written before the next Ready. The log holds the
    /// change, so a restart meanwhile applies it again.
    conf_state_unwritten: Option<ConfState>,
    /// The index of the snapshot from a leader already installed in the
    /// store before its Ready was taken (see `ready`).
    preinstalled: Option<u64>,
    /// See `set_forward_proposals`.
    forward_proposals: bool,
    /// Commands waiting for a leader to forward them to.
    unforwarded: Vec<Entry>,
    /// Commands forwarded and not seen applied yet, with the leader they
    /// went to.
    forwarded: Vec<(u64, Entry)>,
    stats: NodeStats,
    /// The last Ready staged but not yet in a flush (see `flush`).
    unflushed_ready: Option<u64>,
    /// Messages that may leave only once the staged Readies are on disk
    /// (a follower's append responses, votes).
    unflushed_msgs: Vec<Message>,
    /// The same for the flush whose job runs now (`begin_flush`).
    writing_ready: Option<u64>,
    writing_msgs: Vec<Message>,
    /// This leader's proposed entries not yet committed.
    in_flight: std::collections::VecDeque<InFlight>,
    /// Writes are worth batching (a log on disk or peers): see `is_held`.
    /// From the commit mode.
    hold_after_commit: bool,
    /// Hold after every commit, not only one that commands waited for
    /// (`Driver::set_batch_window_us`).
    hold_every_commit: bool,
    /// When an entry was last applied (wall ms), for `snapshot_if_idle`.
    last_apply_ms: u64,
    /// New proposals wait until the runtime calls `release_hold`.
    held: bool,
    /// The commands of this leader's latest proposals, by (index, term),
    /// so that applying its own entries skips decoding them (a tenth of
    /// the work per message on one node). Raft's log matching property
    /// makes (index, term) name one entry's data; anything else decodes.
    proposed: std::collections::VecDeque<(u64, u64, Vec<Entry>)>,
    /// From the commit mode (`CommitMode::AtPropose`: a node without
    /// peers whose log is in memory): while it is the lone voter and leader, its proposals apply
    /// as the broker makes them (`Broker::set_apply_at_propose`), since
    /// its own append commits them and cannot fail. A delivery then
    /// leaves before the log round instead of after it (docs/CONFIG.md,
    /// `persistence`, has the measurement). The commands are then not
    /// logged at all while it stays alone (`log_not_read`).
    apply_at_propose_allowed: bool,
    /// Indexes of the entries applied at propose and not yet committed:
    /// their commit only advances `applied`.
    applied_early: std::collections::VecDeque<u64>,
    /// `now` of the latest Ready pass.
    now_ms: u64,
    /// Something `update_serving` reads may have changed since it last
    /// ran: raft's role or term, an entry applied through the log (a
    /// LeaderStart, a membership change), a tick or a peer's message, a
    /// membership change or leader transfer asked for. A lone leader's
    /// Ready passes otherwise only commit what applied at propose, and
    /// skip it (it ran four times per QoS 1 round trip for nothing).
    serving_stale: bool,
    /// A cluster id in the committed entries that were in the log at start
    /// and not yet applied (see `cluster_id`).
    logged_cluster_id: u128,
}

struct InFlight {
    term: u64,
    index: u64,
    /// Only subscribers' acknowledgements (`Command::Acked`).
    lazy: bool,
}

/// Batching figures: how many broker commands each raft entry and each
/// durable write carried.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct NodeStats {
    /// Raft entries proposed with broker commands.
    pub proposals: u64,
    /// Broker commands in them.
    pub commands: u64,
    /// Durable writes (one redb transaction each).
    pub persists: u64,
    /// Raft entries written by them.
    pub persisted_entries: u64,
    /// Broker commands that a lone in-memory leader applied and did not
    /// log (`Node::log_not_read`); counted in `proposals` and `commands`
    /// too.
    pub unlogged: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    Added { id: u64, addr: String },
    Removed { id: u64 },
}

/// A lone node on a volatile store (`RaftLog::forget_applied`) drops its
/// applied entries once this many pile up: the in-memory log of
/// `persistence false` then stays a few KiB however many clients connect.
const FORGET_AFTER_ENTRIES: u64 = 64;

/// How long a follower keeps commands for a leader it does not know yet
/// (dynsec_sync's group), from their proposal.
const FORWARD_WAIT_MS: u64 = 4_000;
/// At most this many such commands wait.
const FORWARD_KEPT: usize = 64;

pub fn raft_logger() -> slog::Logger {
    use slog::Drain;
    slog::Logger::root(slog_stdlog::StdLog.fuse(), slog::o!())
}

/// The first cluster id in the committed entries after `applied` (0 when
/// none): read in slices of at most 1 MiB, stopping at the first found. A
/// damaged or unreadable entry is left to the replay, which reports it.
fn committed_cluster_id<L: RaftLog>(log: &L, applied: u64, commit: u64) -> u128 {
    let mut next = applied + 1;
    while next <= commit {
        let ctx = raft::GetEntriesContext::empty(false);
        let Ok(entries) = raft::Storage::entries(log, next, commit + 1, 1 << 20, ctx) else { return 0 };
        let Some(last) = entries.last() else { return 0 };
        next = last.index + 1;
        for e in &entries {
            if e.get_entry_type() != EntryType::EntryNormal || e.get_data().is_empty() {
                continue;
            }
            let Ok(cmds) = decode_batch(e.get_data()) else { return 0 };
            if let Some(id) = cmds.iter().find_map(|c| match c.cmd {
                Command::ClusterId { id } if id != 0 => Some(id),
                _ => None,
            }) {
                return id;
            }
        }
    }
    0
}

impl<L: RaftLog> Node<L> {
    /// Open a node on `log`: restore the applied state from the latest
    /// snapshot; raft then replays the committed entries after it.
    pub fn new(cfg: NodeConfig, log: L, mut broker: Broker, logger: &slog::Logger) -> Result<Node<L>, NodeError> {
        let snap = log.latest_snapshot()?;
        let (applied, state) = match &snap {
            Some((idx, _term, _cs, data)) => (*idx, State::restore(data)?),
            None => (0, State::default()),
        };
        let initial = raft::Storage::initial_state(&log)?;
        let mut conf_state = initial.conf_state.clone();
        let mut applied = applied;
        if conf_state.voters.is_empty() && conf_state.learners.is_empty() && !cfg.join {
            // A founding node: the initial membership becomes a snapshot at
            // index 1, term 1 — identical on every founder — so that a node
            // added later learns it from the leader like any other state.
            conf_state.voters = cfg.voters.clone();
            let mut snap = raft::eraftpb::Snapshot::default();
            snap.set_data(State::default().snapshot().into());
            let md = snap.mut_metadata();
            md.index = 1;
            md.term = 1;
            md.set_conf_state(conf_state.clone());
            log.install_snapshot(&snap)?;
            applied = 1;
        }
        let state_cluster_id = state.cluster_id();
        let logged_cluster_id = match state_cluster_id {
            0 => committed_cluster_id(&log, applied, initial.hard_state.commit),
            _ => 0,
        };
        broker.install_state(state);
        broker.set_replicated();
        let rc = Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            min_election_tick: cfg.election_ticks,
            max_election_tick: cfg.election_ticks_max.max(cfg.election_ticks + 1),
            heartbeat_tick: cfg.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: cfg.max_msg_bytes,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 * 1024 * 1024,
            ..Default::default()
        };
        let last_index = raft::Storage::last_index(&log).unwrap_or(0);
        let mut raw = RawNode::new(&rc, Staged::new(log), logger)?;
        if conf_state.voters == [cfg.id] {
            // A one-voter cluster elects itself at once.
            raw.campaign()?;
        }
        let known_id = match (state_cluster_id, logged_cluster_id) {
            (0, 0) => "none yet".to_string(),
            (0, id) => format!("{} (from the log)", transport::cluster_id_hex(id)),
            (id, _) => transport::cluster_id_hex(id),
        };
        info!(
            "Raft node {} starting: applied index {applied}, committed {}, last {}, voters {:?}, cluster id {known_id}.",
            cfg.id,
            initial.hard_state.commit,
            last_index,
            conf_state.voters
        );
        Ok(Node {
            forward_proposals: false,
            unforwarded: Vec::new(),
            forwarded: Vec::new(),
            raw,
            broker,
            cfg,
            applied,
            snapshot_index: applied,
            conf_state,
            leader_start_term: 0,
            membership_events: Vec::new(),
            force_snapshot: false,
            conf_state_unwritten: None,
            preinstalled: None,
            stats: NodeStats::default(),
            unflushed_ready: None,
            unflushed_msgs: Vec::new(),
            writing_ready: None,
            writing_msgs: Vec::new(),
            in_flight: Default::default(),
            hold_after_commit: false,
            hold_every_commit: false,
            last_apply_ms: 0,
            held: false,
            proposed: Default::default(),
            apply_at_propose_allowed: false,
            applied_early: Default::default(),
            now_ms: 0,
            serving_stale: true,
            logged_cluster_id,
        })
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The id of the cluster this node's data belongs to (0: none yet).
    /// Known from the start: from the snapshot, or from a committed entry
    /// not applied yet, so that the first hello to a peer carries it and a
    /// data directory of another cluster is refused before any of its raft
    /// messages are heard.
    pub fn cluster_id(&self) -> u128 {
        match self.broker.state().cluster_id() {
            0 => self.logged_cluster_id,
            id => id,
        }
    }

    /// How commands commit (see `driver::CommitMode`), set once by the
    /// driver.
    pub fn set_commit_mode(&mut self, mode: driver::CommitMode) {
        self.apply_at_propose_allowed = mode == driver::CommitMode::AtPropose;
        self.hold_after_commit = mode != driver::CommitMode::AtPropose;
        self.serving_stale = true;
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Raft's view in one line (and each peer's progress on a leader), for
    /// failure reports.
    pub fn describe(&self) -> String {
        let r = &self.raw.raft;
        let mut s = format!(
            "role {:?} term {} leader {} commit {} applied {} last {} first {}",
            r.state,
            r.term,
            r.leader_id,
            r.raft_log.committed,
            self.applied,
            r.raft_log.last_index(),
            r.raft_log.first_index()
        );
        if r.state == StateRole::Leader {
            for (id, p) in r.prs().iter() {
                s += &format!("\n  progress {id}: {p:?}");
            }
        }
        s
    }

    /// Whether the raft log lives on disk (`persistence true`).
    pub fn log_on_disk(&self) -> bool {
        self.raw.store().on_disk()
    }

    pub fn broker_mut(&mut self) -> &mut Broker {
        &mut self.broker
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Membership changes applied since the last call.
    pub fn take_membership_events(&mut self) -> std::vec::Drain<'_, MembershipEvent> {
        self.membership_events.drain(..)
    }
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }
    /// The link from node `id` ended. If `id` is this follower's leader,
    /// its lease ends now and this node campaigns at its next tick, or a
    /// tick later per voter ranked before it (lowest id first, so the
    /// followers of a dead leader do not split the vote), unless the
    /// leader is heard from again meanwhile (a new link: it was alive).
    /// A leader killed with SIGKILL closes its links at once, so its
    /// followers need not wait out the election timeout (300-600 ms by
    /// default). A pre-vote that finds the others still hearing the leader
    /// fails without a new term. True if this node will campaign early.
    pub fn leader_link_lost(&mut self, id: u64) -> bool {
        let me = self.id();
        let r = &mut self.raw.raft;
        if r.state != raft::StateRole::Follower || r.leader_id != id || !self.conf_state.voters.contains(&me) {
            return false;
        }
        let timeout = r.election_timeout();
        let max = self.cfg.election_ticks_max.max(self.cfg.election_ticks + 1);
        let rank = self.conf_state.voters.iter().filter(|&&v| v != id && v < me).count();
        let at = (timeout + 2 * rank).min(max - 1);
        r.set_randomized_election_timeout(at);
        r.election_elapsed = r.election_elapsed.max(timeout);
        info!(
            "The link from leader node {id} ended: campaigning in {} tick(s) unless it is heard from again.",
            at.saturating_sub(r.election_elapsed).max(1)
        );
        true
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }
    pub fn applied(&self) -> u64 {
        self.applied
    }
    /// Whether this node is the only member (one voter, no learners).
    pub fn is_alone(&self) -> bool {
        self.conf_state.voters == [self.cfg.id] && self.conf_state.learners.is_empty()
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn tick(&mut self) {
        // (A tick may end a leader transfer or an election.)
        self.serving_stale = true;
        self.raw.tick();
    }

    pub fn step(&mut self, mut m: Message) {
        use raft::eraftpb::MessageType;
        self.serving_stale = true;
        let last = self.raw.raft.raft_log.last_index();
        match m.get_msg_type() {
            // A leader that believes this node has entries it no longer has
            // (its data directory was wiped) sends a commit index past our
            // log; raft-rs would panic on it. Commit what we have; the
            // leader learns our real log from the next append's rejection.
            MessageType::MsgHeartbeat if m.commit > last => {
                warn!(
                    "Node {} (leader) believes this node has entries up to {} but its log ends at {}: \
                     was the data directory wiped? Catching up from the leader.",
                    m.from, m.commit, last
                );
                m.commit = last;
            }
            // On the leader: a follower rejects entries at or below what it
            // had acknowledged, so it lost its log (wiped data directory).
            // raft-rs ignores such a rejection as stale and would never
            // resend; start again from what the follower really has.
            MessageType::MsgAppendResponse if m.reject && self.is_leader() => {
                let from = m.from;
                if let Some(pr) = self.raw.raft.mut_prs().get_mut(from) {
                    if m.reject_hint < pr.matched {
                        warn!(
                            "Node {from} lost its log (it has entries up to {}, had acknowledged {}): \
                             resending from there. Its data directory was wiped or replaced; see docs/HA.md.",
                            m.reject_hint, pr.matched
                        );
                        pr.matched = m.reject_hint;
                        pr.become_probe();
                        self.raw.raft.send_append(from);
                        return;
                    }
                }
            }
            _ => {}
        }
        if let Err(e) = self.raw.step(m) {
            // Stale or misdirected messages are normal in raft.
            log::debug!("raft step: {e}");
        }
    }

    /// Propose the broker's pending commands as one raft entry. Dropped
    /// (clients get no acknowledgement and retry) when not the leader.
    ///
    /// Group commit across the cluster: while `PROPOSALS_IN_FLIGHT` of this
    /// leader's entries are not yet committed, new commands wait and go
    /// into the next entry together. Every write and every round trip
    /// then carries as much as arrived meanwhile, instead of a disk write
    /// on every node for each small batch.
    ///
    /// Commands applied at propose (see `apply_at_propose_allowed`) go in
    /// whole or the node stops: the state already holds them.
    /// dynsec_sync's group: a follower's commands go to the leader (raft
    /// forwards a proposal made on a follower). Without a leader they are
    /// dropped; the serving broker answers the request when it times out.
    pub fn set_forward_proposals(&mut self, on: bool) {
        self.forward_proposals = on;
    }

    /// Sends `batch` (and what waits from before) to the leader. Without a
    /// leader the commands wait; sent ones are kept until they apply, and
    /// sent again when another node becomes the leader (the one they went
    /// to may have died with them). Either way at most `FORWARD_WAIT_MS`
    /// from their proposal: the serving broker answers the request with an
    /// error after `broker::dynsec::ANSWER_TIMEOUT_MS`, which is longer. A
    /// command that arrives twice applies twice, harmlessly: each is
    /// absolute (set this, create that), and the second finds it done.
    fn forward(&mut self, batch: Vec<Entry>, now_ms: u64) {
        self.unforwarded.extend(batch);
        let fresh = |e: &Entry| now_ms.saturating_sub(e.now_ms) < FORWARD_WAIT_MS;
        self.unforwarded.retain(fresh);
        self.forwarded.retain(|(_, e)| fresh(e));
        let leader = self.leader_id();
        if leader == 0 || leader == self.cfg.id {
            return;
        }
        // Sent to a node that no longer leads: send again.
        let mut i = 0;
        while i < self.forwarded.len() {
            if self.forwarded[i].0 != leader {
                let (_, e) = self.forwarded.remove(i);
                self.unforwarded.push(e);
            } else {
                i += 1;
            }
        }
        if self.unforwarded.len() > FORWARD_KEPT {
            let drop = self.unforwarded.len() - FORWARD_KEPT;
            self.unforwarded.drain(..drop);
        }
        if self.unforwarded.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unforwarded);
        match self.raw.propose(vec![], encode_batch(&batch)) {
            Ok(()) => {
                self.forwarded.extend(batch.into_iter().map(|e| (leader, e)));
                self.forwarded.truncate(FORWARD_KEPT);
            }
            Err(e) => warn!("Forwarding {} command(s) to the leader failed: {e}.", batch.len()),
        }
    }

    /// Forwards commands that waited for a leader, or whose leader changed
    /// (on each raft tick).
    pub fn retry_forward(&mut self, now_ms: u64) {
        if self.unforwarded.is_empty() && self.forwarded.is_empty() {
            return;
        }
        if !self.is_leader() {
            self.forward(Vec::new(), now_ms);
            return;
        }
        // Became the leader itself: propose them as its own.
        let mut batch = std::mem::take(&mut self.unforwarded);
        batch.extend(self.forwarded.drain(..).map(|(_, e)| e));
        batch.retain(|e| now_ms.saturating_sub(e.now_ms) < FORWARD_WAIT_MS);
        if !batch.is_empty() {
            if let Err(e) = self.raw.propose(vec![], encode_batch(&batch)) {
                warn!("Proposing {} waiting command(s) failed: {e}.", batch.len());
            }
        }
    }

    /// Until when (wall ms) the pending commands wait, when they are only
    /// subscribers' final acknowledgements (PUBACK, PUBCOMP) and the log
    /// is on disk: alone, each entry of them costs a write and its fsync
    /// (a page or two on the medium) where nobody waits for it. They go
    /// with the next command that needs a write, or after `LAZY_WAIT_MS`.
    /// A crash may then lose acknowledgements of the last `LAZY_WAIT_MS`:
    /// those messages are delivered again (QoS 1 and 2 allow it; no
    /// acknowledged PUBLISH is lost).
    pub fn lazy_deferred(&self) -> Option<u64> {
        if !self.raw.store().on_disk() || self.broker.applies_at_propose() {
            return None;
        }
        let since = self.broker.proposals_deferrable()?;
        let until = since + LAZY_WAIT_MS;
        (self.now_ms < until).then_some(until)
    }

    pub fn propose_pending(&mut self) -> Result<(), NodeError> {
        // Apply at propose: those proposed without applying yet first.
        self.broker.apply_proposals(self.now_ms);
        if !self.broker.has_proposals() || self.lazy_deferred().is_some() || !self.can_propose() {
            return Ok(());
        }
        let lazy = self.broker.proposals_lazy();
        let (batch, applied) = self.broker.take_proposals();
        let early = applied > 0;
        if early && (applied < batch.len() || !self.commit_certain()) {
            return Err(self.no_longer_certain(&format!("{applied} of {}", batch.len())));
        }
        if !self.is_leader() {
            if self.forward_proposals {
                let now = batch.last().map_or(0, |e| e.now_ms);
                self.forward(batch, now);
            }
            return Ok(());
        }
        let n = batch.len() as u64;
        if early && self.log_not_read()? {
            // Applied, and no follower or restart will ever read their
            // entry: the state alone carries them.
            self.stats.proposals += 1;
            self.stats.commands += n;
            self.stats.unlogged += n;
            self.broker.recycle_proposals(batch);
            return Ok(());
        }
        match self.raw.propose(vec![], encode_batch(&batch)) {
            Ok(()) => {
                self.stats.proposals += 1;
                self.stats.commands += n;
                let last = self.raw.raft.raft_log.last_index();
                if early {
                    self.applied_early.push_back(last);
                    return Ok(());
                }
                self.in_flight.push_back(InFlight { term: self.term(), index: last, lazy });
                if self.proposed.len() == PROPOSED_KEPT {
                    self.proposed.pop_front();
                }
                self.proposed.push_back((last, self.term(), batch));
            }
            Err(e) if early => {
                return Err(NodeError::AppliedEarly(format!("raft refused their entry: {e}")));
            }
            Err(e) => warn!("Proposal dropped: {e}."),
        }
        Ok(())
    }

    /// Whether commands applied at propose may skip the log: this lone
    /// leader's store dies with the process (`persistence false`), so no
    /// restart reads the log, and no follower does while it is alone. Such
    /// a log would only be forgotten (`maybe_snapshot`); encoding, raft's
    /// append and commit and the forgetting cost a third of a QoS 1 round
    /// trip. What the log holds is first forgotten, so that it never holds
    /// entries older than the state that a new member could be sent
    /// instead of a snapshot: a membership change, which ends applying at
    /// propose first, forces a snapshot of the whole state
    /// (`apply_entries`) and a new member catches up from it. Only with
    /// every entry applied, none early and nothing staged, as at the
    /// forgetting in `maybe_snapshot`.
    fn log_not_read(&mut self) -> Result<bool, NodeError> {
        let log = &self.raw.raft.raft_log;
        let last = log.last_index();
        if !self.raw.store().is_volatile()
            || !self.alone()
            || !self.applied_early.is_empty()
            || self.applied != last
            || log.committed != last
        {
            return Ok(false);
        }
        if self.snapshot_index < self.applied {
            if !self.raw.mut_store().forget_applied(self.applied)? {
                return Ok(false);
            }
            self.snapshot_index = self.applied;
        }
        Ok(true)
    }

    /// Whether an entry proposed now is certain to commit, in order, as
    /// soon as it is appended: this node is the serving leader and the
    /// only voter, with no membership change or leader transfer pending,
    /// and its log is in memory (`apply_at_propose_allowed`, set by the
    /// runtime).
    fn commit_certain(&self) -> bool {
        let r = &self.raw.raft;
        self.apply_at_propose_allowed
            && self.is_leader()
            && self.broker.serving()
            && self.alone()
            && !r.has_pending_conf()
            && r.lead_transferee.is_none()
    }

    /// Applied commands (`how_many`) whose commit is no longer certain.
    fn no_longer_certain(&self, how_many: &str) -> NodeError {
        NodeError::AppliedEarly(format!(
            "{how_many} commands were applied, and their commit is no longer certain (leader {}, voters {:?})",
            self.is_leader(),
            self.conf_state.voters
        ))
    }

    /// Turn the broker's apply at propose on or off. On only from a log
    /// with nothing left to apply (the applied state is then the whole
    /// log, and the next entries follow it); off when the commit is no
    /// longer certain, which must not happen with applied commands not
    /// yet in the log (membership changes and transfers put them in
    /// first).
    fn update_apply_at_propose(&mut self, now: u64) -> Result<(), NodeError> {
        let on = self.broker.applies_at_propose();
        let certain = self.commit_certain();
        if on && !certain {
            if self.broker.proposals_applied() > 0 {
                return Err(self.no_longer_certain(&self.broker.proposals_applied().to_string()));
            }
            self.broker.set_apply_at_propose(false, now);
        } else if !on && certain && self.raw.raft.raft_log.last_index() == self.applied {
            self.broker.set_apply_at_propose(true, now);
        }
        Ok(())
    }

    /// Before a membership change or a leader transfer: the commands
    /// applied at propose go into the log first, and apply at propose
    /// stops (until `update_apply_at_propose` finds the commit certain
    /// again).
    fn end_apply_at_propose(&mut self) -> Result<(), String> {
        // (A membership change or a leader transfer follows.)
        self.serving_stale = true;
        if !self.broker.applies_at_propose() {
            return Ok(());
        }
        self.propose_pending().map_err(|e| e.to_string())?;
        if self.broker.proposals_applied() > 0 {
            return Err("commands are still waiting to go into the log; try again".into());
        }
        self.broker.set_apply_at_propose(false, self.now_ms);
        Ok(())
    }

    /// Whether the broker's pending commands may be proposed now (see
    /// `propose_pending`). Entries committed, or lost to a new term or a
    /// truncated log, no longer count.
    fn can_propose(&mut self) -> bool {
        let committed = self.raw.raft.raft_log.committed;
        let last = self.raw.raft.raft_log.last_index();
        let term = self.term();
        let counted_before = self.in_flight.iter().filter(|e| !e.lazy).count();
        self.in_flight.retain(|e| e.term == term && e.index > committed && e.index <= last);
        let counted_after = self.in_flight.iter().filter(|e| !e.lazy).count();
        if self.hold_after_commit
            && counted_after < counted_before
            && (self.broker.has_proposals() || self.hold_every_commit)
        {
            // Commands waited for the entry just committed: the clients
            // it answers are about to send more. Let the runtime hold
            // the next entry briefly so they join it (see `is_held`).
            self.held = true;
        }
        if !self.is_leader() {
            self.held = false;
        }
        if self.held {
            return false;
        }
        // One entry of subscribers' acknowledgements alone does not hold
        // a publish back (a QoS 1 ping-pong would wait a round for it).
        let lazy = self.in_flight.iter().filter(|e| e.lazy).count();
        let counted = self.in_flight.len() - lazy + lazy.saturating_sub(1);
        counted < PROPOSALS_IN_FLIGHT || !self.is_leader()
    }

    /// Whether proposals are held after a commit. Commands that arrived
    /// while this leader's entry was in flight would go out at once on
    /// its commit, and the publishers it just answered would send theirs
    /// a moment later, into the entry after. With a window of PUBLISHes
    /// per client, the window then splits into two halves that take
    /// turns, each waiting a whole round (a disk write on two nodes)
    /// for the other. The runtime holds proposals until a short while
    /// after the commit (`COMMIT_HOLD` in src/net), at once if the commit
    /// is older, and then calls `release_hold`: the window travels whole,
    /// one write per round.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// See `Driver::set_batch_window_us`.
    pub fn set_hold_every_commit(&mut self, on: bool) {
        self.hold_every_commit = on;
    }

    pub fn release_hold(&mut self) {
        self.held = false;
    }

    /// Whether a Ready pass has work: raft is ready, or commands wait and
    /// may be proposed.
    pub fn has_work(&mut self) -> bool {
        self.raw.has_ready() || (self.broker.has_proposals() && self.lazy_deferred().is_none() && self.can_propose())
    }

    /// One pass of the Ready loop, in raft-rs's documented order, with the
    /// write deferred (raft-rs's asynchronous Ready): committed entries are
    /// applied at once, the new entries and hard state are staged, and
    /// `flush` later writes everything staged in one durable write. `send`
    /// gets the messages raft allows out before this node's own write (the
    /// leader's appends), so followers persist in parallel with the
    /// leader; the rest wait for `flush`. A lone node with its log in
    /// memory (`CommitMode::AtPropose`) writes and finishes each Ready at
    /// once instead (see below).
    pub fn ready(&mut self, now: u64, send: &mut dyn FnMut(Vec<Message>)) -> Result<ReadyOutput, NodeError> {
        let out = ReadyOutput::default();
        // A Ready goes on while a flush's job runs (its entries are staged
        // for the next flush), except one that installs a snapshot: that
        // replaces the log, so it waits for the job.
        if self.raw.store().writing() && self.raw.raft.raft_log.unstable.snapshot.is_some() {
            return Ok(out);
        }
        self.now_ms = now;
        self.propose_pending()?;
        if !self.raw.has_ready() {
            self.update_serving_if_stale(now)?;
            return Ok(out);
        }
        // Writes that a full disk refused, before anything new: an error
        // (`StoreError::Full`) leaves raft's Ready untaken, so the next
        // pass tries them again and loses nothing.
        if let Some(cs) = self.conf_state_unwritten.take() {
            if let Err(e) = self.raw.mut_store().set_conf_state(&cs) {
                self.conf_state_unwritten = Some(cs);
                return Err(e.into());
            }
        }
        if let Some(snap) = &self.raw.raft.raft_log.unstable.snapshot {
            let index = snap.get_metadata().index;
            if self.preinstalled != Some(index) {
                let snap = snap.clone();
                self.raw.mut_store().install_snapshot(&snap)?;
                self.preinstalled = Some(index);
            }
        }
        // From here on a full disk is fatal as any failed write: raft's
        // Ready is taken and cannot be put back.
        self.ready_taken(now, send, out).map_err(|e| match e {
            NodeError::Store(StoreError::Full(why)) => {
                NodeError::Store(StoreError::Io(format!("a write within a Ready found the disk full: {why}")))
            }
            e => e,
        })
    }

    /// `ready` once raft's Ready is due: takes it and carries it out.
    fn ready_taken(
        &mut self,
        now: u64,
        send: &mut dyn FnMut(Vec<Message>),
        mut out: ReadyOutput,
    ) -> Result<ReadyOutput, NodeError> {
        let mut rd = self.raw.ready();
        if rd.ss().is_some() {
            self.serving_stale = true;
        }
        let early = rd.take_messages();
        for m in &early {
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                self.raw.report_snapshot(m.to, raft::SnapshotStatus::Finish);
            }
        }
        if !early.is_empty() {
            send(early);
        }
        let has_snapshot = !rd.snapshot().is_empty();
        if has_snapshot {
            self.serving_stale = true;
            let snap = rd.snapshot().clone();
            if self.preinstalled.take() != Some(snap.get_metadata().index) {
                self.raw.mut_store().install_snapshot(&snap)?;
            }
            self.broker.install_state(State::restore(snap.get_data())?);
            let md = snap.get_metadata();
            self.applied = md.index;
            self.snapshot_index = md.index;
            self.conf_state = md.get_conf_state().clone();
            info!("Installed snapshot at index {} (term {}).", md.index, md.term);
        }
        let committed = rd.take_committed_entries();
        out.applied_entries += self.apply_entries(committed, now)?;
        // Finish this Ready synchronously: rare with a snapshot (a
        // follower far behind); always for a lone node with its log in
        // memory (`CommitMode::AtPropose`), whose write cannot fail and has
        // no fsync to batch for: raft hands out what its append committed
        // from `advance_append` instead of from a second Ready (about a
        // fifth of the raft pipeline's work per QoS 1 round trip).
        let sync = has_snapshot || self.apply_at_propose_allowed;
        if sync
            && !has_snapshot
            && self.unflushed_ready.is_none()
            && self.unflushed_msgs.is_empty()
            && self.raw.store().can_write_through()
        {
            // Nothing waits to be written before this Ready: written
            // without staging (one copy of its entries less).
            if let Some(entries) = self.raw.mut_store().write_through(rd.entries(), rd.hs())? {
                self.stats.persists += 1;
                self.stats.persisted_entries += entries;
            }
            out.messages.extend(rd.take_persisted_messages());
        } else {
            self.raw.mut_store().stage(rd.entries(), rd.hs());
            self.unflushed_msgs.extend(rd.take_persisted_messages());
            if sync {
                out.messages.extend(self.flush()?);
            }
        }
        if sync {
            let mut light = self.raw.advance_append(rd);
            if light.commit_index().is_some() {
                let hs = self.raw.raft.hard_state();
                self.raw.mut_store().stage(&[], Some(&hs));
            }
            out.messages.extend(light.take_messages());
            let committed = light.take_committed_entries();
            out.applied_entries += self.apply_entries(committed, now)?;
        } else {
            self.unflushed_ready = Some(rd.number());
            self.raw.advance_append_async(rd);
        }
        self.raw.advance_apply();
        // A snapshot is sent in one go; report it done at once so that a
        // lost reply leaves the follower in probe state (and the leader
        // sends a new snapshot) instead of waiting forever.
        for m in &out.messages {
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                self.raw.report_snapshot(m.to, raft::SnapshotStatus::Finish);
            }
        }
        self.maybe_snapshot()?;
        self.update_serving_if_stale(now)?;
        Ok(out)
    }

    /// Whether a flush is unfinished: its job runs, or a full disk
    /// refused it and it waits to be written again (`begin_retry`).
    pub fn raw_writing(&self) -> bool {
        self.raw.store().writing()
    }

    /// Whether `flush` has anything to do.
    pub fn needs_flush(&self) -> bool {
        self.unflushed_ready.is_some() || self.raw.store().has_staged()
    }

    /// Write everything the Ready passes staged since the last flush in
    /// one transaction (one fsync), tell raft it is persisted, and return
    /// the messages that waited for it. Run `ready` again afterwards: the
    /// write may have committed entries (the leader counts itself once
    /// its own write is done).
    pub fn flush(&mut self) -> Result<Vec<Message>, NodeError> {
        let job = self.begin_flush()?;
        self.end_flush(job.map(|j| j.run()))
    }

    /// `flush` in steps, for running the write on another thread: the job
    /// (if there is anything to write) goes to `end_flush`. Meanwhile
    /// `ready` goes on: what it stages goes into the next flush, and the
    /// messages that must wait for the disk wait for that one.
    pub fn begin_flush(&mut self) -> Result<Option<FlushJob>, NodeError> {
        let job = self.raw.mut_store().begin_flush()?;
        self.writing_ready = self.unflushed_ready.take();
        self.writing_msgs = std::mem::take(&mut self.unflushed_msgs);
        Ok(job)
    }

    /// After `end_flush` failed with a full disk
    /// (`StoreError::Full`): the job that writes the unfinished flush
    /// again. Its result goes to `end_flush`; until one ends well, raft
    /// learns nothing of it and the messages that wait for it wait.
    pub fn begin_retry(&mut self) -> Result<FlushJob, NodeError> {
        Ok(self.raw.mut_store().begin_retry()?)
    }

    /// Ends a flush begun by `begin_flush`: `result` is the job's result,
    /// `None` if there was no job. Returns the messages that waited.
    pub fn end_flush(&mut self, result: Option<FlushResult>) -> Result<Vec<Message>, NodeError> {
        if let Some(result) = result {
            let entries = self.raw.mut_store().end_flush(result)?;
            self.stats.persists += 1;
            self.stats.persisted_entries += entries;
        }
        if let Some(number) = self.writing_ready.take() {
            self.raw.on_persist_ready(number);
        }
        Ok(std::mem::take(&mut self.writing_msgs))
    }

    fn apply_entries(&mut self, entries: Vec<raft::eraftpb::Entry>, now: u64) -> Result<u64, NodeError> {
        let had_cluster_id = self.broker.state().cluster_id() != 0;
        let mut n = 0;
        for e in entries {
            n += 1;
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    match self.applied_early.front() {
                        Some(&i) if i < e.index => {
                            return Err(NodeError::AppliedEarly(format!("entry {i} did not commit")));
                        }
                        Some(&i) if i == e.index => {
                            // Applied when proposed.
                            self.applied_early.pop_front();
                        }
                        _ if !e.get_data().is_empty() => {
                            self.serving_stale = true;
                            for cmd in
                                self.take_proposed(e.index, e.term).map_or_else(|| decode_batch(e.get_data()), Ok)?
                            {
                                if !self.forwarded.is_empty() {
                                    self.forwarded.retain(|(_, f)| *f != cmd);
                                }
                                self.broker.apply_committed(&cmd, now);
                            }
                        }
                        _ => self.serving_stale = true,
                    }
                }
                EntryType::EntryConfChange => {
                    self.serving_stale = true;
                    let mut cc = ConfChange::default();
                    protobuf::Message::merge_from_bytes(&mut cc, e.get_data())
                        .map_err(|err| NodeError::Entry(err.to_string()))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.store_conf_state(&cs)?;
                    let id = cc.node_id;
                    match cc.get_change_type() {
                        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                            let addr = String::from_utf8_lossy(cc.get_context()).into_owned();
                            if !addr.is_empty() {
                                self.broker.peer_added(id, addr.clone());
                            }
                            self.membership_events.push(MembershipEvent::Added { id, addr });
                        }
                        ConfChangeType::RemoveNode => {
                            self.broker.peer_removed(id);
                            self.membership_events.push(MembershipEvent::Removed { id });
                        }
                    }
                    info!("Membership changed: voters {:?}, learners {:?}.", cs.voters, cs.learners);
                    self.conf_state = cs;
                    // A node added now catches up by snapshot; the stored
                    // one must carry a membership that includes it.
                    self.force_snapshot = true;
                }
                EntryType::EntryConfChangeV2 => {
                    self.serving_stale = true;
                    let mut cc = ConfChangeV2::default();
                    protobuf::Message::merge_from_bytes(&mut cc, e.get_data())
                        .map_err(|err| NodeError::Entry(err.to_string()))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.store_conf_state(&cs)?;
                    info!("Membership changed: voters {:?}, learners {:?}.", cs.voters, cs.learners);
                    self.conf_state = cs;
                }
            }
            self.applied = e.index;
            self.last_apply_ms = self.now_ms;
        }
        if !had_cluster_id && self.broker.state().cluster_id() != 0 && self.raw.store().on_disk() {
            // The cluster id goes into a snapshot at once: the durable
            // commit index can lag what was applied, and a restart must
            // know its cluster before its first hello (see `cluster_id`).
            self.force_snapshot = true;
        }
        Ok(n)
    }

    /// Writes the conf state of an applied membership change; on a full
    /// disk it waits for the next Ready (`conf_state_unwritten`).
    fn store_conf_state(&mut self, cs: &ConfState) -> Result<(), NodeError> {
        match self.raw.mut_store().set_conf_state(cs) {
            Err(StoreError::Full(why)) => {
                log::warn!("The membership change is in the log but its conf state is not yet written ({why}).");
                self.conf_state_unwritten = Some(cs.clone());
                Ok(())
            }
            r => Ok(r?),
        }
    }

    /// The commands of entry (index, term) if this node proposed it and
    /// still keeps them (see `proposed`); older kept ones are dropped.
    fn take_proposed(&mut self, index: u64, term: u64) -> Option<Vec<Entry>> {
        while let Some(&(i, t, _)) = self.proposed.front() {
            if i > index {
                return None;
            }
            let (_, _, cmds) = self.proposed.pop_front()?;
            if i == index && t == term {
                return Some(cmds);
            }
        }
        None
    }

    /// After a burst: a node to which nothing was applied for
    /// `IDLE_SNAPSHOT_MS`, whose log spans more than one segment file,
    /// takes a snapshot that keeps no entries, so that every segment but
    /// the newest is deleted and the store shrinks back, instead of
    /// staying until traffic brings the next snapshot. A follower that
    /// lags then catches up by snapshot. Called per tick.
    pub fn snapshot_if_idle(&mut self, now_ms: u64) -> Result<(), NodeError> {
        if self.last_apply_ms == 0 {
            // Just started: idle from now on, not since 1970 (a snapshot
            // of the state before the log's replay would free nothing and
            // write at once, on a full disk too).
            self.last_apply_ms = now_ms.max(1);
            return Ok(());
        }
        let store = self.raw.store();
        if now_ms.saturating_sub(self.last_apply_ms) < IDLE_SNAPSHOT_MS
            || self.applied < self.raw.raft.raft_log.committed
            || self.conf_state_unwritten.is_some()
            || store.older_segments() == 0
            || store.writing()
            || !self.applied_early.is_empty()
            || self.broker.proposals_applied() > 0
            || self.applied < self.snapshot_index
        {
            return Ok(());
        }
        let data = self.broker.state().snapshot();
        info!(
            "Idle for {} s with {} older log segment(s): snapshot at index {} ({} bytes of state) to free them.",
            IDLE_SNAPSHOT_MS / 1000,
            store.older_segments(),
            self.applied,
            data.len()
        );
        self.raw.mut_store().save_snapshot(self.applied, &self.conf_state, data, 0);
        self.snapshot_index = self.applied;
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        if self.conf_state_unwritten.is_some() {
            // Not before the membership it would carry is on disk.
            return Ok(());
        }
        if !self.applied_early.is_empty() || self.broker.proposals_applied() > 0 {
            // The state is ahead of `applied`: not a snapshot of it.
            return Ok(());
        }
        let since = self.applied.saturating_sub(self.snapshot_index);
        if since == 0 {
            return Ok(());
        }
        if !self.force_snapshot && since >= FORGET_AFTER_ENTRIES && self.alone() {
            // No follower and no restart will read these entries (the
            // store says whether it is such a store): drop them instead of
            // serialising the whole state for a snapshot nobody reads.
            if self.raw.mut_store().forget_applied(self.applied)? {
                self.snapshot_index = self.applied;
                return Ok(());
            }
        }
        if !self.force_snapshot
            && since < self.cfg.snapshot_entries
            && self.raw.store().log_bytes() < self.cfg.snapshot_log_bytes
        {
            return Ok(());
        }
        self.force_snapshot = false;
        let data = self.broker.state().snapshot();
        let bytes = data.len();
        self.raw.mut_store().save_snapshot(self.applied, &self.conf_state, data, self.cfg.snapshot_keep_entries);
        self.snapshot_index = self.applied;
        info!("Snapshot at index {} ({} bytes of state).", self.applied, bytes);
        Ok(())
    }

    /// Whether this node is the cluster's only member.
    fn alone(&self) -> bool {
        let cs = &self.conf_state;
        cs.voters == [self.cfg.id]
            && cs.learners.is_empty()
            && cs.voters_outgoing.is_empty()
            && cs.learners_next.is_empty()
    }

    /// `update_serving`, when something it reads may have changed (see
    /// `serving_stale`). Stale again when it changed something: what it
    /// changed is an input of its next run (serving makes the commit
    /// certain, which turns apply at propose on).
    fn update_serving_if_stale(&mut self, now: u64) -> Result<(), NodeError> {
        if !self.serving_stale {
            return Ok(());
        }
        let before = (self.broker.serving(), self.broker.applies_at_propose(), self.leader_start_term);
        self.update_serving(now)?;
        let after = (self.broker.serving(), self.broker.applies_at_propose(), self.leader_start_term);
        self.serving_stale = before != after;
        Ok(())
    }

    /// Serve clients only as a leader whose LeaderStart (proposed in its
    /// own term) has been applied: its state then holds everything any
    /// earlier leader committed.
    fn update_serving(&mut self, now: u64) -> Result<(), NodeError> {
        self.update_apply_at_propose(now)?;
        let term = self.term();
        if self.is_leader() {
            if self.leader_start_term != term {
                self.leader_start_term = term;
                info!("Node {} is the leader for term {}.", self.cfg.id, term);
                let cmd = Entry { now_ms: now, cmd: Command::LeaderStart { node: self.cfg.id, term } };
                if let Err(e) = self.raw.propose(vec![], encode_batch(&[cmd])) {
                    warn!("LeaderStart proposal failed: {e}.");
                }
            }
            let ready = self.broker.leader_ready() == Some((self.cfg.id, term));
            if ready && !self.broker.serving() {
                info!("Node {} serves clients (term {}, applied index {}).", self.cfg.id, term, self.applied);
            }
            self.broker.set_serving(ready, now);
        } else {
            if self.broker.serving() {
                info!("Node {} is no longer the leader (term {}); closing client connections.", self.cfg.id, term);
            }
            self.broker.set_serving(false, now);
        }
        Ok(())
    }
}
