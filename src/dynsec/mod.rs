//! Dynamic security, the way Mosquitto's `mosquitto_dynamic_security`
//! plugin (2.0) does it: clients, groups and roles with ACLs, the
//! `$CONTROL/dynamic-security/v1` API, the `dynamic-security.json` file,
//! logins and ACL checks.
//!
//! This module owns the data (`DynsecState`, replicated through raft) and
//! the pure functions over it. It must never do I/O, read a clock or draw
//! randomness: the salt of a new password and the file's text come from the
//! caller. How a request flows:
//!
//! 1. `parse_request` turns a payload into `RequestItem`s, each a read, a
//!    change or an immediate refusal.
//! 2. Changes (`DynsecChange`, versioned postcard) go through raft; every
//!    node runs `apply` on them in log order. Its `Applied::kick` lists the
//!    connections to close.
//! 3. Reads are answered by `answer_read` from the applied state, after the
//!    changes before them in the same request.
//! 4. `Responses` collects the answers in request order into the payload
//!    for `RESPONSE_TOPIC`.
//!
//! `run_request` does all four at once on a local state.

mod answer;
mod apply;
mod check;
mod command;
mod file;
mod index;
mod json_in;
mod json_out;
mod model;
mod password;
mod request;

#[cfg(test)]
mod tests_api;
#[cfg(test)]
mod tests_check;
#[cfg(test)]
mod tests_file;

pub use answer::{answer_read, Responses, RESPONSE_TOPIC};
pub use apply::{apply, Applied, Kick};
pub use check::{filter_covers, Access, AuthError, ClientRef, Decision};
pub use command::{errors, CommandError, DynsecChange, DynsecRead, ListParams, NameList};
pub use file::{export_json, import_json, ImportError, Imported};
pub use json_out::Json;
pub use model::{Acl, AclType, Client, DefaultAccess, DefaultAclType, DynsecState, Group, Membership, Role};
pub use password::{PasswordHash, HASH_BYTES, ITERATIONS_DEFAULT, SALT_BYTES};
pub use request::{parse_request, Action, DynsecLimits, RequestItem};

use serde::{Deserialize, Serialize};

/// The topic requests arrive on.
pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";

/// Version of the postcard forms of `DynsecState` and `DynsecChange`. Bump
/// it with any change to their fields or variants, and keep reading the old
/// one.
pub const DYNSEC_FORMAT_VERSION: u16 = 1;

/// Why stored dynamic-security bytes do not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Version(u16),
    Postcard(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Version(v) => {
                write!(f, "dynamic-security data has format version {v}, this midge reads {DYNSEC_FORMAT_VERSION}")
            }
            DecodeError::Postcard(e) => write!(f, "dynamic-security data does not decode: {e}"),
        }
    }
}

#[derive(Serialize)]
struct VersionedOut<'a, T> {
    version: u16,
    body: &'a T,
}

#[derive(Deserialize)]
struct VersionedIn<T> {
    #[allow(dead_code)] // checked before the body is decoded
    version: u16,
    body: T,
}

fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Serialising owned, in-memory data to a Vec cannot fail.
    postcard::to_allocvec(&VersionedOut { version: DYNSEC_FORMAT_VERSION, body }).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| DecodeError::Postcard(e.to_string()))?;
    if version != DYNSEC_FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let v: VersionedIn<T> = postcard::from_bytes(bytes).map_err(|e| DecodeError::Postcard(e.to_string()))?;
    Ok(v.body)
}

impl DynsecState {
    /// The state for a snapshot: postcard, led by `DYNSEC_FORMAT_VERSION`.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<DynsecState, DecodeError> {
        decode(bytes).map(|mut s: DynsecState| {
            s.reindex();
            s
        })
    }
}

impl DynsecChange {
    /// The change for a raft entry: postcard, led by `DYNSEC_FORMAT_VERSION`.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<DynsecChange, DecodeError> {
        decode(bytes)
    }
}

/// Runs a whole request against a local state: changes applied at once, in
/// order, reads answered after the changes before them. Returns the answer
/// payload and the connections to close. What a one-node setup or a test
/// does; a cluster splits the same steps around raft.
pub fn run_request(
    state: &mut DynsecState,
    payload: &[u8],
    limits: &DynsecLimits,
    hash_password: &mut dyn FnMut(&[u8]) -> PasswordHash,
) -> (Vec<u8>, Vec<Kick>) {
    let mut responses = Responses::new();
    let mut kick = Vec::new();
    for item in parse_request(payload, limits, hash_password) {
        let result = match &item.action {
            Action::Refuse(e) => Err(*e),
            Action::Read(r) => answer_read(state, r).map(Some),
            Action::Change(c) => apply(state, c).map(|a| {
                kick.extend(a.kick);
                None
            }),
        };
        responses.push(&item.command, result, item.correlation_data.as_deref());
    }
    kick.sort();
    kick.dedup();
    state.reindex();
    (responses.to_payload(), kick)
}
