//! PKCS#11 URIs (RFC 7512): which module, token and key a `pkcs11:` argument names.
//!
//! ```text
//! pkcs11:token=release;object=release-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin
//! ```
//!
//! The path part (before `?`, attributes separated by `;`) selects the token and the object;
//! the query part (after `?`, separated by `&`) says how to reach them: the module and the PIN.
//! Values are percent-encoded (RFC 3986). Parsing is strict: an attribute this tool does not
//! know, an attribute given twice, a malformed percent escape or a character RFC 7512 does not
//! allow is an error rather than a URI that silently matches more than was meant (RFC 7512
//! §2.3: a consumer that does not understand an attribute must not match anything).
//!
//! The PIN given by `pin-value` never appears in [`Pkcs11Uri`]'s `Display` or `Debug`: both
//! print the URI with the value replaced by `***`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use cryptoki::types::AuthPin;

/// The scheme prefix that marks a key argument as a PKCS#11 URI.
pub const SCHEME: &str = "pkcs11:";

/// Why a `pkcs11:` URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("a PKCS#11 URI starts with `pkcs11:`")]
    Scheme,
    /// An attribute has no `=`.
    #[error("`{0}` is not an attribute of the form name=value")]
    NotAttribute(String),
    /// An attribute name this tool does not know (RFC 7512 says not to match anything then).
    #[error("unknown PKCS#11 URI {part} attribute `{name}` (known: {known})")]
    Unknown {
        /// `path` or `query`.
        part: &'static str,
        /// The attribute name.
        name: String,
        /// The names accepted in that part.
        known: &'static str,
    },
    /// An attribute appears twice.
    #[error("PKCS#11 URI attribute `{0}` is given twice")]
    Repeated(String),
    /// A value holds a character RFC 7512 requires to be percent-encoded there.
    #[error(
        "the value of `{name}` contains `{ch}`, which must be percent-encoded in a PKCS#11 URI"
    )]
    BadChar {
        /// The attribute.
        name: String,
        /// The character.
        ch: char,
    },
    /// A `%` not followed by two hex digits.
    #[error("the value of `{0}` has a malformed percent escape (expected %XX)")]
    BadEscape(String),
    /// A text attribute that does not decode to UTF-8.
    #[error("the value of `{0}` is not UTF-8 text")]
    NotUtf8(String),
    /// `slot-id` is not a decimal number.
    #[error("slot-id must be a decimal number, got `{0}`")]
    BadSlotId(String),
    /// `library-version` is not `MAJOR[.MINOR]`.
    #[error("library-version must be MAJOR or MAJOR.MINOR, got `{0}`")]
    BadLibraryVersion(String),
    /// `type` is not one of RFC 7512's object types.
    #[error("type must be one of public, private, cert, secret-key, data; got `{0}`")]
    BadType(String),
    /// Both `pin-value` and `pin-source` are given.
    #[error("give either pin-value or pin-source, not both")]
    TwoPins,
    /// `pin-source` names something other than a file.
    #[error("pin-source must be a file path or a file: URI, got `{0}`")]
    BadPinSource(String),
}

/// An object type of the `type` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `public`: a public key.
    Public,
    /// `private`: a private key.
    Private,
    /// `cert`: a certificate.
    Cert,
    /// `secret-key`: a symmetric key.
    SecretKey,
    /// `data`: a data object.
    Data,
}

/// A library version of `library-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryVersion {
    /// The major version.
    pub major: u8,
    /// The minor version (0 when omitted).
    pub minor: u8,
}

/// A parsed `pkcs11:` URI. `None` fields are not constrained.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `library-manufacturer`.
    pub library_manufacturer: Option<String>,
    /// `library-description`.
    pub library_description: Option<String>,
    /// `library-version`.
    pub library_version: Option<LibraryVersion>,
    /// `slot-description`.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`.
    pub slot_manufacturer: Option<String>,
    /// `slot-id`.
    pub slot_id: Option<u64>,
    /// `object`: the object label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id`: the object id (`CKA_ID`), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type`: the object class.
    pub object_type: Option<ObjectType>,
    /// `module-path`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `module-name`: a module name without path or suffix.
    pub module_name: Option<String>,
    /// `pin-source`: a file holding the PIN.
    pub pin_source: Option<PathBuf>,
    /// `pin-value`: the PIN itself (visible in the process list; prefer `pin-source`).
    pub pin_value: Option<AuthPinText>,
    /// The URI as given, with any `pin-value` replaced by `***`: how messages name it.
    shown: String,
}

