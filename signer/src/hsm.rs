//! Ed25519 keys held in a PKCS#11 token (an HSM, a smart card, SoftHSM), through `cryptoki`.
//!
//! The private key never leaves the token: `sigil` finds it by the URI's token and object
//! attributes, logs in with the user PIN, and asks the token to sign with `CKM_EDDSA` (no
//! mechanism parameter: pure Ed25519, RFC 8032). The public key is read from the public key
//! object beside it (same `CKA_ID`, or same label when the private key has no id), and every
//! signature the token returns is verified against it before it is used, so a token that
//! pairs the wrong objects or returns garbage is caught here and not on a device.
//!
//! Tokens disagree on details; what is accepted:
//!
//! | attribute | accepted encodings |
//! |---|---|
//! | `CKA_KEY_TYPE` | `CKK_EC_EDWARDS` (which also covers Ed448: the curve decides) |
//! | `CKA_EC_PARAMS` | OID 1.3.101.112 (RFC 8410, what SoftHSM 2.6 stores), PrintableString `edwards25519` (PKCS#11 3.0), the older OID 1.3.6.1.4.1.11591.15.1 |
//! | `CKA_EC_POINT` | DER OCTET STRING around the 32 bytes (SoftHSM), or the 32 bytes bare |
//!
//! SoftHSM 2.6 reports Cryptoki 2.40 yet implements the 3.0 Edwards mechanisms; it only
//! generates keys from the OID form of `CKA_EC_PARAMS` (the curve name gives
//! `CKR_GENERAL_ERROR`), so generation tries the OID first and the name second.
//!
//! PINs are held as [`AuthPin`] (zeroised on drop, redacted in `Debug`) and never written to
//! any message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature, VerifyingKey};
use sigil_manifests::PublicKey;

use crate::files::FileError;
use crate::pkcs11_uri::{ObjectType, Pkcs11Uri};

/// DER of OID 1.3.101.112, id-Ed25519 (RFC 8410).
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of PrintableString "edwards25519" (PKCS#11 3.0 curve name).
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
/// DER of OID 1.3.6.1.4.1.11591.15.1, the Ed25519 OID before RFC 8410 (GnuPG, old OpenSC).
const ED25519_OLD_OID: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01,
];
/// DER of OID 1.3.101.113, id-Ed448, and of PrintableString "edwards448".
const ED448: [&[u8]; 2] = [&[0x06, 0x03, 0x2b, 0x65, 0x71], b"\x13\x0aedwards448"];

