#!/usr/bin/env python3
"""Durability checker for scripts/crash-test.sh.

Runs against one MQTT broker on 127.0.0.1 while crash-test.sh kills it with
SIGKILL and restarts it on the same port and data directory:

* a subscriber with a fixed client id, clean_session=0, QoS 1 subscription to
  `crash/seq`; it records every sequence number it receives (first receipt;
  repeats are counted as duplicates), PUBACKs each message, and reconnects
  with the same client id and clean_session=0 whenever the connection drops.
  If the broker answers a reconnect with session_present=0 (it forgot the
  session) the subscriber counts that and subscribes again.
* a publisher (clean_session=1) that publishes QoS 1 messages whose payload is
  an increasing sequence number, keeps up to --window PUBACKs outstanding at
  --rate messages/s, and counts a number as *acknowledged* only when its PUBACK
  arrives. On disconnect it reconnects and continues with new numbers; numbers
  in flight at the drop are "unconfirmed" (they may or may not arrive).

When --stop-file appears (or --max-runtime passes) the publisher stops, the
subscriber gets up to --drain seconds to receive everything acknowledged, and
the checker reports: acknowledged, received, LOST (acknowledged but never
received; up to 20 listed, each with the kill that followed its PUBACK, read
from --events), duplicates. Exit status: 0 = ran, 1 = LOST > 0 and
--fail-on-loss, 3 = the test did not run (nothing acknowledged, or the
subscriber never subscribed).

Plain sockets and MQTT 3.1.1 (no paho): the checker needs to see exactly which
PUBLISH got which PUBACK and the CONNACK session-present flag, across broker
restarts, independent of the installed paho-mqtt version.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import threading
import time

TOPIC = "crash/seq"

# ------------------------------------------------------------------ codec

def enc_len(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def enc_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + enc_len(len(body)) + body


def pkt_connect(client_id, clean, keepalive):
    vh = enc_str("MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack("!H", keepalive)
    return packet(0x10, vh + enc_str(client_id))


def pkt_publish_q1(topic, pid, payload):
    return packet(0x32, enc_str(topic) + struct.pack("!H", pid) + payload)


def pkt_puback(pid):
    return b"\x40\x02" + struct.pack("!H", pid)


def pkt_subscribe(pid, topic, qos):
    return packet(0x82, struct.pack("!H", pid) + enc_str(topic) + bytes([qos]))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class Closed(Exception):
    pass


class Conn:
    """A blocking TCP connection with an MQTT packet splitter."""

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, data):
        self.sock.settimeout(5.0)
        self.sock.sendall(data)

    def fill(self, timeout):
        """Read what is there (waiting up to timeout). False on timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not data:
            raise Closed("connection closed by broker")
        self.buf += data
        return True

    def packets(self):
        """Yield (first byte, body) for every complete packet buffered."""
        while True:
            if len(self.buf) < 2:
                return
            mult, rl, i = 1, 0, 1
            while True:
                if i >= len(self.buf):
                    return
                b = self.buf[i]
                rl += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
                if i > 4:
                    raise Closed("malformed remaining length")
            if len(self.buf) < i + rl:
                return
            first = self.buf[0]
            body = bytes(self.buf[i:i + rl])
            del self.buf[:i + rl]
            yield first, body

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def mqtt_connect(host, port, client_id, clean, keepalive, timeout=3.0):
    """TCP connect + CONNECT + CONNACK. Returns (conn, session_present); packets
    that arrived after the CONNACK stay in conn.buf for the caller."""
    c = Conn(host, port, timeout)
    try:
        c.send(pkt_connect(client_id, clean, keepalive))
        deadline = time.time() + timeout
        while time.time() < deadline:
            c.fill(max(0.01, deadline - time.time()))
            for first, body in c.packets():
                if first >> 4 != 2 or len(body) != 2:
                    raise Closed("expected CONNACK, got packet type %d" % (first >> 4))
                if body[1] != 0:
                    raise Closed("CONNACK return code %d" % body[1])
                return c, bool(body[0] & 1)
        raise Closed("no CONNACK within %.1f s" % timeout)
    except BaseException:
        c.close()
        raise


# ------------------------------------------------------------------ state