/// A PIN that compares by value and prints as `***`.
#[derive(Clone)]
pub struct AuthPinText(pub String);

impl AuthPinText {
    /// The PIN for a PKCS#11 login.
    pub fn pin(&self) -> AuthPin {
        AuthPin::from(self.0.clone())
    }
}

impl PartialEq for AuthPinText {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for AuthPinText {}

impl Drop for AuthPinText {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for AuthPinText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

const PATH_ATTRIBUTES: &str = "token, manufacturer, serial, model, library-manufacturer, library-description, library-version, slot-description, slot-manufacturer, slot-id, object, id, type";
const QUERY_ATTRIBUTES: &str = "module-path, module-name, pin-source, pin-value";

/// Characters RFC 7512 allows unencoded in a path attribute value, besides unreserved ones.
const PATH_EXTRA: &str = ":[]@!$'()*+,=&";
/// Characters RFC 7512 allows unencoded in a query attribute value, besides unreserved ones.
const QUERY_EXTRA: &str = ":[]@!$'()*+,=/?|;";

impl Pkcs11Uri {
    /// A URI naming only a token and an object label (the `--pkcs11-token`/`--pkcs11-key`
    /// options).
    pub fn token_object(token: Option<&str>, object: &str) -> Self {
        let mut shown = String::from(SCHEME);
        if let Some(token) = token {
            shown.push_str("token=");
            shown.push_str(&encode(token));
            shown.push(';');
        }
        shown.push_str("object=");
        shown.push_str(&encode(object));
        Pkcs11Uri {
            token: token.map(str::to_owned),
            object: Some(object.to_owned()),
            shown,
            ..Pkcs11Uri::default()
        }
    }
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        let rest = text.strip_prefix(SCHEME).ok_or(UriError::Scheme)?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        let mut seen: Vec<String> = Vec::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = split_attribute(attr, &mut seen)?;
            let value = decode(name, raw, PATH_EXTRA)?;
            let text = || utf8(name, &value);
            match name {
                "token" => uri.token = Some(text()?),
                "manufacturer" => uri.manufacturer = Some(text()?),
                "serial" => uri.serial = Some(text()?),
                "model" => uri.model = Some(text()?),
                "library-manufacturer" => uri.library_manufacturer = Some(text()?),
                "library-description" => uri.library_description = Some(text()?),
                "library-version" => uri.library_version = Some(library_version(&text()?)?),
                "slot-description" => uri.slot_description = Some(text()?),
                "slot-manufacturer" => uri.slot_manufacturer = Some(text()?),
                "slot-id" => uri.slot_id = Some(slot_id(&text()?)?),
                "object" => uri.object = Some(text()?),
                "id" => uri.id = Some(value),
                "type" => uri.object_type = Some(object_type(&text()?)?),
                _ => {
                    return Err(UriError::Unknown {
                        part: "path",
                        name: name.to_owned(),
                        known: PATH_ATTRIBUTES,
                    })
                }
            }
        }
        let mut shown = format!("{SCHEME}{path}");
        let mut shown_query: Vec<&str> = Vec::new();
        for attr in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (name, raw) = split_attribute(attr, &mut seen)?;
            let value = zeroize::Zeroizing::new(decode(name, raw, QUERY_EXTRA)?);
            let text = || utf8(name, &value);
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(text()?)),
                "module-name" => uri.module_name = Some(text()?),
                "pin-source" => uri.pin_source = Some(pin_source(&text()?)?),
                "pin-value" => uri.pin_value = Some(AuthPinText(text()?)),
                _ => {
                    return Err(UriError::Unknown {
                        part: "query",
                        name: name.to_owned(),
                        known: QUERY_ATTRIBUTES,
                    })
                }
            }
            shown_query.push(if name == "pin-value" {
                "pin-value=***"
            } else {
                attr
            });
        }
        if uri.pin_value.is_some() && uri.pin_source.is_some() {
            return Err(UriError::TwoPins);
        }
        if !shown_query.is_empty() {
            shown.push('?');
            shown.push_str(&shown_query.join("&"));
        }
        uri.shown = shown;
        Ok(uri)
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pkcs11Uri").field(&self.shown).finish()
    }
}

