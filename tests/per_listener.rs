//! `per_listener_settings true` with real clients (mosquitto_pub and
//! mosquitto_sub): one broker, two listeners. The first is anonymous with
//! no password or ACL file; the second refuses anonymous clients and has
//! its own password file and ACL. A client is authenticated and
//! authorised by the rules of the listener it connected to, messages cross
//! between the listeners, and SIGHUP rereads the second listener's files.
//! The same test runs against Mosquitto (`MIDGE_TEST_BROKER=mosquitto`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mosquitto_sub::{publish, publish_ok, Sub};
use common::{free_port, password_file, write_file, Broker};

/// The ACL of the secure listener: alice reads and writes `secure/#` but
/// `secure/hidden` (the deny first: Mosquitto takes a user's first
/// matching rule, midge lets every deny win); bob has a login and no topics.
const ACL: &str = "user alice\ntopic deny secure/hidden\ntopic readwrite secure/#\n\nuser bob\n";

fn start() -> (Broker, u16) {
    let dir = common::tempdir();
    password_file(dir.path(), &[("alice", "secret"), ("bob", "pw2")]);
    write_file(dir.path(), "acl", ACL);
    let secure = free_port();
    // The harness's listener (b.port) comes first: `allow_anonymous true`
    // here is its own. The second listener has its own three options.
    let b = Broker::start_in(
        dir,
        &format!(
            "per_listener_settings true\nallow_anonymous true\n\
             listener {secure} 127.0.0.1\nallow_anonymous false\npassword_file {{dir}}/passwd\nacl_file {{dir}}/acl\n"
        ),
    );
    (b, secure)
}

/// mosquitto_pub's exit code and output for one QoS 1 message.
fn try_pub(port: u16, login: &[&str], topic: &str) -> (Option<i32>, String) {
    let mut args = vec!["-q", "1", "-t", topic, "-m", "hello"];
    args.extend_from_slice(login);
    let (code, out, err) = publish(port, "mqttv311", &args);
    (code, format!("{out}{err}"))
}

fn refused(port: u16, login: &[&str]) -> bool {
    let (code, out) = try_pub(port, login, "secure/probe");
    code != Some(0) && out.to_lowercase().contains("not authori")
}

