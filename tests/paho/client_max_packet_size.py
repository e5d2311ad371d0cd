"""A v5 client that sets Maximum Packet Size must never be sent a larger
packet: the broker drops that message for it [MQTT-3.1.2-25]."""
from helpers import *

small = Client("small-max")
small.connect(properties=props(PacketTypes.CONNECT, MaximumPacketSize=256))
small.subscribe("mps/#", 1)
big = Client("no-max")
big.connect()
big.subscribe("mps/#", 1)

p = Client("publisher")
p.connect()
p.publish("mps/t", b"B" * 1000, qos=1)
p.publish("mps/t", b"s" * 10, qos=1)

got_big = big.wait_messages(2)
check([len(m.payload) for m in got_big] == [1000, 10], "unlimited subscriber gets both")
got_small = small.wait_messages(1)
check(len(small.quiet_for(1.0)) == 1 and got_small[0].payload == b"s" * 10,
      "256-byte-limited subscriber gets only the small message")
check(small.disconnected is None, "and stays connected")
for c in (small, big, p):
    c.disconnect()
