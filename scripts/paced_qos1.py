#!/usr/bin/env python3
"""Paced QoS 1 load for scripts/bench-cpu.sh: one paho-mqtt subscriber and
one publisher on 127.0.0.1:PORT, each in its own process (python runs one
thread at a time per process: together in one, the two clients need more
than a core at 5,000 msg/s, fall behind and the broker's queue bound drops
messages, whichever the broker). The publisher sends RATE messages per
second (16-byte payload, QoS 1, topic cpu/t) for DURATION seconds, then the
subscriber gets up to GRACE seconds to receive the rest. Prints one line:
`sent=N received=M client_cpu_us_per_msg=C`, C being the CPU time of both
processes (all threads, user + system) from the first publish to the end,
per message sent: the load generator's own cost, so that a ratio of
brokers is not read as the client's. Exit 1 if a client cannot connect.

    paced_qos1.py PORT RATE DURATION [GRACE]
"""
import multiprocessing as mp
import sys
import time

import paho.mqtt.client as mqtt


def subscriber(port, subscribed, start, done, received, cpu):
    """The subscriber's process: counts into `received`; its CPU time from
    `start` to `done` goes into `cpu` (seconds)."""

    def on_message(_c, _u, _m):
        received.value += 1

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cpu-sub")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    try:
        sub.connect("127.0.0.1", port)
    except OSError as e:
        print(f"cannot connect: {e}", file=sys.stderr)
        return
    sub.subscribe("cpu/t", 1)
    sub.loop_start()
    if start.wait(30):
        cpu0 = time.process_time()
        done.wait(600)
        cpu.value = time.process_time() - cpu0
    sub.loop_stop()


def main():
    port, rate, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    grace = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    ctx = mp.get_context("fork")
    subscribed, start, done = ctx.Event(), ctx.Event(), ctx.Event()
    received = ctx.Value("q", 0, lock=False)
    sub_cpu = ctx.Value("d", 0.0, lock=False)
    child = ctx.Process(target=subscriber, args=(port, subscribed, start, done, received, sub_cpu))
    child.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cpu-pub")
    try:
        if not subscribed.wait(10):
            raise OSError("the subscriber did not subscribe within 10 s")
        pub.connect("127.0.0.1", port)
    except OSError as e:
        print(f"cannot connect: {e}", file=sys.stderr)
        child.kill()
        return 1
    pub.loop_start()
    time.sleep(0.3)
    start.set()
    begin = time.monotonic()
    cpu0 = time.process_time()
    sent = 0
    while time.monotonic() - begin < duration:
        delay = begin + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.publish("cpu/t", b"x" * 16, qos=1)
        sent += 1
    deadline = time.monotonic() + grace
    while received.value < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    pub_cpu = time.process_time() - cpu0
    done.set()
    child.join(10)
    cpu_us = (pub_cpu + sub_cpu.value) * 1e6 / max(sent, 1)
    print(f"sent={sent} received={received.value} client_cpu_us_per_msg={cpu_us:.0f}")
    pub.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
