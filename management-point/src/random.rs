//! Random bytes for secrets: target tokens, password salts, console sessions. A failure of the
//! system's generator is an error naming what was being made, never a secret of zeros that
//! every failed call would share.

use ring::error::Unspecified;

use crate::error::{Error, Result};

/// Fills `buf` from the system's generator, for `what` (named in the error).
pub fn fill(buf: &mut [u8], what: &str) -> Result<()> {
    fill_from(|b| ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), b), buf, what)
}

/// `bytes` random bytes as lowercase hex, for `what`.
pub fn hex(bytes: usize, what: &str) -> Result<String> {
    let mut b = vec![0u8; bytes];
    fill(&mut b, what)?;
    Ok(dm_shared::pki::to_hex(&b))
}

/// [`fill`] from `source` (a test gives one that fails).
fn fill_from(
    source: impl FnOnce(&mut [u8]) -> std::result::Result<(), Unspecified>,
    buf: &mut [u8],
    what: &str,
) -> Result<()> {
    source(buf).map_err(|_| Error::NoRandomness(what.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attack: a generator that fails (an early-boot or sandboxed getrandom) left the
    /// token zero-filled, so every device added then had the same, guessable token.
    #[test]
    fn a_failing_generator_is_an_error_never_a_token_of_zeros() {
        let mut b = [0u8; 24];
        let err = fill_from(|_| Err(Unspecified), &mut b, "a target token").unwrap_err();
        assert!(matches!(err, Error::NoRandomness(_)), "{err:?}");
        assert!(err.to_string().contains("a target token"), "{err}");
        assert_eq!(err.code(), dm_shared::StatusCode::E_FAIL);
        let a = hex(24, "a").unwrap();
        assert_eq!(a.len(), 48);
        assert_ne!(a, hex(24, "b").unwrap());
    }
}
