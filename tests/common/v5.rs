//! A thin, bounded-wait wrapper over rumqttc's MQTT 5 async client (same
//! shape as `v4.rs`).
//!
//! The event loop is polled by the test itself (no background task), so a
//! client is only "on the wire" while one of these methods runs; incoming
//! PUBLISH packets seen while waiting for something else are kept in
//! `inbox` and handed out by `recv`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnAck, Filter, Packet, Publish, PublishProperties, SubAck, SubscribeProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use tokio::time::{timeout, Instant};

use super::MAX_WAIT;

pub struct V5 {
    pub client: AsyncClient,
    pub ev: EventLoop,
    pub inbox: VecDeque<Publish>,
    pub id: String,
}

pub fn opts(port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl V5 {
    /// Connects with `opts`; panics unless a CONNACK with return code 0 comes.
    pub async fn connect_with(opts: MqttOptions) -> (V5, ConnAck) {
        let id = opts.client_id();
        let (client, ev) = AsyncClient::new(opts, 64);
        let mut c = V5 { client, ev, inbox: VecDeque::new(), id };
        let ack = c.try_connect().await.unwrap_or_else(|e| panic!("connect failed: {e:?}"));
        (c, ack)
    }

    /// Connects with defaults and clean session `clean`.
    pub async fn connect(port: u16, id: &str, clean: bool) -> (V5, ConnAck) {
        let mut o = opts(port, id);
        o.set_clean_start(clean);
        V5::connect_with(o).await
    }

    /// The first poll connects; returns the CONNACK or the error.
    pub async fn try_connect(&mut self) -> Result<ConnAck, ConnectionError> {
        match timeout(MAX_WAIT, self.ev.poll()).await {
            Err(_) => panic!("no CONNACK within {MAX_WAIT:?}"),
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => Ok(a),
            Ok(Ok(other)) => panic!("expected CONNACK, got {other:?}"),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Polls once, with a deadline. `None` on timeout.
    pub async fn poll(&mut self, d: Duration) -> Option<Result<Event, ConnectionError>> {
        timeout(d, self.ev.poll()).await.ok()
    }

    /// Polls until `f` returns Some, keeping PUBLISHes in the inbox. Panics on
    /// a connection error or after `MAX_WAIT`.
    pub async fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ev.poll()).await {
                Err(_) => panic!("[{}] timed out waiting for {what}", self.id),
                Ok(Err(e)) => panic!("[{}] connection error while waiting for {what}: {e:?}", self.id),
                Ok(Ok(ev)) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = ev {
                        self.inbox.push_back(p);
                    }
                }
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, q: u8) -> SubAck {
        self.client.subscribe(filter, qos(q)).await.unwrap();
        self.until("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(a)) => Some(a.clone()),
            _ => None,
        })
        .await
    }

    /// SUBSCRIBE with full filter options and optional properties.
    pub async fn subscribe_filters(&mut self, filters: Vec<Filter>, props: Option<SubscribeProperties>) -> SubAck {
        match props {
            Some(p) => self.client.subscribe_many_with_properties(filters, p).await.unwrap(),
            None => self.client.subscribe_many(filters).await.unwrap(),
        }
        self.until("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(a)) => Some(a.clone()),
            _ => None,
        })
        .await
    }

    /// Publish with properties; waits for the end of the QoS flow.
    pub async fn publish_props(
        &mut self,
        topic: &str,
        q: u8,
        retain: bool,
        payload: impl Into<Vec<u8>>,
        props: PublishProperties,
    ) {
        self.client.publish_with_properties(topic, qos(q), retain, payload.into(), props).await.unwrap();
        self.wait_flow(q).await
    }

    async fn wait_flow(&mut self, q: u8) {
        match q {
            0 => {
                self.until("outgoing PUBLISH", |e| matches!(e, Event::Outgoing(Outgoing::Publish(_))).then_some(()))
                    .await
            }
            1 => self.until("PUBACK", |e| matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())).await,
            _ => self.until("PUBCOMP", |e| matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(())).await,
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        self.until("UNSUBACK", |e| matches!(e, Event::Incoming(Packet::UnsubAck(_))).then_some(())).await
    }

    /// Publishes and waits for the end of the QoS flow (for QoS 0: until the
    /// packet was written).
    pub async fn publish(&mut self, topic: &str, q: u8, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, qos(q), retain, payload.into()).await.unwrap();
        self.wait_flow(q).await
    }

    /// Next incoming PUBLISH (inbox first). Panics after `MAX_WAIT`.
    pub async fn recv(&mut self) -> Publish {
        if let Some(p) = self.inbox.pop_front() {
            return p;
        }
        self.until("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// `n` PUBLISHes.
    pub async fn recv_n(&mut self, n: usize) -> Vec<Publish> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.recv().await);
        }
        v
    }

    /// Keeps polling for `d` and returns every PUBLISH that arrived
    /// (including the inbox). Connection errors end the wait early.
    pub async fn collect_for(&mut self, d: Duration) -> Vec<Publish> {
        let mut v: Vec<Publish> = self.inbox.drain(..).collect();
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return v;
            }
            match timeout(left, self.ev.poll()).await {
                Err(_) => return v,
                Ok(Err(_)) => return v,
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => v.push(p),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Asserts no PUBLISH arrives within `d`.
    pub async fn expect_nothing(&mut self, d: Duration) {
        let got = self.collect_for(d).await;
        assert!(got.is_empty(), "[{}] expected no message, got {:?}", self.id, got);
    }

    /// Sends DISCONNECT, waits until it was written and then (up to 3 s)
    /// until the broker closed the connection, so that a reconnect with the
    /// same client id cannot overtake the broker's handling of the DISCONNECT.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ev.poll()).await {
                Err(_) => panic!("DISCONNECT not sent"),
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
            }
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ev.poll()).await {
                Err(_) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Polls until the connection fails (e.g. the broker closed it); returns
    /// the error and how long it took, or panics after `d`.
    pub async fn expect_error(&mut self, d: Duration) -> ConnectionError {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ev.poll()).await {
                Err(_) => panic!("[{}] connection still up after {d:?}", self.id),
                Ok(Err(e)) => return e,
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.inbox.push_back(p),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Payload as a string, for assertions.
pub fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// Topic as a string.
pub fn topic(p: &Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
}
