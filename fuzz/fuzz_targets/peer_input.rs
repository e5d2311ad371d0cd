#![no_main]
//! See fuzz/src/peer_input.rs for the input format and the checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| midge_fuzz::peer_input::run(data));
