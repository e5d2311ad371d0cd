//! Minimal MQTT 3.1.1 client-side framing: the packets a load generator
//! needs (CONNECT, SUBSCRIBE, PUBLISH QoS 0/1, PUBACK, PINGREQ, DISCONNECT)
//! and a robust frame reader that never loses a partial frame on a read
//! timeout.

use std::io::{self, Read};
use std::time::Instant;

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;

/// Largest remaining length MQTT can encode (4 varint bytes).
pub const MAX_REMAINING: usize = 268_435_455;

pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    assert!(n <= MAX_REMAINING, "remaining length too large");
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() <= 0xffff);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, protocol level 4 (3.1.1), clean session, no will; a username
/// and password if `login` is given.
pub fn connect(out: &mut Vec<u8>, client_id: &str, keepalive: u16, login: Option<(&str, &str)>) {
    let id = client_id.as_bytes();
    let creds = login.map_or(0, |(u, p)| 2 + u.len() + 2 + p.len());
    let body = 2 + 4 + 1 + 1 + 2 + 2 + id.len() + creds;
    out.push(0x10);
    put_varint(out, body);
    put_str(out, b"MQTT");
    out.push(4); // protocol level
    out.push(if login.is_some() { 0xC2 } else { 0x02 }); // username + password flags, clean session
    out.extend_from_slice(&keepalive.to_be_bytes());
    put_str(out, id);
    if let Some((u, p)) = login {
        put_str(out, u.as_bytes());
        put_str(out, p.as_bytes());
    }
}

pub fn subscribe(out: &mut Vec<u8>, pid: u16, filter: &str, qos: u8) {
    let f = filter.as_bytes();
    out.push(0x82);
    put_varint(out, 2 + 2 + f.len() + 1);
    out.extend_from_slice(&pid.to_be_bytes());
    put_str(out, f);
    out.push(qos);
}

pub fn publish(out: &mut Vec<u8>, topic: &[u8], qos: u8, pid: u16, payload: &[u8]) {
    publish_with(out, topic, qos, false, pid, payload)
}

/// PUBLISH with the RETAIN flag as given.
pub fn publish_with(out: &mut Vec<u8>, topic: &[u8], qos: u8, retain: bool, pid: u16, payload: &[u8]) {
    out.push(0x30 | (qos << 1) | retain as u8);
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    put_varint(out, len);
    put_str(out, topic);
    if qos > 0 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

pub fn puback(out: &mut Vec<u8>, pid: u16) {
    out.extend_from_slice(&[0x40, 2]);
    out.extend_from_slice(&pid.to_be_bytes());
}

pub fn pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xC0, 0]);
}

pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xE0, 0]);
}

pub fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub struct Publish<'a> {
    pub qos: u8,
    pub dup: bool,
    pub pid: u16,
    #[allow(dead_code)]
    pub topic: &'a [u8],
    pub payload: &'a [u8],
}

pub fn parse_publish(hdr: u8, body: &[u8]) -> io::Result<Publish<'_>> {
    let qos = (hdr >> 1) & 3;
    if qos == 3 {
        return Err(bad("PUBLISH with QoS 3"));
    }
    if body.len() < 2 {
        return Err(bad("PUBLISH too short"));
    }
    let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut p = 2 + tl;
    if body.len() < p {
        return Err(bad("PUBLISH topic overruns packet"));
    }
    let topic = &body[2..p];
    let mut pid = 0;
    if qos > 0 {
        if body.len() < p + 2 {
            return Err(bad("PUBLISH missing packet id"));
        }
        pid = u16::from_be_bytes([body[p], body[p + 1]]);
        p += 2;
    }
    Ok(Publish { qos, dup: hdr & 0x08 != 0, pid, topic, payload: &body[p..] })
}

pub fn packet_id(body: &[u8]) -> io::Result<u16> {
    if body.len() < 2 {
        return Err(bad("ack packet too short"));
    }
    Ok(u16::from_be_bytes([body[0], body[1]]))
}

