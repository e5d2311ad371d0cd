//! What a node reports about itself (health endpoint, `midge ctl status`,
//! `$SYS/broker/cluster/...`) and the membership and leadership changes
//! an operator asks for.

use log::warn;
use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::StateRole;
use serde::Serialize;

use super::Node;
use crate::metrics::{Exposition, Histogram};
use crate::store::RaftLog;

/// Raft roles, in the order `GET /metrics` lists them.
const ROLES: [&str; 4] = ["leader", "follower", "candidate", "pre-candidate"];

/// What one raft log reports to `GET /metrics`.
#[derive(Debug, Clone, Copy)]
pub struct StoreMetrics {
    pub proposals: u64,
    pub commands: u64,
    pub write_time: Histogram,
    pub writes: u64,
    pub persisted_entries: u64,
    pub written_bytes: u64,
    pub log_bytes: u64,
}

/// A point-in-time view of this node for the health endpoint, `midge ctl
/// status` and `$SYS/broker/cluster/...`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// The cluster's id (32 hex digits); empty until its first leader
    /// drew one.
    pub cluster_id: String,
    pub role: &'static str,
    pub serving: bool,
    pub term: u64,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Leader only: entries each peer is behind the leader's last index.
    pub peer_lag: Vec<(u64, u64)>,
}

impl<L: RaftLog> Node<L> {
    pub fn status(&self) -> ClusterStatus {
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        };
        let mut peer_lag = Vec::new();
        if r.state == StateRole::Leader {
            let last = r.raft_log.last_index();
            let mut v: Vec<(u64, u64)> = r
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.cfg.id)
                .map(|(id, p)| (*id, last.saturating_sub(p.matched)))
                .collect();
            v.sort();
            peer_lag = v;
        }
        let mut voters: Vec<u64> = self.conf_state.voters.clone();
        voters.sort();
        ClusterStatus {
            node_id: self.cfg.id,
            cluster_id: match self.broker.state().cluster_id() {
                0 => String::new(),
                id => super::transport::cluster_id_hex(id),
            },
            role,
            serving: self.broker.serving(),
            term: r.term,
            leader_id: r.leader_id,
            commit_index: r.raft_log.committed,
            applied_index: self.applied,
            voters,
            learners: self.conf_state.learners.clone(),
            peer_lag,
        }
    }

    /// The raft part of `GET /metrics`: the values of `status` (and of
    /// `$SYS/broker/cluster/...`).
    pub fn write_raft_metrics(&self, e: &mut Exposition) {
        let st = self.status();
        e.gauge("midge_raft_node_id", "This node's cluster_node_id (1 without a cluster).", st.node_id);
        e.gauge("midge_raft_term", "Raft term.", st.term);
        e.gauge("midge_raft_leader_id", "The leader this node knows of (0: none).", st.leader_id);
        let roles: Vec<(&str, u64)> = ROLES.iter().map(|r| (*r, u64::from(*r == st.role))).collect();
        e.labelled("gauge", "midge_raft_role", "1 for this node's raft role, 0 for the others.", "role", &roles);
        e.gauge("midge_raft_commit_index", "Highest raft log index known committed.", st.commit_index);
        e.gauge("midge_raft_applied_index", "Highest raft log index applied to this node's state.", st.applied_index);
        e.gauge("midge_raft_voters", "Voting members of the cluster.", st.voters.len() as u64);
        let lag: Vec<(String, u64)> = st.peer_lag.iter().map(|(id, lag)| (id.to_string(), *lag)).collect();
        let lag: Vec<(&str, u64)> = lag.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        e.labelled(
            "gauge",
            "midge_raft_peer_lag_entries",
            "Leader only: log entries each peer is behind the leader's last index.",
            "peer",
            &lag,
        );
    }

    /// This node's log writes, for `GET /metrics`.
    pub fn store_metrics(&self) -> StoreMetrics {
        let store = self.raw.store();
        StoreMetrics {
            proposals: self.stats.proposals,
            commands: self.stats.commands,
            write_time: *store.write_time(),
            writes: self.stats.persists,
            persisted_entries: self.stats.persisted_entries,
            written_bytes: store.written_bytes(),
            log_bytes: store.log_bytes(),
        }
    }

    /// Peers whose replication is caught up with the leader (leader only):
    /// matched == last index and recently active.
    pub fn caught_up(&self, id: u64) -> bool {
        let r = &self.raw.raft;
        r.state == StateRole::Leader
            && r.prs().get(id).is_some_and(|p| p.recent_active && p.matched == r.raft_log.last_index())
    }

    /// Propose adding (with its raft address) or removing a voter. One
    /// change at a time; a change that leaves fewer than three voters (or
    /// exactly two) is refused unless `force`.
    pub fn change_membership(&mut self, add: bool, id: u64, addr: &str, force: bool) -> Result<(), String> {
        if !self.is_leader() {
            return Err(format!("node {} is not the leader (leader is {})", self.cfg.id, self.leader_id()));
        }
        if self.raw.raft.has_pending_conf() {
            return Err("another membership change is still in progress".into());
        }
        let voters = &self.conf_state.voters;
        let after = if add {
            if voters.contains(&id) {
                return Err(format!("node {id} is already a voter"));
            }
            if addr.is_empty() {
                return Err("addNode needs the new node's raft address (host:port)".into());
            }
            voters.len() + 1
        } else {
            if !voters.contains(&id) {
                return Err(format!("node {id} is not a voter"));
            }
            voters.len() - 1
        };
        if after < 3 && !force {
            return Err(format!(
                "the change leaves {after} voter(s): fewer than three tolerate no failure; repeat with --force (midge ctl; \"force\": true in the request) to do it anyway"
            ));
        }
        self.end_apply_at_propose()?;
        let mut cc = ConfChange::default();
        cc.set_change_type(if add { ConfChangeType::AddNode } else { ConfChangeType::RemoveNode });
        cc.node_id = id;
        cc.set_context(addr.as_bytes().to_vec().into());
        self.raw.propose_conf_change(vec![], cc).map_err(|e| e.to_string())
    }

    /// Ask raft to hand leadership to `to` now (raft leader transfer).
    pub fn transfer_leader(&mut self, to: u64) {
        if let Err(e) = self.end_apply_at_propose() {
            warn!("Leader transfer to node {to} not started: {e}.");
            return;
        }
        self.raw.transfer_leader(to);
    }
}

