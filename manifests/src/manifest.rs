//! The manifest: what the image is, which device it is for, and the digest that binds the payload.

use core::cmp::Ordering;
use core::fmt;

use crate::codec::Reader;
use crate::error::{Document, Error};
use crate::{MAX_ALIGNMENT, MAX_DEPENDENCIES, MAX_ID_LEN};

/// Domain-separation tag of the signed bytes of a manifest.
pub const MANIFEST_TAG: &[u8; 8] = b"SGL-MNFT";

/// Checks an identifier: 1..=64 bytes of `[A-Za-z0-9._+-]`.
///
/// Identifiers are printed by tools and compared byte for byte, so they are kept free of
/// control characters, spaces and look-alike Unicode.
pub fn check_identifier(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidIdentifier(Document::Manifest))
    }
}

/// Which device an image is for: the vendor and the device class / hardware id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct ProductId<'a> {
    /// The vendor, e.g. `acme-medical`.
    pub vendor: &'a str,
    /// The device class or hardware id, e.g. `infusion-pump-x2`.
    pub device: &'a str,
}

impl<'a> ProductId<'a> {
    /// Builds a validated product id.
    pub fn new(vendor: &'a str, device: &'a str) -> Result<Self, Error> {
        let p = ProductId { vendor, device };
        p.validate()?;
        Ok(p)
    }

    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(ProductId {
            vendor: r.str()?,
            device: r.str()?,
        })
    }

    /// Checks both identifiers.
    pub fn validate(&self) -> Result<(), Error> {
        self.check(Document::Manifest)
    }

    /// Checks both identifiers; an error names `doc` (a key set's scope or a manifest).
    pub(crate) fn check(&self, doc: Document) -> Result<(), Error> {
        let named = |_| Error::InvalidIdentifier(doc);
        check_identifier(self.vendor).map_err(named)?;
        check_identifier(self.device).map_err(named)
    }
}

impl fmt::Display for ProductId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vendor, self.device)
    }
}

/// A semantic version: `major.minor.patch` with an optional pre-release (no build metadata).
///
/// Ordered by SemVer 2.0 precedence, which the agent uses for "newer than what runs".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct Version<'a> {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
    /// Pre-release identifiers (`rc.1`), empty for a release.
    pub pre: &'a str,
}

impl<'a> Version<'a> {
    /// Parses `1.2.3` or `1.2.3-rc.1`.
    pub fn parse(text: &'a str) -> Result<Self, Error> {
        let (core, pre) = match text.split_once('-') {
            Some((_, "")) => return Err(Error::InvalidIdentifier(Document::Manifest)),
            Some((core, pre)) => (core, pre),
            None => (text, ""),
        };
        let mut parts = core.split('.');
        let mut number = || -> Result<u32, Error> {
            let part = parts
                .next()
                .ok_or(Error::InvalidIdentifier(Document::Manifest))?;
            if part.is_empty() || (part.len() > 1 && part.starts_with('0')) {
                return Err(Error::InvalidIdentifier(Document::Manifest));
            }
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::InvalidIdentifier(Document::Manifest));
            }
            part.parse()
                .map_err(|_| Error::InvalidIdentifier(Document::Manifest))
        };
        let (major, minor, patch) = (number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(Error::InvalidIdentifier(Document::Manifest));
        }
        let v = Version {
            major,
            minor,
            patch,
            pre,
        };
        v.validate()?;
        Ok(v)
    }

    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(Version {
            major: r.u32()?,
            minor: r.u32()?,
            patch: r.u32()?,
            pre: r.str()?,
        })
    }

    /// Checks the pre-release: dot-separated non-empty identifiers of `[0-9A-Za-z-]`, numeric
    /// ones without leading zeros.
    pub fn validate(&self) -> Result<(), Error> {
        if self.pre.is_empty() {
            return Ok(());
        }
        if self.pre.len() > MAX_ID_LEN {
            return Err(Error::InvalidIdentifier(Document::Manifest));
        }
        for ident in identifiers(self.pre) {
            let valid = !ident.is_empty()
                && ident
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
                && !(is_numeric(ident) && ident.len() > 1 && ident.first() == Some(&b'0'));
            if !valid {
                return Err(Error::InvalidIdentifier(Document::Manifest));
            }
        }
        Ok(())
    }
}

