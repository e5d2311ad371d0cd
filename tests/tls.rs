//! TLS listeners (`certfile`/`keyfile`, `cafile` + `require_certificate`,
//! `tls_version`) driven by Mosquitto's own clients, which link OpenSSL:
//! an independent TLS implementation on the other side of rustls. The
//! certificates are test fixtures made by `scripts/gen-test-certs.sh`.
//!
//! Runs against Mosquitto too (`MIDGE_TEST_BROKER=mosquitto`): the outcomes
//! asserted here are the ones Mosquitto 2.0.11 gives.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{free_port, run_with_timeout, tempdir, write_file, Broker, MAX_WAIT};

/// Copies the fixtures into the broker's directory (world-readable:
/// Mosquitto drops to its own user before reading them).
fn fixtures(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    for f in std::fs::read_dir(&src).expect("tests/fixtures/tls") {
        let f = f.unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        write_file(dir, f.file_name().to_str().unwrap(), &text);
    }
}

fn fixture(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

struct TlsBroker {
    broker: Broker,
    tls_port: u16,
}

/// A broker with its plain test listener plus a TLS listener carrying
/// `extra` (more TLS options for that listener).
fn start(extra: &str) -> TlsBroker {
    let dir = tempdir();
    fixtures(dir.path());
    let tls_port = free_port();
    let config =
        format!("listener {tls_port} 127.0.0.1\ncertfile {{dir}}/server.pem\nkeyfile {{dir}}/server.key\n{extra}\n");
    let broker = Broker::start_in(dir, &config);
    TlsBroker { broker, tls_port }
}

/// `mosquitto_pub` over TLS; returns (exit code, stderr).
fn publish(port: u16, dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let (code, _out, err) = run_with_timeout(
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port.to_string(), "--cafile", &fixture(dir, "ca.pem")])
            .args(args),
        MAX_WAIT,
    );
    (code, err)
}

/// The retained message on `topic`, read over the plain listener.
fn plain_retained(b: &TlsBroker, topic: &str) -> String {
    let port = b.broker.port.to_string();
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_sub").args(["-p", &port, "-t", topic, "-C", "1", "-W", "5"]),
        MAX_WAIT,
    );
    assert_eq!(code, Some(0), "plain subscribe to {topic} failed: {err}");
    out.trim().to_string()
}

/// `mosquitto_sub` over TLS for one message (`-C 1`), with a retained
/// message already on the topic so that it returns at once.
fn receive_one(port: u16, dir: &Path, topic: &str, args: &[&str]) -> (Option<i32>, String, String) {
    run_with_timeout(
        Command::new("mosquitto_sub")
            .args(["-h", "localhost", "-p", &port.to_string(), "--cafile", &fixture(dir, "ca.pem")])
            .args(["-t", topic, "-C", "1", "-W", "5"])
            .args(args),
        MAX_WAIT,
    )
}

#[test]
fn publish_and_subscribe_over_tls_v311_and_v5() {
    let b = start("");
    let dir = b.broker.dir().to_path_buf();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("tls/{version}");
        let (code, err) = publish(b.tls_port, &dir, &["-V", version, "-t", &topic, "-m", "sealed", "-r", "-q", "1"]);
        assert_eq!(code, Some(0), "{version} publish over TLS failed: {err}");
        let (code, out, err) = receive_one(b.tls_port, &dir, &topic, &["-V", version]);
        assert_eq!(code, Some(0), "{version} subscribe over TLS failed: {err}");
        assert_eq!(out.trim(), "sealed");
    }
    // The same state is visible from the plain listener: one broker.
    assert_eq!(plain_retained(&b, "tls/mqttv5"), "sealed");
}

