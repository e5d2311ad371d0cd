#![no_main]
//! See fuzz/src/packet_reader.rs for the input format and the checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| midge_fuzz::packet_reader::run(data));
