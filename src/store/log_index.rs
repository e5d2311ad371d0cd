//! The shape of a stored raft log, kept in memory: where it was truncated,
//! where it ends, the term of every index (as runs of equal terms), and
//! the latest snapshot's index and term. Both stores answer `term()`,
//! `first_index()` and `last_index()` from it without touching disk, and
//! both validate every write against it first, so `MemLog` and `RedbLog`
//! accept and refuse exactly the same calls.
//!
//! It owns no entries and no bytes, and must never do I/O: a store checks a
//! write here, performs it, and only after the write is durable applies the
//! change here.

use raft::eraftpb::{Entry, HardState};

/// A stretch of consecutive log indexes that share one term, from `start`
/// up to the next run's start (or the last index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TermRun {
    start: u64,
    term: u64,
}

/// Why `term()` has no answer for an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TermGap {
    /// Below the truncation point: only a snapshot has it now.
    Compacted,
    /// Past the last stored entry.
    Unavailable,
}

/// What `save_snapshot` will do, worked out before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotPlan {
    pub index: u64,
    pub term: u64,
    /// `(index, term)` of the new truncation point when entries are
    /// dropped; `None` when the kept tail already reaches back that far.
    pub compact_to: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogIndex {
    /// Entries up to here were dropped; its term is kept for raft's
    /// consistency check of the first entry after it.
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    /// Terms of `truncated_index + 1 ..= last_index`, ascending; empty when
    /// the log is empty. Terms change only on elections, so this stays short.
    runs: Vec<TermRun>,
    /// The latest snapshot, `(0, 0)` when there is none.
    snapshot_index: u64,
    snapshot_term: u64,
}

impl LogIndex {
    /// An empty log truncated at `(index, term)`; `(0, 0)` for a fresh store.
    pub fn starting_after(index: u64, term: u64) -> LogIndex {
        LogIndex {
            truncated_index: index,
            truncated_term: term,
            last_index: index,
            runs: Vec::new(),
            snapshot_index: 0,
            snapshot_term: 0,
        }
    }

