//! `$CONTROL/dynamic-security/#`: reserved for Mosquitto's dynamic security
//! API, which midge does not have (yet). A request to [`REQUEST_TOPIC`] is
//! answered on [`RESPONSE_TOPIC`] in the dynamic security plugin's response
//! shape, with an error for each command, so that `mosquitto_ctrl dynsec
//! ...` reports it instead of waiting for its timeout. Any other publish
//! under [`TOPIC_PREFIX`] is refused.
//!
//! Must never: route a message under the prefix to subscribers as an
//! ordinary one, or answer with more than [`COMMANDS_MAX`] responses.

use std::rc::Rc;

use log::info;
use serde_json::{json, Map, Value};

use super::{Broker, ConnId, Delivery, Message};
use crate::auth::acl::Access;
use crate::mqtt::{topic, Publish, QoS};

pub const TOPIC_PREFIX: &str = "$CONTROL/dynamic-security/";
pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Commands answered per request; later ones get no response.
pub const COMMANDS_MAX: usize = 64;
/// Larger requests are not parsed: they get one response.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
pub const NOT_AVAILABLE: &str = "dynamic security is not available in this version of midge";
/// The command name the plugin uses when it cannot read one.
const UNKNOWN_COMMAND: &str = "Unknown command";

/// The response to `request`: `{"responses":[{"command":NAME,"error":...,
/// "correlationData":...}]}`, one entry per command (correlationData only
/// when the command had a string one). A request that is not JSON of the
/// form `{"commands":[{"command":NAME,...},...]}`, or names no command,
/// gets one entry for "Unknown command".
pub fn response(request: &[u8]) -> Vec<u8> {
    let mut responses = Vec::new();
    let parsed: Option<Value> =
        if request.len() <= REQUEST_BYTES_MAX { serde_json::from_slice(request).ok() } else { None };
    let commands = parsed.as_ref().and_then(|v| v.get("commands")).and_then(Value::as_array);
    for c in commands.into_iter().flatten().take(COMMANDS_MAX) {
        // As the plugin does, entries that name no command are skipped.
        let Some(name) = c.get("command").and_then(Value::as_str) else { continue };
        let mut r = Map::new();
        r.insert("command".into(), name.into());
        r.insert("error".into(), NOT_AVAILABLE.into());
        if let Some(cd) = c.get("correlationData").and_then(Value::as_str) {
            r.insert("correlationData".into(), cd.into());
        }
        responses.push(Value::Object(r));
    }
    if responses.is_empty() {
        responses.push(json!({"command": UNKNOWN_COMMAND, "error": NOT_AVAILABLE}));
    }
    json!({ "responses": responses }).to_string().into_bytes()
}

impl Broker {
    /// A request to [`REQUEST_TOPIC`] (already acknowledged): answered to
    /// the requesting connection alone, when it subscribed to
    /// [`RESPONSE_TOPIC`] and may read it. Other subscribers of the response
    /// topic learn nothing from someone else's request.
    pub(super) fn on_dynsec_request(&mut self, conn: ConnId, client: &Rc<str>, p: &Publish, now: u64) {
        info!("Client {client} sent a dynamic security request: answered that {NOT_AVAILABLE}.");
        let Some(session) = self.state.sessions().get(client) else { return };
        let matching: Vec<Option<u32>> =
            session.subs.iter().filter(|(f, _)| matches_response(f)).map(|(_, e)| e.sub_id).collect();
        if matching.is_empty() || !self.conn_allowed(conn, client, RESPONSE_TOPIC, Access::Read) {
            return;
        }
        let msg = Message {
            topic: Rc::from(RESPONSE_TOPIC),
            payload: Rc::from(response(&p.payload)),
            qos: QoS::AtMostOnce,
            retain: false,
            props: None,
            expires_at_ms: None,
            origin: None,
        };
        let d =
            Delivery { msg, qos: QoS::AtMostOnce, retain: false, sub_ids: matching.into_iter().flatten().collect() };
        self.deliver(client, None, &d, false, now);
    }
}

/// Whether subscription `filter` (possibly `$share/GROUP/...`) receives
/// [`RESPONSE_TOPIC`].
fn matches_response(filter: &str) -> bool {
    let f = match topic::parse_shared(filter) {
        Ok(Some((_, f))) => f,
        _ => filter,
    };
    topic::matches(f, RESPONSE_TOPIC)
}
