//! An application message as the broker stores, queues and replicates it.
//! Payload and topic are reference-counted so a fan-out to many sessions
//! shares one copy.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::mqtt::{Properties, QoS};

/// The properties that travel with an application message from publisher
/// to subscriber (MQTT 5 §3.3.2.3). Connection-level properties (Topic
/// Alias, Subscription Identifier) are not part of the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProps {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

impl MessageProps {
    pub fn from_properties(p: &Properties) -> Option<Rc<MessageProps>> {
        if p.is_empty() {
            return None;
        }
        let m = MessageProps {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
        };
        if m == MessageProps::default() {
            None
        } else {
            Some(Rc::new(m))
        }
    }

    pub fn write_into(&self, p: &mut Properties) {
        p.payload_format_indicator = self.payload_format_indicator;
        p.content_type.clone_from(&self.content_type);
        p.response_topic.clone_from(&self.response_topic);
        p.correlation_data.clone_from(&self.correlation_data);
        p.user_properties.clone_from(&self.user_properties);
    }

    fn bytes(&self) -> usize {
        self.content_type.as_ref().map_or(0, |s| s.len())
            + self.response_topic.as_ref().map_or(0, |s| s.len())
            + self.correlation_data.as_ref().map_or(0, |s| s.len())
            + self.user_properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: Rc<str>,
    #[serde(with = "payload_bytes")]
    pub payload: Rc<[u8]>,
    pub qos: QoS,
    pub retain: bool,
    pub props: Option<Rc<MessageProps>>,
    /// Absolute expiry time in broker milliseconds (Message Expiry
    /// Interval converted when the message was accepted).
    pub expires_at_ms: Option<u64>,
    /// Client id of the publisher, for No Local. None for wills of expired
    /// sessions and $SYS messages is not needed: wills keep their client.
    pub origin: Option<Rc<str>>,
}

impl Message {
    /// Bytes this message accounts for against queue and memory limits.
    pub fn cost_bytes(&self) -> u64 {
        (self.topic.len() + self.payload.len() + self.props.as_ref().map_or(0, |p| p.bytes()) + 64) as u64
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// Remaining Message Expiry Interval in whole seconds, rounded up, as
    /// forwarded to a subscriber [MQTT-3.3.2-6].
    pub fn remaining_expiry_secs(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms.map(|t| (t.saturating_sub(now_ms).div_ceil(1000)).min(u32::MAX as u64) as u32)
    }
}

impl Serialize for QoS {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for QoS {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u8::deserialize(d)?;
        QoS::from_u8(v).ok_or_else(|| serde::de::Error::custom("QoS out of range"))
    }
}

/// `Message::payload` as serde bytes rather than serde's default for
/// `Rc<[u8]>`, a sequence of `u8`. postcard writes both alike (a varint
/// length, then the bytes: tests/formats_golden.rs checks the stored
/// formats did not change), but a sequence costs a serializer call per
/// byte, a few instructions each, on every message a node logs and
/// applies.
mod payload_bytes {
    use std::rc::Rc;

    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(payload: &Rc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(payload)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rc<[u8]>, D::Error> {
        d.deserialize_bytes(PayloadVisitor)
    }

    struct PayloadVisitor;

    impl<'de> de::Visitor<'de> for PayloadVisitor {
        type Value = Rc<[u8]>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a message payload (bytes)")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Rc<[u8]>, E> {
            Ok(Rc::from(v))
        }

        /// A format that writes bytes as a sequence hands them back so.
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Rc<[u8]>, A::Error> {
            let mut v = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(Rc::from(v))
        }
    }
}
