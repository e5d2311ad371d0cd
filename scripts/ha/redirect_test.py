#!/usr/bin/env python3
"""Redirect-mode test (run by scripts/test-redirect.sh).

Three midge nodes on loopback with `cluster_follower_mode redirect`. With
paho-mqtt (1.6 or 2.x):

1. An MQTT 5 client connects to a follower: CONNACK reason code 0x9C (Use
   another server) with the Server Reference property naming the leader's
   client address (host:port).
2. The client follows the reference: connects there, subscribes (QoS 1),
   publishes QoS 1, gets the PUBACK and receives its own message.
3. An MQTT 3.1.1 client on a follower gets CONNACK return code 3 (server
   unavailable).
4. The leader is killed: on a surviving follower the reference now names
   the new leader, and following it works again.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import record_pid, Fail, check, log, loopback_cluster, mono, paho_client, paho_version, probe, rc_value  # noqa: E402


def connect_once(host, port, v5=True, client_id="rd-client", wait=5.0):
    """Connect with paho and return (client, result dict) once on_connect ran.
    The network loop is driven here (no automatic reconnect)."""
    res = {}
    done = threading.Event()
    c = paho_client(client_id, clean_session=True, v5=v5)

    def on_connect(client, userdata, flags, rc, properties=None):
        res["rc"] = rc_value(rc)
        res["rc_name"] = str(rc) if not isinstance(rc, int) else None
        res["session_present"] = bool(flags.get("session present", 0))
        ref = getattr(properties, "ServerReference", None) if properties is not None else None
        res["server_reference"] = ref
        done.set()

    c.on_connect = on_connect
    c.connect(host, port, keepalive=10)
    end = mono() + wait
    while not done.is_set() and mono() < end:
        if c.loop(timeout=0.1) not in (0,):
            # the connection ended (after a refusal paho disconnects)
            if done.is_set():
                break
            time.sleep(0.05)
    return c, (res if done.is_set() else None)


def follow_and_roundtrip(ref, topic, payload):
    """Connect (MQTT 5) to `ref` (host:port), subscribe, publish QoS 1;
    returns dict with connack rc, puback, received payload."""
    host, port = ref.rsplit(":", 1)
    got = {}
    msg_ev, sub_ev, pub_ev = threading.Event(), threading.Event(), threading.Event()
    c, r = connect_once(host, int(port), v5=True, client_id="rd-follow")
    got["connack"] = r
    if not r or r["rc"] != 0:
        c.disconnect()
        return got

    def on_message(client, userdata, msg):
        got["received"] = msg.payload.decode(errors="replace")
        got["received_qos"] = msg.qos
        msg_ev.set()

    c.on_message = on_message
    c.on_subscribe = lambda *a: sub_ev.set()
    c.on_publish = lambda *a: pub_ev.set()
    c.subscribe(topic, qos=1)
    end = mono() + 5
    while not sub_ev.is_set() and mono() < end:
        c.loop(timeout=0.1)
    got["subscribed"] = sub_ev.is_set()
    c.publish(topic, payload, qos=1)
    end = mono() + 5
    while not (pub_ev.is_set() and msg_ev.is_set()) and mono() < end:
        c.loop(timeout=0.1)
    got["puback"] = pub_ev.is_set()
    c.disconnect()
    c.loop(timeout=0.1)
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    record_pid(a.work)
    cl = loopback_cluster(a.work, a.bin, mode="redirect")
    steps = []
    ok = False
    t0 = mono()

    def step(name, cond, detail=""):
        steps.append((name, cond, detail))
        log("%s %s%s" % ("ok  " if cond else "FAIL", name, (": " + detail) if detail else ""))
        check(cond, "%s: %s" % (name, detail))

    try:
        log("paho-mqtt %s" % paho_version())
        cl.start_all()
        lead = cl.leader(15)
        check(lead is not None, "no serving leader within 15 s\n" + cl.logs_excerpt())
        ln = cl.nodes[lead]
        step("leader elected", True, "node %d serves at %s" % (ln.id, ln.client_addr))
        # The follower learns the leader's client address over the raft
        # transport and refreshes it every tick: give it a moment.
        fol = [i for i in range(3) if i != lead][0]
        fn = cl.nodes[fol]
        r = None
        end = mono() + 5
        while mono() < end:
            c, r = connect_once(fn.host, fn.mqtt_port, v5=True)
            c.disconnect()
            if r and r.get("server_reference"):
                break
            time.sleep(0.1)
        step("MQTT 5 client on follower node %d gets CONNACK 0x9C (Use another server)" % fn.id,
             r is not None and r["rc"] == 0x9C, json.dumps(r))
        step("... with Server Reference = the leader's client address",
             r["server_reference"] == ln.client_addr, "%r (leader at %s)" % (r["server_reference"], ln.client_addr))
        got = follow_and_roundtrip(r["server_reference"], "rd/test", b"hello via redirect")
        step("following the reference: connected", bool(got.get("connack")) and got["connack"]["rc"] == 0,
             json.dumps(got.get("connack")))
        step("following the reference: subscribed, QoS 1 publish acknowledged, message received",
             got.get("subscribed") and got.get("puback") and got.get("received") == "hello via redirect",
             json.dumps(got))

        c, r3 = connect_once(fn.host, fn.mqtt_port, v5=False, client_id="rd-v311")
        c.disconnect()
        step("MQTT 3.1.1 client on follower node %d gets CONNACK return code 3" % fn.id,
             r3 is not None and r3["rc"] == 3, json.dumps(r3))
        p = probe(fn.host, fn.mqtt_port, version=5)
        step("raw MQTT 5 CONNACK from the follower agrees (code 0x9C + Server Reference)",
             p.get("code") == 0x9C and p.get("server_reference") == ln.client_addr, json.dumps(p))

        # Failover: the reference follows the new leader.
        cl.kill(lead)
        new = cl.leader(10, exclude=[lead])
        step("leader node %d killed: a new leader serves" % ln.id, new is not None,
             "node %d" % cl.nodes[new].id if new is not None else "none in 10 s")
        nn = cl.nodes[new]
        surv = [i for i in range(3) if i not in (lead, new)][0]
        sn = cl.nodes[surv]
        r = None
        end = mono() + 5
        while mono() < end:
            c, r = connect_once(sn.host, sn.mqtt_port, v5=True, client_id="rd-after")
            c.disconnect()
            if r and r.get("server_reference") == nn.client_addr:
                break
            time.sleep(0.1)
        step("follower node %d now redirects to the new leader node %d" % (sn.id, nn.id),
             r is not None and r["rc"] == 0x9C and r["server_reference"] == nn.client_addr, json.dumps(r))
        got = follow_and_roundtrip(r["server_reference"], "rd/test2", b"after failover")
        step("following it: QoS 1 publish acknowledged and received",
             got.get("puback") and got.get("received") == "after failover", json.dumps(got))
        cl.start(lead)
        ok_conv, _ = cl.converged(15)
        step("killed node %d restarted and rejoined" % ln.id, ok_conv)
        step("no node exited on its own", not cl.exited_unexpectedly(), repr(cl.exited_unexpectedly()))
        ok = True
    except Fail as e:
        if not steps or steps[-1][1]:
            log("FAIL: %s" % e)
        fail = str(e)
    finally:
        cl.stop_all()
    print()
    print("## test-redirect: cluster_follower_mode redirect, paho-mqtt %s" % paho_version())
    print()
    print("| step | result | detail |")
    print("| --- | --- | --- |")
    for name, cond, detail in steps:
        print("| %s | %s | %s |" % (name, "ok" if cond else "**FAIL**", detail.replace("|", "/")[:250]))
    print()
    for t in cl.log_trouble()[:10]:
        print("    " + t)
    print("- runtime %.1f s; work dir: %s" % (mono() - t0, a.work))
    if not ok:
        print(cl.logs_excerpt(12))
    print()
    print("test-redirect: %s" % ("PASS" if ok else "FAIL: " + fail.splitlines()[0]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
