//! A real Mosquitto as a bridge's upstream broker, on a free loopback port
//! that stays its own across a stop and a start (the bridge dials it
//! again), and a `mosquitto_sub` whose output the test reads as it goes.
//! Both are killed by PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tempdir, write_file};

pub struct Upstream {
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Upstream {
    /// Mosquitto with `extra` config lines after `listener PORT 127.0.0.1`
    /// (`{dir}` is its directory, where the TLS fixtures are copied).
    pub fn start(extra: &str) -> Upstream {
        let dir = tempdir();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        for f in ["ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem"] {
            let text = std::fs::read_to_string(format!("{fixtures}/{f}")).unwrap();
            write_file(dir.path(), f, &text);
        }
        let port = free_port();
        let anonymous = if extra.contains("allow_anonymous") { "" } else { "allow_anonymous true\n" };
        let text = format!(
            "listener {port} 127.0.0.1\n{anonymous}user root\nlog_type all\n{}\n",
            extra.replace("{dir}", &dir.path().display().to_string())
        );
        let conf = write_file(dir.path(), "mosquitto.conf", &text);
        let mut u = Upstream { port, dir, conf, child: None };
        u.restart();
        u
    }

    /// Start it again (on the same port) after `stop`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let pid = child.id();
        self.child = Some(child);
        // Its own listening socket, not any listener on the port (one that
        // another test's process took meanwhile would answer a connect).
        let end = Instant::now() + Duration::from_secs(10);
        while !super::listens(pid, self.port) {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("upstream mosquitto on port {} exited ({st}):\n{}", self.port, self.log());
            }
            assert!(Instant::now() < end, "upstream mosquitto did not listen on port {}:\n{}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (Mosquitto saves its persistence file), and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT: a broker that stops answering, its sockets open.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mosquitto_sub -F '%t %q %r %p'` (topic, QoS, retain, payload) writing
/// to a file that the test reads while it runs.
pub struct Watch {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    /// Starts it and waits until it has subscribed (its debug line).
    pub fn start(port: u16, args: &[&str]) -> Watch {
        let dir = tempdir();
        let out = dir.path().join("out.txt");
        let file = std::fs::File::create(&out).unwrap();
        let err_path = dir.path().join("err.txt");
        let err = std::fs::File::create(&err_path).unwrap();
        let child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-d", "-F", "%t %q %r %p"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("mosquitto_sub");
        let mut w = Watch { child, out, _dir: dir };
        let end = Instant::now() + Duration::from_secs(10);
        while !w.raw().contains("Subscribed (mid") {
            let exited = w.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= end {
                panic!(
                    "mosquitto_sub {args:?} on port {port} never subscribed ({}); stdout: {}; stderr: {}",
                    exited.map_or("still running after 10 s".to_string(), |st| format!("exited: {st}")),
                    w.raw(),
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    /// The last lines of its output, debug lines included.
    pub fn tail(&self, n: usize) -> String {
        let raw = self.raw();
        let lines: Vec<&str> = raw.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn raw(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The message lines so far ("topic qos retain payload").
    pub fn lines(&self) -> Vec<String> {
        self.raw()
            .lines()
            .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid") && !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to `within`) until `done` holds for the lines; returns
    /// the lines either way.
    pub fn wait(&self, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let end = Instant::now() + within;
        loop {
            let l = self.lines();
            if done(&l) || Instant::now() > end {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends it (SIGKILL, by PID).
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
