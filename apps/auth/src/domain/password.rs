//! Passwords: at least 8 characters, kept only as Argon2id hashes.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash as Phc;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// A password as typed: never logged, never stored.
pub struct Password(SecretString);

impl Password {
    /// The shortest password accepted.
    pub const MIN_LENGTH: usize = 8;

    /// Parses a password for registration (length rules apply).
    pub fn new(text: String) -> Result<Self, String> {
        let length = text.chars().count();
        if length < Self::MIN_LENGTH {
            return Err(format!("must be at least {} characters", Self::MIN_LENGTH));
        }
        if length > 256 {
            return Err("must be at most 256 characters".into());
        }
        Ok(Self(SecretString::from(text)))
    }

    /// Wraps a password given at login (no rules: it is only compared).
    pub fn attempt(text: String) -> Self {
        Self(SecretString::from(text))
    }

    /// Hashes with Argon2id and a random salt (CPU-heavy: call from a blocking task).
    pub fn hash(&self) -> anyhow::Result<PasswordHash> {
        let hash = Argon2::default()
            .hash_password(self.0.expose_secret().as_bytes())
            .map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))?;
        Ok(PasswordHash(hash.to_string()))
    }

    /// Whether this is the password `hash` was made from (CPU-heavy: call from a blocking task).
    pub fn matches(&self, hash: &PasswordHash) -> bool {
        Phc::new(&hash.0)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(self.0.expose_secret().as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// An Argon2id hash in PHC string format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused() {
        assert!(Password::new("short".into()).is_err());
        assert!(Password::new("long enough".into()).is_ok());
    }

    #[test]
    fn a_hash_matches_its_password_only() {
        let password = Password::new("correct horse".into()).expect("valid");
        let hash = password.hash().expect("hashes");
        assert!(hash.0.starts_with("$argon2id$"));
        assert!(password.matches(&hash));
        assert!(!Password::attempt("wrong horse".into()).matches(&hash));
    }
}