fn hup(b: &Broker) {
    assert!(Command::new("kill").args(["-HUP", &b.pid().to_string()]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn each_listener_authenticates_and_authorises_by_its_own_rules() {
    let (b, secure) = start();
    let open = b.port;

    // Logins: anonymous is refused only on the secure listener; a wrong
    // password is refused there, and any login passes on the open one
    // (it has no password file).
    assert!(refused(secure, &[]), "anonymous on the secure listener\n{}", b.log());
    assert!(refused(secure, &["-u", "alice", "-P", "wrong"]), "{}", b.log());
    assert_eq!(try_pub(open, &[], "any/topic").0, Some(0), "{}", b.log());
    assert_eq!(try_pub(open, &["-u", "alice", "-P", "wrong"], "any/topic").0, Some(0), "{}", b.log());
    assert_eq!(try_pub(secure, &["-u", "alice", "-P", "secret"], "secure/a").0, Some(0), "{}", b.log());

    // ACL of the secure listener: alice may subscribe to secure/#, bob may
    // not. midge refuses his filter (SUBACK 0x80); Mosquitto grants it and
    // filters what it delivers (CONFIG.md, ACL file: differences).
    let alice =
        Sub::start(secure, "mqttv311", &["-u", "alice", "-P", "secret", "-t", "secure/#", "-q", "1", "-v", "-C", "1"]);
    assert!(alice.granted().ends_with(": 1"), "{}", alice.granted());
    let bob = Sub::start(secure, "mqttv311", &["-u", "bob", "-P", "pw2", "-t", "secure/#", "-q", "1", "-v", "-W", "3"]);
    let bob_suback = if common::is_mosquitto() { ": 1" } else { ": 128" };
    assert!(bob.granted().ends_with(bob_suback), "bob's SUBACK: {}", bob.granted());
    // The open listener has no ACL: an anonymous client subscribes to
    // anything.
    let anon = Sub::start(open, "mqttv311", &["-t", "secure/#", "-q", "1", "-v", "-C", "2"]);
    assert!(anon.granted().ends_with(": 1"), "{}", anon.granted());

    // An anonymous client of the open listener publishes to secure/x: the
    // rules of the publisher's listener let it (it has no ACL), and each
    // subscriber receives it by the rules of its own listener.
    publish_ok(open, "mqttv311", &["-q", "1", "-t", "secure/x", "-m", "from-open"]);
    // bob publishes on the secure listener, where he has no write grant:
    // acknowledged and dropped (3.1.1 has no negative PUBACK).
    publish_ok(secure, "mqttv311", &["-u", "bob", "-P", "pw2", "-q", "1", "-t", "secure/y", "-m", "from-bob"]);
    publish_ok(secure, "mqttv311", &["-u", "alice", "-P", "secret", "-q", "1", "-t", "secure/z", "-m", "from-alice"]);

    let a = alice.finish();
    assert_eq!(a.messages, vec!["secure/x from-open"], "{a:?}\n{}", b.log());
    let o = anon.finish();
    assert_eq!(o.messages, vec!["secure/x from-open", "secure/z from-alice"], "{o:?}\n{}", b.log());
    let bo = bob.finish();
    assert!(bo.messages.is_empty(), "bob has no read grant: {bo:?}");
}

/// Messages for a session whose client is offline are queued by the rules
/// of the listener it last connected on: alice's (secure) session does not
/// get secure/hidden; an anonymous session of the open listener does.
#[test]
fn an_offline_session_is_routed_to_by_its_listeners_rules() {
    let (b, secure) = start();
    let open = b.port;
    let alice = ["-u", "alice", "-P", "secret", "-i", "alice-offline", "-c", "-q", "1", "-t", "secure/#", "-v"];
    let anon = ["-i", "anon-offline", "-c", "-q", "1", "-t", "secure/#", "-v"];
    // Subscribe, then leave at once (-E): two persistent sessions.
    for (port, args) in [(secure, &alice[..]), (open, &anon[..])] {
        let s = Sub::start(port, "mqttv311", &[args, &["-E"]].concat());
        assert!(s.granted().ends_with(": 1"), "{}", s.granted());
        assert_eq!(s.finish().code, Some(0));
    }
    for topic in ["secure/hidden", "secure/seen"] {
        publish_ok(open, "mqttv311", &["-q", "1", "-t", topic, "-m", "queued"]);
    }
    let back = |port, args: &[&str]| {
        // The queued messages may come before the SUBACK.
        let s = Sub::start_until(port, "mqttv311", &[args, &["-C", "2", "-W", "3"]].concat(), "received CONNACK");
        s.finish().messages
    };
    assert_eq!(back(secure, &alice), vec!["secure/seen queued"], "{}", b.log());
    assert_eq!(back(open, &anon), vec!["secure/hidden queued", "secure/seen queued"], "{}", b.log());
}

#[test]
fn sighup_rereads_a_listeners_password_file() {
    let (b, secure) = start();
    assert!(refused(secure, &["-u", "carol", "-P", "pw3"]), "{}", b.log());
    // carol is added to the secure listener's password file, read on SIGHUP.
    let passwd = b.dir().join("passwd");
    let st = Command::new("mosquitto_passwd").arg("-b").arg(&passwd).args(["carol", "pw3"]).output().unwrap();
    assert!(st.status.success(), "{st:?}");
    make_readable(&passwd);
    hup(&b);
    // The ACL gives carol no topics: she logs in, and her publish is
    // acknowledged (and dropped).
    let (code, out) = try_pub(secure, &["-u", "carol", "-P", "pw3"], "secure/c");
    assert_eq!(code, Some(0), "carol after SIGHUP: {out}\n{}", b.log());
    // Still refused where she was before: anonymous on the secure listener.
    assert!(refused(secure, &[]), "{}", b.log());
}

/// mosquitto_passwd rewrites the file owner-only; Mosquitto started as
/// root reads it as the mosquitto user.
fn make_readable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}
