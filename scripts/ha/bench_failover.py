#!/usr/bin/env python3
"""Failover benchmark (run by scripts/bench-failover.sh).

Three midge nodes (loopback, or one per network namespace with a delay),
default follower mode proxy, so a client may connect to any node. Load: a
QoS 1 publisher (clean session, up to --window PUBACKs outstanding, --rate
messages/s, payload = sequence number) and a persistent-session QoS 1
subscriber; both plain-socket MQTT 3.1.1 clients that, when their connection
ends, try the nodes' addresses in turn (starting with the last good one)
until a CONNACK 0 arrives.

The leader is killed with SIGKILL --kills times, at a random moment 1-2 s
after the cluster settled (all three nodes up, the restarted one caught up,
PUBACKs flowing); it is restarted once another node serves.

Per kill, unavailability = time from the last PUBACK received before the
kill to the first PUBACK received on a connection opened after the kill.
At the end: lost = acknowledged but never received by the subscriber (after
a drain of up to 15 s), duplicates = deliveries of an already received
number (allowed at QoS 1), unconfirmed = publishes in flight when a
connection died (neither counted as acknowledged nor as lost).
"""
import argparse
import json
import os
import random
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (record_pid, CONNACK, PUBACK, PUBLISH, SUBACK, Closed, Fail, RawClient, check, log, loopback_cluster,  # noqa: E402
                    mono, netns_cluster, parse_publish, percentile, pkt_puback, pkt_publish, pkt_subscribe)

TOPIC = "bench/seq"


def connect_any(addrs, start, client_id, clean, stop, keepalive=30):
    """Try addrs round-robin from `start` until CONNACK 0. Returns
    (client, index, connack, attempts) or None when `stop` is set."""
    i = start
    attempts = 0
    while not stop.is_set():
        host, port = addrs[i % len(addrs)]
        attempts += 1
        try:
            c = RawClient(host, port, timeout=0.5)
            try:
                r = c.connect(client_id, clean=clean, keepalive=keepalive, timeout=1.0)
            except Closed:
                c.close()
                raise
            if r["code"] == 0:
                return c, i % len(addrs), r, attempts
            c.close()
        except Closed:
            pass
        i += 1
        if i % len(addrs) == start % len(addrs):
            time.sleep(0.02)  # a full round without a leader: breathe
        else:
            time.sleep(0.002)
    return None


class Publisher(threading.Thread):
    def __init__(self, addrs, rate, window, size):
        super().__init__(daemon=True)
        self.addrs, self.rate, self.window, self.size = addrs, rate, window, size
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acks = []  # (mono, seq, epoch)
        self.epochs = []  # (connack mono, attempts, node index)
        self.acked = set()
        self.next_seq = 0
        self.unconfirmed = 0
        self.disconnects = []

    def run(self):
        idx = 0
        t0 = mono()
        sent = 0
        pad = b"\0" * max(0, self.size - 8)
        while not self.stop.is_set():
            got = connect_any(self.addrs, idx, "bench-pub", True, self.stop)
            if got is None:
                return
            c, idx, _, attempts = got
            epoch = len(self.epochs)
            self.epochs.append((mono(), attempts, idx))
            pending = {}  # pid -> seq
            pid = 0
            try:
                while not self.stop.is_set():
                    now = mono()
                    # Do not bank more than one window of sends during an outage.
                    sent = max(sent, int((now - t0) * self.rate) - self.window)
                    while len(pending) < self.window and sent < (now - t0) * self.rate:
                        pid = pid % 65535 + 1
                        seq = self.next_seq
                        self.next_seq += 1
                        sent += 1
                        pending[pid] = seq
                        c.send(pkt_publish(TOPIC, struct.pack("!Q", seq) + pad, qos=1, pid=pid))
                    wait = 0.002 if len(pending) < self.window else 0.05
                    p = c.recv_packet(wait)
                    while p is not None:
                        if p[0] == PUBACK:
                            seq = pending.pop(struct.unpack_from("!H", p[2])[0], None)
                            if seq is not None:
                                t = mono()
                                with self.lock:
                                    self.acks.append((t, seq, epoch))
                                    self.acked.add(seq)
                        p = c.recv_packet(0)
            except Closed:
                self.disconnects.append(mono())
            self.unconfirmed += len(pending)
            c.close()


class Subscriber(threading.Thread):
    def __init__(self, addrs):
        super().__init__(daemon=True)
        self.addrs = addrs
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.received = set()
        self.duplicates = 0
        self.connects = []  # (mono, session_present, node index)
        self.subscribed = threading.Event()

    def run(self):
        idx = 0
        while not self.stop.is_set():
            got = connect_any(self.addrs, idx, "bench-sub", False, self.stop, keepalive=60)
            if got is None:
                return
            c, idx, r, _ = got
            first = not self.connects
            self.connects.append((mono(), r["session_present"], idx))
            try:
                if first or not r["session_present"]:
                    c.send(pkt_subscribe(1, TOPIC, 1))
                while not self.stop.is_set():
                    p = c.recv_packet(0.2)
                    if p is None:
                        continue
                    if p[0] == SUBACK:
                        self.subscribed.set()
                    elif p[0] == PUBLISH:
                        _, qos, pid, payload, _, _ = parse_publish(p[1], p[2])
                        seq = struct.unpack_from("!Q", payload)[0]
                        with self.lock:
                            if seq in self.received:
                                self.duplicates += 1
                            else:
                                self.received.add(seq)
                        if qos:
                            c.send(pkt_puback(pid))
            except Closed:
                pass
            c.close()


