#!/usr/bin/env python3
"""Network partition test (run by scripts/test-partition.sh inside the
client namespace that scripts/lib-netns.sh created).

Three midge nodes, each in its own namespace (10.77.0.1-3), default follower
mode (proxy). Steps and assertions:

1. A leader serves; a retained message is written through it.
2. A client inside the leader's own namespace holds an MQTT 5 session on it.
3. The leader's link is cut (its bridge port goes down).
   * Within --bound seconds (default 2.0: election timeout 300-600 ms plus
     margin) the old leader logs "is no longer the leader", its health
     endpoint answers 503, the held session is ended, and new MQTT sessions
     and a publish on it are refused.
   * Within --bound seconds the two connected nodes elect a leader that
     serves: a QoS 1 retained publish gets its PUBACK.
4. The link is restored. The old leader rejoins as a follower of the
   current term and all three nodes reach the same commit_index and
   applied_index (bounded wait).
5. No divergent state: the retained value written during the partition
   (not the one the isolated node was asked to take) is what the leader
   serves; then the leader is killed (up to 3 rounds, restarting it each
   time) so that other nodes, ideally the formerly isolated one, lead and
   serve the same retained values.
"""
import argparse
import calendar
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import record_pid, Fail, check, log, mono, netns_cluster, publish_once, read_retained  # noqa: E402

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tool.py")


def in_ns(ns, *args, timeout=20):
    """Run tool.py inside namespace `ns`; returns its JSON output."""
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, TOOL] + [str(x) for x in args],
                         capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "tool.py gave no JSON: %s %s" % (out.stdout[-300:], out.stderr[-300:])}


