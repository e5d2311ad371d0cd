"""v5 SUBACK/UNSUBACK/PUBACK reason codes as seen by paho."""
from helpers import *

c = Client("rc")
c.connect()
rcs = c.subscribe([("rc/a", 2), ("rc/b", 1), ("$share/g/rc/c", 0)])
check([r.value for r in rcs] == [2, 1, 0], f"SUBACK granted QoS per filter ({[r.value for r in rcs]})")
rcs = c.unsubscribe(["rc/a", "rc/never"])
check([r.value for r in rcs] == [0x00, 0x11], f"UNSUBACK success / 0x11 no subscription existed ({[r.value for r in rcs]})")
rc = c.publish("rc/nobody", b"x", qos=1)
check(rc.value == 0x10, f"PUBACK 0x10 no matching subscribers ({rc.value:#x})")
rc = c.publish("rc/b", b"x", qos=1)
check(rc.value == 0x00, f"PUBACK 0x00 with a subscriber ({rc.value:#x})")
c.disconnect()
