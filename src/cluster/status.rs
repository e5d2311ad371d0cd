//! What a node reports about itself (health endpoint, `midge ctl status`,
//! `$SYS/broker/cluster/...`) and the membership and leadership changes
//! an operator asks for.

use log::warn;
use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::StateRole;
use serde::Serialize;

use super::Node;
use crate::store::RaftLog;

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