def log_time(line):
    """Wall-clock seconds of a midge log line (UTC ISO timestamp prefix)."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", line)
    if not m:
        return None
    t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return t + (float(m.group(2)) if m.group(2) else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sw-ns", required=True, help="namespace holding the bridge")
    ap.add_argument("--bound", type=float, default=2.0)
    ap.add_argument("--mode", default="proxy")
    a = ap.parse_args()
    record_pid(a.work)

    cl = netns_cluster(a.work, a.bin, mode=a.mode, extra=["max_queued_messages 100000"])
    res = {"steps": [], "ok": False}
    t_start = mono()

    def step(name, ok, detail=""):
        res["steps"].append({"step": name, "ok": ok, "detail": detail})
        log("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""))
        if not ok:
            raise Fail("%s: %s" % (name, detail))

    isolated = None
    try:
        for n in cl.nodes:
            log("node %d in %s: mqtt %s, health %s" % (n.id, n.netns, n.client_addr, n.health_url))
        cl.start_all()
        old = cl.leader(15)
        check(old is not None, "no serving leader within 15 s\n" + cl.logs_excerpt())
        on = cl.nodes[old]
        others = [i for i in range(3) if i != old]
        st, body = cl.health(old)
        step("leader elected", True, "node %d, term %d" % (on.id, body["term"]))

        r = publish_once(on.host, on.mqtt_port, "part/before", b"before-partition", retain=True)
        step("retained publish before the partition (PUBACK)", r["ok"], json.dumps(r))

        # A session held on the leader from inside its own namespace.
        ready = os.path.join(a.work, "hold.ready")
        hold_out = os.path.join(a.work, "hold.json")
        hold = subprocess.Popen(["ip", "netns", "exec", on.netns, sys.executable, TOOL, "hold", on.host,
                                 str(on.mqtt_port), "--seconds", "8", "--ready", ready],
                                stdout=open(hold_out, "w"), stderr=subprocess.DEVNULL)
        end = mono() + 5
        while not os.path.exists(ready) and mono() < end and hold.poll() is None:
            time.sleep(0.02)
        step("client session held on the leader", os.path.exists(ready))

        # ---- partition: the leader's bridge port goes down
        t_cut_wall = time.time()
        t_cut = mono()
        subprocess.run(["ip", "-n", a.sw_ns, "link", "set", "p%d" % on.id, "down"], check=True)
        isolated = old
        log("partition: node %d cut off (bridge port p%d down)" % (on.id, on.id))

        found = {}

        def watch_old():
            end = mono() + a.bound + 3
            while mono() < end:
                st, body = cl.health(old, inside_ns=True)
                if st is not None and st != 200:
                    found["old_503"] = (mono() - t_cut, st, body)
                    return
                time.sleep(0.05)

        def watch_new():
            i = cl.leader(a.bound + 3, among=others)
            if i is not None:
                found["new"] = (mono() - t_cut, i)

        th = [threading.Thread(target=watch_old), threading.Thread(target=watch_new)]
        for t in th:
            t.start()
        for t in th:
            t.join(20)

        o = found.get("old_503")
        step("old leader's health endpoint says 503 within %.1f s" % a.bound,
             o is not None and o[0] <= a.bound,
             ("after %.2f s, role %s, leader_id %s" % (o[0], o[2] and o[2].get("role"), o[2] and o[2].get("leader_id")))
             if o else "still 200 (or unreachable) %.1f s after the cut" % (a.bound + 3))
        lines = [l for l in cl.log_text(old).splitlines() if "is no longer the leader" in l]
        lt = log_time(lines[-1]) if lines else None
        step("old leader logs \"is no longer the leader\" within %.1f s" % a.bound,
             lt is not None and lt - t_cut_wall <= a.bound,
             ("%.2f s after the cut: %s" % (lt - t_cut_wall, lines[-1].strip())) if lt else "no such line")
        res["old_leader_stepdown_s"] = round(lt - t_cut_wall, 3) if lt else None

        hold.wait(15)
        try:
            h = json.load(open(hold_out))
        except ValueError:
            h = {}
        ended = h.get("ended_at")
        step("old leader ended the held client session within %.1f s" % a.bound,
             ended is not None and ended - t_cut_wall <= a.bound,
             ("%.2f s after the cut, %s" % (ended - t_cut_wall, "DISCONNECT reason 0x%02X" % h["disconnect_reason"]
                                            if "disconnect_reason" in h else "connection closed"))
             if ended else json.dumps(h))

        for v5 in (False, True):
            p = in_ns(on.netns, "probe", on.host, on.mqtt_port, *(["--v5"] if v5 else []))
            step("old leader refuses a new MQTT %s session" % ("5" if v5 else "3.1.1"),
                 p.get("result") in ("refused", "closed", "unreachable"), json.dumps(p))
        p = in_ns(on.netns, "publish", on.host, on.mqtt_port, "part/during", "STALE-from-isolated-node",
                  "--retain", "--timeout", "2")
        step("old leader does not acknowledge a publish", not p.get("ok"), json.dumps(p))

        nw = found.get("new")
        step("majority elects a serving leader within %.1f s" % a.bound, nw is not None and nw[0] <= a.bound,
             ("node %d after %.2f s" % (cl.nodes[nw[1]].id, nw[0])) if nw else "none")
        new = nw[1]
        res["new_leader_s"] = round(nw[0], 3)
        nn = cl.nodes[new]
        r = publish_once(nn.host, nn.mqtt_port, "part/during", b"during-partition", retain=True)
        step("new leader acknowledges a QoS 1 publish (PUBACK)", r["ok"], json.dumps(r))
        # The other majority node in proxy mode forwards to the new leader.
        third = [i for i in others if i != new][0]
        if a.mode == "proxy":
            tn = cl.nodes[third]
            r = publish_once(tn.host, tn.mqtt_port, "part/during2", b"via-proxy", retain=True)
            step("the majority's follower proxies a publish to the new leader", r["ok"], json.dumps(r))

        time.sleep(0.5)
        # ---- heal
        subprocess.run(["ip", "-n", a.sw_ns, "link", "set", "p%d" % on.id, "up"], check=True)
        isolated = None
        t_heal = mono()
        log("healed: bridge port p%d up" % on.id)
        ok, sts = cl.converged(15)
        detail = "; ".join("node %d: %s" % (cl.nodes[i].id, (
            "role %s term %s leader %s commit %s applied %s" % (b["role"], b["term"], b["leader_id"],
                                                               b["commit_index"], b["applied_index"]))
            if b else "unreachable") for i, (s, b) in sts.items())
        step("all three nodes converge (same term, leader, commit_index, applied_index)", ok,
             ("after %.2f s; " % (mono() - t_heal)) + detail)
        ob = sts[old][1]
        step("old leader rejoined as a follower", ob["role"] == "follower" and ob["leader_id"] == nn.id,
             "role %s, leader_id %s" % (ob["role"], ob["leader_id"]))
        res["leader_kept_after_heal"] = ob["leader_id"] == nn.id

        # ---- no divergent state
        lead = cl.leader(5)
        ln = cl.nodes[lead]
        want = {"part/before": b"before-partition", "part/during": b"during-partition"}
        if a.mode == "proxy":
            want["part/during2"] = b"via-proxy"
        got = {t: read_retained(ln.host, ln.mqtt_port, t) for t in want}
        step("leader node %d serves the retained values written before and during the partition" % ln.id,
             got == want, repr(got))
        rounds = []
        led = {lead}
        for rnd in range(1, 4):
            if old in led:
                break
            cur = cl.leader(5)
            check(cur is not None, "no leader before round %d" % rnd)
            cl.kill(cur)
            nxt = cl.leader(10, exclude=[cur])
            check(nxt is not None, "round %d: no new leader after killing node %d\n%s" % (
                rnd, cl.nodes[cur].id, cl.logs_excerpt()))
            xn = cl.nodes[nxt]
            got = {t: read_retained(xn.host, xn.mqtt_port, t) for t in want}
            rounds.append("killed node %d, node %d leads" % (cl.nodes[cur].id, xn.id))
            step("round %d: killed leader node %d; node %d leads and serves the same retained values" % (
                rnd, cl.nodes[cur].id, xn.id), got == want, repr(got))
            led.add(nxt)
            cl.start(cur)
            ok, _ = cl.converged(15)
            step("round %d: restarted node %d rejoins (indexes converge)" % (rnd, cl.nodes[cur].id), ok)
        res["formerly_isolated_node_led_again"] = old in led
        log("formerly isolated node %d %s" % (on.id, "led and served the same state" if old in led
                                               else "did not win an election in 3 rounds (its indexes matched)"))
        crashed = cl.exited_unexpectedly()
        step("no node exited on its own", not crashed, repr(crashed))
        res["ok"] = True
    except Fail as e:
        res["failure"] = str(e)
        if not res["steps"] or res["steps"][-1]["ok"]:
            log("FAIL: %s" % e)
    except Exception as e:  # a bug in the test itself: still clean up and report
        res["failure"] = "%s: %s" % (type(e).__name__, e)
        log("ERROR: %s" % res["failure"])
    finally:
        if isolated is not None:
            subprocess.run(["ip", "-n", a.sw_ns, "link", "set", "p%d" % cl.nodes[isolated].id, "up"])
        cl.stop_all()
        res["trouble"] = cl.log_trouble()[:20]
        res["runtime_s"] = round(mono() - t_start, 1)
        json.dump(res, open(os.path.join(a.work, "result.json"), "w"), indent=1)

    print()
    print("## test-partition: leader cut off from the other two nodes (network namespaces, follower mode %s)" % a.mode)
    print()
    print("| step | result | detail |")
    print("| --- | --- | --- |")
    for s in res["steps"]:
        print("| %s | %s | %s |" % (s["step"], "ok" if s["ok"] else "**FAIL**", s["detail"].replace("|", "/")[:300]))
    print()
    if res.get("trouble"):
        print("- midge log lines worth a look:")
        for l in res["trouble"]:
            print("    " + l)
    print("- runtime %.1f s; work dir: %s" % (res["runtime_s"], a.work))
    if not res["ok"]:
        print(cl.logs_excerpt(12))
    print()
    print("test-partition: %s" % ("PASS" if res["ok"] else "FAIL: " + res.get("failure", "").splitlines()[0]))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
