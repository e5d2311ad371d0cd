//! Target `state_snapshot`: `State::restore` on arbitrary bytes (a
//! corrupt or hostile snapshot file or raft snapshot).
//!
//! Checks: `restore` never panics (a bad snapshot is an `Err`); a state it
//! accepts snapshots and restores again to the same sessions, retained
//! messages, counters and topic tree size.

use std::collections::BTreeMap;
use std::rc::Rc;

use midge::broker::state::{Outbound, Session, State};
use midge::broker::Message;
use serde::Deserialize;

use crate::broker_events::{allowed, check_snapshot_roundtrip};

pub fn run(data: &[u8]) {
    if allowed(KNOWN_RESTORE_OVERFLOW) && stored_bytes_overflow(data) {
        return;
    }
    if let Ok(st) = State::restore(data) {
        check_snapshot_roundtrip(&st);
    }
}

/// Known finding `restore-stored-bytes-overflow` (reproducer:
/// fuzz/corpus/state_snapshot/crash-restore-stored-bytes-overflow):
/// `State::restore` adds up the `queued_bytes` it reads from the snapshot
/// (and the message costs) with `+=`, so a snapshot whose numbers add up
/// past u64::MAX panics ("attempt to add with overflow") where overflow
/// checks are on, and wraps `stored_bytes` where they are off.
pub const KNOWN_RESTORE_OVERFLOW: &str = "restore-stored-bytes-overflow";

/// The first fields of a snapshot (`SnapshotIn` in src/broker/state/snapshot.rs;
/// later fields are left unread).
#[derive(Deserialize)]
struct Shape {
    _version: u16,
    _applied_commands: u64,
    sessions: BTreeMap<Rc<str>, Session>,
    retained: BTreeMap<Rc<str>, Message>,
}

/// Whether `restore` would overflow adding up `stored_bytes`.
fn stored_bytes_overflow(data: &[u8]) -> bool {
    let Ok((s, _)) = postcard::take_from_bytes::<Shape>(data) else { return false };
    let mut total = 0u64;
    let mut add = |n: u64| total.checked_add(n).map(|t| total = t).is_none();
    for sess in s.sessions.values() {
        if add(sess.queue.bytes) {
            return true;
        }
        for o in sess.inflight.values() {
            if let Outbound::Publish(d) = o {
                if add(d.msg.cost_bytes()) {
                    return true;
                }
            }
        }
    }
    s.retained.values().any(|m| add(m.cost_bytes()))
}
