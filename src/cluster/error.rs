//! Why a node stops: a store, raft or snapshot failure. Nothing may be
//! acknowledged that is not safely stored, so the runtime exits on any.

use crate::broker::state::SnapshotError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum NodeError {
    Store(StoreError),
    Raft(raft::Error),
    Snapshot(SnapshotError),
    /// A committed entry does not decode: the log is damaged or written
    /// by an incompatible version. Applying must stop.
    Entry(String),
    /// Commands applied at propose could not go into the log as they
    /// applied (see `Node::apply_at_propose_allowed`): the state is ahead
    /// of the log, so the node must stop. Never expected; names what broke.
    AppliedEarly(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Store(e) => write!(f, "{e}"),
            NodeError::Raft(e) => write!(f, "raft: {e}"),
            NodeError::Snapshot(e) => write!(f, "{e}"),
            NodeError::Entry(e) => write!(f, "committed entry cannot be applied: {e}"),
            NodeError::AppliedEarly(e) => write!(f, "commands applied at propose: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::Store(e)
    }
}
impl From<raft::Error> for NodeError {
    fn from(e: raft::Error) -> Self {
        NodeError::Raft(e)
    }
}
impl From<SnapshotError> for NodeError {
    fn from(e: SnapshotError) -> Self {
        NodeError::Snapshot(e)
    }
}