def settle(cl, pub, within):
    """All three nodes up and following one serving leader, the restarted
    node's log caught up (peer lag <= 100 entries) and PUBACKs flowing."""
    end = mono() + within
    while mono() < end:
        lead = cl.leader(0.5)
        if lead is not None:
            st, b = cl.health(lead)
            lags = dict((p, l) for p, l in (b or {}).get("peer_lag", []))
            if len(lags) == 2 and all(l <= 100 for l in lags.values()):
                with pub.lock:
                    n0 = len(pub.acks)
                time.sleep(0.2)
                with pub.lock:
                    if len(pub.acks) > n0:
                        return lead
        time.sleep(0.05)
    return None


def render(res, meta):
    """Markdown section for one run."""
    out = []
    u = res.get("unavailable")
    out.append("### %s" % res["label"])
    out.append("")
    for m in meta:
        out.append("- %s" % m)
    out.append("- load: QoS 1 publisher %g msg/s, %d PUBACKs outstanding at most, %d-byte payloads; persistent QoS 1 "
               "subscriber; clients reconnect by trying each node (follower mode proxy forwards to the leader)"
               % (res["rate"], res["window"], res["size"]))
    out.append("- %d kills (seed %d), runtime %.0f s" % (len(res["kills"]), res["seed"], res["runtime_s"]))
    out.append("")
    out.append("| kills | unavailable p50 (s) | p99 (s) | max (s) | new leader serving p50 / max (s) | acknowledged "
               "| lost | duplicated | unconfirmed | sub session lost | result |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    ls = res.get("leader_serving")
    verdict = "PASS" if res.get("ok") else "FAIL" + (": " + res["failure"].splitlines()[0] if res.get("failure") else "")
    out.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        len(res["kills"]),
        "%.3f" % u["p50"] if u else "-", "%.3f" % u["p99"] if u else "-", "%.3f" % u["max"] if u else "-",
        "%.3f / %.3f" % (ls["p50"], ls["max"]) if ls else "-",
        res.get("acknowledged", "-"), res.get("lost", "-"), res.get("duplicates", "-"),
        res.get("unconfirmed", "-"), res.get("sub_session_lost", "-"), verdict))
    out.append("")
    out.append("<details><summary>per kill</summary>")
    out.append("")
    out.append("| kill | killed node | new leader | new leader serving after (s) | unavailable (s) |")
    out.append("| ---: | ---: | ---: | ---: | ---: |")
    for k in res["kills"]:
        out.append("| %d | %d | %d | %.3f | %s |" % (k["kill"], k["killed"], k["new_leader"], k["leader_serving_s"],
                                                    "%.3f" % k["unavailable_s"] if k["unavailable_s"] is not None
                                                    else "-"))
    out.append("")
    out.append("</details>")
    for n in res.get("notes", []):
        out.append("")
        out.append("- note: %s" % n)
    if res.get("trouble"):
        out.append("")
        out.append("- midge log lines worth a look: " + "; ".join("`%s`" % t for t in res["trouble"][:5]))
    out.append("")
    return "\n".join(out)


