"""v5 DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the
will; DISCONNECT 0x00 does not."""
from helpers import *

w = Client("watcher")
w.connect()
w.subscribe("dw/#", 1)

a = Client("will-04", will=dict(topic="dw/a", payload=b"will of a", qos=1))
a.connect()
b = Client("will-00", will=dict(topic="dw/b", payload=b"will of b", qos=1))
b.connect()
check(w.quiet_for(0.3) == [], "no will while both are connected")

b.disconnect(reasoncode=reason(PacketTypes.DISCONNECT, 0x00))
check(w.quiet_for(1.0) == [], "normal DISCONNECT (0x00): no will")

a.disconnect(reasoncode=reason(PacketTypes.DISCONNECT, 0x04))
msgs = w.wait_messages(1)
check(msgs[0].topic == "dw/a" and msgs[0].payload == b"will of a", f"0x04: will published ({msgs[0].topic} {msgs[0].payload!r})")
check(msgs[0].qos == 1, "will delivered at QoS 1")
check(len(w.quiet_for(1.0)) == 1, "exactly one will")
w.disconnect()
