//! Where a signing key comes from: a PKCS#8 PEM file or a PKCS#11 token.
//!
//! Every command that signs takes [`SigningKeyArgs`]: `--key KEY` (repeatable), where KEY is
//! a PEM file or a `pkcs11:` URI (RFC 7512, see [`crate::pkcs11_uri`]), and `--pkcs11-key
//! LABEL` for a key in the token `--pkcs11-token` names. [`SigningKeyArgs::load`] turns them
//! into [`SignerKey`]s, which sign the same way whatever holds the private key.
//!
//! A key argument is a URI when it starts with `pkcs11:`; a file whose name starts so is
//! given as `./pkcs11:...`.
//!
//! The PIN of a token comes from, in order: the URI's `pin-value` or `pin-source`,
//! `--pkcs11-pin-file` (or `SIGIL_PKCS11_PIN_FILE`), `SIGIL_PKCS11_PIN` (or `--pkcs11-pin`,
//! which other local users can read in the process list). It is never printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use cryptoki::types::AuthPin;
use sigil_manifests::{key_id, PublicKey, SignatureEntry};
use zeroize::Zeroizing;

use crate::files;
use crate::hsm::{Hsm, HsmError, HsmKey, KeyTarget};
use crate::keyfile::{self, KeyError};
use crate::pkcs11_uri::{AuthPinText, Pkcs11Uri, SCHEME};

/// A key argument: a PEM file or a PKCS#11 URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// A PKCS#8 PEM private key file.
    File(PathBuf),
    /// A key in a PKCS#11 token.
    Pkcs11(Box<Pkcs11Uri>),
}

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with(SCHEME) {
            return s
                .parse()
                .map(|uri| KeySpec::Pkcs11(Box::new(uri)))
                .map_err(|e| format!("{e} (a key file named so is given as ./{s})"));
        }
        if s.is_empty() {
            return Err("the key is empty: give a PEM file or a pkcs11: URI".to_owned());
        }
        Ok(KeySpec::File(PathBuf::from(s)))
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::File(path) => write!(f, "{}", path.display()),
            KeySpec::Pkcs11(uri) => write!(f, "{uri}"),
        }
    }
}

/// A PIN given as an option or in the environment; `Debug` shows `***`.
#[derive(Clone)]
pub struct PinArg(AuthPinText);

impl FromStr for PinArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(PinArg(AuthPinText(s.to_owned())))
    }
}

impl fmt::Debug for PinArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How PKCS#11 keys are reached when the URI does not say: module, token, PIN.
#[derive(Debug, Clone, Default, Args)]
pub struct Pkcs11Args {
    /// PKCS#11 module (shared library) for pkcs11: keys whose URI has no module-path, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "FILE", env = "SIGIL_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,

    /// Token label for pkcs11: keys whose URI has no token=, and for --pkcs11-key.
    #[arg(long, value_name = "LABEL", env = "SIGIL_PKCS11_TOKEN")]
    pub pkcs11_token: Option<String>,

    /// File holding the token's user PIN (one line), when the URI has no pin-source.
    #[arg(long, value_name = "FILE", env = "SIGIL_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,

    /// The token's user PIN. Set SIGIL_PKCS11_PIN rather than passing it here: other local
    /// users can read command lines.
    #[arg(
        long,
        value_name = "PIN",
        env = "SIGIL_PKCS11_PIN",
        hide_env_values = true
    )]
    pub pkcs11_pin: Option<PinArg>,
}

/// The private keys a signing command uses.
#[derive(Debug, Clone, Args)]
pub struct SigningKeyArgs {
    /// Private key: a PKCS#8 PEM file, or a key in an HSM as a pkcs11: URI (RFC 7512), e.g.
    /// 'pkcs11:token=release;object=release-1'. Repeat to sign with several.
    #[arg(
        short,
        long = "key",
        value_name = "KEY",
        required_unless_present = "pkcs11_keys"
    )]
    pub keys: Vec<KeySpec>,

    /// Label of a private key in the token --pkcs11-token names (module from
    /// --pkcs11-module); repeat for several. Same as --key 'pkcs11:token=T;object=LABEL'.
    #[arg(long = "pkcs11-key", value_name = "LABEL")]
    pub pkcs11_keys: Vec<String>,

    /// How PKCS#11 keys are reached.
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
}

