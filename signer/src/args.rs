//! Argument types shared by several subcommands, parsed and validated by clap.

use std::fmt;
use std::str::FromStr;

use sigil_manifests::manifest::check_identifier;
use sigil_manifests::{ProductId, Version};

/// A product id on the command line: `VENDOR/DEVICE`, e.g. `acme-medical/infusion-pump-x2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductArg {
    vendor: String,
    device: String,
}

impl ProductArg {
    /// The product id of the format.
    pub fn id(&self) -> ProductId<'_> {
        ProductId {
            vendor: &self.vendor,
            device: &self.device,
        }
    }
}

impl FromStr for ProductArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (vendor, device) = s
            .split_once('/')
            .ok_or_else(|| format!("expected VENDOR/DEVICE, got `{s}`"))?;
        for part in [vendor, device] {
            check_identifier(part)
                .map_err(|_| format!("`{part}` must be 1-64 characters of A-Z a-z 0-9 . _ + -"))?;
        }
        Ok(ProductArg {
            vendor: vendor.to_owned(),
            device: device.to_owned(),
        })
    }
}

impl fmt::Display for ProductArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vendor, self.device)
    }
}

/// An identifier (component name), checked as the format checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentArg(pub String);

impl FromStr for IdentArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        check_identifier(s)
            .map_err(|_| format!("`{s}` must be 1-64 characters of A-Z a-z 0-9 . _ + -"))?;
        Ok(IdentArg(s.to_owned()))
    }
}

/// A semantic version `MAJOR.MINOR.PATCH[-PRE]`, checked as the format checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionArg(pub String);

impl VersionArg {
    /// The version of the format.
    pub fn version(&self) -> Version<'_> {
        // Checked by `from_str`; the fallback is never reached.
        Version::parse(&self.0).unwrap_or(Version {
            major: 0,
            minor: 0,
            patch: 0,
            pre: "",
        })
    }
}

impl FromStr for VersionArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Version::parse(s)
            .map_err(|_| format!("`{s}` is not a version like 1.2.3 or 1.2.3-rc.1"))?;
        Ok(VersionArg(s.to_owned()))
    }
}

/// A dependency `COMPONENT>=VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyArg {
    /// The component that must be installed.
    pub component: IdentArg,
    /// Its lowest acceptable version.
    pub min_version: VersionArg,
}

impl FromStr for DependencyArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (component, version) = s.split_once(">=").ok_or_else(|| {
            format!("expected COMPONENT>=VERSION, e.g. bootloader>=1.4.0, got `{s}`")
        })?;
        Ok(DependencyArg {
            component: component.trim().parse()?,
            min_version: version.trim().parse()?,
        })
    }
}

/// A point in time: seconds since the Unix epoch, RFC 3339 (`2027-06-30T00:00:00Z`) or `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeArg(pub u64);

impl FromStr for TimeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(TimeArg(secs));
        }
        if s == "now" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| "the system clock is before 1970".to_owned())?;
            return Ok(TimeArg(now.as_secs()));
        }
        let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
            format!("`{s}` is neither Unix seconds nor an RFC 3339 time like 2027-06-30T00:00:00Z")
        })?;
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("`{s}` is before 1970"))?
            .as_secs();
        Ok(TimeArg(secs))
    }
}

/// A duration such as `365d`, `12weeks` or `90days 12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub std::time::Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(DurationArg)
            .map_err(|e| format!("`{s}` is not a duration like 365d or 12weeks: {e}"))
    }
}

/// A byte count with an optional binary suffix: `4096`, `64K`, `16M`, `1G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeArg(pub u64);

impl FromStr for SizeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (digits, shift) = match t.char_indices().last() {
            Some((i, 'K' | 'k')) => (&t[..i], 10),
            Some((i, 'M' | 'm')) => (&t[..i], 20),
            Some((i, 'G' | 'g')) => (&t[..i], 30),
            _ => (t, 0),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a size like 4096, 64K, 16M or 1G"))?;
        n.checked_mul(1u64 << shift)
            .map(SizeArg)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}
