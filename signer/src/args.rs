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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_needs_vendor_and_device_identifiers() {
        let p: ProductArg = "acme-medical/pump.x2".parse().unwrap();
        assert_eq!(
            p.id(),
            ProductId {
                vendor: "acme-medical",
                device: "pump.x2"
            }
        );
        assert_eq!(p.to_string(), "acme-medical/pump.x2");
        for bad in [
            "acme",
            "/pump",
            "acme/",
            "acme/pump/x",
            "acme /pump",
            "acmé/pump",
        ] {
            assert!(bad.parse::<ProductArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dependency_and_version_follow_the_format() {
        let d: DependencyArg = "bootloader >= 1.4.0-rc.1".parse().unwrap();
        assert_eq!(d.component.0, "bootloader");
        assert_eq!(d.min_version.version().to_string(), "1.4.0-rc.1");
        assert!("bootloader>1.0.0".parse::<DependencyArg>().is_err());
        assert!("bootloader>=1.0".parse::<DependencyArg>().is_err());
        assert!("01.0.0".parse::<VersionArg>().is_err());
    }

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(
            "1700000000".parse::<TimeArg>().unwrap(),
            TimeArg(1_700_000_000)
        );
        assert_eq!(
            "2100-01-01T00:00:00Z".parse::<TimeArg>().unwrap(),
            TimeArg(4_102_444_800)
        );
        assert!("now".parse::<TimeArg>().unwrap().0 > 1_700_000_000);
        assert!("next tuesday".parse::<TimeArg>().is_err());
        assert_eq!("2days".parse::<DurationArg>().unwrap().0.as_secs(), 172_800);
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_overflow() {
        assert_eq!("4096".parse::<SizeArg>().unwrap(), SizeArg(4096));
        assert_eq!("64K".parse::<SizeArg>().unwrap(), SizeArg(65_536));
        assert_eq!("16m".parse::<SizeArg>().unwrap(), SizeArg(16 << 20));
        assert_eq!("1G".parse::<SizeArg>().unwrap(), SizeArg(1 << 30));
        assert!("99999999999999999999G".parse::<SizeArg>().is_err());
        assert!("17179869184G".parse::<SizeArg>().is_err());
        assert!("4 KiB".parse::<SizeArg>().is_err());
        assert!("".parse::<SizeArg>().is_err());
    }
}