/// The store part of `GET /metrics`, one series per raft log (`log`:
/// "main" in full_sync; "local" and "cluster" in dynsec_sync).
pub fn write_store_metrics(e: &mut Exposition, logs: &[(&str, StoreMetrics)]) {
    let each = |f: fn(&StoreMetrics) -> u64| logs.iter().map(|(l, m)| (*l, f(m))).collect::<Vec<_>>();
    e.labelled(
        "counter",
        "midge_raft_proposals_total",
        "Raft entries proposed with broker commands ($SYS/broker/cluster/batch/proposals).",
        "log",
        &each(|m| m.proposals),
    );
    e.labelled(
        "counter",
        "midge_raft_commands_total",
        "Broker commands in those entries ($SYS/broker/cluster/batch/commands).",
        "log",
        &each(|m| m.commands),
    );
    e.labelled("counter", "midge_store_writes_total", "Raft log writes: one transaction, one fsync each with persistence_fsync true ($SYS/broker/cluster/batch/persists).", "log", &each(|m| m.writes));
    e.labelled(
        "counter",
        "midge_store_written_entries_total",
        "Raft entries written to the log ($SYS/broker/cluster/batch/persisted_entries).",
        "log",
        &each(|m| m.persisted_entries),
    );
    e.labelled(
        "counter",
        "midge_store_written_bytes_total",
        "Encoded raft entries and hard states written to the store on disk (without redb's own pages).",
        "log",
        &each(|m| m.written_bytes),
    );
    e.labelled(
        "gauge",
        "midge_store_log_bytes",
        "Raft log bytes since the last snapshot.",
        "log",
        &each(|m| m.log_bytes),
    );
    let series: Vec<(&str, &Histogram)> = logs.iter().map(|(l, m)| (*l, &m.write_time)).collect();
    e.histogram_seconds(
        "midge_store_write_seconds",
        "Time of one raft log write on disk: the redb transaction and its fsync (persistence true).",
        "log",
        &series,
    );
}
