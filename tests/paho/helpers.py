"""Shared helpers for the paho-mqtt scripts (paho-mqtt >= 2).

Each script is run as `python3 tests/paho/NAME.py PORT` against a broker that
the Rust harness started; it prints one `OK ...` line per check and exits 0,
or prints `FAIL ...` and exits 1. Every wait is bounded.
"""
import sys
import threading
import time

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

if int(paho.mqtt.__version__.split(".")[0]) < 2:
    print(f"FAIL paho-mqtt >= 2 needed, found {paho.mqtt.__version__}")
    sys.exit(1)

PORT = int(sys.argv[1])
HOST = "127.0.0.1"
TIMEOUT = 8.0

_clients = []


def fail(msg):
    print(f"FAIL {msg}", flush=True)
    for c in _clients:
        try:
            c.loop_stop()
        except Exception:
            pass
    sys.exit(1)


def ok(msg):
    print(f"OK {msg}", flush=True)


def check(cond, msg):
    if not cond:
        fail(msg)
    ok(msg)


def props(packet_type, **kw):
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def reason(packet_type, code):
    return ReasonCode(packet_type, identifier=code)


class Client:
    """A paho client with a network thread and recorded events."""

    def __init__(self, client_id, v5=True, manual_ack=False, will=None, clean_session=True,
                 port=None, transport="tcp", ca=None):
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
                             clean_session=None if v5 else clean_session,
                             manual_ack=manual_ack, reconnect_on_failure=False, transport=transport)
        if ca:
            self.c.tls_set(ca_certs=ca)
        self.port = port or PORT
        self.id = client_id
        self.cond = threading.Condition()
        self.connack = None  # (flags, reason_code, properties)
        self.disconnected = None  # reason code
        self.messages = []
        self.subacks = {}
        self.unsubacks = {}
        self.pubacks = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish
        if will:
            self.c.will_set(**will)
        _clients.append(self.c)

    def _note(self, f):
        with self.cond:
            f()
            self.cond.notify_all()

    def _on_connect(self, c, u, flags, rc, properties):
        self._note(lambda: setattr(self, "connack", (flags, rc, properties)))

    def _on_disconnect(self, c, u, flags, rc, properties):
        self._note(lambda: setattr(self, "disconnected", rc))

    def _on_message(self, c, u, msg):
        self._note(lambda: self.messages.append(msg))

    def _on_subscribe(self, c, u, mid, rcs, properties):
        self._note(lambda: self.subacks.__setitem__(mid, rcs))

    def _on_unsubscribe(self, c, u, mid, rcs, properties):
        self._note(lambda: self.unsubacks.__setitem__(mid, rcs))

    def _on_publish(self, c, u, mid, rc, properties):
        self._note(lambda: self.pubacks.__setitem__(mid, rc))

    def wait(self, pred, what, timeout=TIMEOUT):
        deadline = time.time() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.time()
                if left <= 0:
                    fail(f"[{self.id}] timed out waiting for {what}")
                self.cond.wait(left)

    def connect(self, clean_start=True, properties=None, keepalive=60, expect_ok=True):
        if self.c._protocol == mqtt.MQTTv5:
            self.c.connect(HOST, self.port, keepalive, clean_start=clean_start, properties=properties)
        else:
            self.c.connect(HOST, self.port, keepalive)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None or self.disconnected is not None, "CONNACK")
        if expect_ok and (self.connack is None or self.connack[1].is_failure):
            fail(f"[{self.id}] connect failed: connack={self.connack} disconnect={self.disconnected}")
        return self.connack

    def subscribe(self, topic, qos=1, options=None, properties=None):
        if options is not None:
            res, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            res, mid = self.c.subscribe(topic, qos, properties=properties)
        self.wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid]

    def unsubscribe(self, topic):
        res, mid = self.c.unsubscribe(topic)
        self.wait(lambda: mid in self.unsubacks, f"UNSUBACK for {topic}")
        return self.unsubacks[mid]

    def publish(self, topic, payload, qos=1, retain=False, properties=None, wait=True):
        info = self.c.publish(topic, payload, qos, retain, properties)
        if wait and qos > 0:
            self.wait(lambda: info.mid in self.pubacks, f"ack for publish to {topic}")
            return self.pubacks[info.mid]
        if wait:
            info.wait_for_publish(TIMEOUT)
        return None

    def wait_messages(self, n, timeout=TIMEOUT):
        self.wait(lambda: len(self.messages) >= n, f"{n} message(s)", timeout)
        return list(self.messages)

    def quiet_for(self, seconds):
        """Returns the messages that arrived within `seconds` (no wait failure)."""
        time.sleep(seconds)
        with self.cond:
            return list(self.messages)

    def disconnect(self, reasoncode=None, properties=None):
        self.c.disconnect(reasoncode=reasoncode, properties=properties)
        self.wait(lambda: self.disconnected is not None, "disconnect")
        self.c.loop_stop()

    def drop(self):
        """Closes the TCP connection without DISCONNECT."""
        self.c.loop_stop()
        self.c.socket().close()
