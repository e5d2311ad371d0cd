//! The broker under test driven by Eclipse paho-mqtt (Python, >= 2), mostly
//! for MQTT 5 features. Each test starts a broker and runs one script from
//! `tests/paho/` as `python3 tests/paho/NAME.py PORT`; the script prints
//! `OK ...` per check and exits 0, or prints `FAIL ...` and exits 1.
//!
//! The interpreter is `python3` from PATH, or `MIDGE_TEST_PYTHON`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, Broker};

fn python() -> String {
    std::env::var("MIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("paho").join(name)
}

/// Runs `name` against a broker started with `config`; asserts exit 0, no
/// FAIL line and every `expect` substring among the OK lines.
fn run(name: &str, config: &str, expect: &[&str]) {
    let (code, _, err) =
        run_with_timeout(Command::new(python()).args(["-c", "import paho.mqtt"]), Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "paho-mqtt is not importable by {}: {err}\ninstall it: pip install 'paho-mqtt>=2'",
        python()
    );
    let b = Broker::start(config);
    let (code, out, err) = run_with_timeout(
        Command::new(python()).arg(script(name)).arg(b.port.to_string()).env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(40),
    );
    assert_eq!(code, Some(0), "{name} failed (exit {code:?})\n--- stdout ---\n{out}--- stderr ---\n{err}");
    assert!(!out.contains("FAIL"), "{name}: {out}");
    for e in expect {
        assert!(out.lines().any(|l| l.starts_with("OK") && l.contains(e)), "{name}: no OK line with {e:?}\n{out}");
    }
}

#[test]
fn paho_auth_method_refused_0x8c() {
    run("auth_method_refused.py", "", &["reason code 0x8C", "connection closed", "plain CONNECT accepted"]);
}

#[test]
fn paho_disconnect_with_will_message_0x04() {
    run(
        "disconnect_with_will.py",
        "",
        &["normal DISCONNECT (0x00): no will", "0x04: will published", "exactly one will"],
    );
}

#[test]
fn paho_client_maximum_packet_size_respected() {
    run(
        "client_max_packet_size.py",
        "",
        &["unlimited subscriber gets both", "gets only the small message", "stays connected"],
    );
}

#[test]
fn paho_session_expiry_changed_in_disconnect() {
    run(
        "session_expiry_on_disconnect.py",
        "",
        &["session kept", "session ended by DISCONNECT expiry 0", "does not keep the session"],
    );
}

#[test]
fn paho_request_response_properties() {
    run(
        "request_response.py",
        "",
        &["Response Topic", "Correlation Data", "user property kept", "requester gets the answer"],
    );
}

#[test]
fn paho_client_receive_maximum_respected() {
    run(
        "receive_maximum_client.py",
        "",
        &["only one unacknowledged message in flight", "next one after the PUBACK", "all three, in order"],
    );
}

#[test]
fn paho_v5_reason_codes() {
    run("reason_codes.py", "", &["SUBACK granted QoS", "0x11 no subscription existed", "PUBACK 0x10", "PUBACK 0x00"]);
}

#[test]
fn paho_v311_retained_qos2_and_session() {
    run("v311_basics.py", "", &["retained message at QoS 2", "session present", "queued message delivered"]);
}