/// Errors reaching or using a key in a PKCS#11 token.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// No module is named by the URI or the options.
    #[error("{uri}: no PKCS#11 module; add module-path=/path/to/module.so to the URI, or pass --pkcs11-module (or set SIGIL_PKCS11_MODULE)")]
    NoModule {
        /// The key URI.
        uri: String,
    },
    /// `module-name` without a path: modules are loaded by path only.
    #[error("{uri}: module-name={name} is not resolved by sigil; give module-path instead")]
    ModuleName {
        /// The key URI.
        uri: String,
        /// The module name.
        name: String,
    },
    /// The module could not be loaded as a library.
    #[error("cannot load PKCS#11 module {}", path.display())]
    ModuleLoad {
        /// The module file.
        path: PathBuf,
        /// The loader's reason.
        #[source]
        source: CkError,
    },
    /// The module loaded but a call into it failed.
    #[error("PKCS#11 module {}: {what} failed", path.display())]
    Module {
        /// The module file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The module's error.
        #[source]
        source: CkError,
    },
    /// No token matches the URI.
    #[error("{uri}: no token matches in {} (tokens present: {present})", module.display())]
    NoToken {
        /// The key URI.
        uri: String,
        /// The module file.
        module: PathBuf,
        /// Labels of the tokens present, or "none".
        present: String,
    },
    /// Several tokens match the URI.
    #[error("{uri}: {count} tokens match; add token=LABEL (or serial=) to the URI")]
    AmbiguousToken {
        /// The key URI.
        uri: String,
        /// How many matched.
        count: usize,
    },
    /// The token needs a PIN and none was given.
    #[error("{uri}: token `{token}` needs the user PIN: set SIGIL_PKCS11_PIN, pass --pkcs11-pin-file, or add pin-source=FILE to the URI")]
    PinRequired {
        /// The key URI.
        uri: String,
        /// The token label.
        token: String,
    },
    /// The PIN file could not be read.
    #[error("cannot read the PIN")]
    PinFile(#[source] FileError),
    /// The PIN file is not UTF-8 text.
    #[error("PIN file {} is not text", .0.display())]
    PinNotText(PathBuf),
    /// The token refused the PIN.
    #[error("{uri}: token `{token}` refused the PIN (wrong PIN)")]
    WrongPin {
        /// The key URI.
        uri: String,
        /// The token label.
        token: String,
    },
    /// The PIN is locked after too many wrong tries.
    #[error("{uri}: token `{token}`: the user PIN is locked (too many wrong PINs); the security officer must reset it")]
    PinLocked {
        /// The key URI.
        uri: String,
        /// The token label.
        token: String,
    },
    /// The URI names an object type that is not a key pair.
    #[error("{uri}: type={kind} is not a signing key (use type=private, or leave type out)")]
    NotKeyType {
        /// The key URI.
        uri: String,
        /// The type given.
        kind: &'static str,
    },
    /// The token does not offer CKM_EDDSA.
    #[error("token `{token}` does not offer CKM_EDDSA (Ed25519 signing); SoftHSM must be 2.5 or newer, built with EdDSA")]
    NoEddsa {
        /// The token label.
        token: String,
    },
    /// No private key matches the URI.
    #[error("{uri}: no private key matches in token `{token}`")]
    NoKey {
        /// The key URI.
        uri: String,
        /// The token label.
        token: String,
    },
    /// Several private keys match the URI.
    #[error("{uri}: {count} private keys match in token `{token}`; add object=LABEL or id=ID")]
    AmbiguousKey {
        /// The key URI.
        uri: String,
        /// The token label.
        token: String,
        /// How many matched.
        count: usize,
    },
    /// The key is not an Ed25519 key.
    #[error("{uri}: the key is {found}, not Ed25519")]
    NotEd25519 {
        /// The key URI.
        uri: String,
        /// What it is.
        found: String,
    },
    /// The key may not sign (`CKA_SIGN` is false).
    #[error("{uri}: the key is not allowed to sign (CKA_SIGN is false)")]
    CannotSign {
        /// The key URI.
        uri: String,
    },
    /// No public key object sits beside the private key.
    #[error("{uri}: no public key object with the private key's id/label in the token (sigil reads the public key from it)")]
    NoPublicKey {
        /// The key URI.
        uri: String,
    },
    /// The public key object's point is not an Ed25519 public key.
    #[error(
        "{uri}: the public key object holds no 32-byte Ed25519 point (CKA_EC_POINT of {len} bytes)"
    )]
    BadPublicKey {
        /// The key URI.
        uri: String,
        /// Length of the attribute.
        len: usize,
    },
    /// The token's signature does not verify under the public key.
    #[error("{uri}: the token returned a signature that does not verify under the key's public key object (mismatched objects?)")]
    BadSignature {
        /// The key URI.
        uri: String,
    },
    /// Generation refused: an object with that label or id exists.
    #[error("{uri}: token `{token}` already holds an object with this label or id; keys are never overwritten")]
    Exists {
        /// The key URI.
        uri: String,
        /// The token label.
        token: String,
    },
    /// Generation needs an object label.
    #[error("{uri}: generating a key needs object=LABEL in the URI")]
    NeedsLabel {
        /// The key URI.
        uri: String,
    },
    /// A token call failed.
    #[error("token `{token}`: {what} failed")]
    Token {
        /// The token label.
        token: String,
        /// What was being done.
        what: &'static str,
        /// The token's error.
        #[source]
        source: CkError,
    },
}

/// Where to find a key: the URI with module and PIN resolved by [`crate::key_source`].
#[derive(Debug)]
pub struct KeyTarget {
    /// The key URI.
    pub uri: Pkcs11Uri,
    /// The module to load.
    pub module: PathBuf,
    /// The user PIN, if one was given.
    pub pin: Option<AuthPin>,
}

/// An Ed25519 key pair in a token, with a logged-in session to sign through.
#[derive(Debug)]
pub struct HsmKey {
    session: Rc<Session>,
    private: ObjectHandle,
    public: VerifyingKey,
    uri: String,
    token: String,
}

impl HsmKey {
    /// The public key (from the token's public key object).
    pub fn public_key(&self) -> PublicKey {
        self.public.to_bytes()
    }

    /// The URI the key was found by (PIN redacted).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Signs `message` in the token with CKM_EDDSA and checks the result.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], HsmError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let bytes = self
            .session
            .sign(&mechanism, self.private, message)
            .map_err(token_error(&self.token, "C_Sign"))?;
        let bad = || HsmError::BadSignature {
            uri: self.uri.clone(),
        };
        let signature: [u8; 64] = bytes.try_into().map_err(|_| bad())?;
        self.public
            .verify_strict(message, &Signature::from_bytes(&signature))
            .map_err(|_| bad())?;
        Ok(signature)
    }
}

