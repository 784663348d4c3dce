//! Key files: ed25519 private keys as PKCS#8 PEM, public keys as SubjectPublicKeyInfo PEM.
//!
//! These are the formats of `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`, so
//! keys move freely between `sigil`, OpenSSL and HSM tooling. Private keys are written as PKCS#8
//! v1 (no embedded public key), byte for byte what OpenSSL writes.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sigil_manifests::{key_id, PublicKey};
use zeroize::Zeroizing;

use crate::files::{self, FileError};

/// Errors loading or encoding keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file is not PEM text.
    #[error("{path} is not a PEM file")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The file is PEM but not an ed25519 private key in PKCS#8.
    #[error("{path} is not an ed25519 private key (PKCS#8 PEM, as `sigil keygen` or `openssl genpkey -algorithm ed25519` write)")]
    NotPrivateKey {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    /// The file is neither an ed25519 public key (SPKI PEM) nor a private key.
    #[error("{path} is not an ed25519 public key (SPKI PEM) or private key (PKCS#8 PEM)")]
    NotPublicKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is passphrase-encrypted PKCS#8, which `sigil` does not read yet.
    #[error("{path} is an encrypted private key; sigil reads unencrypted PKCS#8 only (decrypt it on the signing machine with `openssl pkey -in KEY -out PLAIN`)")]
    Encrypted {
        /// The file.
        path: PathBuf,
    },
    /// Encoding a key failed.
    #[error("cannot encode the key as PEM: {0}")]
    Encode(String),
}

fn read_pem(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let bytes = Zeroizing::new(files::read_document(path)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::NotPem {
        path: path.to_owned(),
    })?;
    if !text.trim_start().starts_with("-----BEGIN ") {
        return Err(KeyError::NotPem {
            path: path.to_owned(),
        });
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Loads an ed25519 private key from a PKCS#8 PEM file (v1 or v2).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = read_pem(path)?;
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::Encrypted {
            path: path.to_owned(),
        });
    }
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|source| KeyError::NotPrivateKey {
        path: path.to_owned(),
        source,
    })
}

/// Loads a public key from an SPKI PEM file, or derives it from a PKCS#8 private key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let pem = read_pem(path)?;
    if let Ok(vk) = VerifyingKey::from_public_key_pem(pem.trim()) {
        return Ok(vk.to_bytes());
    }
    if let Ok(sk) = SigningKey::from_pkcs8_pem(pem.trim()) {
        return Ok(sk.verifying_key().to_bytes());
    }
    Err(KeyError::NotPublicKey {
        path: path.to_owned(),
    })
}

/// Encodes a private key as PKCS#8 v1 PEM, as OpenSSL does.
pub fn private_key_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    let bytes = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// Encodes a public key as SPKI PEM.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// The key id of a public key, as lowercase hex (how every command prints it).
pub fn key_id_hex(key: &PublicKey) -> String {
    hex::encode(key_id(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn private_keys_round_trip_as_pkcs8_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let v1 = private_key_pem(&key).unwrap();
        // v1 carries no public key: the 48-byte DER OpenSSL writes.
        assert_eq!(v1.lines().nth(1).unwrap().len(), 64);
        let p1 = write(dir.path(), "v1.pem", &v1);
        assert_eq!(load_signing_key(&p1).unwrap().to_bytes(), key.to_bytes());
        // v2 (with the public key), as other tools write, is read too.
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let p2 = write(dir.path(), "v2.pem", &v2);
        assert_eq!(load_signing_key(&p2).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(
            load_public_key(&p2).unwrap(),
            key.verifying_key().to_bytes()
        );
    }

    #[test]
    fn public_keys_load_from_spki_and_are_not_signing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let p = write(
            dir.path(),
            "k.pub.pem",
            &public_key_pem(&key.verifying_key()).unwrap(),
        );
        assert_eq!(load_public_key(&p).unwrap(), key.verifying_key().to_bytes());
        assert!(matches!(
            load_signing_key(&p),
            Err(KeyError::NotPrivateKey { .. })
        ));
    }

    #[test]
    fn wrong_files_get_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let binary = write(dir.path(), "img", "\u{0}\u{1}binary");
        assert!(matches!(
            load_signing_key(&binary),
            Err(KeyError::NotPem { .. })
        ));
        let encrypted = write(
            dir.path(),
            "enc.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(matches!(
            load_signing_key(&encrypted),
            Err(KeyError::Encrypted { .. })
        ));
        let rsa = write(
            dir.path(),
            "rsa.pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        );
        assert!(matches!(
            load_public_key(&rsa),
            Err(KeyError::NotPublicKey { .. })
        ));
    }
}
