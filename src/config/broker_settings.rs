//! The broker's `Settings` from a `Config`: the one place where the
//! configuration reaches the broker state machine (which does not import
//! `config`).

use std::rc::Rc;

use super::Config;
use super::ListenerFiles;
use crate::auth::acl::AclFile;
use crate::auth::password::PasswordFile;
use crate::broker::state::ApplyLimits;
use crate::broker::{ListenerRules, Settings};

impl Config {
    /// The broker's settings from this configuration, with the password
    /// and ACL files it names, already read (`Config::load`).
    pub fn broker_settings(&self, passwords: Option<PasswordFile>, acl: Option<AclFile>) -> Settings {
        let c = self;
        Settings {
            limits: c.limits.clone(),
            allow_anonymous: c.allow_anonymous,
            passwords,
            acl,
            listener_rules: Vec::new(),
            dynsec: c.dynsec_plugin,
            retain_available: c.retain_available,
            max_qos: c.max_qos,
            persistent_expiry_secs_max: c.persistent_client_expiration_secs.map(|s| s.min(u32::MAX as u64 - 1) as u32),
            sys_interval_secs: c.sys_interval_secs,
            connection_messages: c.connection_messages,
            allow_zero_length_clientid: c.allow_zero_length_clientid,
            auto_id_prefix: Rc::from(c.auto_id_prefix.as_str()),
            use_username_as_clientid: c.use_username_as_clientid,
            connect_timeout_ms: 10_000,
            version_string: Rc::from(format!("midge version {}", env!("CARGO_PKG_VERSION"))),
            apply: ApplyLimits {
                queued_messages_max: c.limits.queued_messages_max,
                queued_bytes_max: c.limits.queued_bytes_max,
                retained_messages_max: c.limits.retained_messages_max,
                queue_qos0_messages: c.queue_qos0_messages,
                upgrade_outgoing_qos: c.upgrade_outgoing_qos,
                bridges: c.bridges.iter().map(|b| b.out_route()).collect(),
            },
        }
    }

    /// With `per_listener_settings true`: each listener's own rules, with
    /// its files already read (`Loaded::listener_files`, one per listener),
    /// for `Settings::listener_rules`. Empty without it.
    pub fn listener_rules(&self, files: Vec<ListenerFiles>) -> Vec<Option<ListenerRules>> {
        if !self.per_listener_settings {
            return Vec::new();
        }
        let mut files = files.into_iter();
        self.listeners
            .iter()
            .map(|l| {
                let f = files.next().unwrap_or_default();
                l.auth.as_ref().map(|a| ListenerRules {
                    allow_anonymous: a.allow_anonymous,
                    passwords: f.passwords,
                    acl: f.acl,
                })
            })
            .collect()
    }
}
