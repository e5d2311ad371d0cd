#![no_main]
//! See fuzz/src/state_snapshot.rs for the input format and the checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| midge_fuzz::state_snapshot::run(data));
