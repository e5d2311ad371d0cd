//! MQTT over WebSockets (`protocol websockets`, with and without TLS):
//! paho-mqtt's websockets transport (v5 and 3.1.1) with a plain-TCP client
//! on the same broker, and a raw WebSocket client for the bytes: the
//! subprotocol answer, CONNECT/CONNACK in binary messages, and the bad
//! inputs (not an upgrade, no mqtt subprotocol: HTTP 400 naming why; a text
//! message: the connection is closed).
//!
//! Mosquitto has the feature, but its websockets listener does not start on
//! these machines (libwebsockets: "Unable to start any listening sockets",
//! see PLATFORM.md), so these tests run against midge only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{free_port, run_with_timeout, Broker};

fn tls(f: &str) -> String {
    format!("{}/tests/fixtures/tls/{f}", env!("CARGO_MANIFEST_DIR"))
}

/// A broker with its plain listener, a WebSockets one and a TLS
/// WebSockets one: (broker, ws port, wss port).
fn start() -> (Broker, u16, u16) {
    let (ws, wss) = (free_port(), free_port());
    let b = Broker::start(&format!(
        "listener {ws} 127.0.0.1\nprotocol websockets\nlistener {wss} 127.0.0.1\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
        tls("server.pem"),
        tls("server.key")
    ));
    (b, ws, wss)
}

#[test]
fn paho_over_websockets_and_tls_websockets_meets_tcp_clients() {
    if common::is_mosquitto() {
        return; // see the file's comment
    }
    let (b, ws, wss) = start();
    let python = std::env::var("MIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/paho/websockets.py");
    let (code, out, err) = run_with_timeout(
        Command::new(&python)
            .arg(script)
            .args([b.port.to_string(), ws.to_string(), wss.to_string(), tls("ca.pem")])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(40),
    );
    assert_eq!(code, Some(0), "websockets.py (exit {code:?})\n{out}\n{err}\n{}", b.log());
    assert!(!out.contains("FAIL") && out.contains("OK done"), "{out}");
    assert!(out.contains("OK wss got the tcp client's message"), "{out}");
}

/// An HTTP request on the WebSockets port: the answer's status line and
/// body, then whether the connection was closed.
fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer); // until the broker closes
    String::from_utf8_lossy(&answer).into_owned()
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade(protocol: Option<&str>) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
        protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default()
    )
}

/// A masked client frame (opcode 2 binary, 1 text).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[test]
fn raw_websocket_bytes_and_bad_upgrades() {
    if common::is_mosquitto() {
        return; // see the file's comment
    }
    let (b, ws, _) = start();
    // Not an upgrade: 400 with the reason, then closed.
    let a = http(ws, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{a}");
    assert!(a.contains("not a WebSocket upgrade"), "{a}");
    // No mqtt subprotocol.
    let a = http(ws, &upgrade(None));
    assert!(a.starts_with("HTTP/1.1 400") && a.contains("no mqtt subprotocol"), "{a}");
    let a = http(ws, &upgrade(Some("chat")));
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    assert!(b.log().contains("bad WebSocket upgrade request"), "{}", b.log());

    // A good upgrade: 101 with the mqtt subprotocol (and the RFC 6455
    // accept value of this key), then CONNECT in a binary message.
    let mut s = TcpStream::connect(("127.0.0.1", ws)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade(Some("mqtt")).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: mqtt\r\n"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    s.write_all(&frame(2, &common::connect_v311("raw-ws", true, 30))).unwrap();
    let mut f = [0u8; 6];
    s.read_exact(&mut f).unwrap();
    assert_eq!(f, [0x82, 4, 0x20, 2, 0, 0], "CONNACK in one unmasked binary message");
    // A text message closes the connection [MQTT-6.0.0-1].
    s.write_all(&frame(1, b"hello")).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || rest[0] == 0x88,
        "closed (maybe after a close frame), not answered: {rest:?}\n{}",
        b.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(b.log().contains("raw-ws"), "{}", b.log());
}
