#!/usr/bin/env python3
"""Reproduce slow elections after a follower restart (midge transport).

  python3 scripts/ha/repro_stale_peer_link.py target/release/midge [TRIALS]

Each trial starts a fresh loopback cluster, optionally SIGKILLs and restarts
one follower (F1), waits until the indexes converge, then SIGKILLs the
leader and measures how long until another node answers 200 on /health.
Control trials skip the follower restart.

Why it differs: the raft transport only writes on its outgoing connection
to a peer. The other follower (F2) never sends anything to F1 while the
leader is alive, so its connection to F1's previous process stays open
(CLOSE_WAIT) after F1 restarts. In the next election F2's first message to
F1 (its pre-vote request or its pre-vote answer) is written into that dead
connection and lost; the second write fails with EPIPE and the batch is
lost too. The election needs one or two more timeouts (300-600 ms each).
Measured 2026-11-25 on 0e65a4b (12 trials each): control median 0.32 s
(max 0.51); after a follower restart median 0.65 s (max 0.88 s).
"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import loopback_cluster, mono  # noqa: E402


def trial(binary, restart_follower):
    w = tempfile.mkdtemp(prefix="midge-repro.")
    open(os.path.join(w, "pids"), "w").close()
    cl = loopback_cluster(w, binary)
    try:
        cl.start_all()
        lead = cl.leader(15)
        fols = [i for i in range(3) if i != lead]
        if restart_follower:
            cl.kill(fols[0])
            time.sleep(0.3)
            cl.start(fols[0])
        cl.converged(10)
        time.sleep(1.0)
        tk = mono()
        cl.kill(lead)
        cl.leader(10, exclude=[lead])
        return mono() - tk, w
    finally:
        cl.stop_all()


def main():
    binary = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    n = max(1, min(n, 50))
    for restart in (False, True):
        ts = [trial(binary, restart)[0] for _ in range(n)]
        print("%-42s n=%d: leader serving after kill median %.3f s, min %.3f, max %.3f; %d of %d over 0.65 s"
              % ("follower restarted before the leader kill" if restart else "control (no follower restart)",
                 n, statistics.median(ts), min(ts), max(ts), sum(1 for t in ts if t > 0.65), n))
        print("   " + " ".join("%.2f" % t for t in ts), flush=True)


if __name__ == "__main__":
    main()
