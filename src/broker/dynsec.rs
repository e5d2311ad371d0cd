//! Dynamic security in the broker: the `$CONTROL/dynamic-security/v1` API,
//! logins and ACL checks against the replicated `DynsecState`, kicks after
//! a change, and the file the runtime rewrites.
//!
//! A request is parsed on the node that serves its client. Commands refused
//! on their own fields are answered there; the changes and reads go into
//! one `Command::Dynsec` and are answered when it applies (so a change is
//! answered only after it committed, and a read sees the changes before it
//! in the same request). A request of reads only, with nothing of this
//! node's pending, is answered at once from the applied state.
//!
//! Without `plugin .../mosquitto_dynamic_security.so` a request gets the
//! plugin's response shape with a "not enabled" error for each command, so
//! that `mosquitto_ctrl dynsec ...` reports it instead of waiting for its
//! timeout.
//!
//! The answer is published on [`RESPONSE_TOPIC`] to every subscriber that
//! may read it, as the plugin does (QoS 0, not retained).
//!
//! Must never: route a message under [`TOPIC_PREFIX`] to subscribers as an
//! ordinary one; hold more than [`PENDING_MAX`] requests.

use std::collections::BTreeMap;
use std::rc::Rc;

use log::{info, warn};
use serde_json::{json, Map, Value};

use super::command::Command;
pub use super::command::{DynsecStep, DynsecTag, StepResult};
use super::{Broker, ConnId, Message, Phase};
use crate::dynsec::{
    self, export_json, parse_request, Action as ItemAction, CommandError, DynsecLimits, DynsecState, Kick,
    PasswordHash, RequestItem, Responses, SALT_BYTES,
};
use crate::mqtt::{reason, Publish, QoS};

pub const TOPIC_PREFIX: &str = "$CONTROL/dynamic-security/";
pub const REQUEST_TOPIC: &str = dynsec::REQUEST_TOPIC;
pub const RESPONSE_TOPIC: &str = dynsec::RESPONSE_TOPIC;
/// Requests of one node waiting for their command to apply; more are
/// answered with an error at once.
pub const PENDING_MAX: usize = 64;
/// The answer without `plugin .../mosquitto_dynamic_security.so`.
pub const NOT_ENABLED: &str = "dynamic security is not enabled (plugin .../mosquitto_dynamic_security.so)";
/// The command name the plugin uses when it cannot read one.
const UNKNOWN_COMMAND: &str = "Unknown command";
/// Commands answered per "not enabled" request.
pub const COMMANDS_MAX_DISABLED: usize = 64;

/// Where new salts come from: the runtime gives a random source
/// (`Broker::set_salt_source`); tests and the simulation keep the default,
/// a counter, so that their runs repeat.
pub type SaltSource = Box<dyn FnMut() -> [u8; SALT_BYTES]>;

/// Where this broker's dynamic-security data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DynsecRole {
    /// In its own `State` (full_sync, or a lone node): requests become
    /// commands of its own log.
    #[default]
    Own,
    /// dynsec_sync, the node-local broker that serves clients: the data
    /// lives in the cluster group's broker; requests go there
    /// (`take_dynsec_outbox`), and its answers, kicks and data come back
    /// (`dynsec_group_event`).
    Client,
    /// dynsec_sync, the cluster group's broker: holds the data, serves no
    /// client, and hands what applying changes asks for to the serving
    /// broker (`take_dynsec_events`).
    Group,
}

/// What the group's broker hands to the serving broker (dynsec_sync).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    Answered {
        tag: DynsecTag,
        results: Vec<StepResult>,
    },
    Kick(Vec<Kick>),
    /// The data changed (or arrived): here it is.
    Data(Rc<DynsecState>),
}

/// A request that waited this long for the cluster (dynsec_sync) is
/// answered with [`CommandError::NO_QUORUM`].
pub const ANSWER_TIMEOUT_MS: u64 = 5_000;

