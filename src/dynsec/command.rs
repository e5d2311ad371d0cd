//! The typed commands of `$CONTROL/dynamic-security/v1`: reads, answered
//! from the applied state, and changes, proposed to raft and applied on
//! every node by `apply`. A change carries everything `apply` needs (a new
//! password arrives already hashed), so applying it is deterministic.
//!
//! `DynsecChange` is part of the raft log: its variants and fields are
//! encoded by position with postcard. Only append variants; any other
//! change to this file bumps `DYNSEC_FORMAT_VERSION`.

use serde::{Deserialize, Serialize};

use super::model::{Acl, AclType, DefaultAclType, DynsecState, Membership};
use super::password::PasswordHash;

/// A list of roles (or groups) given in a command, checked against the
/// state when applied. None: the command had no such list. An entry is None
/// where the plugin finds the list malformed (not an array, an entry
/// without a string name), so the error surfaces in the plugin's order.
pub type NameList = Option<Vec<Option<Membership>>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DynsecRead {
    GetClient {
        username: String,
    },
    ListClients(ListParams),
    GetGroup {
        groupname: String,
    },
    ListGroups(ListParams),
    GetRole {
        rolename: String,
    },
    ListRoles(ListParams),
    GetAnonymousGroup,
    GetDefaultAclAccess,
    /// A command whose own fields are wrong but that the plugin checks for
    /// the role first (addRoleACL, removeRoleACL): "Role not found" if the
    /// role is missing, else `error`.
    RoleThenRefuse {
        rolename: String,
        error: CommandError,
    },
}

/// `verbose`, `count` and `offset` of the list commands, as the plugin
/// reads them (count -1: all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListParams {
    pub verbose: bool,
    pub count: i32,
    pub offset: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DynsecChange {
    CreateClient {
        username: String,
        password: Option<PasswordHash>,
        clientid: Option<String>,
        textname: Option<String>,
        textdescription: Option<String>,
        roles: NameList,
        /// Well-formed entries only (the plugin skips the others).
        groups: Vec<Membership>,
    },
    DeleteClient {
        username: String,
    },
    SetClientPassword {
        username: String,
        password: PasswordHash,
    },
    /// clientid None removes the binding.
    SetClientId {
        username: String,
        clientid: Option<String>,
    },
    ModifyClient {
        username: String,
        /// Some(None): remove the binding.
        clientid: Option<Option<String>>,
        password: Option<PasswordHash>,
        textname: Option<String>,
        textdescription: Option<String>,
        roles: NameList,
        /// Replaces the client's groups when Some; None entries are objects
        /// without a string "groupname".
        groups: NameList,
    },
    EnableClient {
        username: String,
    },
    DisableClient {
        username: String,
    },
    AddClientRole {
        username: String,
        rolename: String,
        priority: i32,
    },
    RemoveClientRole {
        username: String,
        rolename: String,
    },
    CreateGroup {
        groupname: String,
        textname: Option<String>,
        textdescription: Option<String>,
        roles: NameList,
    },
    DeleteGroup {
        groupname: String,
    },
    ModifyGroup {
        groupname: String,
        textname: Option<String>,
        textdescription: Option<String>,
        roles: NameList,
        /// Replaces the group's clients when Some; None entries are objects
        /// without a string "username".
        clients: NameList,
    },
    AddGroupClient {
        username: String,
        groupname: String,
        priority: i32,
    },
    RemoveGroupClient {
        username: String,
        groupname: String,
    },
    AddGroupRole {
        groupname: String,
        rolename: String,
        priority: i32,
    },
    RemoveGroupRole {
        groupname: String,
        rolename: String,
    },
    SetAnonymousGroup {
        groupname: String,
    },
    CreateRole {
        rolename: String,
        textname: Option<String>,
        textdescription: Option<String>,
        acls: Vec<Acl>,
    },
    DeleteRole {
        rolename: String,
    },
    ModifyRole {
        rolename: String,
        textname: Option<String>,
        textdescription: Option<String>,
        acls: Option<Vec<Acl>>,
    },
    AddRoleAcl {
        rolename: String,
        acl: Acl,
    },
    RemoveRoleAcl {
        rolename: String,
        acl_type: AclType,
        topic: String,
    },
    SetDefaultAclAccess {
        acls: Vec<(DefaultAclType, bool)>,
    },
    /// Replaces everything: the import of a `dynamic-security.json` when the
    /// replicated state holds none yet.
    Import(Box<DynsecState>),
}

