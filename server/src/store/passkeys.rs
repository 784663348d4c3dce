//! Passkeys (WebAuthn credentials) as a person's second factor, and the outstanding
//! ceremonies (challenges) that register or use them: the domain types, the store trait
//! ([`PasskeyStore`]) and the rule both backends apply the same way (a person keeps at least
//! one second factor).
//!
//! What a passkey holds is opaque here: `static_state` and `dynamic_state` are the relying-party
//! library's own encodings (see [`crate::passkeys`]); the store only keeps the signature
//! counter beside them, so that a counter that does not advance is refused inside the same
//! transaction that records the use.

use serde::Serialize;

use super::{StoreError, StoreResult};

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    /// The credential id (chosen by the authenticator, unique for the relying party).
    pub id: Vec<u8>,
    /// Its person.
    pub user_name: String,
    /// The name the person gave it ("work laptop").
    pub name: String,
    /// The transports the browser reported (the library's encoding): hints for later use.
    pub transports: u8,
    /// Public key and registration-time facts (the library's encoding).
    pub static_state: Vec<u8>,
    /// Signature counter and flags as of the last use (the library's encoding).
    pub dynamic_state: Vec<u8>,
    /// The signature counter in `dynamic_state`.
    pub sign_count: u32,
    /// Registration time.
    pub created_at: u64,
    /// Last successful use.
    pub last_used_at: Option<u64>,
}

/// A passkey as its person sees it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyView {
    /// The credential id, hex.
    pub id: String,
    /// The person's name for it.
    pub name: String,
    /// Registration time.
    pub created_at: u64,
    /// Last successful use.
    pub last_used_at: Option<u64>,
    /// The signature counter of the last use (0: the authenticator keeps none).
    pub sign_count: u32,
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a new passkey (a signed-in, freshly re-authenticated person).
    Register,
    /// The second step of a login, after the passphrase was checked.
    Login,
    /// A re-authentication in an open session, after the passphrase was checked.
    Reauth,
}

impl CeremonyPurpose {
    /// The name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyPurpose::Register => "register",
            CeremonyPurpose::Login => "login",
            CeremonyPurpose::Reauth => "reauth",
        }
    }

    /// Parses [`CeremonyPurpose::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            CeremonyPurpose::Register,
            CeremonyPurpose::Login,
            CeremonyPurpose::Reauth,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// An outstanding challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceremony {
    /// The challenge sent to the browser (its key: a response names it).
    pub challenge: Vec<u8>,
    /// The person it was issued to.
    pub user_name: String,
    /// What it is for.
    pub purpose: CeremonyPurpose,
    /// For registration and re-authentication: the session that asked (no other may finish).
    pub session_hash: Option<[u8; 32]>,
    /// The library's server state (expected challenge, options, expiry).
    pub state: Vec<u8>,
    /// Expiry (the row is refused and swept after it).
    pub expires_at: u64,
}

/// The second factor a login or re-authentication used, spent in the same transaction that
/// opens the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorUse {
    /// A TOTP code of this time step (never accepted again for the person).
    Totp(u64),
    /// A passkey assertion whose counter and flags are now these.
    Passkey {
        /// The credential id.
        id: Vec<u8>,
        /// The new dynamic state.
        dynamic_state: Vec<u8>,
        /// Its signature counter: must be above the stored one unless both are 0.
        sign_count: u32,
    },
}

impl SecondFactorUse {
    /// `totp` or `passkey`, for the audit trail.
    pub fn kind(&self) -> &'static str {
        match self {
            SecondFactorUse::Totp(_) => "totp",
            SecondFactorUse::Passkey { .. } => "passkey",
        }
    }
}

/// Refuses to take away a person's last second factor.
pub fn check_factor_remains(
    name: &str,
    totp_after: bool,
    passkeys_after: usize,
) -> StoreResult<()> {
    if !totp_after && passkeys_after == 0 {
        return Err(StoreError::Conflict(format!(
            "{name} would have no second factor left: add a passkey or keep the authenticator app"
        )));
    }
    Ok(())
}

/// The answer for a passkey the person does not have.
pub fn no_passkey(id: &[u8]) -> StoreError {
    StoreError::NotFound {
        what: "passkey",
        id: crate::passkeys::encode_id(id),
    }
}

/// The conflict of removing an authenticator app the person never set up.
pub fn no_totp(name: &str) -> StoreError {
    StoreError::Conflict(format!("{name} has no authenticator app set up"))
}

/// The conflict of a counter that did not advance (a cloned authenticator, or a replay).
pub fn counter_did_not_advance() -> StoreError {
    StoreError::Conflict("the passkey's signature counter did not advance".to_owned())
}

/// Whether a stored counter lets a use with `new` through (WebAuthn §7.2 step 22: a counter
/// of 0 on both sides means the authenticator keeps none).
pub fn counter_advances(stored: u32, new: u32) -> bool {
    new > stored || (stored == 0 && new == 0)
}

/// Passkeys and their ceremonies.
pub trait PasskeyStore {
    /// The person's WebAuthn user handle, made (16 random bytes, `fresh`) at first use.
    fn passkey_handle(&self, name: &str, fresh: &[u8; 16]) -> StoreResult<Vec<u8>>;
    /// A person's passkeys, oldest first.
    fn passkeys(&self, name: &str) -> StoreResult<Vec<Passkey>>;
    /// One passkey by credential id.
    fn passkey(&self, id: &[u8]) -> StoreResult<Option<Passkey>>;
    /// Stores an outstanding ceremony, deleting the expired ones (of anyone) first.
    fn save_ceremony(&self, ceremony: &Ceremony, now: u64) -> StoreResult<()>;
    /// Takes (deletes) the ceremony of `challenge`: `None` if unknown, used or expired.
    fn take_ceremony(&self, challenge: &[u8], now: u64) -> StoreResult<Option<Ceremony>>;
    /// Registers a passkey; Conflict if its credential id is registered already.
    fn add_passkey(&self, passkey: &Passkey, audit: &super::AuditEvent) -> StoreResult<()>;
    /// Removes one of `name`'s passkeys, refused if it is their last second factor.
    fn remove_passkey(&self, name: &str, id: &[u8], audit: &super::AuditEvent) -> StoreResult<()>;
    /// Removes `name`'s TOTP secret, refused unless a passkey remains.
    fn remove_totp(&self, name: &str, audit: &super::AuditEvent) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_move_forward_unless_the_authenticator_keeps_none() {
        assert!(counter_advances(0, 0));
        assert!(counter_advances(0, 1));
        assert!(counter_advances(5, 6));
        assert!(!counter_advances(5, 5));
        assert!(!counter_advances(5, 4));
        assert!(!counter_advances(5, 0));
    }

    #[test]
    fn the_last_second_factor_stays() {
        assert!(check_factor_remains("ann", false, 0).is_err());
        check_factor_remains("ann", true, 0).unwrap();
        check_factor_remains("ann", false, 1).unwrap();
    }
}
