//! Mosquitto password files, as written by `mosquitto_passwd`.
//!
//! One `username:hash` entry per line; blank lines and lines starting with
//! `#` are ignored. Two hash formats are accepted:
//!
//! * `$7$ITERATIONS$SALT$HASH` — mosquitto_passwd 2.x default:
//!   PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash, 101 iterations by default.
//! * `$6$SALT$HASH` — mosquitto_passwd 1.x / `-H sha512`:
//!   SHA-512(password ‖ salt).
//!
//! SALT and HASH are standard base64 with padding. Plain-text passwords (the
//! format of a Mosquitto built without TLS) are rejected.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha512};

use crate::config::{numbered_lines, read_text, ConfigError, ConfigErrors};

const HASH_BYTES: usize = 64;
/// mosquitto_passwd's default PBKDF2 iteration count; used for the dummy
/// derivation that keeps unknown user names from answering faster.
const DEFAULT_ITERATIONS: u32 = 101;

#[derive(Clone, PartialEq)]
enum Hash {
    Pbkdf2Sha512 { iterations: u32, salt: Vec<u8>, hash: [u8; HASH_BYTES] },
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_BYTES] },
}

impl Hash {
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Pbkdf2Sha512 { iterations, salt, hash } => {
                let mut out = [0u8; HASH_BYTES];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                constant_time_eq(&out, hash)
            }
            Hash::Sha512 { salt, hash } => {
                let out = Sha512::new().chain_update(password).chain_update(salt).finalize();
                constant_time_eq(&out, hash)
            }
        }
    }
}

/// Compares equal-length byte strings without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The users and password hashes of a Mosquitto password file.
#[derive(Clone)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

impl fmt::Debug for PasswordFile {
    /// Lists the user names only, never the hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("PasswordFile").field("users", &names).finish()
    }
}

impl PasswordFile {
    /// Reads a password file. Errors name the file as given and the line.
    pub fn load(path: &Path) -> Result<PasswordFile, ConfigErrors> {
        let name = path.display().to_string();
        let text = read_text(path, &name)?;
        PasswordFile::parse_str(&text, &name)
    }

    /// Parses password file text; `file_name` is used in error messages.
    /// Every line in error is reported.
    pub fn parse_str(text: &str, file_name: &str) -> Result<PasswordFile, ConfigErrors> {
        let mut users = HashMap::new();
        let mut lines: HashMap<String, u32> = HashMap::new();
        let mut errors = Vec::new();
        for (line, raw) in numbered_lines(text) {
            let entry = raw.trim_end();
            if entry.trim_start().is_empty() || entry.trim_start().starts_with('#') {
                continue;
            }
            let err = |msg: String| ConfigError::new(file_name, line, msg);
            let Some((user, hash)) = entry.split_once(':') else {
                errors.push(err("expected username:hash (create entries with mosquitto_passwd)".into()));
                continue;
            };
            if user.is_empty() {
                errors.push(err("empty username".into()));
                continue;
            }
            if let Some(first) = lines.insert(user.to_string(), line) {
                errors.push(err(format!("duplicate user \"{user}\" (already defined on line {first})")));
                continue;
            }
            match parse_hash(hash) {
                Ok(hash) => {
                    users.insert(user.to_string(), hash);
                }
                Err(m) => errors.push(err(format!("user \"{user}\": {m}"))),
            }
        }
        ConfigErrors::check(PasswordFile { users }, errors)
    }

    /// Whether `password` is `username`'s password. The derived hash is
    /// compared in constant time, and an unknown user costs the same key
    /// derivation as a known one.
    pub fn check(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                let dummy =
                    Hash::Pbkdf2Sha512 { iterations: DEFAULT_ITERATIONS, salt: vec![0; 12], hash: [0; HASH_BYTES] };
                let _ = dummy.verify(password);
                false
            }
        }
    }

    /// Whether the file has an entry for `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Whether `username` has the same entry in both files (or none in
    /// either): on reload, a changed entry means a changed password.
    pub fn same_entry(&self, other: &PasswordFile, username: &str) -> bool {
        self.users.get(username) == other.users.get(username)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn parse_hash(s: &str) -> Result<Hash, String> {
    let unsupported = || {
        "unsupported password format (expected $7$... or $6$... as written by \
         mosquitto_passwd; plain-text passwords are not supported)"
            .to_string()
    };
    let fields: Vec<&str> = s.split('$').collect();
    match fields.as_slice() {
        ["", "7", iterations, salt, hash] => {
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0 && iterations.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("\"{iterations}\" is not a valid iteration count"))?;
            Ok(Hash::Pbkdf2Sha512 { iterations, salt: decode_salt(salt)?, hash: decode_hash(hash)? })
        }
        ["", "6", salt, hash] => Ok(Hash::Sha512 { salt: decode_salt(salt)?, hash: decode_hash(hash)? }),
        ["", "7", ..] | ["", "6", ..] => Err("malformed password hash".into()),
        _ => Err(unsupported()),
    }
}

fn decode_salt(s: &str) -> Result<Vec<u8>, String> {
    match STANDARD.decode(s) {
        Ok(salt) if !salt.is_empty() => Ok(salt),
        Ok(_) => Err("empty salt".into()),
        Err(_) => Err("salt is not valid base64".into()),
    }
}

