#!/usr/bin/env python3
"""Paced QoS 1 load for scripts/bench-cpu.sh: one paho-mqtt subscriber and
one publisher on 127.0.0.1:PORT; the publisher sends RATE messages per second
(16-byte payload, QoS 1, topic cpu/t) for DURATION seconds, then the
subscriber gets up to GRACE seconds to receive the rest. Prints one line:
`sent=N received=M client_cpu_us_per_msg=C`, C being this process's CPU
time (both clients, all threads, user + system) from the first publish to
the end, per message sent: the load generator's own cost, so that a
ratio of brokers is not read as the client's. Exit 1 if a client cannot
connect.

    paced_qos1.py PORT RATE DURATION [GRACE]
"""
import sys
import time

import paho.mqtt.client as mqtt


def main():
    port, rate, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    grace = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    received = [0]

    def on_message(_c, _u, _m):
        received[0] += 1

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cpu-sub")
    sub.on_message = on_message
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cpu-pub")
    try:
        sub.connect("127.0.0.1", port)
        pub.connect("127.0.0.1", port)
    except OSError as e:
        print(f"cannot connect: {e}", file=sys.stderr)
        return 1
    sub.subscribe("cpu/t", 1)
    sub.loop_start()
    pub.loop_start()
    time.sleep(0.3)
    start = time.monotonic()
    cpu0 = time.process_time()
    sent = 0
    while time.monotonic() - start < duration:
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.publish("cpu/t", b"x" * 16, qos=1)
        sent += 1
    deadline = time.monotonic() + grace
    while received[0] < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu_us = (time.process_time() - cpu0) * 1e6 / max(sent, 1)
    print(f"sent={sent} received={received[0]} client_cpu_us_per_msg={cpu_us:.0f}")
    pub.loop_stop()
    sub.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