impl DynsecChange {
    /// The command name answered for this change.
    pub fn command_name(&self) -> &'static str {
        use DynsecChange::*;
        match self {
            CreateClient { .. } => "createClient",
            DeleteClient { .. } => "deleteClient",
            SetClientPassword { .. } => "setClientPassword",
            SetClientId { .. } => "setClientId",
            ModifyClient { .. } => "modifyClient",
            EnableClient { .. } => "enableClient",
            DisableClient { .. } => "disableClient",
            AddClientRole { .. } => "addClientRole",
            RemoveClientRole { .. } => "removeClientRole",
            CreateGroup { .. } => "createGroup",
            DeleteGroup { .. } => "deleteGroup",
            ModifyGroup { .. } => "modifyGroup",
            AddGroupClient { .. } => "addGroupClient",
            RemoveGroupClient { .. } => "removeGroupClient",
            AddGroupRole { .. } => "addGroupRole",
            RemoveGroupRole { .. } => "removeGroupRole",
            SetAnonymousGroup { .. } => "setAnonymousGroup",
            CreateRole { .. } => "createRole",
            DeleteRole { .. } => "deleteRole",
            ModifyRole { .. } => "modifyRole",
            AddRoleAcl { .. } => "addRoleACL",
            RemoveRoleAcl { .. } => "removeRoleACL",
            SetDefaultAclAccess { .. } => "setDefaultACLAccess",
            Import(_) => "import",
        }
    }
}

/// A refused command, with the plugin's error text (see `as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandError(&'static str);

impl CommandError {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// Only the known texts come back; anything else (a corrupted entry) reads
/// as "Internal error".
impl<'de> Deserialize<'de> for CommandError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(CommandError(errors::ALL.iter().copied().find(|e| *e == s).unwrap_or(errors::INTERNAL_ERROR)))
    }
}

/// The plugin's error texts, verbatim.
pub mod errors {
    use super::CommandError;

    macro_rules! texts {
        ($($name:ident = $text:literal;)*) => {
            $(pub const $name: &str = $text;)*
            pub(crate) const ALL: &[&str] = &[$($text),*];
            impl CommandError {
                $(pub const $name: CommandError = CommandError($text);)*
            }
        };
    }

    texts! {
        INTERNAL_ERROR = "Internal error";
        PAYLOAD_NOT_JSON = "Payload not valid JSON";
        INVALID_COMMANDS = "Invalid/missing commands";
        MISSING_COMMAND = "Missing command";
        NOT_AN_OBJECT = "Command not an object";
        UNKNOWN_COMMAND = "Unknown command";
        INVALID_CORRELATION = "Invalid correlationData data type.";
        INVALID_USERNAME = "Invalid/missing username";
        USERNAME_UTF8 = "Username not valid UTF-8";
        INVALID_PASSWORD = "Invalid/missing password";
        EMPTY_PASSWORD = "Empty password is not allowed";
        INVALID_CLIENT_ID_CREATE = "Invalid/missing client id";
        INVALID_CLIENT_ID = "Invalid/missing client ID";
        CLIENT_ID_UTF8 = "Client ID not valid UTF-8";
        INVALID_TEXTNAME = "Invalid/missing textname";
        INVALID_TEXTDESCRIPTION = "Invalid/missing textdescription";
        INVALID_GROUPNAME = "Invalid/missing groupname";
        GROUPNAME_UTF8 = "Group name not valid UTF-8";
        INVALID_ROLENAME = "Invalid/missing rolename";
        ROLENAME_UTF8 = "Role name not valid UTF-8";
        INVALID_ACLTYPE = "Invalid/missing acltype";
        UNKNOWN_ACLTYPE = "Unknown acltype";
        INVALID_TOPIC = "Invalid/missing topic";
        TOPIC_UTF8 = "Topic not valid UTF-8";
        INVALID_ACL_TOPIC = "Invalid ACL topic";
        INVALID_ACTIONS = "Missing/invalid actions array";
        ROLES_INVALID = "'roles' not an array or missing/invalid rolename";
        GROUPS_INVALID_NAME = "'groups' contains an object with an invalid 'groupname'";
        GROUPS_UNKNOWN = "'groups' contains an object with a 'groupname' that does not exist";
        CLIENTS_INVALID_NAME = "'clients' contains an object with an invalid 'username'";
        CLIENTS_UNKNOWN = "'clients' contains an object with a 'username' that does not exist";
        CLIENT_EXISTS = "Client already exists";
        CLIENT_NOT_FOUND = "Client not found";
        GROUP_EXISTS = "Group already exists";
        GROUP_NOT_FOUND = "Group not found";
        ROLE_EXISTS = "Role already exists";
        ROLE_NOT_FOUND = "Role not found";
        ROLE_DOES_NOT_EXIST = "Role does not exist";
        GROUP_HAS_ROLE = "Group is already in this role";
        CLIENT_IN_GROUP = "Client is already in this group";
        ACL_EXISTS = "ACL with this topic already exists";
        ACL_NOT_FOUND = "ACL not found";
        DELETE_ANONYMOUS_GROUP = "Deleting the anonymous group is forbidden";
        REQUEST_TOO_LARGE = "Request too large";
        TOO_MANY_COMMANDS = "Too many commands in one request";
        // midge's own: more requests wait for the cluster than it holds.
        PENDING_FULL = "Too many dynamic security requests pending, try again later";
        // midge's own: a request that reached the cluster before the
        // dynamic-security file was imported.
        NOT_LOADED = "Dynamic security data is not loaded yet, try again";
        // midge's own (dynsec_sync): the cluster group did not commit the
        // change in time. It may still apply if the cluster recovers.
        NO_QUORUM = "The cluster has no quorum: the change was not confirmed in time (it applies only if the cluster commits it later)";
    }
}