#[test]
fn live_delivery_from_plain_to_tls_subscriber() {
    let b = start("");
    let dir = b.broker.dir().to_path_buf();
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &b.tls_port.to_string(), "--cafile", &fixture(&dir, "ca.pem")])
        .args(["-t", "live/#", "-C", "3", "-W", "10", "-q", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // Publish until the subscriber has what it needs (it subscribes at its
    // own pace); bounded by count.
    let mut done = false;
    for i in 0..50 {
        let (topic, payload) = (format!("live/{i}"), format!("m{i}"));
        let port = b.broker.port.to_string();
        let (code, _out, err) = run_with_timeout(
            Command::new("mosquitto_pub").args(["-p", &port, "-t", &topic, "-m", &payload, "-q", "1"]),
            MAX_WAIT,
        );
        assert_eq!(code, Some(0), "plain publish failed: {err}");
        if sub.try_wait().unwrap().is_some() {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !done {
        let _ = sub.kill();
    }
    let out = sub.wait_with_output().unwrap();
    assert!(out.status.success(), "TLS subscriber did not receive 3 messages");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with('m')), "{lines:?}");
}

#[test]
fn client_certificate_required_and_checked() {
    let b = start("cafile {dir}/ca.pem\nrequire_certificate true\n");
    let dir = b.broker.dir().to_path_buf();
    // No certificate: the handshake fails, nothing is published.
    let (code, _err) = publish(b.tls_port, &dir, &["-t", "mtls/x", "-m", "no-cert", "-r"]);
    assert_ne!(code, Some(0), "a client without a certificate was accepted");
    // A certificate from another CA: refused too.
    let (cert, key) = (fixture(&dir, "other-client.pem"), fixture(&dir, "other-client.key"));
    let (code, _err) =
        publish(b.tls_port, &dir, &["-t", "mtls/x", "-m", "wrong-ca", "-r", "--cert", &cert, "--key", &key]);
    assert_ne!(code, Some(0), "a client certificate from another CA was accepted");
    // The right certificate: accepted.
    let (cert, key) = (fixture(&dir, "client.pem"), fixture(&dir, "client.key"));
    let (code, err) =
        publish(b.tls_port, &dir, &["-t", "mtls/x", "-m", "good", "-r", "-q", "1", "--cert", &cert, "--key", &key]);
    assert_eq!(code, Some(0), "a valid client certificate was refused: {err}");
    // Only the accepted publish reached the broker.
    assert_eq!(plain_retained(&b, "mtls/x"), "good");
}

#[test]
fn tls_version_minimum_is_enforced() {
    let b = start("tls_version tlsv1.3\n");
    let dir = b.broker.dir().to_path_buf();
    // mosquitto_pub's --tls-version only sets a minimum, so pin the
    // version with openssl s_client (exit 0 only after a handshake).
    let handshake = |flag: &str| {
        let (code, out, err) =
            run_with_timeout(
                Command::new("openssl")
                    .args(["s_client", flag, "-connect", &format!("127.0.0.1:{}", b.tls_port)])
                    .args(["-CAfile", &fixture(&dir, "ca.pem"), "-verify_return_error"]),
                MAX_WAIT,
            );
        (code, format!("{out}{err}"))
    };
    let (code, out) = handshake("-tls1_2");
    assert_ne!(code, Some(0), "a TLS 1.2 handshake succeeded on a tlsv1.3 listener:\n{out}");
    let (code, out) = handshake("-tls1_3");
    assert_eq!(code, Some(0), "TLS 1.3 refused:\n{out}");
    let (code, err) = publish(b.tls_port, &dir, &["-t", "v/x", "-m", "new"]);
    assert_eq!(code, Some(0), "mosquitto_pub refused: {err}");
}

#[test]
fn plain_mqtt_on_a_tls_port_is_refused_and_logged() {
    let b = start("");
    // A plain CONNECT is not a TLS ClientHello: the connection closes
    // without a CONNACK.
    let mut raw = common::Raw::connect(b.tls_port);
    raw.send(&common::connect_v311("plain-on-tls", true, 30));
    raw.expect_closed(MAX_WAIT);
    // The broker goes on serving TLS clients.
    let dir = b.broker.dir().to_path_buf();
    let (code, err) = publish(b.tls_port, &dir, &["-t", "after/x", "-m", "ok"]);
    assert_eq!(code, Some(0), "{err}");
    if !common::is_mosquitto() {
        let log = b.broker.log();
        assert!(log.contains("TLS handshake failed"), "no log line for the failed handshake:\n{log}");
    }
}

#[test]
fn bad_tls_config_is_an_error_with_file_and_line() {
    if common::is_mosquitto() {
        return; // midge's own messages
    }
    let dir = tempdir();
    fixtures(dir.path());
    let d = dir.path().display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (format!("listener 8883\ncertfile {d}/missing.pem\nkeyfile {d}/server.key\n"), "conf:2: certfile"),
        (format!("listener 8883\ncertfile {d}/server.pem\n"), "conf:2: certfile needs keyfile"),
        (format!("listener 8883\ncertfile {d}/server.pem\nkeyfile {d}/client.key\n"), "conf:3: keyfile"),
        (format!("listener 8883\ncertfile {d}/server.key\nkeyfile {d}/server.key\n"), "conf:2: certfile"),
        (
            format!("listener 8883\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n"),
            "conf:4: require_certificate true needs cafile",
        ),
        ("listener 8883\ntls_version tlsv1.1\n".to_string(), "conf:2: tls_version"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p: PathBuf = write_file(dir.path(), &format!("bad{i}.conf"), text);
        let (code, _out, err) =
            run_with_timeout(Command::new(common::midge_bin()).args(["-c", p.to_str().unwrap()]), MAX_WAIT);
        assert_ne!(code, Some(0), "config {i} was accepted:\n{text}");
        assert!(err.contains(want), "config {i}: expected `{want}` in:\n{err}");
    }
}
