//! `Staged`: group commit over any `RaftLog`. The Ready loop *stages* each
//! Ready's entries and hard state here (memory only, visible to raft's
//! reads at once, as raft-rs's `advance_append_async` requires) and
//! *flushes* them later, several Readies in one durable write. Between
//! the two the event loop keeps running: acknowledgements of what is
//! already committed go out, and what clients send in the meantime joins
//! the next write. Nothing staged counts as persisted: raft learns it is
//! (`on_persist_ready`) only after `flush` returned, and the messages that
//! must wait for the disk (a follower's append responses, votes) wait too.
//!
//! A crash loses what is staged and not flushed — exactly what a crash
//! during the write would lose; raft never relied on it.
//!
//! Staging goes on while a flush's job runs (on another thread): the
//! entries being written stay readable in a second layer, and what is
//! staged meanwhile goes into the next flush. So a leader sends its next
//! entries to the followers while its own fsync runs. Reads look at the
//! newest layer first: staged, then being written, then the inner log.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use super::{PersistJob, RaftLog, StoreError, WriteJobError};
use crate::metrics::Histogram;

pub struct Staged<L: RaftLog> {
    inner: L,
    /// Staged entries, contiguous; the first may be at or below the last
    /// index of the inner log or of the run being written (raft's
    /// conflict rule: the next flush replaces the suffix from there).
    entries: Vec<Entry>,
    /// The latest staged hard state.
    hard_state: Option<HardState>,
    /// The hard state last handed to the inner log.
    flushed_hs: HardState,
    /// Between `begin_flush` and `end_flush`: a job writes these entries
    /// (they stay readable here until it is done).
    writing: bool,
    writing_entries: Vec<Entry>,
    /// Time of each log write to a store on disk (see `write_time`).
    write_time: Histogram,
    /// A snapshot to write with the next flush: (index, conf state, data,
    /// entries to keep).
    #[allow(clippy::type_complexity)]
    snapshot: Option<(u64, ConfState, Vec<u8>, u64)>,
}

/// The jobs of one flush: the staged entries and hard state, then a
/// snapshot. Runs on any thread.
pub struct FlushJob {
    persist: Option<Box<dyn PersistJob>>,
    snapshot: Option<Box<dyn PersistJob>>,
    /// Time the log write (`write_time`): only for a store on disk (two
    /// clock reads per flush, which in memory happens once per command
    /// batch).
    timed: bool,
}

pub struct FlushResult {
    persist: Option<Result<u64, WriteJobError>>,
    snapshot: Option<Result<u64, WriteJobError>>,
    /// How long the log write (transaction and fsync) took.
    persist_us: u64,
}

impl FlushJob {
    pub fn run(self) -> FlushResult {
        let started = self.timed.then(std::time::Instant::now);
        let persist = self.persist.map(|j| j.run());
        let persist_us = started.map_or(0, |t| t.elapsed().as_micros() as u64);
        // A failed log write leaves the snapshot unwritten (the store then
        // refuses every write).
        let snapshot = match &persist {
            Some(Err(_)) => None,
            _ => self.snapshot.map(|j| j.run()),
        };
        FlushResult { persist, snapshot, persist_us }
    }
}

impl<L: RaftLog> Staged<L> {
    pub fn new(inner: L) -> Staged<L> {
        let flushed_hs = raft::Storage::initial_state(&inner).map(|s| s.hard_state).unwrap_or_default();
        Staged {
            inner,
            entries: Vec::new(),
            hard_state: None,
            flushed_hs,
            writing: false,
            writing_entries: Vec::new(),
            write_time: Histogram::default(),
            snapshot: None,
        }
    }

    /// Stage one Ready's entries and hard state (also while a flush runs:
    /// they go into the next one). Raft only hands over entries that
    /// continue or overwrite its log, so the staged run stays contiguous.
    pub fn stage(&mut self, entries: &[Entry], hard_state: Option<&HardState>) {
        if let Some(first) = entries.first() {
            match self.entries.first().map(|e| e.index) {
                Some(staged_first) if first.index > staged_first => {
                    let keep = (first.index - staged_first) as usize;
                    self.entries.truncate(keep);
                }
                _ => self.entries.clear(),
            }
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = Some(hs.clone());
        }
    }