/// Errors loading or using a signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    /// A PEM key file is unusable.
    #[error(transparent)]
    File(#[from] KeyError),
    /// A PKCS#11 key is unusable, or its token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

/// A private key that can sign, wherever it is held.
#[derive(Debug)]
pub enum SignerKey {
    /// Read from a PEM file into memory.
    Pem(ed25519_dalek::SigningKey),
    /// Held by a PKCS#11 token.
    Pkcs11(HsmKey),
}

impl SignerKey {
    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            SignerKey::Pem(key) => key.verifying_key().to_bytes(),
            SignerKey::Pkcs11(key) => key.public_key(),
        }
    }

    /// A signature entry over `message` (key id + Ed25519 signature).
    pub fn sign(&self, message: &[u8]) -> Result<SignatureEntry, KeySourceError> {
        match self {
            SignerKey::Pem(key) => Ok(SignatureEntry::sign(key, message)),
            SignerKey::Pkcs11(key) => Ok(SignatureEntry {
                key_id: key_id(&key.public_key()),
                signature: key.sign(message)?,
            }),
        }
    }
}

/// A loaded key with the argument it came from (for messages).
#[derive(Debug)]
pub struct LoadedKey {
    /// The argument.
    pub spec: KeySpec,
    /// The key.
    pub key: SignerKey,
}

impl SigningKeyArgs {
    /// The key arguments, `--key` first, then `--pkcs11-key` as URIs.
    pub fn specs(&self) -> Vec<KeySpec> {
        let token = self.pkcs11.pkcs11_token.as_deref();
        self.keys
            .iter()
            .cloned()
            .chain(
                self.pkcs11_keys
                    .iter()
                    .map(|label| KeySpec::Pkcs11(Box::new(Pkcs11Uri::token_object(token, label)))),
            )
            .collect()
    }

    /// Loads every key, logging in to each token once. `hsm` keeps the sessions open for as
    /// long as the keys are used.
    pub fn load(&self, hsm: &mut Hsm) -> Result<Vec<LoadedKey>, KeySourceError> {
        self.specs()
            .into_iter()
            .map(|spec| {
                let key = self.pkcs11.open(&spec, hsm)?;
                Ok(LoadedKey { spec, key })
            })
            .collect()
    }
}

impl Pkcs11Args {
    /// Opens one key: reads a PEM file, or finds the key in its token and logs in.
    pub fn open(&self, spec: &KeySpec, hsm: &mut Hsm) -> Result<SignerKey, KeySourceError> {
        match spec {
            KeySpec::File(path) => Ok(SignerKey::Pem(keyfile::load_signing_key(path)?)),
            KeySpec::Pkcs11(uri) => Ok(SignerKey::Pkcs11(hsm.open_key(self.target(uri)?)?)),
        }
    }

    /// Resolves the module and the PIN of a URI from the URI first, then these options.
    pub fn target(&self, uri: &Pkcs11Uri) -> Result<KeyTarget, HsmError> {
        let shown = uri.to_string();
        let module = match (&uri.module_path, &uri.module_name, &self.pkcs11_module) {
            (Some(path), _, _) => path.clone(),
            (None, Some(name), _) => {
                return Err(HsmError::ModuleName {
                    uri: shown,
                    name: name.clone(),
                })
            }
            (None, None, Some(path)) => path.clone(),
            (None, None, None) => return Err(HsmError::NoModule { uri: shown }),
        };
        let pin = if let Some(pin) = &uri.pin_value {
            Some(pin.pin())
        } else if let Some(path) = uri
            .pin_source
            .as_deref()
            .or(self.pkcs11_pin_file.as_deref())
        {
            Some(read_pin(path)?)
        } else {
            self.pkcs11_pin.as_ref().map(|p| p.0.pin())
        };
        let mut uri = uri.clone();
        if uri.token.is_none() {
            uri.token.clone_from(&self.pkcs11_token);
        }
        Ok(KeyTarget { uri, module, pin })
    }
}

