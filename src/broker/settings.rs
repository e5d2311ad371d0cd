//! What the broker state machine needs from the configuration, resolved
//! once at start by the caller (`Config::broker_settings`): the broker
//! never reads the config, a file or a certificate itself. Every bound
//! lives in `crate::limits::Limits`.

use std::rc::Rc;

use crate::auth::acl::{Access, AclFile};
use crate::auth::password::PasswordFile;
use crate::dynsec::{self, Decision, DynsecState};
use crate::limits::Limits;

use super::state::ApplyLimits;
use super::{Broker, ConnId, Kind, Phase};
use crate::mqtt::reason;

#[derive(Clone)]
pub struct Settings {
    pub limits: Limits,
    pub allow_anonymous: bool,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
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

impl Settings {
    /// ACL check, in Mosquitto 2.0's order: dynamic security first (when
    /// on), then the acl_file. Dynamic security without a decision defers
    /// to the acl_file, and without one denies. Without either everything
    /// is allowed. `dynsec` is the data (None: none imported yet).
    pub fn allowed(
        &self,
        dynsec: Option<&DynsecState>,
        client: &str,
        user: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
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
            return match &self.acl {
                None => false,
                Some(a) => a.check(client, user, topic, access),
            };
        }
        match &self.acl {
            None => true,
            Some(a) => a.check(client, user, topic, access),
        }
    }

    /// Whether any ACL source is configured (else every check allows).
    pub fn has_acl(&self) -> bool {
        self.dynsec || self.acl.is_some()
    }
}

impl Broker {
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
    pub fn reload_auth(&mut self, passwords: Option<PasswordFile>, acl: Option<AclFile>, now: u64) -> usize {
        let before = self.settings.clone();
        let mut next = (*before).clone();
        if let Some(p) = passwords {
            next.passwords = Some(p);
        }
        if let Some(a) = acl {
            next.acl = Some(a);
        }
        self.settings = Rc::new(next);
        let (Some(old), Some(new)) = (&before.passwords, &self.settings.passwords) else { return 0 };
        let ds = self.dynsec_data().cloned();
        let targets: Vec<(ConnId, String)> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Connected | Phase::Connecting) && c.kind == Kind::Client)
            .filter_map(|(id, c)| {
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
