//! What the broker state machine needs from the configuration, resolved
//! once at start by the caller (`Config::broker_settings`): the broker
//! never reads the config, a file or a certificate itself. Every bound
//! lives in `crate::limits::Limits`.

use std::rc::Rc;

use crate::auth::acl::{Access, AclFile};
use crate::auth::password::PasswordFile;
use crate::limits::Limits;

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
    /// ACL check; without an acl_file everything is allowed.
    pub fn allowed(&self, client: &str, user: Option<&str>, topic: &str, access: Access) -> bool {
        match &self.acl {
            None => true,
            Some(a) => a.check(client, user, topic, access),
        }
    }
}
