"""The broker honours the client's Receive Maximum [MQTT-3.3.4-7]: with
Receive Maximum 1 and manual acks, the second QoS 1 message is only sent
after the first is acknowledged."""
from helpers import *

s = Client("slow", manual_ack=True)
s.connect(properties=props(PacketTypes.CONNECT, ReceiveMaximum=1))
s.subscribe("rmc/t", 1)
p = Client("fast")
p.connect()
for i in range(3):
    p.publish("rmc/t", f"m{i}".encode(), qos=1)
first = s.wait_messages(1)
check(len(s.quiet_for(1.0)) == 1, "only one unacknowledged message in flight")
s.c.ack(first[0].mid, 1)
s.wait_messages(2)
check(len(s.quiet_for(0.7)) == 2, "next one after the PUBACK")
s.c.ack(s.messages[1].mid, 1)
s.wait_messages(3)
s.c.ack(s.messages[2].mid, 1)
check([m.payload for m in s.messages] == [b"m0", b"m1", b"m2"], "all three, in order")
s.disconnect()
p.disconnect()
