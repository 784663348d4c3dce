//! Reading inputs with size limits and writing outputs atomically.
//!
//! Every file `sigil` writes goes through [`AtomicFile`]: a temporary file in the destination's
//! directory, `fsync`, then a rename over (with `--force`) or beside (never clobbering) the
//! destination, then an `fsync` of the directory. A crash or a full disk leaves either the old
//! file or the complete new one, never a half-written bundle or key.

use std::fs::{File, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Largest trust root, key set or key file `sigil` reads into memory. Real ones are a few
/// hundred bytes; the limit keeps a wrong path (an image, `/dev/zero`) from exhausting memory.
pub const MAX_DOCUMENT_LEN: u64 = 64 * 1024;

/// Errors of file handling; each names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file could not be opened or read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is larger than the document limit.
    #[error("{path} is larger than {limit} bytes; is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The output exists and `--force` was not given.
    #[error("{path} already exists; not overwriting it (pass --force to replace it)")]
    Exists {
        /// The output.
        path: PathBuf,
    },
    /// An output could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The output.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Reads a whole small document (trust root, key set, key), refusing anything above `limit`.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "above it".
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a small document with the default limit.
pub fn read_document(path: &Path) -> Result<Vec<u8>, FileError> {
    read_limited(path, MAX_DOCUMENT_LEN)
}

/// Whether an existing output may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail if the destination exists (the default of every command).
    Never,
    /// Replace the destination atomically (`--force`, or an in-place update).
    Replace,
}

impl Overwrite {
    /// `Replace` when `force` is set.
    pub fn from_force(force: bool) -> Self {
        if force {
            Overwrite::Replace
        } else {
            Overwrite::Never
        }
    }
}

/// An output being written: a temporary file that becomes `dest` on [`AtomicFile::commit`]
/// and disappears if dropped before.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: NamedTempFile,
    dest: PathBuf,
    overwrite: Overwrite,
    mode: u32,
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl AtomicFile {
    /// Starts writing `dest`. Fails at once if it exists and `overwrite` is `Never` (the final
    /// rename checks again, so a file created meanwhile is not clobbered either).
    ///
    /// `mode` is the permission the file gets; secret keys use `0o600`.
    pub fn create(dest: &Path, overwrite: Overwrite, mode: u32) -> Result<Self, FileError> {
        if overwrite == Overwrite::Never && dest.symlink_metadata().is_ok() {
            return Err(FileError::Exists {
                path: dest.to_owned(),
            });
        }
        let write_err = |source| FileError::Write {
            path: dest.to_owned(),
            source,
        };
        // The temporary file is created 0600, so a secret is never readable by others, even
        // briefly; public outputs are widened below before anything is renamed into place.
        let tmp = tempfile::Builder::new()
            .prefix(".sigil-")
            .suffix(".tmp")
            .tempfile_in(parent_dir(dest))
            .map_err(write_err)?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_owned(),
            overwrite,
            mode,
        })
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary file to write to.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// An error about writing this output.
    pub fn error(&self, source: io::Error) -> FileError {
        FileError::Write {
            path: self.dest.clone(),
            source,
        }
    }

    /// Sets permissions, flushes to disk, and renames into place.
    pub fn commit(self) -> Result<(), FileError> {
        let AtomicFile {
            tmp,
            dest,
            overwrite,
            mode,
        } = self;
        let write_err = |source| FileError::Write {
            path: dest.clone(),
            source,
        };
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        let persisted = match overwrite {
            Overwrite::Replace => tmp.persist(&dest),
            Overwrite::Never => tmp.persist_noclobber(&dest),
        };
        if let Err(e) = persisted {
            return Err(if e.error.kind() == io::ErrorKind::AlreadyExists {
                FileError::Exists { path: dest }
            } else {
                FileError::Write {
                    path: dest,
                    source: e.error,
                }
            });
        }
        // The rename is durable only once the directory entry is on disk.
        File::open(parent_dir(&dest))
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        Ok(())
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(
    dest: &Path,
    bytes: &[u8],
    overwrite: Overwrite,
    mode: u32,
) -> Result<(), FileError> {
    let mut out = AtomicFile::create(dest, overwrite, mode)?;
    io::Write::write_all(out.file(), bytes).map_err(|e| out.error(e))?;
    out.commit()
}

/// Saves a document a holder just signed: to `out` if given (refusing to replace a file there
/// unless `force`), otherwise in place over `in_place`; in place only when a signature was
/// added (`changed`), since the bytes would be the same. Returns where it belongs and whether
/// it was written.
pub fn save_signed<'a>(
    out: Option<&'a Path>,
    force: bool,
    in_place: &'a Path,
    bytes: &[u8],
    changed: bool,
) -> Result<(&'a Path, bool), FileError> {
    let (dest, overwrite) = match out {
        Some(path) => (path, Overwrite::from_force(force)),
        None => (in_place, Overwrite::Replace),
    };
    let write = changed || out.is_some();
    if write {
        write_atomic(dest, bytes, overwrite, PUBLIC_MODE)?;
    }
    Ok((dest, write))
}

/// Permission of public outputs (trust roots, key sets, bundles, public keys).
pub const PUBLIC_MODE: u32 = 0o644;

/// Permission of private keys.
pub const SECRET_MODE: u32 = 0o600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_clobbers_even_a_file_created_while_writing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut out = AtomicFile::create(&dest, Overwrite::Never, PUBLIC_MODE).unwrap();
        io::Write::write_all(out.file(), b"new").unwrap();
        std::fs::write(&dest, b"raced").unwrap();
        assert!(matches!(out.commit(), Err(FileError::Exists { .. })));
        assert_eq!(std::fs::read(&dest).unwrap(), b"raced");
        // The temporary file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replaces_atomically_with_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("key");
        std::fs::write(&dest, b"old").unwrap();
        assert!(matches!(
            write_atomic(&dest, b"new", Overwrite::Never, SECRET_MODE),
            Err(FileError::Exists { .. })
        ));
        write_atomic(&dest, b"new", Overwrite::Replace, SECRET_MODE).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn documents_above_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; 11]).unwrap();
        assert_eq!(read_limited(&path, 11).unwrap().len(), 11);
        assert!(matches!(
            read_limited(&path, 10),
            Err(FileError::TooLarge { .. })
        ));
    }
}