    /// Whether anything staged must be written: entries, a new term or
    /// vote, or a snapshot. A hard state whose only change is the commit
    /// index is not written (raft does not need the commit index on disk:
    /// a restarted node learns it again); it goes with the next new term
    /// or vote, and a snapshot raises the stored one to its index.
    pub fn has_staged(&self) -> bool {
        !self.entries.is_empty() || self.snapshot.is_some() || self.hard_state_changed()
    }

    /// Whether the staged hard state has a new term or vote (not only a
    /// new commit index).
    fn hard_state_changed(&self) -> bool {
        self.hard_state.as_ref().is_some_and(|hs| hs.term != self.flushed_hs.term || hs.vote != self.flushed_hs.vote)
    }

    /// Write everything staged to the inner log in one transaction;
    /// returns the number of entries written.
    pub fn flush(&mut self) -> Result<u64, StoreError> {
        match self.begin_flush()? {
            Some(job) => self.end_flush(job.run()),
            None => Ok(0),
        }
    }

    /// `flush` in steps (see `RaftLog::begin_persist`): the job may run on
    /// another thread; what is staged until `end_flush` goes into the
    /// next flush.
    pub fn begin_flush(&mut self) -> Result<Option<FlushJob>, StoreError> {
        assert!(!self.writing, "a flush began while another was running");
        if !self.has_staged() {
            return Ok(None);
        }
        let mut job = FlushJob { persist: None, snapshot: None, timed: self.inner.on_disk() };
        // A commit-only change of the hard state stays staged (see
        // `has_staged`): leaving the `meta` table alone saves a page or
        // two per write (measured 8.9 -> 7.9 pages written per commit).
        let hs_changed = self.hard_state_changed();
        if !self.entries.is_empty() || hs_changed {
            let hs = if hs_changed { self.hard_state.take() } else { None };
            job.persist = Some(self.inner.begin_persist(&self.entries, hs.as_ref())?);
            if let Some(hs) = hs {
                self.flushed_hs = hs;
            }
        }
        self.writing_entries = std::mem::take(&mut self.entries);
        if let Some((index, cs, data, keep)) = self.snapshot.take() {
            job.snapshot = Some(self.inner.begin_save_snapshot(index, &cs, data, keep)?);
        }
        self.writing = true;
        Ok(Some(job))
    }

    /// Whether `write_through` may write now: nothing is staged (but
    /// perhaps a commit index) and no flush runs.
    pub fn can_write_through(&self) -> bool {
        !self.writing && !self.has_staged()
    }