/// The dot-separated identifiers of a pre-release, as bytes (they are ASCII once validated; a
/// byte split keeps `str`'s pattern searcher out of the bootloader).
fn identifiers(pre: &str) -> impl Iterator<Item = &[u8]> {
    pre.as_bytes().split(|&b| b == b'.')
}

fn is_numeric(ident: &[u8]) -> bool {
    ident.iter().all(|b| b.is_ascii_digit())
}

fn compare_identifier(a: &[u8], b: &[u8]) -> Ordering {
    match (is_numeric(a), is_numeric(b)) {
        // Numeric identifiers have no leading zeros, so length then bytes is numeric order.
        (true, true) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let mut a = identifiers(self.pre);
                    let mut b = identifiers(other.pre);
                    loop {
                        match (a.next(), b.next()) {
                            (None, None) => break Ordering::Equal,
                            (None, Some(_)) => break Ordering::Less,
                            (Some(_), None) => break Ordering::Greater,
                            (Some(x), Some(y)) => match compare_identifier(x, y) {
                                Ordering::Equal => continue,
                                other => break other,
                            },
                        }
                    }
                }
            })
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        Ok(())
    }
}

/// Manifest format version of a manifest whose payload is raw (FORMAT.md §4).
pub const MANIFEST_VERSION_RAW: u16 = 1;

/// Manifest format version of a manifest whose payload is encrypted (FORMAT.md §4, §7): a
/// verifier that knows only version 1 refuses it as unsupported instead of installing
/// ciphertext.
pub const MANIFEST_VERSION_ENCRYPTED: u16 = 2;

/// How the payload bytes are to be read. A delta payload will be a new variant under a new
/// manifest format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
#[non_exhaustive]
pub enum PayloadFormat {
    /// The payload is the exact image to install.
    Raw,
    /// The payload is the image encrypted for the devices that hold a key record of this
    /// release (FORMAT.md §9). `payload_size` and `payload_digest` are those of the ciphertext
    /// in the bundle (a stream cipher: the image has the same size).
    ///
    /// Only in builds with feature `alloc` (tools, server, agent) or `encryption` (devices
    /// that decrypt): a plain no_std build, the bootloader that cannot decrypt, is a version 1
    /// verifier of manifests and refuses format version 2 at step 7a, at no cost in flash.
    #[cfg(any(feature = "alloc", feature = "encryption"))]
    Encrypted(Encryption),
}

impl PayloadFormat {
    /// The encryption parameters, if the payload is encrypted.
    pub fn encryption(&self) -> Option<&Encryption> {
        match self {
            PayloadFormat::Raw => None,
            #[cfg(any(feature = "alloc", feature = "encryption"))]
            PayloadFormat::Encrypted(e) => Some(e),
        }
    }
}

/// What the signed manifest says about an encrypted payload (FORMAT.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct Encryption {
    /// The payload cipher.
    pub cipher: Cipher,
    /// SHA-256 of the decrypted image: what the device installs, and what every boot
    /// verifies in the active slot (step 9 over the installed image).
    pub plaintext_digest: [u8; 32],
    /// HKDF-SHA512 output of the release's content key under its own label: a device whose
    /// key record yields another key refuses the release before it writes anything (step D4).
    pub key_commitment: [u8; 32],
}

/// The payload ciphers of encrypted bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Cipher {
    /// ChaCha20 (RFC 8439: 256-bit key, 96-bit nonce, 32-bit block counter from 0).
    ChaCha20,
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cipher::ChaCha20 => "chacha20",
        })
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadFormat::Raw => f.write_str("raw"),
            #[cfg(any(feature = "alloc", feature = "encryption"))]
            PayloadFormat::Encrypted(e) => write!(f, "encrypted ({})", e.cipher),
        }
    }
}

