//! `use_identity_as_username` and `use_subject_as_username`: on a TLS
//! listener with `require_certificate true`, the client certificate's
//! common name (or its whole subject, in OpenSSL's RFC 2253 form) is the
//! username; the CONNECT's username and password are ignored, and the ACL
//! file applies to that name. Driven by Mosquitto's own clients (OpenSSL)
//! with the fixtures of `scripts/gen-test-certs.sh`: id-client.pem is
//! `/C=DE/O=plant, north/CN=sensor-1`, id-nocn.pem has no CN.
//!
//! Runs against Mosquitto too (`MIDGE_TEST_BROKER=mosquitto`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_port, is_mosquitto, run_with_timeout, tempdir, write_file, Broker, MAX_WAIT};

/// What `openssl x509 -noout -subject -nameopt RFC2253` prints for
/// id-client.pem (after `subject=`).
const ID_CLIENT_SUBJECT: &str = "CN=sensor-1,O=plant\\, north,C=DE";

struct Setup {
    broker: Broker,
    /// Logs in with the certificate's common name.
    identity_port: u16,
    /// Logs in with the certificate's subject.
    subject_port: u16,
    /// MQTT over TLS WebSockets, logging in with the common name.
    wss_port: u16,
}

fn start() -> Setup {
    let dir = tempdir();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    for f in ["ca.pem", "server.pem", "server.key", "id-ca.pem", "id-client.pem", "id-client.key"] {
        write_file(dir.path(), f, &std::fs::read_to_string(src.join(f)).unwrap());
    }
    for f in ["id-nocn.pem", "id-nocn.key"] {
        write_file(dir.path(), f, &std::fs::read_to_string(src.join(f)).unwrap());
    }
    // The CN's rules, and the subject's (which Mosquitto and midge write
    // the same way); anonymous clients get nothing.
    write_file(
        dir.path(),
        "acl",
        &format!("user sensor-1\ntopic readwrite plant/#\n\nuser {ID_CLIENT_SUBJECT}\ntopic readwrite subject/#\n"),
    );
    let (identity_port, subject_port, wss_port) = (free_port(), free_port(), free_port());
    let tls = "certfile {dir}/server.pem\nkeyfile {dir}/server.key\ncafile {dir}/id-ca.pem\nrequire_certificate true\n";
    let config = format!(
        "acl_file {{dir}}/acl\n\
         listener {identity_port} 127.0.0.1\n{tls}use_identity_as_username true\n\
         listener {subject_port} 127.0.0.1\n{tls}use_subject_as_username true\n\
         listener {wss_port} 127.0.0.1\nprotocol websockets\n{tls}use_identity_as_username true\n"
    );
    let broker = Broker::start_in(dir, &config);
    Setup { broker, identity_port, subject_port, wss_port }
}

/// A Mosquitto client over TLS with `cert` (id-client or id-nocn): (exit
/// code, stdout, stderr).
fn tls_client(tool: &str, s: &Setup, port: u16, cert: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = s.broker.dir();
    let f = |n: &str| dir.join(n).display().to_string();
    run_with_timeout(
        Command::new(tool)
            .args(["-h", "localhost", "-p", &port.to_string(), "--cafile", &f("ca.pem")])
            .args(["--cert", &f(&format!("{cert}.pem")), "--key", &f(&format!("{cert}.key"))])
            .args(args),
        MAX_WAIT,
    )
}

#[test]
fn the_certificates_common_name_is_the_username() {
    let s = start();
    // A username and password in CONNECT are ignored: there is no password
    // file, and "intruder" has no ACL rules, yet the publish goes through
    // as sensor-1's.
    let (code, _, err) = tls_client(
        "mosquitto_pub",
        &s,
        s.identity_port,
        "id-client",
        &["-u", "intruder", "-P", "nope", "-t", "plant/t1", "-m", "hello", "-r", "-q", "1"],
    );
    assert_eq!(code, Some(0), "publish as sensor-1: {err}");
    let (code, out, err) =
        tls_client("mosquitto_sub", &s, s.identity_port, "id-client", &["-t", "plant/t1", "-C", "1", "-W", "5"]);
    assert_eq!((code, out.trim()), (Some(0), "hello"), "sensor-1 reads plant/#: {err}");
    // The subject's rules are not sensor-1's.
    let (_, out, _) =
        tls_client("mosquitto_sub", &s, s.identity_port, "id-client", &["-t", "subject/#", "-C", "1", "-W", "2"]);
    assert_eq!(out.trim(), "", "sensor-1 may not read subject/#");
}

