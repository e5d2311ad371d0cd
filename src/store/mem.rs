//! `MemLog`: the raft log, hard state, conf state and latest snapshot held
//! in memory: for the deterministic simulation and for `persistence
//! false`. Clones share one store (`Rc`), so the simulation keeps a clone
//! as the node's "disk", drops the node in a simulated crash and rebuilds
//! it on the same data. `MemLog::volatile` (persistence false) is never
//! read back, so a lone node may forget applied entries (`forget_applied`).
//!
//! It accepts and refuses exactly the writes `RedbLog` does (both check
//! them with `LogIndex`), and must never depend on time, randomness or
//! hash order: the same calls give the same results on every run.

use std::cell::RefCell;
use std::rc::Rc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

use super::log_index::{hard_state_covering, LogIndex, TermGap};
use super::{RaftLog, StoreError};

#[derive(Clone)]
pub struct MemLog {
    inner: Rc<RefCell<Stored>>,
}

struct Stored {
    index: LogIndex,
    /// `entries[i].index == index.first_index() + i`.
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Option<(SnapshotMetadata, Vec<u8>)>,
    /// Encoded bytes of the entries after the snapshot index.
    log_bytes: u64,
    /// Nothing reads this store after the process ends.
    volatile: bool,
}

impl Default for MemLog {
    fn default() -> Self {
        MemLog::new()
    }
}

impl MemLog {
    /// A fresh, empty store (as `RedbLog` opens a new file).
    pub fn new() -> MemLog {
        MemLog {
            inner: Rc::new(RefCell::new(Stored {
                index: LogIndex::starting_after(0, 0),
                entries: Vec::new(),
                hard_state: HardState::default(),
                conf_state: ConfState::default(),
                snapshot: None,
                log_bytes: 0,
                volatile: false,
            })),
        }
    }

    /// A store for `persistence false`: as `new`, and it may forget
    /// applied entries (`RaftLog::forget_applied`).
    pub fn volatile() -> MemLog {
        let log = MemLog::new();
        log.inner.borrow_mut().volatile = true;
        log
    }
}

fn refused(reason: String) -> StoreError {
    log::warn!("raft store refused a write: {reason}");
    StoreError::Io(format!("write refused: {reason}"))
}

fn encoded_len(e: &Entry) -> u64 {
    u64::from(e.compute_size())
}

impl Stored {
    fn position(&self, index: u64) -> usize {
        // Callers pass first_index() <= index <= last_index() + 1; the log
        // fits in memory, so its length fits usize.
        (index - self.index.first_index()) as usize
    }

    fn bytes_after(&self, after: u64) -> u64 {
        self.entries.iter().filter(|e| e.index > after).map(encoded_len).sum()
    }
}

impl raft::Storage for MemLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let s = self.inner.borrow();
        Ok(RaftState::new(s.hard_state.clone(), s.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let s = self.inner.borrow();
        if low < s.index.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > s.index.last_index() + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let mut out = s.entries[s.position(low)..s.position(high)].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.borrow().index.term(idx).map_err(|gap| match gap {
            TermGap::Compacted => raft::Error::Store(raft::StorageError::Compacted),
            TermGap::Unavailable => raft::Error::Store(raft::StorageError::Unavailable),
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.inner.borrow().index.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.inner.borrow().index.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let s = self.inner.borrow();
        match &s.snapshot {
            Some((meta, data)) if meta.index >= request_index => {
                let mut snap = Snapshot::default();
                snap.set_metadata(meta.clone());
                snap.data = data.clone().into();
                Ok(snap)
            }
            _ => Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

impl RaftLog for MemLog {
    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        let commit = s.hard_state.commit;
        let new_commit = hard_state.map_or(commit, |hs| hs.commit);
        s.index.check_persist(entries, commit, new_commit).map_err(refused)?;
        if let Some(first) = entries.first() {
            let (snap_index, _) = s.index.snapshot();
            let keep = s.position(first.index);
            let dropped: u64 = s.entries[keep..].iter().filter(|e| e.index > snap_index).map(encoded_len).sum();
            s.entries.truncate(keep);
            s.entries.extend_from_slice(entries);
            let added: u64 = entries.iter().filter(|e| e.index > snap_index).map(encoded_len).sum();
            s.log_bytes = s.log_bytes - dropped + added;
            s.index.append(entries);
        }
        if let Some(hs) = hard_state {
            s.hard_state = hs.clone();
        }
        Ok(())
    }

    fn set_conf_state(&self, cs: &ConfState) -> Result<(), StoreError> {
        self.inner.borrow_mut().conf_state = cs.clone();
        Ok(())
    }

    fn install_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        let meta = snap.get_metadata();
        s.index.check_install(meta.index, s.hard_state.commit).map_err(refused)?;
        s.entries.clear();
        s.index.reset_to_snapshot(meta.index, meta.term);
        s.hard_state = hard_state_covering(&s.hard_state, meta.index, meta.term);
        s.conf_state = meta.get_conf_state().clone();
        s.snapshot = Some((meta.clone(), snap.data.to_vec()));
        s.log_bytes = 0;
        Ok(())
    }

    fn save_snapshot(
        &self,
        index: u64,
        conf_state: &ConfState,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        let plan = s.index.plan_snapshot(index, keep_entries).map_err(refused)?;
        let (old_snap_index, _) = s.index.snapshot();
        let newly_covered: u64 =
            s.entries.iter().filter(|e| e.index > old_snap_index && e.index <= index).map(encoded_len).sum();
        if let Some((cut, _)) = plan.compact_to {
            let drop_until = s.position(cut + 1);
            s.entries.drain(..drop_until);
        }
        s.index.apply_snapshot(&plan);
        let meta = SnapshotMetadata {
            index: plan.index,
            term: plan.term,
            conf_state: protobuf::SingularPtrField::some(conf_state.clone()),
            ..Default::default()
        };
        s.snapshot = Some((meta, data));
        s.hard_state = hard_state_covering(&s.hard_state, plan.index, plan.term);
        s.log_bytes -= newly_covered;
        debug_assert_eq!(s.log_bytes, s.bytes_after(plan.index));
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, u64, ConfState, Vec<u8>)>, StoreError> {
        let s = self.inner.borrow();
        Ok(s.snapshot.as_ref().map(|(meta, data)| (meta.index, meta.term, meta.get_conf_state().clone(), data.clone())))
    }

    fn log_bytes(&self) -> u64 {
        self.inner.borrow().log_bytes
    }

    fn forget_applied(&self, index: u64) -> Result<bool, StoreError> {
        let mut s = self.inner.borrow_mut();
        if !s.volatile || index <= s.index.snapshot().0 {
            return Ok(false);
        }
        let plan = s.index.plan_snapshot(index, 0).map_err(refused)?;
        if let Some((cut, _)) = plan.compact_to {
            let drop_until = s.position(cut + 1);
            s.entries.drain(..drop_until);
        }
        s.index.apply_snapshot(&plan);
        // The metadata stays for raft; the data is gone (raft's
        // `snapshot()` now answers "temporarily unavailable" until a real
        // snapshot is saved, which a membership change forces).
        s.snapshot = None;
        s.hard_state = hard_state_covering(&s.hard_state, plan.index, plan.term);
        s.log_bytes = s.bytes_after(plan.index);
        Ok(true)
    }

    fn on_disk(&self) -> bool {
        false
    }

    fn is_volatile(&self) -> bool {
        self.inner.borrow().volatile
    }
}
