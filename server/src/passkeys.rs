//! Passkeys (WebAuthn Level 3) as a person's second factor: the relying party's side of the
//! registration and authentication ceremonies, over the `webauthn_rp` crate (pure Rust:
//! RustCrypto P-256/P-384/RSA and ed25519-dalek; see the server README for why that crate).
//! This module is glue: it builds the options sent to the browser, keeps the ceremony state
//! the crate hands back as bytes (stored in the database, so any replica can finish a
//! ceremony and each challenge is single-use), and maps the crate's verdicts to ours.
//!
//! The policy, checked by the crate's ceremony steps (WebAuthn §7.1 and §7.2):
//! - relying-party id: the host of `accounts.public_url`; the authenticator data's rpIdHash
//!   must be its SHA-256;
//! - origin: exactly `accounts.public_url`'s origin, never cross-origin or framed;
//! - `clientDataJSON.type` `webauthn.create` / `webauthn.get` and the challenge of the ceremony;
//! - user presence is required; user verification (PIN, biometrics) is not: the passphrase is
//!   the knowledge factor, the passkey proves possession (so security keys without a PIN work);
//! - the signature counter must rise unless the authenticator keeps none (stays 0): a lower or
//!   equal counter means a cloned key or a replay, and is refused and audited;
//! - attestation is not asked for (`none`): a medical fleet's operators use whatever
//!   authenticator their organisation issues; the credential's key types are Ed25519, ES256,
//!   ES384 and RS256.
//! - a ceremony expires after five minutes (the crate's timeout, stored with it).

use std::time::{SystemTime, UNIX_EPOCH};

use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::{AllowedCredentials, AuthenticationVerificationOptions};
use webauthn_rp::request::register::{
    PublicKeyCredentialUserEntity, RegistrationVerificationOptions, UserHandle16,
};
use webauthn_rp::request::{
    AsciiDomain, Credentials, PublicKeyCredentialDescriptor, RpId, TimedCeremony,
};
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::register::{CompressedPubKey, DynamicState, StaticState};
use webauthn_rp::response::{AuthTransports, CredentialId};
use webauthn_rp::{
    AuthenticatedCredential, NonDiscoverableAuthentication16,
    NonDiscoverableAuthenticationServerState, NonDiscoverableCredentialRequestOptions,
    PublicKeyCredentialCreationOptions, Registration, RegistrationServerState,
};

use crate::store::passkeys::Passkey;

/// Why passkeys cannot work with a configuration, or a ceremony failed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// `accounts.public_url` cannot be a WebAuthn relying party.
    #[error("{0}")]
    Config(String),
    /// The browser's response is not a well-formed WebAuthn response.
    #[error("malformed WebAuthn response: {0}")]
    Malformed(String),
    /// The response failed a ceremony step (wrong origin, rpId, type, challenge, signature,
    /// no user presence, ...).
    #[error("the passkey's response was refused: {0}")]
    Refused(String),
    /// The signature counter did not advance: a cloned authenticator or a replay.
    #[error("the passkey's signature counter did not advance (a cloned authenticator?)")]
    CounterDidNotAdvance,
    /// State stored by this server could not be read back.
    #[error("stored passkey state is unusable: {0}")]
    Stored(String),
}

/// The relying party: who the browser's passkeys are for.
#[derive(Debug)]
pub struct RelyingParty {
    rp_id: RpId,
    host: String,
    origin: String,
}

/// A started ceremony: what to store, and what to send to the browser.
#[derive(Debug)]
pub struct Started {
    /// The challenge (the ceremony's key in the store).
    pub challenge: Vec<u8>,
    /// The crate's server state.
    pub state: Vec<u8>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `PublicKeyCredentialCreationOptionsJSON` / `PublicKeyCredentialRequestOptionsJSON`,
    /// for `PublicKeyCredential.parse*OptionsFromJSON`.
    pub options: serde_json::Value,
}