class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.t0 = time.time()
        # publisher
        self.published = 0
        self.acked = {}            # seq -> (t_publish, t_puback)
        self.unconfirmed = 0       # in flight when the connection dropped
        self.max_seq = 0
        self.pub_connects = 0
        self.pub_connect_failures = 0
        # subscriber
        self.received = {}         # seq -> t_first_receipt
        self.duplicates = 0        # receipts of an already received seq
        self.dup_flag = 0          # PUBLISHes with the DUP flag set
        self.unexpected = 0        # payloads that are not a published seq
        self.sub_connects = 0
        self.sub_connect_failures = 0
        self.sub_session_lost = 0  # reconnects answered with session_present=0
        self.sub_offline_periods = 0
        self.sub_connected = False
        self.sub_connected_since = 0.0
        self.sub_online = []       # [start, end]: subscription known to be in place
        self.last_rx = 0.0
        self.timeline = []         # (t, who, text)
        # coordination
        self.subscribed = threading.Event()
        self.stop_publishing = threading.Event()
        self.stop_all = threading.Event()
        self.fatal = None

    def event(self, who, text):
        with self.lock:
            self.timeline.append((time.time(), who, text))


class Backoff:
    def __init__(self, lo=0.02, hi=0.25):
        self.lo, self.hi, self.cur = lo, hi, lo

    def reset(self):
        self.cur = self.lo

    def sleep(self, stop):
        stop.wait(self.cur)
        self.cur = min(self.hi, self.cur * 2)


# ------------------------------------------------------------------ subscriber

def subscriber(st, args):
    first = True
    backoff = Backoff()
    while not st.stop_all.is_set():
        try:
            conn, present = mqtt_connect(args.host, args.port, args.sub_id, False, 30)
        except (OSError, Closed) as e:
            with st.lock:
                st.sub_connect_failures += 1
            if st.sub_connect_failures <= 3 or st.sub_connect_failures % 50 == 0:
                st.event("sub", "connect failed: %s" % e)
            backoff.sleep(st.stop_all)
            continue
        backoff.reset()
        with st.lock:
            st.sub_connects += 1
            st.sub_connected = True
            st.sub_connected_since = time.time()
        st.event("sub", "connected, session_present=%d" % present)
        went_offline = False
        try:
            if not present:
                if not first:
                    with st.lock:
                        st.sub_session_lost += 1
                    st.event("sub", "broker forgot the persistent session: subscribing again")
                conn.send(pkt_subscribe(1, TOPIC, 1))
            elif first:
                # A fresh data directory must not know this client id.
                st.event("sub", "unexpected session_present=1 on first connect")
            if present:
                st.subscribed.set()
                with st.lock:
                    st.sub_online.append([time.time(), None])
            first = False
            last_ping = connected_at = time.time()
            went_offline = False
            while not st.stop_all.is_set():
                now = time.time()
                if now - last_ping >= 10:
                    conn.send(PINGREQ)
                    last_ping = now
                if (args.sub_offline_every and not st.stop_publishing.is_set()
                        and now - connected_at >= args.sub_offline_every):
                    # Go away on purpose: messages queue in the broker.
                    conn.send(DISCONNECT)
                    went_offline = True
                    break
                # Packets may already be buffered (PUBLISHes that came in the
                # same read as the CONNACK): handle them before waiting.
                for first_byte, body in conn.packets():
                    ptype = first_byte >> 4
                    if ptype == 3:  # PUBLISH
                        qos = (first_byte >> 1) & 3
                        tl = struct.unpack("!H", body[:2])[0]
                        pos = 2 + tl
                        pid = None
                        if qos:
                            pid = struct.unpack("!H", body[pos:pos + 2])[0]
                            pos += 2
                        payload = body[pos:]
                        t = time.time()
                        with st.lock:
                            st.last_rx = t
                            if first_byte & 0x08:
                                st.dup_flag += 1
                            try:
                                seq = int(payload)
                            except ValueError:
                                seq = None
                            if seq is None or seq < 1:
                                st.unexpected += 1
                            elif seq in st.received:
                                st.duplicates += 1
                            else:
                                st.received[seq] = t
                        if qos == 1:
                            conn.send(pkt_puback(pid))
                        elif qos == 2:
                            st.event("sub", "unexpected QoS 2 delivery")
                    elif ptype == 9:  # SUBACK
                        if len(body) < 3 or body[2] == 0x80:
                            raise Closed("SUBACK refused the subscription")
                        st.subscribed.set()
                        with st.lock:
                            st.sub_online.append([time.time(), None])
                        st.event("sub", "SUBACK granted QoS %d" % body[2])
                    elif ptype == 13:  # PINGRESP
                        pass
                    else:
                        st.event("sub", "unexpected packet type %d" % ptype)
                conn.fill(0.2)
            if not went_offline:
                try:
                    conn.send(DISCONNECT)
                except OSError:
                    pass
        except (OSError, Closed) as e:
            st.event("sub", "disconnected: %s" % e)
            went_offline = False
        finally:
            with st.lock:
                st.sub_connected = False
                if st.sub_online and st.sub_online[-1][1] is None:
                    st.sub_online[-1][1] = time.time()
            conn.close()
        if went_offline:
            st.event("sub", "went offline on purpose for %.1f s" % args.sub_offline_for)
            with st.lock:
                st.sub_offline_periods += 1
            end = time.time() + args.sub_offline_for
            while time.time() < end and not st.stop_publishing.is_set() and not st.stop_all.is_set():
                time.sleep(0.05)


