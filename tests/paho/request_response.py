"""Request/response with Response Topic and Correlation Data (v5)."""
from helpers import *

responder = Client("responder")
responder.connect()
responder.subscribe("svc/req", 1)

req = Client("requester")
req.connect()
req.subscribe("svc/resp/requester", 1)
req.publish("svc/req", b"2+2", qos=1, properties=props(PacketTypes.PUBLISH,
            ResponseTopic="svc/resp/requester", CorrelationData=b"\x00id-42",
            UserProperty=[("trace", "abc")]))
m = responder.wait_messages(1)[0]
rt = getattr(m.properties, "ResponseTopic", None)
cd = getattr(m.properties, "CorrelationData", None)
check(rt == "svc/resp/requester", f"responder sees Response Topic ({rt})")
check(cd == b"\x00id-42", f"responder sees Correlation Data ({cd!r})")
check(getattr(m.properties, "UserProperty", None) == [("trace", "abc")], "user property kept")
responder.publish(rt, b"4", qos=1, properties=props(PacketTypes.PUBLISH, CorrelationData=cd))
r = req.wait_messages(1)[0]
check(r.payload == b"4" and getattr(r.properties, "CorrelationData", None) == b"\x00id-42",
      "requester gets the answer with its correlation data")
responder.disconnect()
req.disconnect()