/// A component that must already be installed, at least at `min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct Dependency<'a> {
    /// The component name.
    pub component: &'a str,
    /// The lowest acceptable version.
    pub min_version: Version<'a>,
}

/// A component the device has installed, for dependency checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledComponent<'a> {
    /// The component name.
    pub component: &'a str,
    /// Its installed version.
    pub version: Version<'a>,
}

/// The signed description of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct Manifest<'a> {
    /// Which device this image is for.
    pub product: ProductId<'a>,
    /// Which component / slot the image targets, e.g. `app`.
    pub component: &'a str,
    /// Version for display and for "newer than" checks.
    pub version: Version<'a>,
    /// Anti-rollback counter: devices refuse images below their stored minimum.
    pub security_counter: u32,
    /// Exact payload length in bytes.
    pub payload_size: u64,
    /// SHA-256 of the exact payload bytes.
    pub payload_digest: [u8; 32],
    /// How to read the payload.
    pub payload_format: PayloadFormat,
    /// Alignment of the payload within the bundle (a power of two the device declares).
    pub payload_alignment: u32,
    /// Lowest bootloader version able to boot this image.
    pub min_bootloader_version: Option<u32>,
    /// Components that must be installed first.
    pub dependencies: heapless::Vec<Dependency<'a>, MAX_DEPENDENCIES>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Optional expiry, seconds since the Unix epoch, for devices with trusted time.
    pub expires: Option<u64>,
    /// SHA-256 of the release notes.
    pub release_notes_digest: Option<[u8; 32]>,
    /// SHA-256 of the software bill of materials.
    pub sbom_digest: Option<[u8; 32]>,
}

impl<'a> Manifest<'a> {
    /// Decodes and validates the signed bytes of a manifest (step 7a). This does not check
    /// signatures: only the bundle verifier does.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        #[cfg(any(feature = "alloc", feature = "encryption"))]
        let (mut r, version) = Reader::tagged_versions(
            bytes,
            MANIFEST_TAG,
            Document::Manifest,
            MANIFEST_VERSION_ENCRYPTED,
        )?;
        // A verifier that cannot decrypt reads version 1 only (see PayloadFormat::Encrypted).
        #[cfg(not(any(feature = "alloc", feature = "encryption")))]
        let (mut r, version) = (
            Reader::tagged(bytes, MANIFEST_TAG, Document::Manifest)?,
            MANIFEST_VERSION_RAW,
        );
        // Every field is read into `m` where it stays, not returned: a digest or the
        // dependency list inside a `Result` is copied at each call site, which made this the
        // largest function of the verifier in flash. The fields are read in order.
        let mut m = Manifest {
            product: ProductId {
                vendor: "",
                device: "",
            },
            component: "",
            version: Version {
                major: 0,
                minor: 0,
                patch: 0,
                pre: "",
            },
            security_counter: 0,
            payload_size: 0,
            payload_digest: [0; 32],
            payload_format: PayloadFormat::Raw,
            payload_alignment: 0,
            min_bootloader_version: None,
            dependencies: heapless::Vec::new(),
            created: 0,
            expires: None,
            release_notes_digest: None,
            sbom_digest: None,
        };
        m.product = ProductId::read(&mut r)?;
        m.component = r.str()?;
        m.version = Version::read(&mut r)?;
        m.security_counter = r.u32()?;
        m.payload_size = r.u64()?;
        r.array_into(&mut m.payload_digest)?;
        read_payload_format(&mut r, version, &mut m.payload_format)?;
        m.payload_alignment = r.u32()?;
        m.min_bootloader_version = r.option(Reader::u32)?;
        for _ in 0..r.len(MAX_DEPENDENCIES)? {
            let dependency = Dependency {
                component: r.str()?,
                min_version: Version::read(&mut r)?,
            };
            // At most MAX_DEPENDENCIES, the list's capacity: `len` checked the count.
            m.dependencies
                .push(dependency)
                .map_err(|_| Error::Malformed(Document::Manifest))?;
        }
        m.created = r.u64()?;
        m.expires = r.option(Reader::u64)?;
        r.option_into(&mut m.release_notes_digest)?;
        r.option_into(&mut m.sbom_digest)?;
        r.finish()?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the fields that have a valid range.
    pub fn validate(&self) -> Result<(), Error> {
        self.product.validate()?;
        check_identifier(self.component)?;
        self.version.validate()?;
        for dep in &self.dependencies {
            check_identifier(dep.component)?;
            dep.min_version.validate()?;
        }
        if !self.payload_alignment.is_power_of_two() || self.payload_alignment > MAX_ALIGNMENT {
            return Err(Error::InvalidAlignment);
        }
        Ok(())
    }