fn decode_hash(s: &str) -> Result<[u8; HASH_BYTES], String> {
    let bytes = STANDARD.decode(s).map_err(|_| "hash is not valid base64".to_string())?;
    <[u8; HASH_BYTES]>::try_from(bytes.as_slice())
        .map_err(|_| format!("hash is {} bytes, expected {HASH_BYTES}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd` 2.0.11 (Debian 12); see `FIXTURE_USERS`.
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/passwd");
    /// The plain-text passwords of the fixture's entries. `legacy` was made
    /// with `-H sha512` (the `$6$` format).
    const FIXTURE_USERS: &[(&str, &str)] = &[
        ("alice", "correct horse"),
        ("bob", "s3cr3t!"),
        ("carol smith", "pässwörd ünïcode"),
        ("legacy", "old-style"),
        ("empty", ""),
    ];

    fn fixture() -> PasswordFile {
        PasswordFile::load(Path::new(FIXTURE)).expect("fixture loads")
    }

    #[test]
    fn real_mosquitto_passwd_file_accepts_right_passwords() {
        let pw = fixture();
        assert_eq!(pw.len(), FIXTURE_USERS.len());
        assert!(!pw.is_empty());
        for (user, pass) in FIXTURE_USERS {
            assert!(pw.contains(user), "{user}");
            assert!(pw.check(user, pass.as_bytes()), "{user} should accept its password");
        }
    }

    #[test]
    fn real_mosquitto_passwd_file_rejects_wrong_passwords() {
        let pw = fixture();
        for (user, pass) in FIXTURE_USERS {
            let mut wrong = pass.as_bytes().to_vec();
            wrong.push(b'x');
            assert!(!pw.check(user, &wrong), "{user}: appended byte");
            assert!(!pw.check(user, b"CORRECT HORSE"), "{user}: other password");
            if !pass.is_empty() {
                assert!(!pw.check(user, b""), "{user}: empty password");
                assert!(!pw.check(user, &pass.as_bytes()[1..]), "{user}: truncated");
            }
        }
        // Another user's password does not work.
        assert!(!pw.check("alice", b"s3cr3t!"));
        assert!(!pw.check("bob", b"correct horse"));
        // Unknown users and case differences are rejected.
        assert!(!pw.check("mallory", b"correct horse"));
        assert!(!pw.check("Alice", b"correct horse"));
        assert!(!pw.check("", b""));
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        let mut edited = String::from("\u{feff}# users\r\n\r\n   \r\n");
        for l in text.lines() {
            edited.push_str(l);
            edited.push_str("  \r\n");
        }
        edited.push_str("# trailing comment\n");
        let pw = PasswordFile::parse_str(&edited, "passwd").unwrap();
        assert_eq!(pw.len(), FIXTURE_USERS.len());
        assert!(pw.check("alice", b"correct horse"));
    }

    #[test]
    fn debug_output_has_no_hashes() {
        let s = format!("{:?}", fixture());
        assert!(s.contains("alice"));
        assert!(!s.contains('$'));
    }

    fn err(text: &str) -> String {
        PasswordFile::parse_str(text, "pw").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_and_line() {
        let good = "alice:$7$101$KAZaJ8e0rlvrnHhs$WqyS+cgYxx0p0KHImPdlW5KXCYcnWVa27JsPqFFCyJMA10ggSo94ATw7QFaeRJcKw/fOcg+4pWktmK0bjPzt7w==";
        assert!(PasswordFile::parse_str(good, "pw").is_ok());
        assert_eq!(err("# c\nbob"), "pw:2: expected username:hash (create entries with mosquitto_passwd)");
        assert!(err("bob:plaintext").starts_with("pw:1: user \"bob\": unsupported password format"));
        assert_eq!(err(":$6$AAAA$BBBB"), "pw:1: empty username");
        assert_eq!(err(&format!("{good}\n{good}")), "pw:2: duplicate user \"alice\" (already defined on line 1)");
        let bad_iter = good.replace("$101$", "$0$");
        assert_eq!(err(&bad_iter), "pw:1: user \"alice\": \"0\" is not a valid iteration count");
        assert_eq!(err(&good.replace("$101$", "$x1$")), "pw:1: user \"alice\": \"x1\" is not a valid iteration count");
        assert_eq!(err(&good.replace("KAZaJ8e0rlvrnHhs", "!!")), "pw:1: user \"alice\": salt is not valid base64");
        assert_eq!(err("u:$6$AAAA$AAAA"), "pw:1: user \"u\": hash is 3 bytes, expected 64");
        assert_eq!(err("u:$7$101$AAAA"), "pw:1: user \"u\": malformed password hash");
        assert_eq!(err("u:$5$AAAA$AAAA").split(':').nth(1), Some("1"));
    }

    #[test]
    fn load_missing_file_names_it() {
        let e = PasswordFile::load(Path::new("/nonexistent/passwd")).unwrap_err().0.remove(0);
        assert_eq!(e.file, "/nonexistent/passwd");
        assert_eq!(e.line, 0);
        assert!(e.to_string().starts_with("/nonexistent/passwd: cannot read:"));
    }

    #[test]
    fn loads_from_a_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::copy(FIXTURE, &path).unwrap();
        assert!(PasswordFile::load(&path).unwrap().check("bob", b"s3cr3t!"));
    }
}