/// The modules loaded and the sessions opened in this run, so several keys in one token share
/// one login.
#[derive(Debug, Default)]
pub struct Hsm {
    modules: HashMap<PathBuf, Pkcs11>,
    sessions: HashMap<(PathBuf, u64, bool), (Rc<Session>, String)>,
}

impl Hsm {
    /// Nothing loaded yet.
    pub fn new() -> Self {
        Hsm::default()
    }

    /// Finds the Ed25519 key pair `target` names and logs in to its token.
    pub fn open_key(&mut self, target: KeyTarget) -> Result<HsmKey, HsmError> {
        let uri = target.uri.to_string();
        if let Some(kind) = not_a_key_pair(target.uri.object_type) {
            return Err(HsmError::NotKeyType { uri, kind });
        }
        let (session, token) = self.session(&target, false)?;
        let (private, public) = find_pair(&session, &uri, &token, &target.uri)?;
        Ok(HsmKey {
            session,
            private,
            public,
            uri,
            token,
        })
    }

    /// Generates an Ed25519 key pair in the token: private half sensitive, never extractable,
    /// both halves token objects labelled with the URI's `object` (and `id`, or 16 random
    /// bytes).
    pub fn generate(&mut self, target: KeyTarget) -> Result<HsmKey, HsmError> {
        let uri = target.uri.to_string();
        let label = target
            .uri
            .object
            .clone()
            .ok_or_else(|| HsmError::NeedsLabel { uri: uri.clone() })?;
        if let Some(kind) = not_a_key_pair(target.uri.object_type) {
            return Err(HsmError::NotKeyType { uri, kind });
        }
        let id = match &target.uri.id {
            Some(id) => id.clone(),
            None => {
                let mut id = vec![0u8; 16];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
                id
            }
        };
        let (session, token) = self.session(&target, true)?;
        for attr in [
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ] {
            let existing = session
                .find_objects(&[attr])
                .map_err(token_error(&token, "C_FindObjects"))?;
            if !existing.is_empty() {
                return Err(HsmError::Exists { uri, token });
            }
        }
        let mut tried_other = false;
        for params in [ED25519_OID, ED25519_NAME] {
            let public_template = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Verify(true),
                Attribute::EcParams(params.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ];
            let private_template = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ];
            match session.generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            ) {
                Ok((public, private)) => {
                    let point = read_point(&session, public, &uri, &token)?;
                    return Ok(HsmKey {
                        session,
                        private,
                        public: point,
                        uri,
                        token,
                    });
                }
                // The token wants the other encoding of the curve (see the module docs).
                Err(CkError::Pkcs11(
                    RvError::GeneralError
                    | RvError::CurveNotSupported
                    | RvError::DomainParamsInvalid
                    | RvError::AttributeValueInvalid
                    | RvError::TemplateInconsistent,
                    _,
                )) if !tried_other => {
                    tried_other = true;
                }
                Err(e) => return Err(token_error(&token, "C_GenerateKeyPair")(e)),
            }
        }
        Err(HsmError::NoEddsa { token })
    }

    /// A logged-in session on the token `target` names (shared with earlier keys).
    fn session(
        &mut self,
        target: &KeyTarget,
        read_write: bool,
    ) -> Result<(Rc<Session>, String), HsmError> {
        let pkcs11 = self.module(&target.module)?;
        let (slot, info) = find_token(&pkcs11, &target.uri, &target.module)?;
        let key = (target.module.clone(), slot.id(), read_write);
        if let Some((session, label)) = self.sessions.get(&key) {
            return Ok((Rc::clone(session), label.clone()));
        }
        let token = info.label().to_owned();
        let mechanisms = pkcs11
            .get_mechanism_list(slot)
            .map_err(token_error(&token, "C_GetMechanismList"))?;
        if !mechanisms.contains(&MechanismType::EDDSA)
            || (read_write && !mechanisms.contains(&MechanismType::ECC_EDWARDS_KEY_PAIR_GEN))
        {
            return Err(HsmError::NoEddsa { token });
        }
        let session = if read_write {
            pkcs11.open_rw_session(slot)
        } else {
            pkcs11.open_ro_session(slot)
        }
        .map_err(token_error(&token, "C_OpenSession"))?;
        if info.login_required() {
            let pin = match (&target.pin, info.protected_authentication_path()) {
                (Some(pin), _) => Some(pin),
                // A PIN pad or similar on the token itself.
                (None, true) => None,
                (None, false) => {
                    return Err(HsmError::PinRequired {
                        uri: target.uri.to_string(),
                        token,
                    })
                }
            };
            match session.login(UserType::User, pin) {
                // Another session of this process logged in to the token already.
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                    return Err(HsmError::WrongPin {
                        uri: target.uri.to_string(),
                        token,
                    })
                }
                Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                    return Err(HsmError::PinLocked {
                        uri: target.uri.to_string(),
                        token,
                    })
                }
                Err(e) => return Err(token_error(&token, "C_Login")(e)),
            }
        }
        let session = Rc::new(session);
        self.sessions
            .insert(key, (Rc::clone(&session), token.clone()));
        Ok((session, token))
    }

    /// Loads and initialises a module once per run.
    fn module(&mut self, path: &Path) -> Result<Pkcs11, HsmError> {
        if let Some(pkcs11) = self.modules.get(path) {
            return Ok(pkcs11.clone());
        }
        let pkcs11 = Pkcs11::new(path).map_err(|source| HsmError::ModuleLoad {
            path: path.to_owned(),
            source,
        })?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(source) => return Err(module_error(path, "C_Initialize")(source)),
        }
        self.modules.insert(path.to_owned(), pkcs11.clone());
        Ok(pkcs11)
    }
}

