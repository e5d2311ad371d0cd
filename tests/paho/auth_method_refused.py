"""v5 CONNECT with an Authentication Method the broker does not support
(no auth plugin) -> CONNACK 0x8C Bad authentication method, connection closed."""
from helpers import *

c = Client("auth-client")
_, rc, _ = c.connect(properties=props(PacketTypes.CONNECT, AuthenticationMethod="SCRAM-SHA-1",
                                      AuthenticationData=b"client-first"), expect_ok=False)
check(rc.is_failure, f"CONNACK refused ({rc})")
check(rc.value == 0x8C, f"reason code 0x8C Bad authentication method (got {rc.value:#x})")
c.wait(lambda: c.disconnected is not None, "close after refusal")
ok("connection closed")
c.c.loop_stop()

# Without the method the same client id connects fine.
c2 = Client("auth-client")
_, rc, _ = c2.connect()
check(rc.value == 0, "plain CONNECT accepted")
c2.disconnect()