    /// The format version this manifest is written in: the lowest that expresses it
    /// (FORMAT.md §7), so each manifest has one encoding.
    pub fn format_version(&self) -> u16 {
        match self.payload_format {
            PayloadFormat::Raw => MANIFEST_VERSION_RAW,
            #[cfg(any(feature = "alloc", feature = "encryption"))]
            PayloadFormat::Encrypted(_) => MANIFEST_VERSION_ENCRYPTED,
        }
    }

    /// Encodes the bytes that release keys sign.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        self.validate()?;
        crate::codec::encode_tagged_version(
            self,
            MANIFEST_TAG,
            self.format_version(),
            Document::Manifest,
        )
    }
}

/// The `payload_format` field (step 7a): version 1 knows only `Raw`; version 2 is the version
/// of encrypted payloads and holds nothing else (a raw payload in a version 2 manifest would
/// be a second encoding of a version 1 manifest).
fn read_payload_format(
    r: &mut Reader<'_>,
    version: u16,
    out: &mut PayloadFormat,
) -> Result<(), Error> {
    match (r.u32()?, version) {
        (0, MANIFEST_VERSION_RAW) => *out = PayloadFormat::Raw,
        (0, _) => return Err(Error::NonCanonical(Document::Manifest)),
        #[cfg(any(feature = "alloc", feature = "encryption"))]
        (1, MANIFEST_VERSION_ENCRYPTED) => {
            let cipher = match r.u32()? {
                0 => Cipher::ChaCha20,
                _ => return Err(Error::Malformed(Document::Manifest)),
            };
            let mut e = Encryption {
                cipher,
                plaintext_digest: [0; 32],
                key_commitment: [0; 32],
            };
            r.array_into(&mut e.plaintext_digest)?;
            r.array_into(&mut e.key_commitment)?;
            *out = PayloadFormat::Encrypted(e);
        }
        _ => return Err(Error::Malformed(Document::Manifest)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("acme-medical_2.x+y").is_ok());
        for bad in ["", "a b", "caf\u{e9}", "a/b", "\u{1b}[31m", &"x".repeat(65)] {
            assert_eq!(
                check_identifier(bad),
                Err(Error::InvalidIdentifier(Document::Manifest)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn versions_parse_strictly() {
        let v = Version::parse("1.20.3-rc.1").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.pre), (1, 20, 3, "rc.1"));
        for bad in [
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.3-",
            "1.2.3-rc..1",
            "1.2.3-01",
            "1.2.3+b",
            "v1.2.3",
            "1.2.99999999999",
        ] {
            assert_eq!(
                Version::parse(bad),
                Err(Error::InvalidIdentifier(Document::Manifest)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn version_precedence() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
        ];
        for pair in order.windows(2) {
            let (a, b) = (
                Version::parse(pair[0]).unwrap(),
                Version::parse(pair[1]).unwrap(),
            );
            assert!(a < b, "{a} < {b}");
        }
    }
}