def update_results(path, key, section):
    """Replace this variant's section of the results file (keeping others)."""
    head = ("# Failover benchmark\n\nWritten by `scripts/bench-failover.sh`; one section per variant, the latest "
            "run of each. Unavailability per kill = time from the last PUBACK before the SIGKILL of the leader to "
            "the first PUBACK on a connection opened after it (client-side, includes detection, election, "
            "the new leader's LeaderStart commit and the client's reconnect). p99 is nearest-rank: with fewer than 100 kills it is the maximum.\n\n")
    text = open(path).read() if os.path.exists(path) else head
    start, stop = "<!-- failover:%s -->" % key, "<!-- /failover:%s -->" % key
    block = "%s\n%s\n%s" % (start, section.rstrip("\n"), stop)
    if start in text and stop in text:
        text = text[:text.index(start)] + block + text[text.index(stop) + len(stop):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "render":
        # render JSON KEY OUT_FILE|- META...
        res = json.load(open(sys.argv[2]))
        section = render(res, sys.argv[5:])
        print(section)
        if sys.argv[4] != "-":
            update_results(sys.argv[4], sys.argv[3], section)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--netns", action="store_true")
    ap.add_argument("--label", default="loopback")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    record_pid(a.work)
    check(1 <= a.kills <= 200, "--kills must be 1..200")
    rng = random.Random(a.seed)
    extra = ["max_queued_messages 1000000", "max_queued_bytes 0"]
    cl = (netns_cluster if a.netns else loopback_cluster)(a.work, a.bin, mode="proxy", extra=extra)
    addrs = [(n.host, n.mqtt_port) for n in cl.nodes]
    pub = Publisher(addrs, a.rate, a.window, a.size)
    sub = Subscriber(addrs)
    kills = []
    res = {"label": a.label, "kills_planned": a.kills, "rate": a.rate, "window": a.window, "size": a.size,
           "seed": a.seed, "notes": []}
    t0 = mono()
    ok = False
    try:
        cl.start_all()
        check(cl.leader(15) is not None, "no serving leader within 15 s\n" + cl.logs_excerpt())
        sub.start()
        check(sub.subscribed.wait(10), "subscriber did not subscribe within 10 s")
        pub.start()
        end = mono() + 10
        while len(pub.acks) < 50 and mono() < end:
            time.sleep(0.05)
        check(len(pub.acks) >= 50, "publisher: %d PUBACKs in 10 s" % len(pub.acks))
        for k in range(1, a.kills + 1):
            lead = settle(cl, pub, 20)
            if lead is None:
                res["notes"].append("kill %d: cluster did not settle within 20 s" % k)
                log("kill %d: cluster did not settle within 20 s; killing the leader anyway" % k)
                lead = cl.leader(5)
                check(lead is not None, "kill %d: no leader at all\n%s" % (k, cl.logs_excerpt()))
            time.sleep(rng.uniform(1.0, 2.0))
            lead = cl.leader(2)
            check(lead is not None, "kill %d: no leader before the kill" % k)
            tk = mono()
            cl.kill(lead)
            new = cl.leader(10, exclude=[lead])
            t_leader = mono() - tk if new is not None else None
            check(new is not None, "kill %d: no new serving leader within 10 s\n%s" % (k, cl.logs_excerpt()))
            cl.start(lead)
            end = mono() + 15
            first_after = None
            while mono() < end and first_after is None:
                with pub.lock:
                    for t, seq, ep in reversed(pub.acks):
                        if t <= tk:
                            break
                        if pub.epochs[ep][0] > tk:
                            first_after = t if first_after is None or t < first_after else first_after
                if first_after is None:
                    time.sleep(0.01)
            with pub.lock:
                before = [t for t, _, _ in pub.acks if t <= tk]
            last_before = before[-1] if before else None
            unavail = (first_after - last_before) if (first_after and last_before) else None
            rec = {"kill": k, "killed": cl.nodes[lead].id, "new_leader": cl.nodes[new].id,
                   "leader_serving_s": round(t_leader, 3),
                   "unavailable_s": round(unavail, 3) if unavail is not None else None,
                   "kill_after_last_ack_ms": round((tk - last_before) * 1000, 1) if last_before else None}
            kills.append(rec)
            log("kill %d: node %d killed, node %d serves after %.3f s, unavailable %s" % (
                k, rec["killed"], rec["new_leader"], t_leader,
                "%.3f s" % unavail if unavail is not None else "NO PUBACK within 15 s"))
            check(unavail is not None, "kill %d: no PUBACK on a new connection within 15 s\n%s" % (
                k, cl.logs_excerpt()))
        time.sleep(1.0)
        pub.stop.set()
        pub.join(5)
        with pub.lock:
            acked = set(pub.acked)
        end = mono() + 15
        while mono() < end:
            with sub.lock:
                if acked <= sub.received:
                    break
            time.sleep(0.1)
        sub.stop.set()
        sub.join(5)
        lost = sorted(acked - sub.received)
        sp = [s for (_, s, _) in sub.connects]
        res.update(acknowledged=len(acked), received=len(sub.received), lost=len(lost), lost_first=lost[:20],
                   duplicates=sub.duplicates, unconfirmed=pub.unconfirmed, published=pub.next_seq,
                   sub_connects=len(sp), sub_session_lost=sum(1 for s in sp[1:] if not s),
                   pub_connects=len(pub.epochs))
        crashed = cl.exited_unexpectedly()
        res["node_exits"] = crashed
        ok = not lost and res["sub_session_lost"] == 0 and not crashed
        if lost:
            res["notes"].append("LOST %d acknowledged messages, first %s" % (len(lost), lost[:10]))
        if res["sub_session_lost"]:
            res["notes"].append("subscriber session forgotten %d times" % res["sub_session_lost"])
        if crashed:
            res["notes"].append("nodes exited on their own: %s" % crashed)
    except Fail as e:
        res["failure"] = str(e)
        log("FAIL: %s" % e)
    finally:
        pub.stop.set()
        sub.stop.set()
        cl.stop_all()
        res["kills"] = kills
        res["trouble"] = cl.log_trouble()[:20]
        res["runtime_s"] = round(mono() - t0, 1)
        un = [k["unavailable_s"] for k in kills if k["unavailable_s"] is not None]
        le = [k["leader_serving_s"] for k in kills if k["leader_serving_s"] is not None]
        if un:
            res["unavailable"] = {"p50": percentile(un, 50), "p99": percentile(un, 99), "max": max(un),
                                  "min": min(un), "n": len(un)}
        if le:
            res["leader_serving"] = {"p50": percentile(le, 50), "p99": percentile(le, 99), "max": max(le)}
        res["ok"] = ok
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