/// The broker's dynamic-security side (volatile: the data is in `State`).
pub(super) struct Side {
    role: DynsecRole,
    /// The node id for the tags of this node's requests.
    node: u64,
    /// The group's data (role `Client`).
    external: Option<Rc<DynsecState>>,
    /// Requests for the group (role `Client`).
    outbox: Vec<(DynsecTag, Vec<DynsecStep>)>,
    /// For the serving broker (role `Group`).
    events: Vec<GroupEvent>,
    /// Whether the data replayed at start was handed over (role `Group`).
    announced: bool,
    /// The file read at start: the data until the import applied, and
    /// what the first leader imports.
    seed: Option<Rc<DynsecState>>,
    /// Requests waiting for their command, by sequence number.
    pending: BTreeMap<u64, Pending>,
    seq: u64,
    /// The data changed since the runtime last took the file's text.
    dirty: bool,
    /// Whether the file was compared with the data at start.
    compared: bool,
    salt: SaltSource,
    /// PBKDF2 iterations for new passwords.
    iterations: u32,
}

struct Pending {
    client: Rc<str>,
    items: Vec<RequestItem>,
    since_ms: u64,
}

impl Default for Side {
    fn default() -> Side {
        Side {
            role: DynsecRole::Own,
            node: 0,
            external: None,
            outbox: Vec::new(),
            events: Vec::new(),
            announced: false,
            seed: None,
            pending: BTreeMap::new(),
            seq: 0,
            dirty: false,
            compared: false,
            salt: Box::new(counter_salt()),
            iterations: dynsec::ITERATIONS_DEFAULT,
        }
    }
}

fn counter_salt() -> impl FnMut() -> [u8; SALT_BYTES] {
    let mut n: u64 = 0;
    move || {
        n += 1;
        let mut s = [0u8; SALT_BYTES];
        s[..8].copy_from_slice(&n.to_le_bytes());
        s
    }
}

impl Broker {
    /// The dynamic-security file read at start (dynamic security on).
    pub fn set_dynsec_file(&mut self, state: DynsecState) {
        self.dynsec.seed = Some(Rc::new(state));
    }

    /// Where the salts of new passwords come from.
    pub fn set_salt_source(&mut self, salt: SaltSource) {
        self.dynsec.salt = salt;
    }

    /// Where the data lives (see `DynsecRole`), and this node's id.
    pub fn set_dynsec_role(&mut self, role: DynsecRole, node: u64) {
        self.dynsec.role = role;
        self.dynsec.node = node;
    }

    /// Role `Client`: the requests to propose to the cluster group.
    pub fn take_dynsec_outbox(&mut self) -> Vec<(DynsecTag, Vec<DynsecStep>)> {
        std::mem::take(&mut self.dynsec.outbox)
    }

    /// Role `Group`: propose a request another broker took.
    pub fn propose_dynsec(&mut self, tag: DynsecTag, steps: Vec<DynsecStep>, now: u64) {
        self.propose(now, Command::Dynsec { tag, steps });
    }

    /// Role `Group`: what applying asked of the serving broker. The first
    /// call also hands over the data replayed from the store at start, so
    /// that a node that restarts without a majority serves with the last
    /// data it applied.
    pub fn take_dynsec_events(&mut self) -> Vec<GroupEvent> {
        if !self.dynsec.announced {
            self.dynsec.announced = true;
            if let Some(d) = self.state.dynsec() {
                self.dynsec.events.insert(0, GroupEvent::Data(d.clone()));
            }
        }
        std::mem::take(&mut self.dynsec.events)
    }

    /// Role `Client`: an event from the group's broker.
    pub fn dynsec_group_event(&mut self, ev: GroupEvent, now: u64) {
        match ev {
            GroupEvent::Answered { tag, results } => {
                if tag.node == self.dynsec.node {
                    self.answer_pending(tag, results, now);
                }
            }
            GroupEvent::Kick(kick) => self.on_dynsec_kick(&kick, now),
            GroupEvent::Data(d) => self.dynsec.external = Some(d),
        }
    }

