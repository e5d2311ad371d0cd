#!/usr/bin/env python3
"""HAProxy failover test (run by scripts/test-haproxy.sh).

Three midge nodes on loopback with `cluster_follower_mode closed`, Debian's
haproxy in front of them using docs/examples/haproxy.cfg unchanged (ports
through its environment variables), and two paho-mqtt clients that only know
HAProxy's address: a persistent-session (clean_session=0) QoS 1 subscriber
and a QoS 1 publisher of increasing sequence numbers, both reconnecting on
their own. The leader is killed with SIGKILL --kills times (restarted after
each). Asserts: a new leader serves after each kill, publishing resumes
through HAProxy, every publish that got a PUBACK reached the subscriber, and
each of the subscriber's reconnects found its session (session present).
"""
import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import record_pid, Fail, check, log, loopback_cluster, mono, paho_client, paho_version, percentile, \
    probe, rc_value, free_ports  # noqa: E402

TOPIC = "ha/seq"


class Sub:
    """Persistent QoS 1 subscriber through HAProxy (paho, auto-reconnect)."""

    def __init__(self, host, port):
        self.lock = threading.Lock()
        self.connects = []  # (mono time, rc, session_present)
        self.disconnects = []
        self.received = set()
        self.duplicates = 0
        self.subscribed = threading.Event()
        self.c = paho_client("ha-sub", clean_session=False)
        self.c.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.c.on_connect = self.on_connect
        self.c.on_message = self.on_message
        self.c.on_disconnect = self.on_disconnect
        self.c.on_subscribe = lambda c, u, mid, granted, *a: self.subscribed.set()
        self.c.connect_async(host, port, keepalive=5)
        self.c.loop_start()

    def on_connect(self, c, userdata, flags, rc, *args):
        sp = bool(flags.get("session present", 0))
        with self.lock:
            first = not self.connects
            self.connects.append((mono(), rc_value(rc), sp))
        if rc_value(rc) == 0 and (first or not sp):
            # A new session (or one the broker forgot: recorded, asserted later).
            c.subscribe(TOPIC, qos=1)

    def on_disconnect(self, c, userdata, rc, *args):
        with self.lock:
            self.disconnects.append((mono(), rc_value(rc)))

    def on_message(self, c, userdata, msg):
        try:
            seq = int(msg.payload.split(b" ")[0])
        except ValueError:
            return
        with self.lock:
            if seq in self.received:
                self.duplicates += 1
            else:
                self.received.add(seq)

    def stop(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()


class Pub:
    """QoS 1 publisher through HAProxy: at most `window` unacknowledged,
    `rate` messages/s; a sequence number counts as acknowledged when paho
    reports its PUBACK (MessageInfo.is_published)."""

    def __init__(self, host, port, rate, window):
        self.rate, self.window = rate, window
        self.acked = set()
        self.ack_times = []  # (mono, seq)
        self.connects = []
        self.next_seq = 0
        self.stop_ev = threading.Event()
        # on_publish runs on paho's network thread while paho holds its own
        # lock: it only queues the mid; this thread maps mids to sequence
        # numbers (MessageInfo.is_published() raises for messages queued
        # while disconnected, on paho 1.6 and 2.x alike).
        self.acks = queue.Queue()
        self.c = paho_client("ha-pub", clean_session=True)
        self.c.max_inflight_messages_set(window)
        self.c.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.c.on_connect = lambda c, u, f, rc, *a: self.connects.append((mono(), rc_value(rc)))
        self.c.on_publish = lambda c, u, mid, *a: self.acks.put((mono(), mid))
        self.c.connect_async(host, port, keepalive=5)
        self.c.loop_start()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def drain_acks(self, outstanding):
        while True:
            try:
                t, mid = self.acks.get_nowait()
            except queue.Empty:
                return
            seq = outstanding.pop(mid, None)
            if seq is not None:
                self.acked.add(seq)
                self.ack_times.append((t, seq))

    def run(self):
        outstanding = {}  # mid -> seq
        t0 = mono()
        sent = 0
        while not self.stop_ev.is_set():
            now = mono()
            self.drain_acks(outstanding)
            if len(outstanding) < self.window and sent < (now - t0) * self.rate and self.connects:
                seq = self.next_seq
                self.next_seq += 1
                info = self.c.publish(TOPIC, b"%d from ha-pub" % seq, qos=1)
                outstanding[info.mid] = seq
                sent += 1
                continue
            time.sleep(0.002)
        time.sleep(0.2)
        self.drain_acks(outstanding)

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--haproxy-cfg", required=True)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--window", type=int, default=20)
    a = ap.parse_args()
    record_pid(a.work)
    check(1 <= a.kills <= 20, "--kills must be 1..20")

    cl = loopback_cluster(a.work, a.bin, mode="closed", extra=["max_queued_messages 100000"])
    hap = None
    sub = pub = None
    results = {"kills": []}
    t_start = mono()
    ok = False
    try:
        log("paho-mqtt %s; nodes: %s" % (paho_version(), ", ".join(
            "node%d mqtt %s health %s" % (n.id, n.client_addr, n.health_url) for n in cl.nodes)))
        cl.start_all()
        leader = cl.leader(15)
        check(leader is not None, "no serving leader within 15 s\n" + cl.logs_excerpt())
        log("leader: node %d" % cl.nodes[leader].id)

        # HAProxy, exactly docs/examples/haproxy.cfg, ports through its env variables.
        hport = free_ports(1)[0]
        env = dict(os.environ, MIDGE_HAPROXY_BIND="127.0.0.1:%d" % hport)
        for n in cl.nodes:
            env["MIDGE_NODE%d" % n.id] = n.client_addr
            env["MIDGE_NODE%d_HEALTH" % n.id] = str(n.health_port)
        chk = subprocess.run(["haproxy", "-c", "-f", a.haproxy_cfg], env=env, capture_output=True, text=True)
        check(chk.returncode == 0, "haproxy -c rejects %s:\n%s%s" % (a.haproxy_cfg, chk.stdout, chk.stderr))
        hlog = open(os.path.join(a.work, "haproxy.log"), "ab")
        # -p puts the work dir into haproxy's command line: the shell's exit trap
        # only kills recorded PIDs whose command line names the work dir.
        hap = subprocess.Popen(["haproxy", "-f", a.haproxy_cfg, "-db", "-p", os.path.join(a.work, "haproxy.pid")],
                               env=env, stdin=subprocess.DEVNULL,
                               stdout=hlog, stderr=hlog, start_new_session=True)
        with open(os.path.join(a.work, "pids"), "a") as f:
            f.write("%d\n" % hap.pid)
        log("haproxy pid %d on 127.0.0.1:%d (config %s, log %s/haproxy.log)" % (hap.pid, hport, a.haproxy_cfg, a.work))
        end = mono() + 10
        while mono() < end:
            if probe("127.0.0.1", hport, timeout=1.0)["result"] == "accepted":
                break
            check(hap.poll() is None, "haproxy exited (status %s)" % hap.returncode)
            time.sleep(0.1)
        else:
            raise Fail("no MQTT session through HAProxy within 10 s")

        sub = Sub("127.0.0.1", hport)
        check(sub.subscribed.wait(10), "subscriber did not subscribe through HAProxy within 10 s")
        pub = Pub("127.0.0.1", hport, a.rate, a.window)
        end = mono() + 10
        while len(pub.acked) < 20 and mono() < end:
            time.sleep(0.05)
        check(len(pub.acked) >= 20, "publisher: %d PUBACKs in 10 s" % len(pub.acked))

        for k in range(1, a.kills + 1):
            time.sleep(2.0)
            lead = cl.leader(5)
            check(lead is not None, "kill %d: no leader before the kill\n%s" % (k, cl.logs_excerpt()))
            acked_before = len(pub.acked)
            sub_conn_before = len(sub.connects)
            tk = mono()
            cl.kill(lead)
            log("kill %d: SIGKILL node %d (leader), %d acknowledged so far" % (k, cl.nodes[lead].id, acked_before))
            new = cl.leader(10, exclude=[lead])
            check(new is not None, "kill %d: no new serving leader within 10 s\n%s" % (k, cl.logs_excerpt()))
            t_new = mono() - tk
            cl.start(lead)
            end = mono() + 15
            while mono() < end and not (len(pub.acked) > acked_before + 5 and len(sub.connects) > sub_conn_before):
                time.sleep(0.02)
            # Last PUBACK before the kill, first one after the publisher's
            # first reconnect after it (a PUBACK already in flight at the kill
            # can still arrive just after it).
            before = [t for t, _ in pub.ack_times if t <= tk]
            reconn = [t for t, _ in pub.connects if t > tk]
            after = [t for t, _ in pub.ack_times if reconn and t > reconn[0]]
            gap = (after[0] - before[-1]) if before and after else None
            rec = {"kill": k, "killed_node": cl.nodes[lead].id, "new_leader": cl.nodes[new].id,
                   "leader_after_s": round(t_new, 3), "publish_gap_s": round(gap, 3) if gap else None,
                   "sub_reconnected": len(sub.connects) > sub_conn_before}
            results["kills"].append(rec)
            log("kill %d: node %d leads after %.2f s; publish gap %s; subscriber reconnected: %s" % (
                k, cl.nodes[new].id, t_new, "%.2f s" % gap if gap else "-", rec["sub_reconnected"]))
            check(len(pub.acked) > acked_before + 5,
                  "kill %d: publishing did not resume through HAProxy within 15 s\n%s" % (k, cl.logs_excerpt()))
            check(rec["sub_reconnected"], "kill %d: subscriber did not reconnect within 15 s" % k)

        time.sleep(1.0)
        pub.stop()
        acked = set(pub.acked)
        end = mono() + 15
        while mono() < end:
            with sub.lock:
                if acked <= sub.received:
                    break
            time.sleep(0.1)
        with sub.lock:
            lost = sorted(acked - sub.received)
            conns = list(sub.connects)
            results.update(acknowledged=len(acked), received=len(sub.received), duplicates=sub.duplicates,
                           lost=len(lost), lost_first=lost[:20], sub_connects=len(conns),
                           sub_session_present=[sp for (_, rc, sp) in conns if rc == 0],
                           sub_refused=[rc for (_, rc, _) in conns if rc != 0],
                           published=pub.next_seq)
        sub.stop()
        sub = None
        pres = results["sub_session_present"]
        crashed = cl.exited_unexpectedly()
        results["node_exits"] = crashed
        results["log_trouble"] = cl.log_trouble()[:20]
        check(not crashed, "nodes exited on their own: %s\n%s" % (crashed, cl.logs_excerpt()))
        check(hap.poll() is None, "haproxy died")
        check(not lost, "%d acknowledged messages never reached the subscriber: %s" % (len(lost), lost[:20]))
        check(pres and pres[0] is False, "first subscriber session should be new (session present 0): %s" % pres)
        check(len(pres) >= a.kills + 1, "subscriber connected %d times, expected >= %d" % (len(pres), a.kills + 1))
        check(all(pres[1:]), "a subscriber reconnect found no session (session present 0): %s" % pres)
        ok = True
    except Fail as e:
        results["failure"] = str(e)
        log("FAIL: %s" % e)
    finally:
        if pub is not None:
            pub.stop()
        if sub is not None:
            sub.stop()
        if hap is not None and hap.poll() is None:
            hap.terminate()
            try:
                hap.wait(5)
            except subprocess.TimeoutExpired:
                hap.kill()
        cl.stop_all()
        results["runtime_s"] = round(mono() - t_start, 1)
        results["ok"] = ok
        with open(os.path.join(a.work, "result.json"), "w") as f:
            json.dump(results, f, indent=1)
    summary(results, a)
    sys.exit(0 if ok else 1)