    /// Write one Ready's entries and hard state to the inner log at once,
    /// without staging them: for a store in memory whose Ready finishes
    /// at once (a lone node, `CommitMode::AtPropose`), where staging only
    /// copied the entries once more. Only when `can_write_through`, so
    /// that the log's order holds. A hard state whose only change is the
    /// commit index stays staged, as in `begin_flush`. Returns how many
    /// entries it wrote, if it wrote.
    pub fn write_through(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Option<u64>, StoreError> {
        assert!(self.can_write_through(), "a write through while staged entries or a flush wait");
        if let Some(hs) = hard_state {
            self.hard_state = Some(hs.clone());
        }
        let hs_changed = self.hard_state_changed();
        if entries.is_empty() && !hs_changed {
            return Ok(None);
        }
        let hs = if hs_changed { self.hard_state.take() } else { None };
        self.inner.persist(entries, hs.as_ref())?;
        if let Some(hs) = hs {
            self.flushed_hs = hs;
        }
        Ok(Some(entries.len() as u64))
    }

    /// Takes the result of the job `begin_flush` returned; returns the
    /// number of entries written.
    /// A `StoreError::Full` leaves the flush unfinished: its entries stay
    /// here (readable) and nothing counts as written until a job from
    /// `begin_retry` ends well.
    pub fn end_flush(&mut self, result: FlushResult) -> Result<u64, StoreError> {
        if let Some(r) = result.persist {
            if r.is_ok() && self.inner.on_disk() {
                self.write_time.record(result.persist_us);
            }
            self.inner.end_persist(r)?;
        }
        if let Some(r) = result.snapshot {
            self.inner.end_save_snapshot(r)?;
        }
        self.writing = false;
        Ok(std::mem::take(&mut self.writing_entries).len() as u64)
    }

    /// After `end_flush` returned `StoreError::Full`: the job that writes
    /// the unfinished flush again (its result goes to `end_flush`).
    pub fn begin_retry(&mut self) -> Result<FlushJob, StoreError> {
        assert!(self.writing, "nothing to write again");
        Ok(FlushJob { persist: Some(self.inner.begin_retry()?), snapshot: None, timed: self.inner.on_disk() })
    }

    /// Whether a flush's job is running.
    pub fn writing(&self) -> bool {
        self.writing
    }

    /// The layers above the inner log, oldest first: the entries being
    /// written, then the staged ones. Each starts at its first entry's
    /// index and hides everything at or after it in the layers below.
    fn layers(&self) -> [&[Entry]; 2] {
        [&self.writing_entries, &self.entries]
    }

    /// Where `index` is read from: `Some((layer, position))`, or `None`
    /// for the inner log. An index past a layer's end that a newer layer
    /// does not cover is past the log's end (`position` out of range).
    fn locate(&self, index: u64) -> Option<(&[Entry], usize)> {
        self.layers()
            .into_iter()
            .rev()
            .find_map(|l| l.first().filter(|f| index >= f.index).map(|f| (l, (index - f.index) as usize)))
    }

    /// The first index held above the inner log, if any.
    fn layered_first(&self) -> Option<u64> {
        self.layers().iter().filter_map(|l| l.first().map(|e| e.index)).min()
    }

    // The inner log's other writes: a leader's snapshot replaces the log
    // (staged entries are flushed first); a snapshot of the applied state
    // waits for the next flush; the conf state is written at once (never
    // during a flush).

    pub fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), StoreError> {
        self.flush()?;
        // Left staged: at most a commit index, which the snapshot covers.
        self.hard_state = None;
        self.inner.install_snapshot(snap)?;
        self.flushed_hs = raft::Storage::initial_state(&self.inner).map(|s| s.hard_state).unwrap_or_default();
        Ok(())
    }

    /// During a flush this waits for its job (redb has one writer at a
    /// time); membership changes are rare.
    pub fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), StoreError> {
        self.inner.set_conf_state(cs)
    }

    /// The snapshot is written (and the log compacted) by the next flush,
    /// off the event loop's thread, after that flush's entries: applied
    /// entries not yet on this node's disk (a majority of others has them)
    /// are then written first.
    pub fn save_snapshot(&mut self, index: u64, conf_state: &ConfState, data: Vec<u8>, keep_entries: u64) {
        self.snapshot = Some((index, conf_state.clone(), data, keep_entries));
    }

    /// See `RaftLog::forget_applied`; never while a flush runs or a
    /// snapshot waits.
    pub fn forget_applied(&mut self, index: u64) -> Result<bool, StoreError> {
        if self.writing || self.snapshot.is_some() {
            return Ok(false);
        }
        self.inner.forget_applied(index)
    }

    /// Log bytes since the last snapshot; none while one waits to be
    /// written.
    pub fn log_bytes(&self) -> u64 {
        if self.snapshot.is_some() {
            0
        } else {
            self.inner.log_bytes()
        }
    }

    pub fn on_disk(&self) -> bool {
        self.inner.on_disk()
    }

    pub fn is_volatile(&self) -> bool {
        self.inner.is_volatile()
    }

    /// How long the log writes took (transaction and fsync; a store on
    /// disk only).
    pub fn write_time(&self) -> &Histogram {
        &self.write_time
    }

    pub fn older_segments(&self) -> usize {
        self.inner.older_segments()
    }

    pub fn written_bytes(&self) -> u64 {
        self.inner.written_bytes()
    }
}

