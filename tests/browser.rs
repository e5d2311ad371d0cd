//! A browser as an MQTT client: a page in headless Chromium loads mqtt.js
//! (the npm package `mqtt`, its browser bundle), connects to the broker's
//! `protocol websockets` listener on 127.0.0.1, subscribes, and lists what it
//! receives; a third-party client, mosquitto_pub over plain TCP to the same
//! broker, publishes. The test reads the page's DOM for the message and
//! checks Chromium's screenshot of it.
//!
//! tests/browser/drive.cjs drives Chromium through playwright-core (Debian's
//! /usr/bin/chromium, or `MIDGE_CHROMIUM`) and serves the page from a small
//! HTTP server on 127.0.0.1. The npm packages are pinned by
//! tests/browser/package-lock.json and installed by scripts/node-env.sh
//! into ~/.cache/midge-node (`MIDGE_NODE_DIR`).
//!
//! Chromium missing: the test runs scripts/setup-test-deps.sh, which
//! installs it as root; it skips (with the reason) only when Chromium is
//! still missing after that, and never when `CI` is set.
//!
//! Against Mosquitto (`MIDGE_TEST_BROKER=mosquitto`) the same test runs
//! when its websockets listener starts (Mosquitto built with libwebsockets,
//! as Debian's 2.0.11 is); when it does not, the test says so and skips.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, run_with_timeout, Broker, MAX_WAIT};

const TOPIC: &str = "browser/test";
const PAYLOAD: &str = "hello from mosquitto_pub";

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn chromium_path() -> PathBuf {
    std::env::var_os("MIDGE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// Chromium, installed by scripts/setup-test-deps.sh when missing; `Err`
/// with the reason when it cannot be had.
fn chromium() -> Result<PathBuf, String> {
    let path = chromium_path();
    if path.exists() {
        return Ok(path);
    }
    let (code, out, err) =
        run_with_timeout(Command::new("bash").arg(repo("scripts/setup-test-deps.sh")), Duration::from_secs(900));
    if path.exists() {
        return Ok(path);
    }
    Err(format!(
        "{} is missing and scripts/setup-test-deps.sh did not install it (exit {code:?}): {}{}",
        path.display(),
        out.trim(),
        err.trim()
    ))
}

/// The directory scripts/node-env.sh installed mqtt and playwright-core in.
fn node_dir() -> PathBuf {
    let (code, out, err) =
        run_with_timeout(Command::new("bash").arg(repo("scripts/node-env.sh")), Duration::from_secs(400));
    assert_eq!(code, Some(0), "scripts/node-env.sh failed\n{out}\n{err}");
    PathBuf::from(out.lines().last().expect("node-env.sh prints its directory").trim())
}

/// Waits until something accepts on 127.0.0.1:`port`.
fn wait_accepting(port: u16) -> bool {
    let deadline = Instant::now() + MAX_WAIT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The driver process; killed (by PID) and reaped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PNG width and height from its IHDR chunk, if `png` is a PNG.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

#[test]
fn chromium_page_with_mqtt_js_over_websockets_receives_mosquitto_pub() {
    let chromium = match chromium() {
        Ok(p) => p,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no Chromium for the browser test: {why}");
            return;
        }
        Err(why) => panic!("CI must run the browser test: {why}"),
    };
    let node_dir = node_dir();

    let ws = free_port();
    let b = Broker::start(&format!("listener {ws} 127.0.0.1\nprotocol websockets\n"));
    if !wait_accepting(ws) {
        assert!(b.kind == common::Kind::Mosquitto, "midge's websockets listener {ws} never accepted\n{}", b.log());
        eprintln!(
            "SKIPPED for Mosquitto: its websockets listener on port {ws} did not start \
             (Mosquitto built without libwebsockets, or libwebsockets could not listen):\n{}",
            b.log()
        );
        return;
    }

    let out = common::tempdir();
    let mut driver = Driver(
        Command::new("node")
            .arg(repo("tests/browser/drive.cjs"))
            .arg(&node_dir)
            .arg(format!("ws://127.0.0.1:{ws}/mqtt"))
            .arg(TOPIC)
            .arg(out.path())
            .env("MIDGE_CHROMIUM", &chromium)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node"),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = driver.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = driver.0.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let next_line = |what: &str| -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => panic!("driver: no {what} line ({e})"),
        }
    };
    let first = next_line("SUBSCRIBED");
    if first != "SUBSCRIBED" {
        let _ = driver.0.kill();
        panic!("driver said {first:?}\n{}\n{}", stderr.join().unwrap_or_default(), b.log());
    }

    let (code, o, e) = run_with_timeout(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-q", "1", "-i", "browser-test-pub"])
            .args(["-t", TOPIC, "-m", PAYLOAD]),
        MAX_WAIT,
    );
    assert_eq!(code, Some(0), "mosquitto_pub: {o}{e}");

    let dom_line = next_line("DOM");
    let png_line = next_line("SCREENSHOT");
    let status = loop {
        if let Some(st) = driver.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "driver did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr.join().unwrap_or_default();
    assert!(status.success(), "driver: {status}\n{stderr}\n{}", b.log());

    let dom = std::fs::read_to_string(dom_line.strip_prefix("DOM ").expect("DOM <file>")).unwrap();
    assert!(dom.contains(&format!("<li>{TOPIC} {PAYLOAD}</li>")), "the page lists the message: {dom}");
    assert!(dom.contains(r#"data-state="received""#), "{dom}");

    let png = Path::new(png_line.strip_prefix("SCREENSHOT ").expect("SCREENSHOT <file>"));
    let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!(png_size(&bytes), Some((900, 500)), "a PNG of the 900x500 viewport");
    // A blank page of this size compresses to a few KB; headings and text
    // make it several times that.
    assert!(bytes.len() > 10_000, "screenshot is {} bytes: blank?", bytes.len());
    if std::env::var_os("MIDGE_KEEP_SCREENSHOT").is_some() {
        eprintln!("screenshot kept: {}", out.keep().join("page.png").display());
    }
}