/// A verified new credential.
#[derive(Debug)]
pub struct NewCredential {
    /// Credential id.
    pub id: Vec<u8>,
    /// Transports the browser reported (hints for later ceremonies).
    pub transports: u8,
    /// Public key and registration-time facts.
    pub static_state: Vec<u8>,
    /// Counter and flags.
    pub dynamic_state: Vec<u8>,
    /// The counter.
    pub sign_count: u32,
}

/// A verified assertion: the passkey's state after it.
#[derive(Debug)]
pub struct Asserted {
    /// New dynamic state.
    pub dynamic_state: Vec<u8>,
    /// Its counter.
    pub sign_count: u32,
}

/// The ceremony key of a challenge.
fn challenge_key(c: webauthn_rp::response::SentChallenge) -> Vec<u8> {
    c.0.to_le_bytes().to_vec()
}

fn expiry(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A credential id in the API and the audit trail (hex).
pub fn encode_id(id: &[u8]) -> String {
    hex::encode(id)
}

/// Parses [`encode_id`].
pub fn decode_id(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// A new random user handle (16 bytes: WebAuthn's recommendation, and no personal data).
pub fn new_user_handle() -> [u8; 16] {
    let handle = UserHandle16::new();
    match handle.encode() {
        Ok(bytes) => bytes,
        Err(never) => match never {},
    }
}

fn descriptor(p: &Passkey) -> Result<PublicKeyCredentialDescriptor<Vec<u8>>, PasskeyError> {
    Ok(PublicKeyCredentialDescriptor {
        id: CredentialId::decode(p.id.clone())
            .map_err(|e| PasskeyError::Stored(format!("credential id: {e}")))?,
        transports: AuthTransports::decode(p.transports)
            .map_err(|e| PasskeyError::Stored(format!("transports: {e}")))?,
    })
}

fn user_handle(handle: &[u8]) -> Result<UserHandle16, PasskeyError> {
    let bytes = <[u8; 16]>::try_from(handle)
        .map_err(|_| PasskeyError::Stored("the user handle is not 16 bytes".to_owned()))?;
    match UserHandle16::decode(bytes) {
        Ok(h) => Ok(h),
        Err(never) => match never {},
    }
}

impl RelyingParty {
    /// The relying party of a console address (`https://host[:port]`). Refused, saying why,
    /// where browsers would refuse passkeys: not https (but `http://localhost`, which browsers
    /// treat as secure), an IP address as host (not a valid relying-party id), a path, query or
    /// user part.
    pub fn new(public_url: &str) -> Result<Self, PasskeyError> {
        let bad = |why: &str| {
            PasskeyError::Config(format!(
                "{public_url:.100} cannot carry passkeys: {why} (give the console's address as \
                 https://host[:port])"
            ))
        };
        let (scheme, rest) = public_url
            .split_once("://")
            .ok_or_else(|| bad("it is not a URL"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(bad("it has a path, query or user part"));
        }
        if authority.starts_with('[') {
            return Err(bad("an IP address cannot be a WebAuthn relying-party id"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| bad("its port is not a number"))?,
                ),
            ),
            None => (authority, None),
        };
        let host = host.to_ascii_lowercase();
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Err(bad("an IP address cannot be a WebAuthn relying-party id"));
        }
        let default_port = match scheme {
            "https" => 443,
            "http" if host == "localhost" => 80,
            "http" => {
                return Err(bad(
                    "browsers offer passkeys only to https pages (and http://localhost)",
                ))
            }
            _ => return Err(bad("its scheme is not https")),
        };
        let domain = AsciiDomain::try_from(host.clone())
            .map_err(|e| bad(&format!("its host is not a domain name ({e})")))?;
        let origin = match port {
            Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        };
        Ok(RelyingParty {
            rp_id: RpId::Domain(domain),
            host,
            origin,
        })
    }

    /// The relying-party id (the host).
    pub fn id(&self) -> &str {
        &self.host
    }

    /// The only origin accepted.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Starts registering a passkey for `user_name` (user handle `handle`); the browser is
    /// told the passkeys it has already (`existing`), so an authenticator is not registered
    /// twice.
    pub fn start_registration(
        &self,
        user_name: &str,
        handle: &[u8],
        existing: &[Passkey],
    ) -> Result<Started, PasskeyError> {
        let handle = user_handle(handle)?;
        let exclude = existing
            .iter()
            .map(descriptor)
            .collect::<Result<Vec<_>, _>>()?;
        let user = PublicKeyCredentialUserEntity {
            name: user_name
                .try_into()
                .map_err(|e| PasskeyError::Config(format!("account name: {e}")))?,
            id: &handle,
            display_name: None,
        };
        let (server, client) =
            PublicKeyCredentialCreationOptions::second_factor(&self.rp_id, user, exclude)
                .start_ceremony()
                .map_err(|e| PasskeyError::Config(format!("registration options: {e}")))?;
        Ok(Started {
            challenge: challenge_key(server.sent_challenge()),
            expires_at: expiry(server.expiration()),
            state: server
                .encode()
                .map_err(|e| PasskeyError::Stored(format!("registration state: {e}")))?,
            options: serde_json::to_value(&client)
                .map_err(|e| PasskeyError::Stored(format!("registration options: {e}")))?,
        })
    }

    /// Starts using one of `passkeys` (not empty) as the second factor.
    pub fn start_authentication(&self, passkeys: &[Passkey]) -> Result<Started, PasskeyError> {
        let mut allowed = AllowedCredentials::with_capacity(passkeys.len());
        for p in passkeys {
            allowed.push(descriptor(p)?.into());
        }
        let (server, client) =
            NonDiscoverableCredentialRequestOptions::second_factor(&self.rp_id, allowed)
                .map_err(|_| PasskeyError::Config("the person has no passkey".to_owned()))?
                .start_ceremony()
                .map_err(|e| PasskeyError::Config(format!("authentication options: {e}")))?;
        Ok(Started {
            challenge: challenge_key(server.sent_challenge()),
            expires_at: expiry(server.expiration()),
            state: server
                .encode()
                .map_err(|e| PasskeyError::Stored(format!("authentication state: {e}")))?,
            options: serde_json::to_value(&client)
                .map_err(|e| PasskeyError::Stored(format!("authentication options: {e}")))?,
        })
    }

    fn origins(&self) -> [&str; 1] {
        [self.origin.as_str()]
    }

    /// Finishes a registration: the response (`RegistrationResponseJSON`) against the
    /// ceremony's stored state.
    pub fn finish_registration(
        &self,
        state: &[u8],
        response: &Registration,
    ) -> Result<NewCredential, PasskeyError> {
        let server = RegistrationServerState::<16>::decode(state)
            .map_err(|e| PasskeyError::Stored(format!("registration state: {e}")))?;
        let origins = self.origins();
        let options = RegistrationVerificationOptions::<&str, &str> {
            allowed_origins: &origins,
            ..RegistrationVerificationOptions::default()
        };
        let cred = server
            .verify(&self.rp_id, response, &options)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let dynamic = cred.dynamic_state();
        Ok(NewCredential {
            id: cred.id().as_ref().to_vec(),
            transports: match cred.transports().encode() {
                Ok(t) => t,
                Err(never) => match never {},
            },
            static_state: cred
                .static_state()
                .encode()
                .map_err(|e| PasskeyError::Stored(format!("static state: {e:?}")))?,
            dynamic_state: encode_dynamic(dynamic),
            sign_count: dynamic.sign_count,
        })
    }

    /// Finishes an authentication with `passkey` (the credential the response names, of the
    /// ceremony's person, with user handle `handle`).
    pub fn finish_authentication(
        &self,
        state: &[u8],
        response: &NonDiscoverableAuthentication16,
        passkey: &Passkey,
        handle: &[u8],
    ) -> Result<Asserted, PasskeyError> {
        let server = NonDiscoverableAuthenticationServerState::decode(state)
            .map_err(|e| PasskeyError::Stored(format!("authentication state: {e}")))?;
        let handle = user_handle(handle)?;
        let id = CredentialId::decode(passkey.id.as_slice())
            .map_err(|e| PasskeyError::Stored(format!("credential id: {e}")))?;
        type Key = CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>;
        let static_state = StaticState::<Key>::decode(passkey.static_state.as_slice())
            .map_err(|e| PasskeyError::Stored(format!("static state: {e}")))?;
        let dynamic: [u8; 7] = passkey
            .dynamic_state
            .as_slice()
            .try_into()
            .map_err(|_| PasskeyError::Stored("dynamic state is not 7 bytes".to_owned()))?;
        let dynamic = DynamicState::decode(dynamic)
            .map_err(|e| PasskeyError::Stored(format!("dynamic state: {e}")))?;
        let mut cred = AuthenticatedCredential::new(id, &handle, static_state, dynamic)
            .map_err(|e| PasskeyError::Stored(format!("credential: {e}")))?;
        let origins = self.origins();
        let options = AuthenticationVerificationOptions::<&str, &str> {
            allowed_origins: &origins,
            ..AuthenticationVerificationOptions::default()
        };
        match server.verify(&self.rp_id, response, &mut cred, &options) {
            Ok(_) => {
                let dynamic = cred.dynamic_state();
                Ok(Asserted {
                    dynamic_state: encode_dynamic(dynamic),
                    sign_count: dynamic.sign_count,
                })
            }
            Err(AuthCeremonyErr::SignatureCounter) => Err(PasskeyError::CounterDidNotAdvance),
            Err(e) => Err(PasskeyError::Refused(e.to_string())),
        }
    }
}

fn encode_dynamic(d: DynamicState) -> Vec<u8> {
    match d.encode() {
        Ok(bytes) => bytes.to_vec(),
        Err(never) => match never {},
    }
}

/// Parses a `RegistrationResponseJSON` and the ceremony key of its challenge.
pub fn parse_registration(json: &[u8]) -> Result<(Registration, Vec<u8>), PasskeyError> {
    let r = Registration::from_json_relaxed(json)
        .map_err(|e| PasskeyError::Malformed(e.to_string()))?;
    let challenge = r
        .challenge_relaxed()
        .map_err(|e| PasskeyError::Malformed(e.to_string()))?;
    Ok((r, challenge_key(challenge)))
}

/// Parses an `AuthenticationResponseJSON`: the response, the ceremony key of its challenge
/// and the credential id it names.
pub fn parse_authentication(
    json: &[u8],
) -> Result<(NonDiscoverableAuthentication16, Vec<u8>, Vec<u8>), PasskeyError> {
    let a = NonDiscoverableAuthentication16::from_json_relaxed(json)
        .map_err(|e| PasskeyError::Malformed(e.to_string()))?;
    let challenge = a
        .challenge_relaxed()
        .map_err(|e| PasskeyError::Malformed(e.to_string()))?;
    let id = a.raw_id().as_ref().to_vec();
    Ok((a, challenge_key(challenge), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_comes_from_an_https_or_localhost_address() {
        let rp = RelyingParty::new("https://Sigil.Example:8443").unwrap();
        assert_eq!(
            (rp.id(), rp.origin()),
            ("sigil.example", "https://sigil.example:8443")
        );
        let rp = RelyingParty::new("https://sigil.example:443/").unwrap();
        assert_eq!(rp.origin(), "https://sigil.example");
        let rp = RelyingParty::new("http://localhost:8080").unwrap();
        assert_eq!(
            (rp.id(), rp.origin()),
            ("localhost", "http://localhost:8080")
        );
        for (url, why) in [
            ("http://sigil.example", "only to https"),
            ("https://10.0.0.5:8443", "IP address"),
            ("https://[::1]:8443", "IP address"),
            ("https://sigil.example/console", "path"),
            ("sigil.example", "not a URL"),
            ("ftp://sigil.example", "scheme"),
        ] {
            let e = RelyingParty::new(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
