//! Administrators' passwords: stored as Argon2id PHC strings, checked against them, and
//! fingerprinted for the server's view (a session lasts while its administrator's password
//! hash is the one they logged in with).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// What the console's view keeps of a password hash: enough to see it changed, nothing to
/// guess from.
pub fn password_fingerprint(hash: &str) -> String {
    dm_shared::pki::sha256_hex(hash.as_bytes())
}

/// A new password hash: Argon2id with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> crate::Result<String> {
    let mut salt = [0u8; 16];
    crate::random::fill(&mut salt, "a password salt")?;
    let bad = |e: argon2::password_hash::Error| {
        crate::Error::Usage(format!("the password cannot be hashed: {e}"))
    };
    let salt = SaltString::encode_b64(&salt).map_err(bad)?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(bad)
}

/// Whether `password` matches the PHC string `hash`.
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}