impl<L: RaftLog> raft::Storage for Staged<L> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let mut state = self.inner.initial_state()?;
        if let Some(hs) = &self.hard_state {
            state.hard_state = hs.clone();
        }
        Ok(state)
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let Some(first) = self.layered_first() else {
            return self.inner.entries(low, high, max_size, context);
        };
        if high > self.last_index()? + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let mut out =
            if low < first { self.inner.entries(low, high.min(first), max_size, context)? } else { Vec::new() };
        // Each layer supplies the indexes below the next layer's start; a
        // short read (the size limit) ends the run.
        let [writing, staged] = self.layers();
        let staged_first = staged.first().map_or(u64::MAX, |e| e.index);
        for (layer, until) in [(writing, staged_first), (staged, u64::MAX)] {
            let Some(lf) = layer.first().map(|e| e.index) else { continue };
            let (from, to) = (low.max(lf), high.min(until));
            if from >= to {
                continue;
            }
            if out.len() as u64 != from - low {
                break;
            }
            out.extend_from_slice(&layer[(from - lf) as usize..(to - lf) as usize]);
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        match self.locate(idx) {
            Some((layer, at)) => match layer.get(at) {
                Some(e) => Ok(e.term),
                None => Err(raft::Error::Store(raft::StorageError::Unavailable)),
            },
            None => self.inner.term(idx),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        match self.entries.last().or(self.writing_entries.last()) {
            Some(e) => Ok(e.index),
            None => self.inner.last_index(),
        }
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.inner.snapshot(request_index, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemLog;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Default::default() }
    }

    fn entries(r: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        r.map(|i| entry(i, term)).collect()
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit, ..Default::default() }
    }

    fn indexes(v: &[Entry]) -> Vec<(u64, u64)> {
        v.iter().map(|e| (e.index, e.term)).collect()
    }

    fn read(s: &Staged<MemLog>, low: u64, high: u64) -> Vec<(u64, u64)> {
        indexes(&s.entries(low, high, None, GetEntriesContext::empty(false)).unwrap())
    }

    #[test]
    fn staged_entries_are_readable_but_not_on_disk_until_flushed() {
        let disk = MemLog::new();
        let mut s = Staged::new(disk.clone());
        s.stage(&entries(1..=3, 1), Some(&hs(1, 1, 0)));
        s.flush().unwrap();
        s.stage(&entries(4..=6, 1), Some(&hs(1, 1, 3)));
        assert!(s.has_staged());
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!(disk.last_index().unwrap(), 3);
        assert_eq!(s.term(5).unwrap(), 1);
        assert!(s.term(7).is_err());
        // Across the boundary between disk and staging.
        assert_eq!(read(&s, 2, 6), vec![(2, 1), (3, 1), (4, 1), (5, 1)]);
        assert_eq!(read(&s, 5, 7), vec![(5, 1), (6, 1)]);
        assert!(s.entries(2, 8, None, GetEntriesContext::empty(false)).is_err());
        assert_eq!(s.flush().unwrap(), 3);
        assert!(!s.has_staged());
        assert_eq!(disk.last_index().unwrap(), 6);
        // The commit-only change stays staged (see has_staged).
        assert_eq!(disk.initial_state().unwrap().hard_state.commit, 0);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 3);
    }

    #[test]
    fn a_conflicting_stage_replaces_staged_and_stored_entries() {
        let disk = MemLog::new();
        let mut s = Staged::new(disk.clone());
        s.stage(&entries(1..=4, 1), Some(&hs(1, 1, 1)));
        s.flush().unwrap();
        s.stage(&entries(5..=7, 1), None);
        // A new leader overwrites from 6 (inside the staged run) ...
        s.stage(&entries(6..=6, 2), Some(&hs(2, 2, 1)));
        assert_eq!(read(&s, 4, 7), vec![(4, 1), (5, 1), (6, 2)]);
        // ... and another from 3 (inside what is on disk).
        s.stage(&entries(3..=4, 3), Some(&hs(3, 3, 1)));
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(read(&s, 1, 5), vec![(1, 1), (2, 1), (3, 3), (4, 3)]);
        s.flush().unwrap();
        assert_eq!(disk.last_index().unwrap(), 4);
        assert_eq!(disk.term(3).unwrap(), 3);
        assert_eq!(disk.initial_state().unwrap().hard_state, hs(3, 3, 1));
    }

    #[test]
    fn a_commit_only_hard_state_waits_for_the_next_write() {
        let disk = MemLog::new();
        let mut s = Staged::new(disk.clone());
        s.stage(&entries(1..=2, 1), Some(&hs(1, 1, 0)));
        s.flush().unwrap();
        s.stage(&[], Some(&hs(1, 1, 2)));
        assert!(!s.has_staged());
        assert_eq!(s.flush().unwrap(), 0);
        assert_eq!(disk.initial_state().unwrap().hard_state.commit, 0);
        // Nor with entries.
        s.stage(&entries(3..=3, 1), Some(&hs(1, 1, 3)));
        assert!(s.has_staged());
        assert_eq!(s.flush().unwrap(), 1);
        assert_eq!(disk.initial_state().unwrap().hard_state.commit, 0);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 3);
        // A new vote must be written.
        s.stage(&[], Some(&hs(2, 3, 2)));
        assert!(s.has_staged());
        s.flush().unwrap();
        assert_eq!(disk.initial_state().unwrap().hard_state, hs(2, 3, 2));
    }

    #[test]
    fn staging_goes_on_while_a_flush_runs_and_reads_see_every_layer() {
        let disk = MemLog::new();
        let mut s = Staged::new(disk.clone());
        s.stage(&entries(1..=2, 1), Some(&hs(1, 1, 0)));
        s.flush().unwrap();
        s.stage(&entries(3..=5, 1), Some(&hs(1, 1, 2)));
        let job = s.begin_flush().unwrap().expect("a job");
        assert!(s.writing());
        // Staged meanwhile: continues the run being written ...
        s.stage(&entries(6..=7, 1), None);
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(read(&s, 1, 8), vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1)]);
        // ... and a new leader overwrites from inside it.
        s.stage(&entries(5..=5, 2), Some(&hs(2, 2, 2)));
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(4).unwrap(), 1);
        assert_eq!(s.term(5).unwrap(), 2);
        assert!(s.term(6).is_err());
        assert_eq!(read(&s, 2, 6), vec![(2, 1), (3, 1), (4, 1), (5, 2)]);
        assert_eq!(s.end_flush(job.run()).unwrap(), 3);
        assert!(s.has_staged());
        assert_eq!(s.flush().unwrap(), 1);
        assert_eq!(disk.last_index().unwrap(), 5);
        assert_eq!(disk.term(5).unwrap(), 2);
        assert_eq!(disk.initial_state().unwrap().hard_state, hs(2, 2, 2));
    }

    #[test]
    fn a_stage_below_the_run_being_written_hides_it() {
        let disk = MemLog::new();
        let mut s = Staged::new(disk.clone());
        s.stage(&entries(1..=3, 1), Some(&hs(1, 1, 1)));
        s.flush().unwrap();
        s.stage(&entries(4..=6, 1), None);
        let job = s.begin_flush().unwrap().expect("a job");
        s.stage(&entries(3..=3, 2), Some(&hs(2, 2, 1)));
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(read(&s, 1, 4), vec![(1, 1), (2, 1), (3, 2)]);
        assert!(s.entries(1, 5, None, GetEntriesContext::empty(false)).is_err());
        s.end_flush(job.run()).unwrap();
        s.flush().unwrap();
        assert_eq!(disk.last_index().unwrap(), 3);
        assert_eq!(disk.term(3).unwrap(), 2);
    }

    #[test]
    fn reads_respect_the_size_limit_across_the_boundary() {
        let disk = MemLog::new();
        let mut s = Staged::new(disk);
        s.stage(&entries(1..=2, 1), Some(&hs(1, 1, 0)));
        s.flush().unwrap();
        s.stage(&entries(3..=4, 1), None);
        let one = u64::from(protobuf::Message::compute_size(&entry(1, 1)));
        let got = s.entries(1, 5, Some(one * 3), GetEntriesContext::empty(false)).unwrap();
        assert_eq!(indexes(&got), vec![(1, 1), (2, 1), (3, 1)]);
        let got = s.entries(1, 5, Some(one), GetEntriesContext::empty(false)).unwrap();
        assert_eq!(indexes(&got), vec![(1, 1)]);
    }
}
