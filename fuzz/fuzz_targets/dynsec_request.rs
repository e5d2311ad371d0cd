#![no_main]
//! See fuzz/src/dynsec_request.rs for the input format and the checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| midge_fuzz::dynsec_request::run(data));