#[test]
fn a_certificate_without_common_name_is_a_bad_username() {
    let s = start();
    for (version, says) in [("mqttv311", "bad user name or password"), ("mqttv5", "bad user name or password")] {
        let (code, out, err) =
            tls_client("mosquitto_pub", &s, s.identity_port, "id-nocn", &["-V", version, "-t", "plant/t", "-m", "x"]);
        assert_ne!(code, Some(0), "{version}: refused");
        let text = format!("{out}{err}").to_lowercase();
        assert!(text.contains(says), "{version}: CONNACK 4 / 0x86 expected: {text:?}");
    }
    if !is_mosquitto() {
        assert!(s.broker.log().contains("the client certificate's subject has no common name"), "{}", s.broker.log());
    }
}

#[test]
fn the_whole_subject_is_the_username_on_a_subject_listener() {
    let s = start();
    let (code, _, err) = tls_client(
        "mosquitto_pub",
        &s,
        s.subject_port,
        "id-client",
        &["-t", "subject/t", "-m", "by subject", "-r", "-q", "1"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) =
        tls_client("mosquitto_sub", &s, s.subject_port, "id-client", &["-t", "subject/t", "-C", "1", "-W", "5"]);
    assert_eq!((code, out.trim()), (Some(0), "by subject"), "{ID_CLIENT_SUBJECT} reads subject/#: {err}");
    // sensor-1's rules are not the subject's: its retained plant message
    // (published over the identity listener) does not reach this login.
    let (code, _, err) = tls_client(
        "mosquitto_pub",
        &s,
        s.identity_port,
        "id-client",
        &["-t", "plant/t2", "-m", "for sensor-1", "-r", "-q", "1"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) =
        tls_client("mosquitto_sub", &s, s.subject_port, "id-client", &["-t", "plant/t2", "-C", "1", "-W", "2"]);
    assert_eq!(out.trim(), "", "the subject may not read plant/#");
    // Without a CN the subject still names the client.
    let (code, _, err) =
        tls_client("mosquitto_pub", &s, s.subject_port, "id-nocn", &["-t", "subject/t", "-m", "x", "-q", "1"]);
    assert_eq!(code, Some(0), "a login as O=midge test: {err}");
}

/// paho over TLS WebSockets with id-client's certificate: the ACL applies
/// to its common name there too (the CONNECT's username is ignored).
#[test]
fn the_common_name_is_the_username_over_tls_websockets() {
    let s = start();
    let dir = s.broker.dir();
    let f = |n: &str| dir.join(n).display().to_string();
    let script = format!(
        "import sys, paho.mqtt.client as mqtt\n\
         c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id='wss-id', protocol=mqtt.MQTTv311, transport='websockets')\n\
         c.tls_set(ca_certs={ca:?}, certfile={cert:?}, keyfile={key:?})\n\
         c.username_pw_set('intruder', 'nope')\n\
         c.connect('localhost', {port})\n\
         c.loop_start()\n\
         info = c.publish('plant/wss', b'from the browser side', qos=1, retain=True)\n\
         info.wait_for_publish(10)\n\
         print('published', info.is_published())\n\
         c.disconnect(); c.loop_stop()\n",
        ca = f("ca.pem"),
        cert = f("id-client.pem"),
        key = f("id-client.key"),
        port = s.wss_port
    );
    let python = std::env::var("MIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let (code, out, err) = run_with_timeout(Command::new(&python).args(["-c", &script]), MAX_WAIT);
    assert_eq!(code, Some(0), "paho over wss: {out}\n{err}\n{}", s.broker.log());
    assert!(out.contains("published True"), "{out}{err}");
    // Only sensor-1 may write plant/#: the retained message is there.
    let (code, out, err) =
        tls_client("mosquitto_sub", &s, s.identity_port, "id-client", &["-t", "plant/wss", "-C", "1", "-W", "5"]);
    assert_eq!((code, out.trim()), (Some(0), "from the browser side"), "{err}\n{}", s.broker.log());
}