fn split_attribute<'a>(
    attr: &'a str,
    seen: &mut Vec<String>,
) -> Result<(&'a str, &'a str), UriError> {
    let (name, value) = attr
        .split_once('=')
        .ok_or_else(|| UriError::NotAttribute(attr.to_owned()))?;
    if seen.iter().any(|s| s == name) {
        return Err(UriError::Repeated(name.to_owned()));
    }
    seen.push(name.to_owned());
    Ok((name, value))
}

/// Percent-decodes a value, refusing characters that RFC 7512 wants encoded there.
fn decode(name: &str, raw: &str, extra: &str) -> Result<Vec<u8>, UriError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
            if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(UriError::BadEscape(name.to_owned()));
            }
            i += 3;
            continue;
        }
        let ch = char::from(b);
        let allowed = b.is_ascii_alphanumeric()
            || (b.is_ascii() && ("-._~".contains(ch) || extra.contains(ch)));
        if !allowed {
            let ch = raw[i..].chars().next().unwrap_or(ch);
            return Err(UriError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        i += 1;
    }
    Ok(percent_encoding::percent_decode_str(raw).collect())
}

fn utf8(name: &str, value: &[u8]) -> Result<String, UriError> {
    String::from_utf8(value.to_vec()).map_err(|_| UriError::NotUtf8(name.to_owned()))
}

fn slot_id(text: &str) -> Result<u64, UriError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::BadSlotId(text.to_owned()));
    }
    text.parse()
        .map_err(|_| UriError::BadSlotId(text.to_owned()))
}

fn library_version(text: &str) -> Result<LibraryVersion, UriError> {
    let bad = || UriError::BadLibraryVersion(text.to_owned());
    let number = |s: &str| -> Result<u8, UriError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (major, minor) = match text.split_once('.') {
        Some((major, minor)) => (number(major)?, number(minor)?),
        None => (number(text)?, 0),
    };
    Ok(LibraryVersion { major, minor })
}

fn object_type(text: &str) -> Result<ObjectType, UriError> {
    Ok(match text {
        "public" => ObjectType::Public,
        "private" => ObjectType::Private,
        "cert" => ObjectType::Cert,
        "secret-key" => ObjectType::SecretKey,
        "data" => ObjectType::Data,
        _ => return Err(UriError::BadType(text.to_owned())),
    })
}

