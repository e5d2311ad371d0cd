#!/usr/bin/env python3
"""A userspace Ethernet switch with a fixed delay, for kernels without
`sch_netem` (tc netem). scripts/lib-netns.sh uses it instead of a Linux
bridge when asked for a delay that `tc qdisc ... netem` cannot give.

It creates one TAP device per port (named t-PORT) in the namespace it runs
in and writes --ready once they exist; lib-netns.sh then moves each TAP into
its node's namespace (the open file descriptor stays attached) and
configures it there. Every frame read from a port is forwarded after
--delay-ms to the port that owns the destination MAC (learned from source
MACs), or flooded to all other ports for broadcast/unknown destinations.
Only frames entering from the ports in --delay-from are delayed, which
matches `tc qdisc add dev eth0 root netem delay D` on each of those nodes'
interfaces (their egress). Frames are never reordered within a port pair.

Runs until SIGTERM/SIGINT, or --max-seconds (a safety bound), whichever
comes first. Writes a line of counters to stderr at exit.
"""
import argparse
import errno
import fcntl
import heapq
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True, help="comma-separated port names (TAPs are t-NAME)")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--delay-from", default="", help="comma-separated ports whose incoming frames are delayed")
    ap.add_argument("--ready", required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()

    names = [p for p in a.ports.split(",") if p]
    fds = {}
    for n in names:
        fds[open_tap("t-" + n)] = n
    delayed = {fd for fd, n in fds.items() if n in set(a.delay_from.split(","))}
    delay = a.delay_ms / 1000.0
    with open(a.ready, "w") as f:
        f.write("%d\n" % os.getpid())

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    macs = {}  # mac bytes -> fd
    heap = []  # (due, seq, out_fd, frame)
    seq = 0
    frames = forwarded = dropped = 0
    end = time.monotonic() + a.max_seconds
    all_fds = list(fds)
    while not stop and time.monotonic() < end:
        now = time.monotonic()
        timeout = 0.5
        if heap:
            timeout = max(0.0, min(timeout, heap[0][0] - now))
        try:
            ready, _, _ = select.select(all_fds, [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            for _ in range(64):
                try:
                    fr = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno in (errno.EIO, errno.EBADFD):
                        break
                    raise
                if len(fr) < 14:
                    continue
                frames += 1
                dst, src = fr[0:6], fr[6:12]
                if not src[0] & 1:
                    macs[src] = fd
                out = macs.get(dst) if not dst[0] & 1 else None
                targets = [out] if out is not None else [x for x in all_fds if x != fd]
                due = now + (delay if fd in delayed else 0.0)
                for t in targets:
                    if t == fd:
                        continue
                    seq += 1
                    heapq.heappush(heap, (due, seq, t, fr))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, t, fr = heapq.heappop(heap)
            try:
                os.write(t, fr)
                forwarded += 1
            except OSError:
                dropped += 1  # port down or its queue full: a lost frame, as on a wire
    print("delay_switch: %d frames in, %d out, %d dropped, delay %.1f ms from %s" % (
        frames, forwarded, dropped, a.delay_ms, a.delay_from or "none"), file=sys.stderr)


if __name__ == "__main__":
    main()