# ------------------------------------------------------------------ publisher

def publisher(st, args):
    if not st.subscribed.wait(args.start_timeout):
        st.fatal = "subscriber did not subscribe within %.0f s" % args.start_timeout
        st.event("pub", st.fatal)
        return
    seq = 0
    ready_written = False
    backoff = Backoff()
    interval = 1.0 / args.rate
    while not st.stop_publishing.is_set():
        try:
            conn, _ = mqtt_connect(args.host, args.port, args.pub_id, True, 30)
        except (OSError, Closed) as e:
            with st.lock:
                st.pub_connect_failures += 1
            if st.pub_connect_failures <= 3 or st.pub_connect_failures % 50 == 0:
                st.event("pub", "connect failed: %s" % e)
            backoff.sleep(st.stop_publishing)
            continue
        backoff.reset()
        with st.lock:
            st.pub_connects += 1
        st.event("pub", "connected (next seq %d)" % (seq + 1))
        outstanding = {}   # pid -> (seq, t_publish)
        next_pid = 1
        next_send = time.time()
        stop_deadline = None
        try:
            while True:
                now = time.time()
                if st.stop_publishing.is_set():
                    if stop_deadline is None:
                        stop_deadline = now + 3.0
                    if not outstanding or now > stop_deadline:
                        break
                else:
                    if next_send < now - 0.05:
                        next_send = now - 0.05      # no burst after a stall
                    while len(outstanding) < args.window and next_send <= now:
                        while next_pid in outstanding:
                            next_pid = next_pid % 65535 + 1
                        seq += 1
                        pid = next_pid
                        next_pid = next_pid % 65535 + 1
                        conn.send(pkt_publish_q1(TOPIC, pid, str(seq).encode()))
                        outstanding[pid] = (seq, now)
                        with st.lock:
                            st.published += 1
                            st.max_seq = seq
                        next_send += interval
                if st.stop_publishing.is_set() or len(outstanding) >= args.window:
                    wait = 0.05
                else:
                    wait = max(0.0, min(0.05, next_send - time.time()))
                r, _, _ = select.select([conn.sock], [], [], wait)
                if r:
                    conn.fill(0.01)
                for first_byte, body in conn.packets():
                    if first_byte >> 4 != 4 or len(body) < 2:
                        st.event("pub", "unexpected packet type %d" % (first_byte >> 4))
                        continue
                    pid = struct.unpack("!H", body[:2])[0]
                    ent = outstanding.pop(pid, None)
                    if ent is None:
                        st.event("pub", "PUBACK for unknown packet id %d" % pid)
                        continue
                    with st.lock:
                        st.acked[ent[0]] = (ent[1], time.time())
                    if not ready_written and args.ready_file:
                        open(args.ready_file, "w").close()
                        ready_written = True
            try:
                conn.send(DISCONNECT)
            except OSError:
                pass
            if outstanding:
                st.event("pub", "stopped with %d PUBACKs outstanding" % len(outstanding))
                with st.lock:
                    st.unconfirmed += len(outstanding)
        except (OSError, Closed) as e:
            with st.lock:
                st.unconfirmed += len(outstanding)
            st.event("pub", "disconnected with %d unconfirmed: %s" % (len(outstanding), e))
        finally:
            conn.close()


# ------------------------------------------------------------------ report

