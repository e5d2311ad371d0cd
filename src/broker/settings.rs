//! What the broker state machine needs from the configuration, resolved
//! once at start. Every bound lives in `crate::config::Limits`.

use std::rc::Rc;

use crate::auth::acl::{Access, AclFile};
use crate::auth::password::PasswordFile;
use crate::config::{Config, Limits};

use super::state::ApplyLimits;

pub struct Settings {
    pub limits: Limits,
    pub allow_anonymous: bool,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<AclFile>,
    pub retain_available: bool,
    pub max_qos: u8,
    /// Caps the expiry of persistent sessions (persistent_client_expiration).
    pub persistent_expiry_secs_max: Option<u32>,
    pub sys_interval_secs: u32,
    pub connection_messages: bool,
    pub connect_timeout_ms: u64,
    pub version_string: Rc<str>,
    pub apply: ApplyLimits,
}

impl Settings {
    pub fn from_config(c: &Config, passwords: Option<PasswordFile>, acl: Option<AclFile>) -> Settings {
        Settings {
            limits: c.limits.clone(),
            allow_anonymous: c.allow_anonymous,
            passwords,
            acl,
            retain_available: c.retain_available,
            max_qos: c.max_qos,
            persistent_expiry_secs_max: c.persistent_client_expiration_secs.map(|s| s.min(u32::MAX as u64 - 1) as u32),
            sys_interval_secs: c.sys_interval_secs,
            connection_messages: c.connection_messages,
            connect_timeout_ms: 10_000,
            version_string: Rc::from(format!("midge version {}", env!("CARGO_PKG_VERSION"))),
            apply: ApplyLimits {
                queued_messages_max: c.limits.queued_messages_max,
                queued_bytes_max: c.limits.queued_bytes_max,
                retained_messages_max: c.limits.retained_messages_max,
                queue_qos0_messages: c.queue_qos0_messages,
                upgrade_outgoing_qos: c.upgrade_outgoing_qos,
            },
        }
    }

    /// ACL check; without an acl_file everything is allowed.
    pub fn allowed(&self, client: &str, user: Option<&str>, topic: &str, access: Access) -> bool {
        match &self.acl {
            None => true,
            Some(a) => a.check(client, user, topic, access),
        }
    }
}