/// Maps a failed token call to [`HsmError::Token`].
fn token_error(token: &str, what: &'static str) -> impl FnOnce(CkError) -> HsmError {
    let token = token.to_owned();
    move |source| HsmError::Token {
        token,
        what,
        source,
    }
}

/// Maps a failed module call to [`HsmError::Module`].
fn module_error(path: &Path, what: &'static str) -> impl FnOnce(CkError) -> HsmError {
    let path = path.to_owned();
    move |source| HsmError::Module { path, what, source }
}

fn not_a_key_pair(kind: Option<ObjectType>) -> Option<&'static str> {
    match kind {
        None | Some(ObjectType::Private | ObjectType::Public) => None,
        Some(ObjectType::Cert) => Some("cert"),
        Some(ObjectType::SecretKey) => Some("secret-key"),
        Some(ObjectType::Data) => Some("data"),
    }
}

/// The one token the URI's token, slot and library attributes select.
fn find_token(
    pkcs11: &Pkcs11,
    uri: &Pkcs11Uri,
    module: &Path,
) -> Result<(Slot, TokenInfo), HsmError> {
    let shown = uri.to_string();
    let library_matches = {
        let info = pkcs11
            .get_library_info()
            .map_err(module_error(module, "C_GetInfo"))?;
        eq(&uri.library_manufacturer, info.manufacturer_id())
            && eq(&uri.library_description, info.library_description())
            && uri.library_version.is_none_or(|v| {
                let have = info.library_version();
                v.major == have.major() && v.minor == have.minor()
            })
    };
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(module_error(module, "C_GetSlotList"))?;
    let mut present = Vec::new();
    let mut matches = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(module_error(module, "C_GetTokenInfo"))?;
        if !info.token_initialized() {
            continue;
        }
        present.push(format!("`{}`", info.label()));
        let slot_info = pkcs11
            .get_slot_info(slot)
            .map_err(module_error(module, "C_GetSlotInfo"))?;
        if library_matches
            && eq(&uri.token, info.label())
            && eq(&uri.manufacturer, info.manufacturer_id())
            && eq(&uri.serial, info.serial_number())
            && eq(&uri.model, info.model())
            && eq(&uri.slot_description, slot_info.slot_description())
            && eq(&uri.slot_manufacturer, slot_info.manufacturer_id())
            && uri.slot_id.is_none_or(|id| id == slot.id())
        {
            matches.push((slot, info));
        }
    }
    let count = matches.len();
    match (matches.pop(), count) {
        (Some(found), 1) => Ok(found),
        (None, _) => Err(HsmError::NoToken {
            uri: shown,
            module: module.to_owned(),
            present: if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            },
        }),
        (Some(_), count) => Err(HsmError::AmbiguousToken { uri: shown, count }),
    }
}

fn eq(wanted: &Option<String>, have: &str) -> bool {
    wanted.as_deref().is_none_or(|w| w == have)
}

