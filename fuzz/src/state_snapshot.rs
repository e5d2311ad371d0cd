//! Target `state_snapshot`: `State::restore` on arbitrary bytes (a
//! corrupt or hostile snapshot file or raft snapshot).
//!
//! Checks: `restore` never panics (a bad snapshot is an `Err`); a state it
//! accepts snapshots and restores again to the same sessions, retained
//! messages, counters and topic tree size.

use midge::broker::state::State;

use crate::broker_events::check_snapshot_roundtrip;

pub fn run(data: &[u8]) {
    if let Ok(st) = State::restore(data) {
        check_snapshot_roundtrip(&st);
    }
}
