//! Reading the prefix of a bundle file (header, envelope, padding) without its payload.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sigil_manifests::{BundleHeader, Error as FormatError, HEADER_LEN};

use crate::exit::ExitCode;
use crate::files::FileError;

/// A bundle failed verification (steps of FORMAT.md §6). Carries the path and the format
/// error; its exit code follows from the error.
#[derive(Debug, thiserror::Error)]
#[error("{} rejected", path.display())]
pub struct InvalidBundle {
    /// The bundle file.
    pub path: PathBuf,
    /// Why verification failed.
    #[source]
    pub source: FormatError,
}

impl InvalidBundle {
    /// The class of the rejection (malformed, signature, policy, digest).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::of_error(&self.source)
    }
}

/// Errors reading a bundle prefix.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The header is invalid or the file ends inside the prefix.
    #[error(transparent)]
    Invalid(#[from] InvalidBundle),
}

impl PrefixError {
    /// The exit code of this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            PrefixError::Invalid(b) => b.exit_code(),
            PrefixError::File(_) => ExitCode::Failure,
        }
    }
}

/// A bundle's header and the bytes before its payload, still unverified.
#[derive(Debug)]
pub struct BundlePrefix {
    /// The open file, positioned at the payload.
    pub file: File,
    /// The file's length.
    pub file_len: u64,
    /// The header (step 1 passed: bounds only, nothing trusted).
    pub header: BundleHeader,
    /// Header, envelope and padding.
    pub bytes: Vec<u8>,
}

/// Reads until `buf` is full or the end of the input; returns the count.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens a bundle and reads everything before its payload. The header's lengths are bounded
/// by step 1 of the format (envelope ≤ 4 KiB, padding < 1 MiB) before anything is allocated.
pub fn read_prefix(path: &Path) -> Result<BundlePrefix, PrefixError> {
    let invalid = |source| InvalidBundle {
        path: path.to_owned(),
        source,
    };
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut head = [0u8; HEADER_LEN];
    if read_full(&mut file, &mut head).map_err(read_err)? < HEADER_LEN {
        return Err(invalid(FormatError::Truncated).into());
    }
    let header = BundleHeader::parse(&head).map_err(invalid)?;
    let mut bytes = vec![0u8; header.payload_offset as usize];
    let (start, rest) = bytes.split_at_mut(HEADER_LEN);
    start.copy_from_slice(&head);
    if read_full(&mut file, rest).map_err(read_err)? < rest.len() {
        return Err(invalid(FormatError::Truncated).into());
    }
    Ok(BundlePrefix {
        file,
        file_len,
        header,
        bytes,
    })
}