/// Buffered frame reader. Bytes stay in the buffer until a whole frame is
/// there, so a read timeout in the middle of a frame loses nothing.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    need: usize,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, cap: usize) -> Self {
        FrameReader { inner, buf: vec![0; cap.max(64)], start: 0, end: 0, need: 0 }
    }

    /// (fixed-header length, remaining length) of the first buffered frame,
    /// if it is complete.
    fn complete_frame(&mut self) -> io::Result<Option<(usize, usize)>> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 2 {
            return Ok(None);
        }
        if avail[0] >> 4 == 0 {
            return Err(bad(format!("reserved packet type 0 (first byte {:#04x})", avail[0])));
        }
        let mut len = 0usize;
        let mut mult = 1usize;
        let mut i = 1;
        loop {
            if i > 4 {
                return Err(bad("remaining length longer than 4 bytes"));
            }
            if i >= avail.len() {
                return Ok(None);
            }
            let b = avail[i];
            len += (b & 0x7f) as usize * mult;
            mult *= 128;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if avail.len() < i + len {
            self.need = i + len;
            return Ok(None);
        }
        Ok(Some((i, len)))
    }

    /// Next complete frame already in the buffer (no I/O): (first byte, body).
    pub fn next_buffered(&mut self) -> io::Result<Option<(u8, &[u8])>> {
        match self.complete_frame()? {
            None => Ok(None),
            Some((h, len)) => {
                let s = self.start;
                self.start += h + len;
                self.need = 0;
                Ok(Some((self.buf[s], &self.buf[s + h..s + h + len])))
            }
        }
    }

    /// One read() from the socket. Ok(false) on timeout, Err on EOF/error.
    pub fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && (self.buf.len() - self.end < 8192 || self.start + self.need > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.need > self.buf.len() {
            self.buf.resize(self.need, 0);
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        match self.inner.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by broker")),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Wait (reading as needed) until a complete frame is buffered or the
    /// deadline passes. The socket must have a read timeout set so that the
    /// deadline is honoured.
    pub fn wait_frame(&mut self, deadline: Instant) -> io::Result<bool> {
        loop {
            if self.complete_frame()?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.fill()?;
        }
    }

    /// Wait for a frame of the given type, skipping PINGRESPs.
    pub fn expect(&mut self, ptype: u8, deadline: Instant, what: &str) -> io::Result<Vec<u8>> {
        loop {
            if !self.wait_frame(deadline)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("timed out waiting for {what}")));
            }
            let (hdr, body) = self.next_buffered()?.unwrap();
            if hdr >> 4 == ptype {
                return Ok(body.to_vec());
            }
            if hdr >> 4 == PINGRESP {
                continue;
            }
            return Err(bad(format!("expected {what}, got packet type {} (byte {hdr:#04x})", hdr >> 4)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for n in [0usize, 1, 127, 128, 16383, 16384, 2_097_151, 2_097_152, MAX_REMAINING] {
            let mut v = vec![0x30];
            put_varint(&mut v, n);
            v.resize(v.len() + n.min(300_000), 0);
            if n <= 300_000 {
                let mut r = FrameReader::new(&v[..], 16);
                let mut got = None;
                for _ in 0..1000 {
                    if let Some((h, b)) = r.next_buffered().unwrap() {
                        got = Some((h, b.len()));
                        break;
                    }
                    r.fill().unwrap();
                }
                assert_eq!(got, Some((0x30, n)));
            }
        }
    }

    #[test]
    fn connect_with_login() {
        let mut v = Vec::new();
        connect(&mut v, "c", 60, Some(("u", "pw")));
        assert_eq!(
            v,
            [0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'c', 0, 1, b'u', 0, 2, b'p', b'w']
        );
        v.clear();
        connect(&mut v, "c", 60, None);
        assert_eq!(v, [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c']);
    }

    #[test]
    fn split_frames() {
        let mut v = Vec::new();
        publish(&mut v, b"a/b", 1, 7, b"hello");
        puback(&mut v, 9);
        // Feed one byte at a time.
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                b[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut r = FrameReader::new(OneByte(&v), 4);
        let mut frames = Vec::new();
        while frames.len() < 2 {
            if let Some((h, b)) = r.next_buffered().unwrap() {
                frames.push((h, b.to_vec()));
                continue;
            }
            r.fill().unwrap();
        }
        let p = parse_publish(frames[0].0, &frames[0].1).unwrap();
        assert_eq!((p.qos, p.pid, p.topic, p.payload), (1, 7, &b"a/b"[..], &b"hello"[..]));
        assert_eq!(frames[1].0 >> 4, PUBACK);
        assert_eq!(packet_id(&frames[1].1).unwrap(), 9);
    }
}
