"""MQTT over WebSockets with paho (transport="websockets"): run as
`websockets.py TCP_PORT WS_PORT WSS_PORT CA_FILE`. A v5 client on the
WebSockets listener, a 3.1.1 client over TLS WebSockets and a plain-TCP
client see each other's messages; QoS 1 and 2, retained, a large payload
split over WebSocket messages by paho."""
import sys

from helpers import *

WS, WSS, CA = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

ws = Client("ws-v5", v5=True, port=WS, transport="websockets")
ws.connect()
check(ws.subscribe("ws/#", 2)[0].value == 2, "v5 over ws: SUBACK granted QoS 2")
wss = Client("wss-311", v5=False, port=WSS, transport="websockets", ca=CA)
wss.connect()
wss.subscribe("ws/#", 1)
tcp = Client("tcp-v5", v5=True)
tcp.connect()
tcp.subscribe("ws/#", 1)

ws.publish("ws/from-ws", b"over websockets", qos=1)
wss.publish("ws/from-wss", b"over tls websockets", qos=2)
tcp.publish("ws/from-tcp", b"over tcp", qos=1, retain=True)
big = bytes(range(256)) * 1024  # 256 KiB
ws.publish("ws/big", big, qos=1)

for who, c in (("ws", ws), ("wss", wss), ("tcp", tcp)):
    got = {m.topic: m.payload for m in c.wait_messages(4)}
    check(got.get("ws/from-ws") == b"over websockets", f"{who} got the ws client's message")
    check(got.get("ws/from-wss") == b"over tls websockets", f"{who} got the wss client's QoS 2 message")
    check(got.get("ws/from-tcp") == b"over tcp", f"{who} got the tcp client's message")
    check(got.get("ws/big") == big, f"{who} got the 256 KiB message intact")

late = Client("ws-late", v5=True, port=WS, transport="websockets")
late.connect()
late.subscribe("ws/from-tcp", 1)
m = late.wait_messages(1)[0]
check(m.retain and m.payload == b"over tcp", "retained message over ws on subscribe")
for c in (ws, wss, tcp, late):
    c.c.disconnect()
    c.c.loop_stop()
ok("done")