/// The private key the URI names (checked to be an Ed25519 signing key) and the public key
/// object beside it.
fn find_pair(
    session: &Session,
    uri: &str,
    token: &str,
    wanted: &Pkcs11Uri,
) -> Result<(ObjectHandle, VerifyingKey), HsmError> {
    // Search by class, label and id only: a key of the wrong type is then reported as such
    // rather than as missing.
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &wanted.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &wanted.id {
        template.push(Attribute::Id(id.clone()));
    }
    let mut found = session
        .find_objects(&template)
        .map_err(token_error(token, "C_FindObjects"))?;
    let private = match (found.pop(), found.len()) {
        (Some(private), 0) => private,
        (None, _) => {
            return Err(HsmError::NoKey {
                uri: uri.to_owned(),
                token: token.to_owned(),
            })
        }
        (Some(_), more) => {
            return Err(HsmError::AmbiguousKey {
                uri: uri.to_owned(),
                token: token.to_owned(),
                count: more.saturating_add(1),
            })
        }
    };
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Sign,
                AttributeType::Id,
                AttributeType::Label,
            ],
        )
        .map_err(token_error(token, "C_GetAttributeValue"))?;
    let (mut key_type, mut params, mut can_sign, mut id, mut label) =
        (None, None, true, Vec::new(), Vec::new());
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::Sign(s) => can_sign = s,
            Attribute::Id(i) => id = i,
            Attribute::Label(l) => label = l,
            _ => {}
        }
    }
    match key_type {
        Some(KeyType::EC_EDWARDS) => {}
        other => {
            return Err(HsmError::NotEd25519 {
                uri: uri.to_owned(),
                found: other.map_or_else(|| "of unknown type".to_owned(), |t| format!("{t}")),
            })
        }
    }
    if let Some(params) = &params {
        check_curve(params, uri)?;
    }
    if !can_sign {
        return Err(HsmError::CannotSign {
            uri: uri.to_owned(),
        });
    }
    // The pair shares CKA_ID by convention; a key without an id is paired by its label.
    let pairing = if id.is_empty() {
        Attribute::Label(label)
    } else {
        Attribute::Id(id)
    };
    let publics = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), pairing])
        .map_err(token_error(token, "C_FindObjects"))?;
    let [public] = publics.as_slice() else {
        return Err(HsmError::NoPublicKey {
            uri: uri.to_owned(),
        });
    };
    let point = read_point(session, *public, uri, token)?;
    Ok((private, point))
}

/// Reads and decodes the Ed25519 point of a public key object.
fn read_point(
    session: &Session,
    object: ObjectHandle,
    uri: &str,
    token: &str,
) -> Result<VerifyingKey, HsmError> {
    let attrs = session
        .get_attributes(object, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(token_error(token, "C_GetAttributeValue"))?;
    let mut params = None;
    let mut point = None;
    for attr in attrs {
        match attr {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    if let Some(params) = &params {
        check_curve(params, uri)?;
    }
    let point = point.unwrap_or_default();
    let bad = || HsmError::BadPublicKey {
        uri: uri.to_owned(),
        len: point.len(),
    };
    let bytes: [u8; 32] = decode_point(&point).ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// The 32 key bytes of a CKA_EC_POINT: DER OCTET STRING-wrapped (SoftHSM) or bare.
pub fn decode_point(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        bare if bare.len() == 32 => bare.try_into().ok(),
        _ => None,
    }
}

/// Refuses CKA_EC_PARAMS that are not one of the encodings of Ed25519.
pub fn check_curve(params: &[u8], uri: &str) -> Result<(), HsmError> {
    if [ED25519_OID, ED25519_NAME, ED25519_OLD_OID].contains(&params) {
        return Ok(());
    }
    let found = if ED448.contains(&params) {
        "Ed448".to_owned()
    } else {
        format!(
            "an Edwards key on an unknown curve (CKA_EC_PARAMS {})",
            hex::encode(params)
        )
    };
    Err(HsmError::NotEd25519 {
        uri: uri.to_owned(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_decode_wrapped_or_bare() {
        let key = [7u8; 32];
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&key);
        assert_eq!(decode_point(&wrapped), Some(key));
        assert_eq!(decode_point(&key), Some(key));
        assert_eq!(decode_point(&wrapped[..33]), None);
        assert_eq!(decode_point(&[0x04, 0x21, 0]), None);
        assert_eq!(decode_point(&[]), None);
    }

    #[test]
    fn curve_params_accept_every_ed25519_encoding_only() {
        for ok in [ED25519_OID, ED25519_NAME, ED25519_OLD_OID] {
            check_curve(ok, "u").unwrap();
        }
        for ed448 in ED448 {
            let err = check_curve(ed448, "u").unwrap_err();
            assert!(err.to_string().contains("Ed448"), "{err}");
        }
        // P-256 (secp256r1) given to an Edwards key type.
        let err = check_curve(
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            "u",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown curve"), "{err}");
    }
}
