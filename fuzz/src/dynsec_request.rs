//! Target `dynsec_request`: the `$CONTROL/dynamic-security/v1` decoder and
//! `apply`, as a request from a client reaches them.
//!
//! Input: one selector byte, then the request payload.
//! * bit 0: start from the file of `mosquitto_ctrl dynsec init` (else from
//!   an empty state);
//! * bit 1: tight limits (64-byte payloads, 2 commands, 8-byte names).
//!
//! Checks: `run_request` never panics and answers JSON with one answer per
//! command at most; every change the decoder makes survives a postcard
//! round trip; afterwards the state survives the file and postcard round
//! trips.

use midge::dynsec::{
    import_json, parse_request, run_request, Action, DynsecChange, DynsecLimits, DynsecState, PasswordHash,
    SALT_BYTES,
};

const INIT: &str = include_str!("../../tests/fixtures/dynsec/init.json");

fn hash(p: &[u8]) -> PasswordHash {
    // One iteration: the fuzzer is after the decoder, not PBKDF2.
    PasswordHash::new(p, [9; SALT_BYTES], 1)
}

pub fn run(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else { return };
    let mut state = if sel & 1 == 1 {
        import_json(INIT).expect("init file imports").state
    } else {
        DynsecState::default()
    };
    let limits = if sel & 2 == 2 {
        DynsecLimits { request_bytes_max: 64, commands_max: 2, name_bytes_max: 8, text_bytes_max: 8 }
    } else {
        DynsecLimits::default()
    };
    let items = parse_request(payload, &limits, &mut hash);
    for item in &items {
        if let Action::Change(c) = &item.action {
            assert_eq!(DynsecChange::decode(&c.encode()).as_ref(), Ok(c), "change round trip");
        }
    }
    let (out, _kick) = run_request(&mut state, payload, &limits, &mut hash);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("answer is JSON");
    let answers = v["responses"].as_array().expect("responses array");
    assert!(answers.len() <= items.len().max(1));
    let exported = midge::dynsec::export_json(&state);
    assert_eq!(import_json(&exported).expect("export imports").state, state, "file round trip");
    assert_eq!(DynsecState::decode(&state.encode()).as_ref(), Ok(&state), "postcard round trip");
}
