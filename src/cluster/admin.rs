//! Management requests from the admin listener, in the style of
//! Mosquitto's `$CONTROL/.../v1` APIs:
//!
//! request  `{"commands":[{"command":"getClusterStatus"}, ...]}`
//! response `{"responses":[{"command":"getClusterStatus","data":{...}}, ...]}`
//!
//! Commands: `getClusterStatus`; `transferLeadership` {"node": N};
//! `addNode` {"node": N, "address": "host:port", "force": false};
//! `removeNode` {"node": N, "force": false}. A failed command answers with
//! an `"error"` string instead of `"data"`. A command that only the leader
//! can carry out, sent to a follower, fails with `"leader"` (its id) and,
//! when known, `"leader_admin"` (its admin listener's `host:port`), where
//! `midge ctl` sends it again.

use serde_json::{json, Value};

use super::Node;
use crate::store::RaftLog;

/// Largest number of commands one request may carry.
const COMMANDS_MAX: usize = 16;

/// `leader_admin`: the current leader's admin listener, if another node
/// leads and told us where it is.
pub fn handle<L: RaftLog>(node: &mut Node<L>, leader_admin: Option<&str>, request: &[u8]) -> Vec<u8> {
    let parsed: Result<Value, _> = serde_json::from_slice(request);
    let commands = match parsed.as_ref().ok().and_then(|v| v.get("commands")).and_then(|c| c.as_array()) {
        Some(c) => c.clone(),
        None => {
            return json!({"responses":[{"command":"unknown","error":"request must be JSON {\"commands\":[...]}"}]})
                .to_string()
                .into_bytes()
        }
    };
    let mut responses = Vec::new();
    for c in commands.iter().take(COMMANDS_MAX) {
        let name = c.get("command").and_then(|v| v.as_str()).unwrap_or("");
        let node_arg = c.get("node").and_then(|v| v.as_u64());
        let force = c.get("force").and_then(|v| v.as_bool()).unwrap_or(false);
        let leader_only = matches!(name, "transferLeadership" | "addNode" | "removeNode");
        if leader_only && !node.is_leader() {
            let mut r = json!({"command": name, "leader": node.leader_id()});
            r["error"] = match node.leader_id() {
                0 => format!("node {} is not the leader, and no leader is known", node.id()).into(),
                l => format!("node {} is not the leader (leader is {l})", node.id()).into(),
            };
            if let Some(a) = leader_admin {
                r["leader_admin"] = a.into();
            }
            responses.push(r);
            continue;
        }
        let result: Result<Value, String> = match (name, node_arg) {
            ("getClusterStatus", _) => serde_json::to_value(node.status()).map_err(|e| e.to_string()),
            ("transferLeadership", Some(to)) => {
                if !node.conf_state().voters.contains(&to) {
                    Err(format!("node {to} is not a voter"))
                } else if to == node.id() {
                    Ok(json!({"leader": to}))
                } else {
                    node.transfer_leader(to);
                    Ok(json!({"transferring_to": to}))
                }
            }
            ("addNode", Some(id)) => {
                let addr = c.get("address").and_then(|v| v.as_str()).unwrap_or("");
                node.change_membership(true, id, addr, force).map(|_| json!({"proposed": "addNode", "node": id}))
            }
            ("removeNode", Some(id)) => {
                node.change_membership(false, id, "", force).map(|_| json!({"proposed": "removeNode", "node": id}))
            }
            ("transferLeadership" | "addNode" | "removeNode", None) => Err(format!("{name} needs \"node\": <id>")),
            _ => Err(format!("unknown command \"{name}\"")),
        };
        responses.push(match result {
            Ok(data) => json!({"command": name, "data": data}),
            Err(e) => json!({"command": name, "error": e}),
        });
    }
    json!({ "responses": responses }).to_string().into_bytes()
}