/// Reads a PIN file: its first line, without the line ending.
fn read_pin(path: &Path) -> Result<AuthPin, HsmError> {
    let bytes = Zeroizing::new(files::read_document(path).map_err(HsmError::PinFile)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| HsmError::PinNotText(path.to_owned()))?;
    let line = text.lines().next().unwrap_or_default();
    Ok(AuthPin::from(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arguments_are_files_unless_they_are_pkcs11_uris() {
        assert_eq!(
            "keys/release.pem".parse::<KeySpec>().unwrap(),
            KeySpec::File("keys/release.pem".into())
        );
        assert_eq!(
            "./pkcs11:odd.pem".parse::<KeySpec>().unwrap(),
            KeySpec::File("./pkcs11:odd.pem".into())
        );
        let KeySpec::Pkcs11(uri) = "pkcs11:token=t;object=k".parse::<KeySpec>().unwrap() else {
            panic!("not a URI");
        };
        assert_eq!(uri.object.as_deref(), Some("k"));
        let err = "pkcs11:token=t;label=k".parse::<KeySpec>().unwrap_err();
        assert!(
            err.contains("unknown PKCS#11 URI path attribute `label`"),
            "{err}"
        );
        assert!("".parse::<KeySpec>().is_err());
    }

    #[test]
    fn module_and_pin_come_from_the_uri_before_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "5678\n").unwrap();
        let options = Pkcs11Args {
            pkcs11_module: Some("/opt/module.so".into()),
            pkcs11_token: Some("default".into()),
            pkcs11_pin_file: None,
            pkcs11_pin: Some("1234".parse().unwrap()),
        };
        let uri: Pkcs11Uri = "pkcs11:object=k".parse().unwrap();
        let target = options.target(&uri).unwrap();
        assert_eq!(target.module, Path::new("/opt/module.so"));
        assert_eq!(target.uri.token.as_deref(), Some("default"));
        assert!(target.pin.is_some());
        let uri: Pkcs11Uri = format!(
            "pkcs11:token=t;object=k?module-path=/m.so&pin-source={}",
            pin_file.display()
        )
        .parse()
        .unwrap();
        let target = options.target(&uri).unwrap();
        assert_eq!(target.module, Path::new("/m.so"));
        assert_eq!(target.uri.token.as_deref(), Some("t"));
        use secrecy::ExposeSecret;
        assert_eq!(target.pin.unwrap().expose_secret(), "5678");
        assert!(!format!("{options:?}").contains("1234"));

        let none = Pkcs11Args::default();
        assert!(matches!(
            none.target(&"pkcs11:object=k".parse().unwrap()),
            Err(HsmError::NoModule { .. })
        ));
        assert!(matches!(
            none.target(&"pkcs11:object=k?module-name=softhsm2".parse().unwrap()),
            Err(HsmError::ModuleName { .. })
        ));
        std::fs::write(&pin_file, [0xff, 0xfe]).unwrap();
        let binary = Pkcs11Args {
            pkcs11_pin_file: Some(pin_file.clone()),
            ..options
        };
        assert!(matches!(
            binary.target(&"pkcs11:object=k".parse().unwrap()),
            Err(HsmError::PinNotText(_))
        ));
    }

    #[test]
    fn pkcs11_key_labels_become_uris_in_the_default_token() {
        let args = SigningKeyArgs {
            keys: vec![KeySpec::File("a.pem".into())],
            pkcs11_keys: vec!["release 2".into()],
            pkcs11: Pkcs11Args {
                pkcs11_token: Some("ops".into()),
                ..Pkcs11Args::default()
            },
        };
        let specs: Vec<String> = args.specs().iter().map(ToString::to_string).collect();
        assert_eq!(specs, ["a.pem", "pkcs11:token=ops;object=release%202"]);
    }
}
