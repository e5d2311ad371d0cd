//! Dynamic security for the cluster tests: three nodes with Mosquitto's
//! plugin lines and a copy each of the file `mosquitto_ctrl dynsec init`
//! wrote (user admin, password adminpass), and the client tools' view.

use std::process::Command;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::run_with_timeout;

/// The plugin lines, each node with its own file.
pub const PLUGIN: &str =
    "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file {dir}/ds{node}.json\n";

/// Three nodes in `follower_mode` with `PLUGIN` and `extra`, started once
/// their files exist.
pub fn start_cluster(follower_mode: &'static str, extra: &str) -> Cluster {
    let mut c = Cluster::prepare(follower_mode, &format!("{PLUGIN}{extra}"));
    let first = c.path().join("ds1.json");
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_ctrl").args(["dynsec", "init", first.to_str().unwrap(), "admin", "adminpass"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    for i in 1..3 {
        std::fs::copy(&first, c.path().join(format!("ds{}.json", i + 1))).unwrap();
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c
}

/// `mosquitto_ctrl dynsec ARGS` as admin against `port`: exit code and
/// stdout + stderr, without mosquitto_ctrl's warning about plain text and
/// without empty lines.
pub fn ctrl(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_ctrl")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "admin", "-P", "adminpass", "dynsec"])
            .args(args),
        Duration::from_secs(20),
    );
    let text = format!("{out}{err}")
        .lines()
        .filter(|l| !l.starts_with("Warning: You are running") && !l.starts_with("This means all of the"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    (code, text)
}

/// Whether `user`/`password` can log in through `port` (mosquitto_pub
/// exits 0 only after CONNACK 0).
pub fn logs_in(port: u16, user: &str, password: &str) -> bool {
    let (code, _, _) = run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            password,
            "-t",
            "x",
            "-m",
            "1",
        ]),
        Duration::from_secs(10),
    );
    code == Some(0)
}

/// Waits (at most 20 s) until `f` holds; panics with the nodes' logs.
pub fn eventually(what: &str, c: &Cluster, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}\n{}", c.logs());
}
