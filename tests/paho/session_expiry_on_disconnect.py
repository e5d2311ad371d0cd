"""Session Expiry Interval changed in DISCONNECT [MQTT-3.14.2-2]."""
from helpers import *

# 1. CONNECT expiry 60, DISCONNECT without the property: session kept.
c = Client("sx")
_, _, _ = c.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
c.subscribe("sx/t", 1)
c.disconnect()
c = Client("sx")
flags, rc, _ = c.connect(clean_start=False, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
check(flags.session_present, "session kept (expiry 60 from CONNECT)")

# 2. DISCONNECT with Session Expiry Interval 0: session ends now.
c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
c = Client("sx")
flags, rc, _ = c.connect(clean_start=False, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
check(not flags.session_present, "session ended by DISCONNECT expiry 0")
c.disconnect()

# 3. CONNECT expiry 0 then DISCONNECT expiry 30 is a protocol error: the
# server answers DISCONNECT 0x82 and the session is not kept.
d = Client("sx0")
d.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=0))
d.c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=30))
d.wait(lambda: d.disconnected is not None, "close")
d.c.loop_stop()
d = Client("sx0")
flags, _, _ = d.connect(clean_start=False, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=30))
check(not flags.session_present, "expiry 0 -> 30 in DISCONNECT does not keep the session")
d.disconnect()
