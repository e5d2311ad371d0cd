//! Three real `midge` processes on loopback, one data directory each, for
//! the cluster tests. Every node gets its own MQTT, admin, health and peer
//! port (the demo's layout: one host, different ports), and is killed by
//! PID when the `Cluster` is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, midge_bin};

pub struct Cluster {
    /// Config lines added to every node; `{admin}`, `{tls}`, `{node}` and
    /// `{dir}` are replaced by the node's admin port, TLS port, its id and
    /// the cluster's directory.
    extra: String,
    /// Config lines for one node only, after `extra` (`set_extra`).
    node_extra: [String; 3],
    pub mode: &'static str,
    pub dir: tempfile::TempDir,
    pub mqtt: Vec<u16>,
    pub admin: Vec<u16>,
    pub tls: Vec<u16>,
    pub health: Vec<u16>,
    pub peer: Vec<u16>,
    procs: Vec<Option<Child>>,
}

impl Cluster {
    /// Three nodes with `cluster_follower_mode redirect`.
    pub fn start_with(extra: &str) -> Cluster {
        Cluster::start_mode("redirect", extra)
    }

    pub fn start_mode(mode: &'static str, extra: &str) -> Cluster {
        let mut c = Cluster::prepare(mode, extra);
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    /// The directory and ports, no node started yet (`spawn` each).
    pub fn prepare(mode: &'static str, extra: &str) -> Cluster {
        let dir = super::tempdir();
        let ports = |_| (0..3).map(|_| free_port()).collect::<Vec<u16>>();
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        Cluster {
            extra,
            node_extra: Default::default(),
            mode,
            dir,
            mqtt: ports(()),
            admin: ports(()),
            tls: ports(()),
            health: ports(()),
            peer: ports(()),
            procs: vec![None, None, None],
        }
    }

    fn config(&self, i: usize) -> PathBuf {
        let data = self.dir.path().join(format!("node{}", i + 1));
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence_location {}\ncluster_node_id {}\nsys_interval 0\n\
             cluster_follower_mode {}\nhealth_listener {} 127.0.0.1\n",
            self.mqtt[i],
            data.display(),
            i + 1,
            self.mode,
            self.health[i],
        );
        for j in 0..3 {
            text += &format!("cluster_peer {} 127.0.0.1:{}\n", j + 1, self.peer[j]);
        }
        text += &(self.extra.clone() + &self.node_extra[i])
            .replace("{admin}", &self.admin[i].to_string())
            .replace("{tls}", &self.tls[i].to_string())
            .replace("{node}", &(i + 1).to_string());
        let path = self.dir.path().join(format!("node{}.conf", i + 1));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Config lines for node `i` only (same placeholders as `extra`).
    pub fn set_extra(&mut self, i: usize, lines: &str) {
        self.node_extra[i] = lines.to_string();
    }

    pub fn spawn(&mut self, i: usize) {
        let conf = self.config(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{}.log", i + 1)))
            .unwrap();
        let child = Command::new(midge_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start midge");
        self.procs[i] = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// The serving leader: the node whose health endpoint answers 200 (in
    /// proxy mode every node accepts MQTT connections, so a CONNECT does
    /// not tell).
    pub fn leader(&self, within: Duration) -> Option<usize> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            for i in 0..3 {
                if self.procs[i].is_some() && health_ok(self.health[i]) {
                    return Some(i);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(|c| c.id())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{}.log", i + 1))).unwrap_or_default()
    }

    /// The last lines of each node's log, for assertion messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..3 {
            let text = self.log(i);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s += &format!("--- node {} (newest first)\n{}\n", i + 1, tail.join("\n"));
        }
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

/// `GET /health` answers 200 (this node leads and serves).
pub fn health_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

/// The JSON of `GET /health` (whatever the status).
pub fn health_json(port: u16) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// `midge ctl` against the admin listener on `port` (user admin, password
/// secret): whether it succeeded, and its stdout and stderr.
pub fn ctl(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new(midge_bin())
        .args(["ctl", "-p", &port.to_string(), "-u", "admin", "-P", "secret"])
        .args(args)
        .output()
        .expect("run midge ctl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}