    pub fn first_index(&self) -> u64 {
        self.truncated_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn snapshot(&self) -> (u64, u64) {
        (self.snapshot_index, self.snapshot_term)
    }

    pub fn last_term(&self) -> u64 {
        self.runs.last().map_or(self.truncated_term, |r| r.term)
    }

    pub fn term(&self, index: u64) -> Result<u64, TermGap> {
        if index == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if index < self.truncated_index {
            return Err(TermGap::Compacted);
        }
        if index > self.last_index {
            return Err(TermGap::Unavailable);
        }
        // runs[0].start == truncated_index + 1 <= index, so at least one run matches.
        let at = self.runs.partition_point(|r| r.start <= index);
        match at.checked_sub(1).and_then(|i| self.runs.get(i)) {
            Some(run) => Ok(run.term),
            None => Err(TermGap::Unavailable),
        }
    }

    /// Adds the entry after the last one while a store is being read at
    /// open. Refuses a gap or a term that goes backwards.
    pub fn push_loaded(&mut self, index: u64, term: u64) -> Result<(), String> {
        if index != self.last_index + 1 {
            return Err(format!(
                "log entry {} is missing (the log jumps from {} to {index})",
                self.last_index + 1,
                self.last_index
            ));
        }
        let previous = self.last_term();
        if term < previous {
            return Err(format!("log entry {index} has term {term}, lower than the term {previous} before it"));
        }
        self.push(index, term);
        Ok(())
    }

    fn push(&mut self, index: u64, term: u64) {
        if self.runs.last().map(|r| r.term) != Some(term) {
            self.runs.push(TermRun { start: index, term });
        }
        self.last_index = index;
    }

    /// Records the latest snapshot while a store is being read at open.
    pub fn set_loaded_snapshot(&mut self, index: u64, term: u64) {
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// The invariants every stored state keeps; checked at open. `commit`
    /// is the stored hard state's commit index.
    pub fn verify(&self, commit: u64) -> Result<(), String> {
        let (snap_index, snap_term) = (self.snapshot_index, self.snapshot_term);
        if snap_index < self.truncated_index {
            return Err(format!(
                "the log was truncated at {} but the latest snapshot is only at {snap_index}",
                self.truncated_index
            ));
        }
        if snap_index > self.last_index {
            return Err(format!("the snapshot at {snap_index} is past the last log index {}", self.last_index));
        }
        match self.term(snap_index) {
            Ok(t) if t == snap_term => {}
            Ok(t) => return Err(format!("the snapshot at {snap_index} has term {snap_term} but the log has term {t}")),
            Err(_) => return Err(format!("no term is known for the snapshot index {snap_index}")),
        }
        if commit > self.last_index {
            return Err(format!("the hard state's commit {commit} is past the last log index {}", self.last_index));
        }
        if commit < snap_index {
            return Err(format!("the hard state's commit {commit} is below the snapshot index {snap_index}"));
        }
        Ok(())
    }

    /// Checks one Ready's write: `entries` replace the log from their first
    /// index on (raft's conflict rule), `new_commit` is the commit index the
    /// store will hold afterwards and `commit` the one it holds now.
    pub fn check_persist(&self, entries: &[Entry], commit: u64, new_commit: u64) -> Result<(), String> {
        let mut new_last = self.last_index;
        if let Some(first) = entries.first() {
            if first.index <= self.truncated_index {
                return Err(format!(
                    "entry {} would overwrite the compacted log (truncated at {})",
                    first.index, self.truncated_index
                ));
            }
            if first.index <= commit {
                return Err(format!("entry {} would overwrite a committed entry (commit is {commit})", first.index));
            }
            if first.index > self.last_index + 1 {
                return Err(format!(
                    "entry {} would leave a gap after the last index {}",
                    first.index, self.last_index
                ));
            }
            let mut previous_term = match self.term(first.index - 1) {
                Ok(t) => t,
                Err(_) => return Err(format!("no term is known before entry {}", first.index)),
            };
            for (offset, e) in entries.iter().enumerate() {
                let expected = first.index + offset as u64;
                if e.index != expected {
                    return Err(format!("entries are not consecutive: {} where {expected} was due", e.index));
                }
                if e.term < previous_term {
                    return Err(format!(
                        "entry {} has term {}, lower than the {previous_term} before it",
                        e.index, e.term
                    ));
                }
                previous_term = e.term;
                new_last = e.index;
            }
        }
        if new_commit > new_last {
            return Err(format!("commit {new_commit} would be past the last log index {new_last}"));
        }
        if new_commit < self.snapshot_index {
            return Err(format!("commit {new_commit} would be below the snapshot index {}", self.snapshot_index));
        }
        Ok(())
    }

    /// Applies a write accepted by `check_persist`.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let keep = self.runs.partition_point(|r| r.start < first.index);
        self.runs.truncate(keep);
        self.last_index = first.index - 1;
        for e in entries {
            self.push(e.index, e.term);
        }
    }

    /// Plans `save_snapshot(index, .., keep_entries)`: the snapshot's term,
    /// and where the log is truncated so that `keep_entries` entries up to
    /// `index` stay.
    pub fn plan_snapshot(&self, index: u64, keep_entries: u64) -> Result<SnapshotPlan, String> {
        if index == 0 {
            return Err("a snapshot at index 0 holds nothing".to_string());
        }
        if index < self.snapshot_index {
            return Err(format!("a snapshot at {index} is older than the stored one at {}", self.snapshot_index));
        }
        let term = match self.term(index) {
            Ok(t) => t,
            Err(TermGap::Compacted) => return Err(format!("index {index} is compacted")),
            Err(TermGap::Unavailable) => {
                return Err(format!("index {index} is past the last log index {}", self.last_index))
            }
        };
        let cut = index.saturating_sub(keep_entries);
        let compact_to = if cut > self.truncated_index {
            match self.term(cut) {
                Ok(cut_term) => Some((cut, cut_term)),
                Err(_) => return Err(format!("no term is known for the truncation point {cut}")),
            }
        } else {
            None
        };
        Ok(SnapshotPlan { index, term, compact_to })
    }

    /// Applies a plan from `plan_snapshot`.
    pub fn apply_snapshot(&mut self, plan: &SnapshotPlan) {
        self.snapshot_index = plan.index;
        self.snapshot_term = plan.term;
        if let Some((cut, cut_term)) = plan.compact_to {
            // Runs that end at or before the cut go; the one spanning it starts after it.
            let first_kept = cut + 1;
            let spanning = self.runs.partition_point(|r| r.start <= first_kept).saturating_sub(1);
            self.runs.drain(..spanning);
            if let Some(run) = self.runs.first_mut() {
                run.start = run.start.max(first_kept);
            }
            if cut >= self.last_index {
                self.runs.clear();
            }
            self.truncated_index = cut;
            self.truncated_term = cut_term;
        }
    }

    /// Checks installing a snapshot from the leader at `(index, term)`,
    /// given the commit index stored now.
    pub fn check_install(&self, index: u64, commit: u64) -> Result<(), String> {
        if index == 0 {
            return Err("a snapshot at index 0 holds nothing".to_string());
        }
        if index < commit {
            return Err(format!("the snapshot at {index} is older than the stored commit {commit}"));
        }
        Ok(())
    }

    /// After installing a snapshot the log is empty and starts after it.
    pub fn reset_to_snapshot(&mut self, index: u64, term: u64) {
        *self = LogIndex::starting_after(index, term);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }
}

/// The hard state after a snapshot at `(index, term)` was stored: what the
/// snapshot covers is committed, and a term never goes backwards. Raft
/// refuses to start if the commit is below the log's truncation point.
pub(crate) fn hard_state_covering(hs: &HardState, index: u64, term: u64) -> HardState {
    let mut out = hs.clone();
    out.commit = out.commit.max(index);
    out.term = out.term.max(term);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range.map(|index| Entry { index, term, ..Default::default() }).collect()
    }

