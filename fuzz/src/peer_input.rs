//! Target `peer_input`: what a peer (or anyone who reaches the peer port)
//! sends and midge decodes: the hello's addresses and mode
//! (`decode_hello_rest`), a raft message (protobuf), and a raft entry's
//! command batch (`decode_batch`), which every node applies.
//!
//! Input: one selector byte (mod 3), then the bytes to decode.
//!
//! Checks: no decoder panics; a hello or a batch that decodes encodes back
//! and decodes again to the same value.

use midge::cluster::transport::{decode_hello_rest, encode_hello};
use midge::cluster::{decode_batch, encode_batch, PeerMessage};

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    match sel % 3 {
        0 => {
            if let Ok((id, a)) = decode_hello_rest(rest) {
                let hello = encode_hello(7, id, &a);
                assert_eq!(decode_hello_rest(&hello[16..]), Ok((id, a)), "hello round trip");
            }
        }
        1 => {
            let _ = <PeerMessage as protobuf::Message>::parse_from_bytes(rest);
        }
        _ => {
            if let Ok(entries) = decode_batch(rest) {
                let again = decode_batch(&encode_batch(&entries)).expect("a re-encoded batch decodes");
                assert_eq!(again, entries, "batch round trip");
            }
        }
    }
}
