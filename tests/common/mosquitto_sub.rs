//! A running `mosquitto_sub -d` (Debian's mosquitto-clients) for the
//! tests: started, waited for until it has subscribed (or another line),
//! then its exit code, payload lines and debug lines. Every wait bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use super::{run_with_timeout, MAX_WAIT};

/// A running `mosquitto_sub -d` (stdout line-buffered through stdbuf).
pub struct Sub {
    child: Child,
    rx: Receiver<String>,
    lines: Vec<String>,
    err: tempfile::NamedTempFile,
}

#[derive(Debug)]
pub struct SubOut {
    pub code: Option<i32>,
    /// Payload lines (with `-v`: "topic payload"), without the debug lines.
    pub messages: Vec<String>,
    /// Everything on stdout.
    pub all: Vec<String>,
    pub stderr: String,
}

impl Sub {
    /// Starts `mosquitto_sub` and waits (bounded) for a stdout line that
    /// contains `ready` ("Subscribed (mid", "received UNSUBACK").
    /// Starts it and waits until it has subscribed.
    pub fn start(port: u16, version: &str, args: &[&str]) -> Sub {
        Sub::start_until(port, version, args, "Subscribed (mid")
    }

    pub fn start_until(port: u16, version: &str, args: &[&str], ready: &str) -> Sub {
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-V", version, "-d"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err.reopen().unwrap())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut s = Sub { child, rx, lines: Vec::new(), err };
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            match s.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    let done = l.contains(ready);
                    s.lines.push(l);
                    if done {
                        return s;
                    }
                }
                Err(e) => {
                    let stderr = std::fs::read_to_string(s.err.path()).unwrap_or_default();
                    panic!(
                        "mosquitto_sub {args:?} never printed {ready:?} ({e:?}); stdout {:?} stderr {stderr:?}",
                        s.lines
                    );
                }
            }
        }
    }

    /// The SUBACK line ("Subscribed (mid: 1): 0").
    pub fn granted(&self) -> String {
        self.lines.iter().find(|l| l.starts_with("Subscribed (mid")).cloned().unwrap_or_default()
    }

    /// Waits (bounded) for the process to end and returns its output.
    pub fn finish(mut self) -> SubOut {
        let deadline = Instant::now() + MAX_WAIT;
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.rx.recv_timeout(Duration::from_millis(500)) {
            self.lines.push(l);
        }
        let messages = self
            .lines
            .iter()
            .filter(|l| {
                !l.starts_with("Client ") && !l.starts_with("Subscribed (mid") && !l.starts_with("Received DISCONNECT")
            })
            .cloned()
            .collect();
        let stderr = std::fs::read_to_string(self.err.path()).unwrap_or_default();
        SubOut { code, messages, all: std::mem::take(&mut self.lines), stderr }
    }
}

/// A subscriber still running when its test ends (or panics) is killed.
impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mosquitto_pub` to completion: (exit code, stdout, stderr).
pub fn publish(port: u16, version: &str, args: &[&str]) -> (Option<i32>, String, String) {
    run_with_timeout(
        Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version]).args(args),
        MAX_WAIT,
    )
}

pub fn publish_ok(port: u16, version: &str, args: &[&str]) {
    let (code, out, err) = publish(port, version, args);
    assert_eq!(code, Some(0), "mosquitto_pub {args:?} failed: stdout {out:?} stderr {err:?}");
}