    #[test]
    fn term_runs_follow_appends_and_overwrites() {
        let mut li = LogIndex::starting_after(0, 0);
        li.append(&ents(1..=3, 1));
        li.append(&ents(4..=6, 2));
        assert_eq!(li.runs.len(), 2);
        assert_eq!(li.term(3), Ok(1));
        assert_eq!(li.term(4), Ok(2));
        // Overwrite from 3 with term 3: the term-2 run disappears.
        li.append(&ents(3..=4, 3));
        assert_eq!(li.last_index(), 4);
        assert_eq!(li.runs, vec![TermRun { start: 1, term: 1 }, TermRun { start: 3, term: 3 }]);
        assert_eq!(li.term(5), Err(TermGap::Unavailable));
    }

    #[test]
    fn compaction_trims_runs() {
        let mut li = LogIndex::starting_after(0, 0);
        li.append(&ents(1..=3, 1));
        li.append(&ents(4..=6, 2));
        li.append(&ents(7..=9, 3));
        let plan = li.plan_snapshot(8, 3).expect("plan");
        assert_eq!(plan, SnapshotPlan { index: 8, term: 3, compact_to: Some((5, 2)) });
        li.apply_snapshot(&plan);
        assert_eq!(li.runs, vec![TermRun { start: 6, term: 2 }, TermRun { start: 7, term: 3 }]);
        assert_eq!(li.term(5), Ok(2));
        assert_eq!(li.term(4), Err(TermGap::Compacted));
        let plan = li.plan_snapshot(9, 0).expect("plan");
        li.apply_snapshot(&plan);
        assert!(li.runs.is_empty());
        assert_eq!((li.first_index(), li.last_index(), li.last_term()), (10, 9, 3));
        assert_eq!(li.verify(9), Ok(()));
    }

    #[test]
    fn loading_refuses_gaps_and_falling_terms() {
        let mut li = LogIndex::starting_after(4, 2);
        assert!(li.push_loaded(6, 2).is_err());
        assert!(li.push_loaded(5, 1).is_err());
        assert!(li.push_loaded(5, 2).is_ok());
    }
}
