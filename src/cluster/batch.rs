//! The data of a raft entry: a versioned postcard `Batch` of broker
//! commands (docs/FORMATS.md, "Command batch").

use serde::{Deserialize, Serialize};

use super::NodeError;
use crate::broker::state::Entry;

/// Format version of a raft entry's data: a postcard `Batch`.
///
/// 2: its entries may hold the commands of state format 2 (dynamic
/// security). A version 1 batch decodes as one of version 2.
///
/// 3: its entries may hold the commands of state format 3 (the cluster
/// id). Versions 1 and 2 decode as version 3.
pub const BATCH_FORMAT_VERSION: u16 = 3;

/// Oldest batch format this midge reads.
pub const BATCH_FORMAT_VERSION_MIN: u16 = 1;

#[derive(Serialize, Deserialize)]
struct Batch<E> {
    version: u16,
    entries: E,
}

pub fn encode_batch(entries: &[Entry]) -> Vec<u8> {
    // Sized for the common small entry: growing from empty cost about a
    // tenth of the encoding.
    let out = VecOut(Vec::with_capacity(ENCODE_CAPACITY));
    postcard::serialize_with_flavor(&Batch { version: BATCH_FORMAT_VERSION, entries }, out).unwrap_or_default()
}

/// postcard's output into a presized `Vec`: its own `AllocVec` starts
/// empty, and `to_extend` copies byte by byte through `Extend`.
struct VecOut(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut {
    type Output = Vec<u8>;

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// First allocation for an encoded batch (bytes).
const ENCODE_CAPACITY: usize = 256;

pub fn decode_batch(data: &[u8]) -> Result<Vec<Entry>, NodeError> {
    let (version, _) = postcard::take_from_bytes::<u16>(data).map_err(|e| NodeError::Entry(e.to_string()))?;
    if !(BATCH_FORMAT_VERSION_MIN..=BATCH_FORMAT_VERSION).contains(&version) {
        return Err(NodeError::Entry(format!(
            "entry has batch format version {version}, this midge reads {BATCH_FORMAT_VERSION_MIN} to {BATCH_FORMAT_VERSION}"
        )));
    }
    let b: Batch<Vec<Entry>> = postcard::from_bytes(data).map_err(|e| NodeError::Entry(e.to_string()))?;
    Ok(b.entries)
}
