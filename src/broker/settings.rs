//! What the broker state machine needs from the configuration, resolved
//! once at start by the caller (`Config::broker_settings`): the broker
//! never reads the config, a file or a certificate itself. Every bound
//! lives in `crate::limits::Limits`.

use std::rc::Rc;

use crate::auth::acl::{Access, AclFile};
use crate::auth::password::PasswordFile;
use crate::dynsec::{self, Decision, DynsecState};
use crate::limits::Limits;

use super::state::{AclCheck, ApplyLimits, ReadCheck};
use super::{Broker, ConnId, Kind, Phase};
use crate::mqtt::reason;

#[derive(Clone)]
pub struct Settings {
    pub limits: Limits,
    /// The broker-wide security options (`allow_anonymous`,
    /// `password_file`, `acl_file`): every listener's without
    /// `per_listener_settings true`; with it, those of the listeners that
    /// have none of their own (a default listener, `-p`) and of the admin
    /// listener.
    pub allow_anonymous: bool,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
    /// `per_listener_settings true`: one per configured listener (same
    /// index), its own rules or `None` for the broker-wide ones. Empty
    /// without `per_listener_settings true`.
    pub listener_rules: Vec<Option<ListenerRules>>,
    /// Dynamic security is on (`plugin .../mosquitto_dynamic_security.so`):
    /// its data, in the replicated state, is asked first.
    pub dynsec: bool,
    pub retain_available: bool,
    pub max_qos: u8,
    /// Caps the expiry of persistent sessions (persistent_client_expiration).
    pub persistent_expiry_secs_max: Option<u32>,
    pub sys_interval_secs: u32,
    pub connection_messages: bool,
    /// An empty client id is accepted (with clean session / clean start)
    /// and replaced by `auto_id_prefix` and a random part.
    pub allow_zero_length_clientid: bool,
    pub auto_id_prefix: Rc<str>,
    /// The username replaces the client id; a client without one is
    /// refused.
    pub use_username_as_clientid: bool,
    pub connect_timeout_ms: u64,
    pub version_string: Rc<str>,
    pub apply: ApplyLimits,
}

/// A listener's own security options (`per_listener_settings true`).
#[derive(Clone)]
pub struct ListenerRules {
    pub allow_anonymous: bool,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
}

/// Whose security rules apply to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScope {
    /// The broker-wide ones.
    Broker,
    /// Those of listener `i` (its index in the configuration), which has
    /// its own (`per_listener_settings true`).
    Listener(usize),
    /// With `per_listener_settings true`, a session whose client has not
    /// connected since this process started: which listener it used is
    /// kept in memory only. It gets only what the rules of every client
    /// listener allow (never more than those of the one it used).
    Unknown,
}

/// A new password and ACL file for listener `index`
/// (`Broker::reload_auth`); `None` keeps the one in force.
pub struct ListenerReload {
    pub index: usize,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
}

impl Settings {
    /// Whether `per_listener_settings true` is in force.
    pub fn per_listener(&self) -> bool {
        !self.listener_rules.is_empty()
    }

    /// The scope of a client of listener `listener` (its index; `None`: a
    /// listener not in the configuration, such as `-p`'s).
    pub fn listener_scope(&self, listener: Option<usize>) -> AuthScope {
        match listener {
            Some(i) if matches!(self.listener_rules.get(i), Some(Some(_))) => AuthScope::Listener(i),
            _ => AuthScope::Broker,
        }
    }

    /// `allow_anonymous` and the password file of `scope` (Broker or
    /// Listener; Unknown never logs in).
    pub fn login_rules(&self, scope: AuthScope) -> (bool, Option<&PasswordFile>) {
        match self.own_rules(scope) {
            Some(r) => (r.allow_anonymous, r.passwords.as_ref()),
            None => (self.allow_anonymous, self.passwords.as_ref()),
        }
    }

    fn own_rules(&self, scope: AuthScope) -> Option<&ListenerRules> {
        match scope {
            AuthScope::Listener(i) => self.listener_rules.get(i).and_then(|r| r.as_ref()),
            _ => None,
        }
    }

    fn acl_of(&self, scope: AuthScope) -> Option<&AclFile> {
        match self.own_rules(scope) {
            Some(r) => r.acl.as_ref(),
            None => self.acl.as_ref(),
        }
    }

