"""paho as a 3.1.1 client: retained + QoS 2 + persistent session."""
from helpers import *

p = Client("p311", v5=False)
p.connect()
p.publish("b311/r", b"retained", qos=2, retain=True)
s = Client("s311", v5=False, clean_session=False)
s.connect()
s.subscribe("b311/#", 2)
m = s.wait_messages(1)[0]
check(m.payload == b"retained" and m.retain and m.qos == 2, "retained message at QoS 2 with RETAIN set")
s.disconnect()
p.publish("b311/q", b"offline", qos=1)
s = Client("s311", v5=False, clean_session=False)
flags, rc, _ = s.connect()
check(flags.session_present, "session present")
m = s.wait_messages(1)[0]
check(m.payload == b"offline" and m.topic == "b311/q", "queued message delivered")
s.disconnect()
p.disconnect()