    /// Requests that waited longer than [`ANSWER_TIMEOUT_MS`] for the
    /// cluster are answered with an error (role `Client`; called by `tick`).
    pub(super) fn expire_dynsec_requests(&mut self, now: u64) {
        if self.dynsec.role != DynsecRole::Client {
            return;
        }
        let late: Vec<u64> = self
            .dynsec
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.since_ms) >= ANSWER_TIMEOUT_MS)
            .map(|(s, _)| *s)
            .collect();
        for seq in late {
            let Some(p) = self.dynsec.pending.remove(&seq) else { continue };
            warn!(
                "Dynamic security request from {} not committed within {} s: answered that the cluster has no quorum.",
                p.client,
                ANSWER_TIMEOUT_MS / 1000
            );
            let results = p
                .items
                .iter()
                .filter(|i| !matches!(i.action, ItemAction::Refuse(_)))
                .map(|_| Err(CommandError::NO_QUORUM))
                .collect();
            let payload = responses(&p.items, results);
            self.send_dynsec_answer(&p.client, payload, now);
        }
    }

    /// PBKDF2 iterations for new passwords.
    pub fn set_dynsec_iterations(&mut self, iterations: u32) {
        self.dynsec.iterations = iterations.max(1);
    }

    /// The data logins and ACL checks use: the applied state's, or the
    /// file's until its import applied.
    pub fn dynsec_data(&self) -> Option<&Rc<DynsecState>> {
        self.state.dynsec().or(self.dynsec.external.as_ref()).or(self.dynsec.seed.as_ref())
    }

    /// The file's new text when the data changed since the last call (the
    /// runtime writes it). The first call compares the file read at start
    /// with the data replayed from the store, and logs a difference: the
    /// replicated data is the truth; the file is rewritten at the next
    /// change.
    #[inline]
    pub fn take_dynsec_file(&mut self) -> Option<String> {
        // (Inlined: called after every event; dynamic security is mostly off.)
        if !self.settings.dynsec {
            return None;
        }
        self.changed_dynsec_file()
    }

    fn changed_dynsec_file(&mut self) -> Option<String> {
        if !self.dynsec.compared {
            self.dynsec.compared = true;
            if let (Some(data), Some(file)) = (self.state.dynsec(), &self.dynsec.seed) {
                if data != file {
                    warn!(
                        "The dynamic security file differs from the cluster's replicated data; it is not re-imported \
                         (the replicated data is used, and written to the file at the next change)."
                    );
                }
            }
        }
        if !std::mem::take(&mut self.dynsec.dirty) {
            return None;
        }
        self.state.dynsec().map(|d| export_json(d))
    }

    /// A snapshot replaced the state: the file follows it.
    pub(super) fn dynsec_state_installed(&mut self) {
        if let Some(d) = self.state.dynsec() {
            self.dynsec.dirty = true;
            if self.dynsec.role == DynsecRole::Group {
                self.dynsec.events.push(GroupEvent::Data(d.clone()));
            }
        }
    }

    /// This node starts serving: when the replicated state holds no
    /// dynamic-security data yet, propose the file's.
    pub(super) fn dynsec_serving(&mut self, now: u64) {
        if !self.settings.dynsec || self.dynsec.role == DynsecRole::Client || self.state.dynsec().is_some() {
            return;
        }
        if let Some(seed) = &self.dynsec.seed {
            info!(
                "Importing the dynamic security file ({} clients, {} groups, {} roles) into the cluster's state.",
                seed.clients.len(),
                seed.groups.len(),
                seed.roles.len()
            );
            let state = Box::new((**seed).clone());
            self.propose(now, Command::DynsecImport { state });
        }
    }

    /// Stops waiting for answers (this node stopped serving).
    pub(super) fn dynsec_clear_pending(&mut self) {
        self.dynsec.pending.clear();
    }

    /// A request to [`REQUEST_TOPIC`], allowed by the ACL and acknowledged.
    pub(super) fn on_dynsec_request(&mut self, conn: ConnId, client: &Rc<str>, p: &Publish, now: u64) {
        if !self.settings.dynsec {
            info!("Client {client} sent a dynamic security request: answered that {NOT_ENABLED}.");
            let payload = not_enabled_response(&p.payload);
            self.send_dynsec_answer(client, payload, now);
            return;
        }
        let limits = DynsecLimits::default();
        let side = &mut self.dynsec;
        let iterations = side.iterations;
        let salt = &mut side.salt;
        let items = parse_request(&p.payload, &limits, &mut |pw: &[u8]| PasswordHash::new(pw, salt(), iterations));
        let user = self.conn_username(conn, client).unwrap_or_default();
        let mut steps = Vec::new();
        for item in &items {
            match &item.action {
                ItemAction::Change(c) => {
                    info!("dynsec: {client}/{user} | {}", item.command);
                    steps.push(DynsecStep::Change(c.clone()));
                }
                ItemAction::Read(r) => steps.push(DynsecStep::Read(r.clone())),
                ItemAction::Refuse(_) => {}
            }
        }
        let changes = steps.iter().any(|s| matches!(s, DynsecStep::Change(_)));
        if steps.is_empty() || (!changes && self.dynsec.pending.is_empty()) {
            let empty = DynsecState::default();
            let data = self.dynsec_data().map(|d| &**d).unwrap_or(&empty);
            let results: Vec<StepResult> = steps
                .iter()
                .map(|s| match s {
                    DynsecStep::Read(r) => dynsec::answer_read(data, r).map(Some),
                    DynsecStep::Change(_) => Err(CommandError::INTERNAL_ERROR),
                })
                .collect();
            let payload = responses(&items, results);
            self.send_dynsec_answer(client, payload, now);
            return;
        }
        if self.dynsec.pending.len() >= PENDING_MAX {
            warn!("Client {client}: dynamic security request refused, {PENDING_MAX} requests are pending already.");
            let results = steps.iter().map(|_| Err(CommandError::PENDING_FULL)).collect();
            let payload = responses(&items, results);
            self.send_dynsec_answer(client, payload, now);
            return;
        }
        self.dynsec.seq = (self.dynsec.seq + 1).max(now.saturating_mul(1000));
        let seq = self.dynsec.seq;
        self.dynsec.pending.insert(seq, Pending { client: client.clone(), items, since_ms: now });
        let tag = DynsecTag { node: self.dynsec.node, client: client.clone(), seq };
        if self.dynsec.role == DynsecRole::Client {
            self.dynsec.outbox.push((tag, steps));
        } else {
            self.propose(now, Command::Dynsec { tag, steps });
        }
    }

    /// A `Command::Dynsec` applied: answer it if it was this node's (role
    /// `Group`: hand it to the serving broker).
    pub(super) fn on_dynsec_answered(&mut self, tag: DynsecTag, results: Vec<StepResult>, now: u64) {
        if self.dynsec.role == DynsecRole::Group {
            self.dynsec.events.push(GroupEvent::Answered { tag, results });
            return;
        }
        if tag.node == self.dynsec.node {
            self.answer_pending(tag, results, now);
        }
    }

    fn answer_pending(&mut self, tag: DynsecTag, results: Vec<StepResult>, now: u64) {
        let Some(p) = self.dynsec.pending.remove(&tag.seq) else { return };
        if p.client != tag.client {
            self.dynsec.pending.insert(tag.seq, p);
            return;
        }
        let payload = responses(&p.items, results);
        self.send_dynsec_answer(&p.client, payload, now);
    }

    pub(super) fn on_dynsec_changed(&mut self) {
        self.dynsec.dirty = true;
        if self.dynsec.role == DynsecRole::Group {
            if let Some(d) = self.state.dynsec() {
                self.dynsec.events.push(GroupEvent::Data(d.clone()));
            }
        }
    }

    /// Disconnects the clients a change affects, as the plugin does: v5
    /// clients get DISCONNECT 0x98 (administrative action), no will.
    pub(super) fn on_dynsec_kick(&mut self, kick: &[Kick], now: u64) {
        if self.dynsec.role == DynsecRole::Group {
            self.dynsec.events.push(GroupEvent::Kick(kick.to_vec()));
            return;
        }
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Connected | Phase::Connecting) && c.kind == super::Kind::Client)
            .filter_map(|(id, c)| {
                let user = c.client.as_deref().and_then(|cl| self.conn_username(*id, cl));
                let hit = kick.iter().any(|k| match k {
                    Kick::Username(u) => user.as_deref() == Some(u.as_str()),
                    Kick::Anonymous => user.is_none(),
                });
                hit.then_some(*id)
            })
            .collect();
        for id in targets {
            info!("Client {} disconnected: its dynamic security client changed.", self.who(id));
            self.close_without_will(id, reason::ADMINISTRATIVE_ACTION, now);
        }
    }

    /// The user name connection `conn` of `client` logged in with.
    pub(super) fn conn_username(&self, conn: ConnId, client: &str) -> Option<String> {
        let pending = self.conns.get(&conn).and_then(|c| c.pending.as_ref());
        match pending {
            Some(p) => p.username.as_deref().map(str::to_string),
            None => self.state.sessions().get(client).and_then(|s| s.username.as_deref()).map(str::to_string),
        }
    }

    /// Publishes `payload` on [`RESPONSE_TOPIC`] as the plugin does: QoS 0,
    /// not retained, to every online subscriber of the topic that may read
    /// it (`mosquitto_ctrl` and scripts subscribe with another connection
    /// than the one that sends).
    fn send_dynsec_answer(&mut self, _client: &Rc<str>, payload: Vec<u8>, now: u64) {
        let msg = Message {
            topic: Rc::from(RESPONSE_TOPIC),
            payload: Rc::from(payload),
            qos: QoS::AtMostOnce,
            retain: false,
            props: None,
            expires_at_ms: None,
            origin: None,
        };
        let acl = self.read_acl();
        let targets = self.state.route(&msg, false, acl.check());
        for (target, mut d) in targets {
            if self.state.sessions().get(&target).is_some_and(|s| s.online) {
                d.qos = QoS::AtMostOnce;
                self.deliver(&target, None, &d, false, now);
            }
        }
    }
}

