#!/usr/bin/env python3
"""Small MQTT / health probes, printed as one JSON line, so the HA scripts can
run them inside a network namespace (`ip netns exec NS python3 tool.py ...`).

  tool.py health URL [--timeout S]
  tool.py probe HOST PORT [--v5] [--timeout S]          -> accepted|refused|closed|unreachable
  tool.py publish HOST PORT TOPIC PAYLOAD [--retain]     -> ok when a PUBACK arrived
  tool.py retained HOST PORT TOPIC                       -> payload of the retained message
  tool.py hold HOST PORT --seconds S [--ready FILE]      -> connect (MQTT 5), then report when
                                                            and how the server ends the session
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("health")
    h.add_argument("url")
    h.add_argument("--timeout", type=float, default=0.5)
    p = sub.add_parser("probe")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--v5", action="store_true")
    p.add_argument("--timeout", type=float, default=2.0)
    pb = sub.add_parser("publish")
    pb.add_argument("host")
    pb.add_argument("port", type=int)
    pb.add_argument("topic")
    pb.add_argument("payload")
    pb.add_argument("--retain", action="store_true")
    pb.add_argument("--timeout", type=float, default=3.0)
    r = sub.add_parser("retained")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("topic")
    r.add_argument("--timeout", type=float, default=3.0)
    ho = sub.add_parser("hold")
    ho.add_argument("host")
    ho.add_argument("port", type=int)
    ho.add_argument("--seconds", type=float, default=10.0)
    ho.add_argument("--ready", default=None)
    a = ap.parse_args()

    if a.cmd == "health":
        st, body = common.http_health(a.url, a.timeout)
        out = {"status": st, "body": body}
    elif a.cmd == "probe":
        out = common.probe(a.host, a.port, version=5 if a.v5 else 4, timeout=a.timeout)
    elif a.cmd == "publish":
        out = common.publish_once(a.host, a.port, a.topic, a.payload.encode(), retain=a.retain,
                                  timeout=a.timeout)
    elif a.cmd == "retained":
        v = common.read_retained(a.host, a.port, a.topic, timeout=a.timeout)
        out = {"payload": v.decode(errors="replace") if v is not None else None}
    else:
        out = hold(a)
    print(json.dumps(out), flush=True)


def hold(a):
    """Connect with MQTT 5 and wait; report when the server ends the
    connection (DISCONNECT reason code, or a plain close)."""
    out = {"connected": False}
    try:
        c = common.RawClient(a.host, a.port, timeout=2.0, version=5)
        r = c.connect("ha-hold", clean=True, keepalive=60, timeout=2.0)
    except common.Closed as e:
        out["error"] = str(e)
        return out
    out["connack"] = r
    if r["code"] != 0:
        return out
    out["connected"] = True
    out["connected_at"] = time.time()
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("ok\n")
    end = common.mono() + a.seconds
    try:
        while common.mono() < end:
            p = c.recv_packet(min(0.5, end - common.mono()))
            if p and p[0] == common.DISCONNECT:
                out["disconnect_reason"] = p[2][0] if p[2] else 0
                out["ended_at"] = time.time()
                # keep reading until the socket closes (bounded by --seconds)
    except common.Closed as e:
        out.setdefault("ended_at", time.time())
        out["closed"] = str(e)
    finally:
        c.close()
    return out


if __name__ == "__main__":
    main()