def summary(r, a):
    print()
    print("## test-haproxy: HAProxy (option httpchk GET /health) in front of 3 midge nodes, follower mode closed")
    print()
    print("| kill | killed node | new leader | new leader serving after (s) | PUBACK gap through HAProxy (s) | subscriber reconnected |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    for k in r["kills"]:
        print("| %d | %d | %d | %.2f | %s | %s |" % (k["kill"], k["killed_node"], k["new_leader"], k["leader_after_s"],
                                                    "%.2f" % k["publish_gap_s"] if k["publish_gap_s"] else "-",
                                                    "yes" if k["sub_reconnected"] else "NO"))
    print()
    if "acknowledged" in r:
        print("- published %d, acknowledged %d, received %d, lost %d, duplicates %d" % (
            r["published"], r["acknowledged"], r["received"], r["lost"], r["duplicates"]))
        print("- subscriber sessions: %d connects, session present flags %s%s" % (
            r["sub_connects"], "".join("1" if x else "0" for x in r["sub_session_present"]),
            ", refused CONNACKs %s" % r["sub_refused"] if r["sub_refused"] else ""))
    if r.get("log_trouble"):
        print("- midge log lines worth a look:")
        for line in r["log_trouble"]:
            print("    " + line)
    print("- runtime %.1f s; work dir (logs, configs, result.json): %s" % (r["runtime_s"], a.work))
    print()
    print("test-haproxy: %s" % ("PASS" if r["ok"] else "FAIL: " + r.get("failure", "").splitlines()[0]))


if __name__ == "__main__":
    main()
