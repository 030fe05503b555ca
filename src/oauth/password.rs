//! Password hashing for `[[oauth.users]]`: argon2id PHC strings made by
//! `mssql-mcp hash-password`, verified in constant time by the argon2 crate.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngExt;

/// Hashes a password with argon2id (19 MiB, 2 passes: the OWASP baseline).
pub fn hash(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a random password nobody knows, made once: verified against when the username
/// is unknown, so an unknown name takes as long as a wrong password.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let secret: [u8; 16] = rand::rng().random();
            hash(&super::hex(&secret)).ok()
        })
        .as_deref()
}

/// Whether `password` matches `phc` (an argon2id PHC string). `None` checks against a dummy
/// hash and always fails, taking the same time.
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    let known = phc.is_some();
    let phc: &str = match phc {
        Some(p) => p,
        None => match dummy_hash() {
            Some(d) => d,
            None => return false,
        },
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("correct horsf", Some(&h)));
    }

    #[test]
    fn an_unknown_user_never_verifies() {
        assert!(dummy_hash().is_some_and(|h| PasswordHash::new(h).is_ok()));
        assert!(!verify("", None));
        assert!(!verify("anything", None));
    }
}