/// `pin-source` is a URI reference (RFC 7512 §2.3); only files are read: `file:` URIs and
/// plain paths.
fn pin_source(text: &str) -> Result<PathBuf, UriError> {
    let path = match text.strip_prefix("file:") {
        // file:///run/pin and file:/run/pin name the same local file.
        Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
        None => text,
    };
    let scheme_like = path
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/'));
    if path.is_empty() || path.starts_with('|') || scheme_like {
        return Err(UriError::BadPinSource(text.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// Percent-encodes a label for a path attribute.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let ch = char::from(b);
        if b.is_ascii_alphanumeric() || "-._~".contains(ch) {
            out.push(ch);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Pkcs11Uri, UriError> {
        s.parse()
    }

    #[test]
    fn rfc7512_examples_parse() {
        let uri = parse("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=").unwrap();
        assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(uri.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(uri.model.as_deref(), Some("1.0"));
        assert_eq!(uri.object.as_deref(), Some("my-certificate"));
        assert_eq!(uri.object_type, Some(ObjectType::Cert));
        assert_eq!(
            uri.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(uri.serial.as_deref(), Some(""));

        let uri = parse("pkcs11:slot-description=Sun%20Metaslot;slot-id=3;library-version=1.13;library-manufacturer=Snake%20Oil,%20Inc.").unwrap();
        assert_eq!(uri.slot_id, Some(3));
        assert_eq!(
            uri.library_version,
            Some(LibraryVersion {
                major: 1,
                minor: 13
            })
        );
        assert_eq!(uri.slot_description.as_deref(), Some("Sun Metaslot"));

        let uri = parse("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1&pin-source=file:/etc/token_pin").unwrap();
        assert_eq!(
            uri.module_path.as_deref(),
            Some(std::path::Path::new("/mnt/libmypkcs11.so.1"))
        );
        assert_eq!(
            uri.pin_source.as_deref(),
            Some(std::path::Path::new("/etc/token_pin"))
        );
        assert_eq!(uri.object_type, Some(ObjectType::Private));

        // The empty URI matches everything; `;` after the scheme and `&` in a path value.
        assert_eq!(parse("pkcs11:").unwrap().token, None);
        assert_eq!(
            parse("pkcs11:token=A&B").unwrap().token.as_deref(),
            Some("A&B")
        );
        assert_eq!(
            parse("pkcs11:library-version=7").unwrap().library_version,
            Some(LibraryVersion { major: 7, minor: 0 })
        );
        assert_eq!(
            parse("pkcs11:?pin-source=file:///run/pin")
                .unwrap()
                .pin_source
                .as_deref(),
            Some(std::path::Path::new("/run/pin"))
        );
    }

    #[test]
    fn pin_value_is_never_shown() {
        let uri = parse("pkcs11:token=t;object=k?pin-value=12%2034&module-path=/m.so").unwrap();
        assert_eq!(uri.pin_value.as_ref().unwrap().0, "12 34");
        let shown = uri.to_string();
        assert_eq!(
            shown,
            "pkcs11:token=t;object=k?pin-value=***&module-path=/m.so"
        );
        assert!(!format!("{uri:?}").contains("12"));
        assert!(!format!("{:?}", uri.pin_value).contains("12"));
    }

    #[test]
    fn malformed_uris_are_refused() {
        type Check = fn(&UriError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("token=x", |e| matches!(e, UriError::Scheme)),
            ("PKCS11:token=x", |e| matches!(e, UriError::Scheme)),
            ("pkcs11:token", |e| matches!(e, UriError::NotAttribute(_))),
            ("pkcs11:label=x", |e| {
                matches!(e, UriError::Unknown { part: "path", .. })
            }),
            ("pkcs11:x-vendor=1", |e| {
                matches!(e, UriError::Unknown { .. })
            }),
            (
                "pkcs11:token=a;token=b",
                |e| matches!(e, UriError::Repeated(n) if n == "token"),
            ),
            ("pkcs11:?pin-value=1&pin-value=2", |e| {
                matches!(e, UriError::Repeated(_))
            }),
            ("pkcs11:?module=x", |e| {
                matches!(e, UriError::Unknown { part: "query", .. })
            }),
            ("pkcs11:token=a b", |e| {
                matches!(e, UriError::BadChar { ch: ' ', .. })
            }),
            ("pkcs11:object=a/b", |e| {
                matches!(e, UriError::BadChar { ch: '/', .. })
            }),
            ("pkcs11:token=é", |e| {
                matches!(e, UriError::BadChar { ch: 'é', .. })
            }),
            ("pkcs11:id=%4", |e| matches!(e, UriError::BadEscape(_))),
            ("pkcs11:id=%zz", |e| matches!(e, UriError::BadEscape(_))),
            ("pkcs11:token=%FF", |e| matches!(e, UriError::NotUtf8(_))),
            ("pkcs11:slot-id=-1", |e| matches!(e, UriError::BadSlotId(_))),
            ("pkcs11:slot-id=99999999999999999999999", |e| {
                matches!(e, UriError::BadSlotId(_))
            }),
            ("pkcs11:library-version=1.", |e| {
                matches!(e, UriError::BadLibraryVersion(_))
            }),
            ("pkcs11:library-version=1.300", |e| {
                matches!(e, UriError::BadLibraryVersion(_))
            }),
            ("pkcs11:type=key", |e| matches!(e, UriError::BadType(_))),
            ("pkcs11:?pin-value=1&pin-source=/p", |e| {
                matches!(e, UriError::TwoPins)
            }),
            ("pkcs11:?pin-source=|/bin/get-pin", |e| {
                matches!(e, UriError::BadPinSource(_))
            }),
            ("pkcs11:?pin-source=https://pins/1", |e| {
                matches!(e, UriError::BadPinSource(_))
            }),
        ];
        for (text, check) in cases {
            let err = parse(text).expect_err(text);
            assert!(check(&err), "{text}: {err:?}");
        }
    }

    #[test]
    fn token_object_round_trips() {
        let uri = Pkcs11Uri::token_object(Some("release team"), "key;1");
        assert_eq!(
            uri.to_string(),
            "pkcs11:token=release%20team;object=key%3B1"
        );
        let parsed = parse(&uri.to_string()).unwrap();
        assert_eq!(parsed, uri);
        assert_eq!(encode("a-Z_0.~"), "a-Z_0.~");
    }
}
