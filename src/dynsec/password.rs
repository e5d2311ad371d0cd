//! Client passwords as the dynamic-security plugin keeps them:
//! PBKDF2-HMAC-SHA512 with a 12-byte salt and a 64-byte hash, stored in the
//! file as standard base64 with the iteration count beside them. The salt of
//! a new password comes from the caller: nothing here draws randomness.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Sha512;

/// Salt length of the plugin (`SALT_LEN`); it refuses other lengths.
pub const SALT_BYTES: usize = 12;
/// Hash length (SHA-512 output).
pub const HASH_BYTES: usize = 64;
/// The plugin's iteration count for new passwords (`PW_DEFAULT_ITERATIONS`).
pub const ITERATIONS_DEFAULT: u32 = 101;

/// A derived password. Lengths are checked where one is built, so `verify`
/// compares like with like.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    salt: Vec<u8>,
    hash: Vec<u8>,
    iterations: u32,
}

impl std::fmt::Debug for PasswordHash {
    /// Never shows the salt or the hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordHash(pbkdf2-sha512, {} iterations)", self.iterations)
    }
}

impl PasswordHash {
    /// Derives the hash of `password` with `salt` and `iterations`
    /// (at least 1; 0 is taken as 1).
    pub fn new(password: &[u8], salt: [u8; SALT_BYTES], iterations: u32) -> PasswordHash {
        let iterations = iterations.max(1);
        let mut hash = vec![0u8; HASH_BYTES];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        PasswordHash { salt: salt.to_vec(), hash, iterations }
    }

    /// From the file's base64 "salt" and "password" and its "iterations";
    /// None where the plugin would drop the client (bad base64, a salt not
    /// of 12 bytes, a hash not of 64, fewer than 1 iteration).
    pub fn from_base64(salt: &str, hash: &str, iterations: i64) -> Option<PasswordHash> {
        let iterations = u32::try_from(iterations).ok().filter(|&n| n >= 1)?;
        let salt = STANDARD.decode(salt).ok().filter(|s| s.len() == SALT_BYTES)?;
        let hash = STANDARD.decode(hash).ok().filter(|h| h.len() == HASH_BYTES)?;
        Some(PasswordHash { salt, hash, iterations })
    }

    pub fn salt_base64(&self) -> String {
        STANDARD.encode(&self.salt)
    }

    pub fn hash_base64(&self) -> String {
        STANDARD.encode(&self.hash)
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Whether `password` derives to this hash; compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        if self.hash.len() != HASH_BYTES || self.iterations == 0 {
            return false; // only reachable from a corrupted snapshot
        }
        let mut out = [0u8; HASH_BYTES];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &self.salt, self.iterations, &mut out);
        let diff = out.iter().zip(&self.hash).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_hash_verifies_and_round_trips_base64() {
        let h = PasswordHash::new(b"pw", [7; SALT_BYTES], ITERATIONS_DEFAULT);
        assert!(h.verify(b"pw"));
        assert!(!h.verify(b"pw "));
        assert!(!h.verify(b""));
        let back = PasswordHash::from_base64(&h.salt_base64(), &h.hash_base64(), 101).unwrap();
        assert_eq!(back, h);
        assert!(!format!("{h:?}").contains(&h.salt_base64()));
    }

    #[test]
    fn other_salt_or_iterations_give_another_hash() {
        let a = PasswordHash::new(b"pw", [1; SALT_BYTES], 101);
        assert_ne!(a, PasswordHash::new(b"pw", [2; SALT_BYTES], 101));
        assert_ne!(a, PasswordHash::new(b"pw", [1; SALT_BYTES], 102));
        assert_eq!(PasswordHash::new(b"pw", [1; SALT_BYTES], 0).iterations(), 1);
    }

    /// Time of one derivation (what a login with a password costs) at 101,
    /// 1,000 and 10,000 iterations, printed; asserts nothing. Not run by
    /// default:
    ///   cargo test --release --lib derivation_cost -- --ignored --nocapture
    /// (for armv7: build with `--target armv7-unknown-linux-gnueabihf
    /// --profile gateway --no-run`, run the binary under qemu-arm-static).
    #[test]
    #[ignore]
    fn derivation_cost() {
        for iterations in [ITERATIONS_DEFAULT, 1_000, 10_000] {
            // At least 3 derivations and 1 s, at most 100,000 derivations or 30 s.
            let start = std::time::Instant::now();
            let mut n = 0u32;
            while n < 100_000 {
                let h = PasswordHash::new(std::hint::black_box(b"benchpass"), [n as u8; SALT_BYTES], iterations);
                std::hint::black_box(h);
                n += 1;
                let t = start.elapsed().as_secs_f64();
                if (n >= 3 && t >= 1.0) || t >= 30.0 {
                    break;
                }
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            println!(
                "pbkdf2-sha512 {iterations:>6} iterations: {us:>10.1} us per derivation, {:.3} us per iteration ({n} derivations)",
                us / f64::from(iterations)
            );
        }
    }

    #[test]
    fn file_fields_are_checked_like_the_plugin() {
        let h = PasswordHash::new(b"pw", [3; SALT_BYTES], 101);
        let (s, p) = (h.salt_base64(), h.hash_base64());
        assert!(PasswordHash::from_base64(&s, &p, 0).is_none());
        assert!(PasswordHash::from_base64(&s, &p, -5).is_none());
        assert!(PasswordHash::from_base64(&s, &p, i64::from(u32::MAX) + 1).is_none());
        assert!(PasswordHash::from_base64("AAAA", &p, 101).is_none(), "3-byte salt");
        assert!(PasswordHash::from_base64(&s, "AAAA", 101).is_none(), "3-byte hash");
        assert!(PasswordHash::from_base64("!!", &p, 101).is_none());
    }
}
