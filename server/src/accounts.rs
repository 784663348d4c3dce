//! The credentials of a person: passphrase strength, Argon2id hashing and the TOTP second
//! factor (RFC 6238), and the random secrets of enrolment codes and console sessions.
//!
//! - Strength: at least `accounts.passphrase_min_length` characters and a zxcvbn score of at
//!   least `accounts.passphrase_min_score` (0–4; default 3, "safely unguessable: moderate
//!   protection from offline slow-hash scenario"). zxcvbn ships its own dictionaries of common
//!   passwords, names, English words and keyboard patterns, and is given the account's name
//!   and "sigil" as words an attacker would try first.
//! - Hashing: Argon2id v1.3 with `accounts.argon2_memory_kib` (default 65536 KiB = 64 MiB),
//!   `accounts.argon2_iterations` (default 3) and one lane, a random 16-byte salt, stored as
//!   a PHC string (the parameters travel with each hash, so they can be raised later without
//!   invalidating old hashes). These defaults cost a few hundred milliseconds per login on
//!   one core (BENCHMARKS.md); the OWASP minimum for Argon2id is 19 MiB with 2 iterations.
//! - TOTP: SHA-1, 6 digits, 30-second steps (what every authenticator app supports), a
//!   160-bit random secret; codes of the previous, current and next step are accepted, and a
//!   step once accepted is never accepted again for the same person (no replay).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// TOTP step length in seconds.
pub const TOTP_STEP: u64 = 30;
/// TOTP digits.
pub const TOTP_DIGITS: usize = 6;
/// TOTP secret length in bytes (160 bits, RFC 4226's recommendation).
pub const TOTP_SECRET_LEN: usize = 20;
/// The issuer shown by authenticator apps.
pub const TOTP_ISSUER: &str = "Sigil";

/// Why a passphrase, hash or code was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The passphrase is too short or too easy to guess.
    #[error("{0}")]
    Weak(String),
    /// The Argon2 parameters are out of range.
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed.
    #[error("cannot hash the passphrase: {0}")]
    Hash(String),
    /// A stored TOTP secret is unusable.
    #[error("stored TOTP secret is invalid: {0}")]
    Totp(String),
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations (time cost).
    pub iterations: u32,
}

/// Checks a passphrase's length and zxcvbn score; the message says how to do better.
pub fn check_strength(
    passphrase: &str,
    user_inputs: &[&str],
    min_length: usize,
    min_score: u8,
) -> Result<(), CredentialError> {
    let length = passphrase.chars().count();
    if length < min_length {
        return Err(CredentialError::Weak(format!(
            "the passphrase must be at least {min_length} characters (it has {length})"
        )));
    }
    if length > 1024 {
        return Err(CredentialError::Weak(
            "the passphrase must be at most 1024 characters".to_owned(),
        ));
    }
    let entropy = zxcvbn::zxcvbn(passphrase, user_inputs);
    let score = u8::from(entropy.score());
    if score < min_score {
        let mut message = format!(
            "the passphrase is too easy to guess (strength {score} of 4, at least {min_score} needed)"
        );
        if let Some(feedback) = entropy.feedback() {
            if let Some(w) = feedback.warning() {
                message.push_str(&format!(": {w}"));
            }
            for s in feedback.suggestions() {
                message.push_str(&format!(" {s}"));
            }
        }
        return Err(CredentialError::Weak(message));
    }
    Ok(())
}

fn argon2(cost: HashCost) -> Result<Argon2<'static>, CredentialError> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|e| CredentialError::Params(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks Argon2 parameters (at start-up).
pub fn check_cost(cost: HashCost) -> Result<(), CredentialError> {
    argon2(cost).map(|_| ())
}

/// The Argon2id PHC string of a passphrase, with a fresh salt.
pub fn hash_passphrase(passphrase: &str, cost: HashCost) -> Result<String, CredentialError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(cost)?
        .hash_password(passphrase.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Whether `passphrase` matches a stored PHC string (with the parameters it names). A
/// malformed stored hash matches nothing.
pub fn verify_passphrase(passphrase: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(passphrase.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A PHC string to verify against when the account is unknown or has no passphrase, so that
/// a failed login costs the same either way (no timing oracle for account names): made once
/// per process, at the first `cost` asked for (the configuration's).
pub fn dummy_hash(cost: HashCost) -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_passphrase("no account has this passphrase", cost).unwrap_or_default())
}

/// A new random TOTP secret.
pub fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; TOTP_SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8]) -> Result<totp_rs::TOTP, CredentialError> {
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        TOTP_DIGITS,
        0,
        TOTP_STEP,
        secret.to_vec(),
    )
    .map_err(|e| CredentialError::Totp(e.to_string()))
}