def read_events(path):
    """crash-test.sh's events file: 'KILL k t pid' (t: just before kill -9),
    'KILLED k t' (t: process reaped), 'READY n t' (broker start n serves)."""
    kills, readies, lines = [], [], []
    if not path or not os.path.exists(path):
        return kills, readies, lines
    with open(path) as f:
        for line in f:
            parts = line.split()
            lines.append(line.rstrip("\n"))
            if len(parts) >= 3 and parts[0] == "KILL":
                kills.append([int(parts[1]), float(parts[2]), float(parts[2])])
            if len(parts) >= 3 and parts[0] == "KILLED" and kills and kills[-1][0] == int(parts[1]):
                kills[-1][2] = float(parts[2])
            if len(parts) >= 3 and parts[0] == "READY":
                readies.append((int(parts[1]), float(parts[2])))
    return kills, readies, lines


def ranges(seqs):
    out = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ["%d" % a if a == b else "%d-%d" % (a, b) for a, b in out]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--broker", default="broker", help="name used in the report")
    ap.add_argument("--sub-id", default="crash-sub")
    ap.add_argument("--pub-id", default="crash-pub")
    ap.add_argument("--rate", type=float, default=2000.0, help="publish rate, messages/s")
    ap.add_argument("--window", type=int, default=32, help="PUBACKs outstanding at most")
    ap.add_argument("--stop-file", help="stop publishing when this file appears")
    ap.add_argument("--ready-file", help="created when the first PUBACK arrives")
    ap.add_argument("--events", help="crash-test.sh's kill/restart log")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--timeline", help="write the clients' connect/disconnect log here")
    ap.add_argument("--max-runtime", type=float, default=240.0,
                    help="stop publishing after this many seconds regardless")
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--drain", type=float, default=15.0,
                    help="seconds the subscriber gets to receive everything acknowledged")
    ap.add_argument("--quiet", type=float, default=5.0,
                    help="end the drain early when connected and idle this long")
    ap.add_argument("--sub-offline-every", type=float, default=0.0,
                    help="subscriber disconnects on purpose after this many seconds connected "
                         "(0: never), so that messages queue in the broker")
    ap.add_argument("--sub-offline-for", type=float, default=1.0,
                    help="... and stays away this long")
    ap.add_argument("--fail-on-loss", action="store_true")
    args = ap.parse_args()

    st = State()
    threads = [threading.Thread(target=subscriber, args=(st, args), daemon=True),
               threading.Thread(target=publisher, args=(st, args), daemon=True)]
    for t in threads:
        t.start()

    # Publish until told to stop (bounded).
    deadline = st.t0 + args.max_runtime
    while time.time() < deadline and not st.fatal:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        time.sleep(0.05)
    stopped_by = "stop file" if args.stop_file and os.path.exists(args.stop_file) else \
        ("fatal" if st.fatal else "max runtime")
    t_stop = time.time()
    st.stop_publishing.set()
    threads[1].join(6.0)

    # Drain: wait for every acknowledged number, bounded.
    t_drain = time.time()
    drain_end = "timeout"
    while time.time() < t_drain + args.drain:
        now = time.time()
        with st.lock:
            missing = sum(1 for s in st.acked if s not in st.received)
            idle = now - max(st.last_rx, st.sub_connected_since)
            connected = st.sub_connected
        if missing == 0 and now - st.last_rx >= 0.5:
            drain_end = "complete"
            break
        if connected and idle >= args.quiet:
            drain_end = "quiet %.0f s" % args.quiet
            break
        time.sleep(0.1)
    drain_s = time.time() - t_drain
    st.stop_all.set()
    threads[0].join(3.0)

    with st.lock:
        acked = dict(st.acked)
        received = dict(st.received)
        timeline = list(st.timeline)
    lost = sorted(s for s in acked if s not in received)
    kills, readies, event_lines = read_events(args.events)
    sub_online = [(a, b if b is not None else float("inf")) for a, b in st.sub_online]

    def after_kill(t):
        # The first kill that the acknowledgement did not outlive.
        for k, tk, t_reaped in kills:
            if t_reaped >= t:
                return k, tk
        return None, None

    lost_detail = []
    per_kill = {}
    for s in lost:
        tp, ta = acked[s]
        k, tk = after_kill(ta)
        per_kill[k] = per_kill.get(k, 0) + 1
        prev = [(n, tr) for n, tr in readies if tr <= ta]
        start_n, t_ready = prev[-1] if prev else (None, None)
        lost_detail.append({
            "seq": s, "published": round(tp, 6), "acked": round(ta, 6),
            "next_kill": k,
            "ms_before_kill": None if tk is None else round((tk - ta) * 1000, 1),
            "broker_start": start_n,
            "ms_after_start": None if t_ready is None else round((ta - t_ready) * 1000, 1),
            "subscriber_subscribed_at_ack": any(a <= ta <= b for a, b in sub_online),
        })
    result = {
        "broker": args.broker,
        "kills": len(kills),
        "published": st.published,
        "acknowledged": len(acked),
        "received": len(received),
        "received_unacknowledged": sum(1 for s in received if s not in acked),
        "lost": len(lost),
        "duplicates": st.duplicates,
        "dup_flag_deliveries": st.dup_flag,
        "unexpected_payloads": st.unexpected,
        "unconfirmed": st.unconfirmed,
        "sub_connects": st.sub_connects,
        "sub_session_lost": st.sub_session_lost,
        "sub_offline_periods": st.sub_offline_periods,
        "pub_connects": st.pub_connects,
        "connect_failures": st.sub_connect_failures + st.pub_connect_failures,
        "max_seq": st.max_seq,
        "rate": args.rate,
        "window": args.window,
        "stopped_by": stopped_by,
        "drain_end": drain_end,
        "drain_s": round(drain_s, 2),
        "publish_s": round(t_stop - st.t0, 2),
        "lost_while_subscribed": sum(1 for d in lost_detail if d["subscriber_subscribed_at_ack"]),
        "lost_ranges": ranges(lost)[:50],
        "lost_by_kill": {str(k): v for k, v in sorted(per_kill.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
        "lost_first20": lost_detail[:20],
        "fatal": st.fatal,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.timeline:
        with open(args.timeline, "w") as f:
            merged = [(t, who, text) for t, who, text in timeline]
            for line in event_lines:
                p = line.split()
                if len(p) >= 3:
                    try:
                        merged.append((float(p[2]), "script", line))
                    except ValueError:
                        pass
            for t, who, text in sorted(merged):
                f.write("%.6f +%8.3f %-6s %s\n" % (t, t - st.t0, who, text))

    r = result
    print("[%s] published %d, acknowledged %d, received %d (of which %d never acknowledged), "
          "LOST %d, duplicates %d (DUP-flagged deliveries %d), unconfirmed %d"
          % (r["broker"], r["published"], r["acknowledged"], r["received"],
             r["received_unacknowledged"], r["lost"], r["duplicates"], r["dup_flag_deliveries"],
             r["unconfirmed"]))
    print("[%s] kills %d; subscriber connects %d, forgotten sessions %d, offline on purpose %d times; "
          "publisher connects %d; publishing %.1f s (%s), drain %.1f s (%s)"
          % (r["broker"], r["kills"], r["sub_connects"], r["sub_session_lost"],
             r["sub_offline_periods"], r["pub_connects"],
             r["publish_s"], stopped_by, r["drain_s"], drain_end))
    if r["unexpected_payloads"]:
        print("[%s] %d deliveries with a payload that is no published sequence number"
              % (r["broker"], r["unexpected_payloads"]))
    if lost:
        print("[%s] LOST (acknowledged, never received): %s" % (r["broker"], " ".join(r["lost_ranges"][:20])))
        print("[%s] lost while the subscriber's subscription was in place: %d; while it was "
              "offline or re-subscribing: %d" % (r["broker"], r["lost_while_subscribed"],
                                                 r["lost"] - r["lost_while_subscribed"]))
        print("[%s] lost per following kill: %s" % (r["broker"], ", ".join(
            "#%s: %d" % (k if k is not None else "none (after last kill)", v)
            for k, v in r["lost_by_kill"].items())))
        for d in lost_detail[:20]:
            print("[%s]   seq %d acked at %.3f%s%s; subscriber %s" % (
                r["broker"], d["seq"], d["acked"],
                "" if d["broker_start"] is None else
                ", %.1f ms after broker start %d was ready" % (d["ms_after_start"], d["broker_start"]),
                "" if d["next_kill"] is None else
                ", %.1f ms before kill #%d" % (d["ms_before_kill"], d["next_kill"])
                if d["ms_before_kill"] >= 0 else
                ", %.1f ms after kill -9 #%d was issued, before the process was reaped"
                % (-d["ms_before_kill"], d["next_kill"]),
                "subscribed" if d["subscriber_subscribed_at_ack"] else "NOT subscribed (offline or re-subscribing)"))
    if st.fatal:
        print("[%s] FATAL: %s" % (r["broker"], st.fatal))
    sys.stdout.flush()
    if st.fatal or not acked:
        return 3
    if lost and args.fail_on_loss:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