/// The answer payload: each item in request order, refusals from the item,
/// the others from `results` (one per change or read, in order).
fn responses(items: &[RequestItem], results: Vec<StepResult>) -> Vec<u8> {
    let mut out = Responses::new();
    let mut results = results.into_iter();
    for item in items {
        let result = match &item.action {
            ItemAction::Refuse(e) => Err(*e),
            _ => results.next().unwrap_or(Err(CommandError::INTERNAL_ERROR)),
        };
        out.push(&item.command, result, item.correlation_data.as_deref());
    }
    out.to_payload()
}

/// The answer without dynamic security: `{"responses":[{"command":NAME,
/// "error":...,"correlationData":...}]}`, one entry per command; "Unknown
/// command" when the request names none.
pub fn not_enabled_response(request: &[u8]) -> Vec<u8> {
    let mut responses = Vec::new();
    let limits = DynsecLimits::default();
    let parsed: Option<Value> =
        if request.len() <= limits.request_bytes_max as usize { serde_json::from_slice(request).ok() } else { None };
    let commands = parsed.as_ref().and_then(|v| v.get("commands")).and_then(Value::as_array);
    for c in commands.into_iter().flatten().take(COMMANDS_MAX_DISABLED) {
        // As the plugin does, entries that name no command are skipped.
        let Some(name) = c.get("command").and_then(Value::as_str) else { continue };
        let mut r = Map::new();
        r.insert("command".into(), name.into());
        r.insert("error".into(), NOT_ENABLED.into());
        if let Some(cd) = c.get("correlationData").and_then(Value::as_str) {
            r.insert("correlationData".into(), cd.into());
        }
        responses.push(Value::Object(r));
    }
    if responses.is_empty() {
        responses.push(json!({"command": UNKNOWN_COMMAND, "error": NOT_ENABLED}));
    }
    json!({ "responses": responses }).to_string().into_bytes()
}

/// A login against the dynamic-security data, as the plugin's basic-auth
/// callback answers it: Ok(true) accepted, Ok(false) deferred to the next
/// source, Err refused with the reason for the log.
pub(super) fn login(
    data: Option<&DynsecState>,
    username: Option<&str>,
    password: Option<&[u8]>,
    clientid: &str,
) -> Result<bool, &'static str> {
    let Some(data) = data else { return Ok(false) };
    match data.authenticate(username, password, clientid) {
        Ok(_) => Ok(true),
        Err(e) if e.is_defer() => Ok(false),
        Err(dynsec::AuthError::Disabled) => Err("dynamic security client disabled"),
        Err(dynsec::AuthError::ClientIdMismatch) => Err("dynamic security client bound to another client id"),
        Err(_) => Err("bad user name or password"),
    }
}
