//! Debian's stock `/etc/mosquitto/mosquitto.conf`, unchanged but for its
//! paths (moved into a temporary directory): midge serves with it, logs to
//! its file (reopened on SIGHUP, as logrotate's postrotate does), writes
//! its pid file and removes it on SIGTERM. And SIGHUP rereads the password
//! file, disconnecting a client whose user was removed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, midge_bin, mqtt_str, packet, password_file, tempdir, write_file, Broker, Raw, MAX_WAIT};

/// Debian's /etc/mosquitto/mosquitto.conf (mosquitto 2.0.x), as shipped.
const DEBIAN_STOCK_CONF: &str = "\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
";

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the midge process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0, "kill({pid}, {sig})");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits (at most MAX_WAIT) until `f` holds.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + MAX_WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `mosquitto_pub` of a retained message, retried while the broker is
/// still starting (it listens before it serves).
fn publish_retained(port: u16, topic: &str, msg: &str) {
    let mut ok = false;
    wait_for("mosquitto_pub to succeed", || {
        ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", msg, "-r", "-q", "1"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok
    });
}

fn subscribe_one(port: u16, topic: &str) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-C", "1", "-W", "10"])
        .output()
        .expect("run mosquitto_sub");
    assert!(out.status.success(), "mosquitto_sub: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn debian_stock_config_serves_logs_to_its_file_and_keeps_a_pid_file() {
    if common::is_mosquitto() {
        return; // midge's own process behaviour
    }
    let dir = tempdir();
    let d = dir.path();
    for sub in ["run", "lib", "log", "conf.d"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let port = free_port();
    let conf = DEBIAN_STOCK_CONF
        .replace("/run/mosquitto/", &format!("{}/run/", d.display()))
        .replace("/var/lib/mosquitto/", &format!("{}/lib/", d.display()))
        .replace("/var/log/mosquitto/", &format!("{}/log/", d.display()))
        .replace("/etc/mosquitto/conf.d", &format!("{}/conf.d", d.display()));
    let conf_path = write_file(d, "mosquitto.conf", &conf);
    write_file(&d.join("conf.d"), "local.conf", &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"));
    write_file(&d.join("conf.d"), "README", "not a .conf file: not read\n");
    let (pid_path, log_path) = (d.join("run/mosquitto.pid"), d.join("log/mosquitto.log"));
    let out_path = d.join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let child = Command::new(midge_bin())
        .arg("-c")
        .arg(&conf_path)
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start midge");
    let mut child = Killed(child);
    let pid = child.0.id();

    publish_retained(port, "stock/t", "hello");
    assert_eq!(subscribe_one(port, "stock/t"), "hello");
    assert_eq!(read(&pid_path), format!("{pid}\n"));
    assert!(d.join("lib/midge.redb").exists(), "persistence_location not used");
    let log = read(&log_path);
    assert!(log.contains(&format!("listen socket on port {port}")), "log file:\n{log}");
    assert!(log.contains("conf.d/local.conf included"), "log file:\n{log}");
    assert!(!read(&out_path).contains("listen socket"), "log on stdout/stderr too:\n{}", read(&out_path));

    // logrotate: rename, then SIGHUP; new lines go to a new file.
    let rotated = d.join("log/mosquitto.log.1");
    std::fs::rename(&log_path, &rotated).unwrap();
    signal(pid, libc::SIGHUP);
    wait_for("a new log file", || read(&log_path).contains("SIGHUP"));
    assert_eq!(subscribe_one(port, "stock/t"), "hello");
    wait_for("the new client in the new log", || read(&log_path).contains("New client connected"));
    let old = read(&rotated);
    let new_connections = |s: &str| s.matches("New client connected").count();
    assert_eq!(new_connections(&old), 2, "old log:\n{old}"); // the publisher and the first subscriber
    assert_eq!(new_connections(&read(&log_path)), 1, "new log:\n{}", read(&log_path));

    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + MAX_WAIT;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "midge did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "exit status {status}");
    assert!(!pid_path.exists(), "pid file left behind");
    assert!(read(&log_path).contains("SIGTERM"));
}

/// CONNECT (3.1.1, clean session) with a user name and password.
fn connect_as(port: u16, client: &str, user: &str, password: &str) -> (Raw, u8) {
    let mut body = mqtt_str("MQTT");
    body.extend([4, 0xC2]);
    body.extend(60u16.to_be_bytes());
    body.extend(mqtt_str(client));
    body.extend(mqtt_str(user));
    body.extend(mqtt_str(password));
    let mut raw = Raw::connect(port);
    raw.send(&packet(0x10, &body));
    let ack = raw.expect_packet(MAX_WAIT);
    assert_eq!(ack.kind(), 2, "not a CONNACK: {:?}", ack.bytes());
    let code = *ack.bytes().last().unwrap();
    (raw, code)
}

#[test]
fn sighup_reloads_the_password_file() {
    if common::is_mosquitto() {
        return; // midge's own process behaviour (Mosquitto's differs in its log)
    }
    let dir = tempdir();
    let passwd = password_file(dir.path(), &[("alice", "apw"), ("bob", "bpw")]);
    let b = Broker::start_in(dir, "password_file {dir}/passwd\nallow_anonymous false\npersistence false");
    let (mut alice, code) = connect_as(b.port, "a1", "alice", "apw");
    assert_eq!(code, 0);
    let (mut bob, code) = connect_as(b.port, "b1", "bob", "bpw");
    assert_eq!(code, 0);
    assert_eq!(connect_as(b.port, "c0", "carol", "cpw").1, 5);

    // bob removed, carol added.
    let st = Command::new("mosquitto_passwd").arg("-D").arg(&passwd).arg("bob").status().unwrap();
    assert!(st.success());
    let st = Command::new("mosquitto_passwd").arg("-b").arg(&passwd).args(["carol", "cpw"]).status().unwrap();
    assert!(st.success());
    signal(b.pid(), libc::SIGHUP);
    bob.expect_closed(MAX_WAIT);
    assert_eq!(connect_as(b.port, "c1", "carol", "cpw").1, 0);
    assert_eq!(connect_as(b.port, "b2", "bob", "bpw").1, 5);
    // alice's entry did not change: she stays connected.
    alice.send(&[0xC0, 0]);
    assert_eq!(alice.expect_packet(MAX_WAIT).kind(), 13, "PINGRESP");
    assert!(b.log().contains("user bob was removed"), "{}", b.log());

    // A file that no longer reads: the rules read before stay in force.
    std::fs::write(&passwd, "alice\n").unwrap();
    signal(b.pid(), libc::SIGHUP);
    wait_for("the reload error in the log", || b.log().contains("The password_file read before stays in force"));
    let log = b.log();
    assert!(log.contains(&format!("{}:1: expected username:hash", passwd.display())), "{log}");
    assert_eq!(connect_as(b.port, "c2", "carol", "cpw").1, 0);
    alice.send(&[0xC0, 0]);
    assert_eq!(alice.expect_packet(MAX_WAIT).kind(), 13, "PINGRESP");
}