    /// The scope of every client listener, for `AuthScope::Unknown`.
    fn every_scope(&self) -> impl Iterator<Item = AuthScope> + '_ {
        (0..self.listener_rules.len()).map(|i| self.listener_scope(Some(i)))
    }

    /// A delivery's check: `client`'s scope from `scopes` (the listener
    /// each client last connected on; see `AuthScope::Unknown`).
    pub fn read_allowed(
        &self,
        scopes: &ClientScopes,
        dynsec: Option<&DynsecState>,
        client: &str,
        user: Option<&str>,
        topic: &str,
    ) -> bool {
        let scope = match self.per_listener() {
            false => AuthScope::Broker,
            true => scopes.get(client).copied().unwrap_or(AuthScope::Unknown),
        };
        self.allowed(scope, dynsec, client, user, topic, Access::Read)
    }

    /// ACL check, in Mosquitto 2.0's order: dynamic security first (when
    /// on), then the acl_file of `scope`. Dynamic security without a
    /// decision defers to the acl_file, and without one denies. Without
    /// either everything is allowed. `dynsec` is the data (None: none
    /// imported yet).
    pub fn allowed(
        &self,
        scope: AuthScope,
        dynsec: Option<&DynsecState>,
        client: &str,
        user: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        if scope == AuthScope::Unknown {
            return self.every_scope().all(|s| self.allowed(s, dynsec, client, user, topic, access));
        }
        if self.dynsec {
            let kind = match access {
                Access::Read => dynsec::Access::PublishClientReceive,
                Access::Write => dynsec::Access::PublishClientSend,
                Access::Subscribe => dynsec::Access::Subscribe,
                Access::Unsubscribe => dynsec::Access::Unsubscribe,
            };
            // A shared subscription is checked by its topic filter.
            let subject = match access {
                Access::Subscribe | Access::Unsubscribe => match crate::mqtt::topic::parse_shared(topic) {
                    Ok(Some((_, f))) => f,
                    _ => topic,
                },
                _ => topic,
            };
            match dynsec.map_or(Decision::Defer, |d| d.check_user(user, subject, kind)) {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Defer => {}
            }
            return match self.acl_of(scope) {
                None => false,
                Some(a) => a.check(client, user, topic, access),
            };
        }
        match self.acl_of(scope) {
            None => true,
            Some(a) => a.check(client, user, topic, access),
        }
    }

    /// Whether any ACL source applies to any client (else `read_allowed`
    /// allows every read).
    pub fn reads_checked(&self) -> bool {
        // (Unknown: any listener's own rules.)
        self.has_acl(AuthScope::Broker) || self.has_acl(AuthScope::Unknown)
    }

    /// Whether any ACL source applies to `scope` (else every check allows).
    pub fn has_acl(&self, scope: AuthScope) -> bool {
        self.dynsec
            || match scope {
                AuthScope::Unknown => self.every_scope().any(|s| self.acl_of(s).is_some()),
                s => self.acl_of(s).is_some(),
            }
    }
}

/// A delivery's read check as the broker makes it (`Broker::read_acl`):
/// shared pointers to what `Settings::read_allowed` reads, so that the
/// broker's state can change while the check is in use.
pub struct ReadAcl {
    settings: Rc<Settings>,
    scopes: Rc<ClientScopes>,
    /// None: no dynamic-security data (or left out while a
    /// dynamic-security command changes it, see `apply_committed`).
    pub(super) dynsec: Option<Rc<DynsecState>>,
}

impl ReadCheck for ReadAcl {
    fn allows(&self, client: &str, user: Option<&str>, topic: &str) -> bool {
        self.settings.read_allowed(&self.scopes, self.dynsec.as_deref(), client, user, topic)
    }
}

impl ReadAcl {
    /// As an apply's or a route's check: None when no ACL source applies
    /// to any client, and every read is allowed.
    pub fn check(&self) -> AclCheck<'_> {
        self.settings.reads_checked().then_some(self)
    }
}

/// The scope of each client by its id: the listener it last connected on
/// (`per_listener_settings true` only). In memory: after a restart a
/// session is `AuthScope::Unknown` until its client connects again.
pub type ClientScopes = std::collections::BTreeMap<Rc<str>, AuthScope>;

impl Broker {
    /// The read check of deliveries made now.
    pub(super) fn read_acl(&self) -> ReadAcl {
        ReadAcl {
            settings: self.settings.clone(),
            scopes: self.client_scopes.clone(),
            dynsec: self.dynsec_data().cloned(),
        }
    }

    /// SIGHUP: new password and ACL files, as Mosquitto reloads them.
    /// `Some` replaces the file in force, `None` keeps it (the file did not
    /// parse, or none is configured). ACL changes apply from the next check
    /// (publish, subscribe, delivery). A connected client whose login no
    /// longer passes is disconnected (v5: DISCONNECT 0x98, administrative
    /// action; no will), and the count returned. The broker keeps no
    /// client's password, so "no longer passes" means: its user was removed
    /// from the password file, or its entry (the password hash) changed.
    /// With dynamic security, which is asked first, its own clients are
    /// left to it; the others logged in through the password file.
    ///
    /// `listeners`: the same for listeners with their own files
    /// (`per_listener_settings true`); a client is judged by the file of
    /// the listener it connected on.
    pub fn reload_auth(
        &mut self,
        passwords: Option<PasswordFile>,
        acl: Option<AclFile>,
        listeners: Vec<ListenerReload>,
        now: u64,
    ) -> usize {
        let before = self.settings.clone();
        let mut next = (*before).clone();
        if let Some(p) = passwords {
            next.passwords = Some(p);
        }
        if let Some(a) = acl {
            next.acl = Some(a);
        }
        for l in listeners {
            let Some(Some(r)) = next.listener_rules.get_mut(l.index) else { continue };
            if let Some(p) = l.passwords {
                r.passwords = Some(p);
            }
            if let Some(a) = l.acl {
                r.acl = Some(a);
            }
        }
        self.settings = Rc::new(next);
        let ds = self.dynsec_data().cloned();
        let targets: Vec<(ConnId, String)> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Connected | Phase::Connecting) && c.kind == Kind::Client)
            .filter_map(|(id, c)| {
                let scope = self.conn_scope(*id);
                let (Some(old), Some(new)) = (before.login_rules(scope).1, self.settings.login_rules(scope).1) else {
                    return None;
                };
                let user = c.client.as_deref().and_then(|cl| self.conn_username(*id, cl))?;
                let dynsec_client =
                    self.settings.dynsec && ds.as_deref().is_some_and(|d| d.clients.contains_key(&user));
                (!dynsec_client && !new.same_entry(old, &user)).then_some((*id, user))
            })
            .collect();
        for (id, user) in &targets {
            log::info!(
                "Client {} disconnected: user {user} was removed from the password file or its password changed.",
                self.who(*id)
            );
            self.close_without_will(*id, reason::ADMINISTRATIVE_ACTION, now);
        }
        targets.len()
    }
}
