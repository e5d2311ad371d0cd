#![no_main]
//! See fuzz/src/broker_events.rs for the input format and the checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| midge_fuzz::broker_events::run(data));