/// The secret in base32, for typing into an authenticator app.
pub fn totp_secret_base32(secret: &[u8]) -> Result<String, CredentialError> {
    Ok(totp(secret)?.get_secret_base32())
}

/// The `otpauth://` URI an authenticator app imports (as a QR code or a link).
pub fn totp_uri(secret: &[u8], account: &str) -> Result<String, CredentialError> {
    // `account` is an identifier ([A-Za-z0-9._+-]): nothing in it needs percent-encoding
    // but `+`, which a query or label would read as a space.
    let label = account.replace('+', "%2B");
    Ok(format!(
        "otpauth://totp/{TOTP_ISSUER}:{label}?secret={}&issuer={TOTP_ISSUER}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP}",
        totp_secret_base32(secret)?
    ))
}

/// The time step a code is valid for at `now` (the previous, current or next step), if any.
pub fn totp_step(secret: &[u8], code: &str, now: u64) -> Result<Option<u64>, CredentialError> {
    let code = code.trim();
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let t = totp(secret)?;
    let current = now / TOTP_STEP;
    for step in [
        current.saturating_sub(1),
        current,
        current.saturating_add(1),
    ] {
        if t.check(code, step.saturating_mul(TOTP_STEP)) {
            return Ok(Some(step));
        }
    }
    Ok(None)
}

/// A new random secret with `prefix` (enrolment codes `sge_`, session ids `sgs_`, CSRF tokens
/// `sgc_`): 256 bits, hex.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored hash of an enrolment code or session id.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 1024,
        iterations: 1,
    };

    #[test]
    fn weak_and_short_passphrases_are_refused_with_a_reason() {
        let short = check_strength("Tr0ub4dor&3", &[], 12, 3).unwrap_err();
        assert!(short.to_string().contains("at least 12"), "{short}");
        let common = check_strength("passwordpassword", &[], 12, 3).unwrap_err();
        assert!(common.to_string().contains("too easy"), "{common}");
        let own_name = check_strength("aliceanderson1", &["aliceanderson"], 12, 3).unwrap_err();
        assert!(own_name.to_string().contains("too easy"), "{own_name}");
        check_strength("correct horse battery staple", &[], 12, 3).unwrap();
    }

    #[test]
    fn argon2id_hashes_verify_only_their_passphrase() {
        let h = hash_passphrase("correct horse battery staple", CHEAP).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        assert!(verify_passphrase("correct horse battery staple", &h));
        assert!(!verify_passphrase("correct horse battery stapler", &h));
        assert!(!verify_passphrase("x", "not a hash"));
    }

    #[test]
    fn totp_accepts_adjacent_steps_only_and_names_the_step() {
        let secret = [7u8; TOTP_SECRET_LEN];
        let t = totp(&secret).unwrap();
        let now = 1_000_000_000;
        let step = now / TOTP_STEP;
        for s in [step - 1, step, step + 1] {
            let code = t.generate(s * TOTP_STEP);
            assert_eq!(totp_step(&secret, &code, now).unwrap(), Some(s));
        }
        let far = t.generate((step + 2) * TOTP_STEP);
        assert_eq!(totp_step(&secret, &far, now).unwrap(), None);
        assert_eq!(totp_step(&secret, "12345", now).unwrap(), None);
        // RFC 6238 appendix B, SHA-1, at 59 s: 94287082 (8 digits), so 287082 with 6.
        let rfc = totp(b"12345678901234567890").unwrap();
        assert_eq!(rfc.generate(59), "287082");
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_parameters() {
        let uri = totp_uri(&[0u8; TOTP_SECRET_LEN], "ann+qa").unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/Sigil:ann%2Bqa?secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&issuer=Sigil&algorithm=SHA1&digits=6&period=30"
        );
    }
}
