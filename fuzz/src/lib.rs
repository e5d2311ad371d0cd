//! The checks behind midge's fuzz targets, as plain functions so that the
//! targets (fuzz_targets/*.rs), the seed generator (examples/gen_corpus.rs)
//! and the replayer (examples/replay.rs) share them. Every check is an
//! `assert!`: a failing one is a finding, like a panic inside midge.

pub mod broker_events;
pub mod dynsec_request;
pub mod packet_reader;
pub mod peer_input;
pub mod state_snapshot;

/// Reads the fuzz input front to back; past the end every read is 0, so any
/// input is a valid program.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
}
