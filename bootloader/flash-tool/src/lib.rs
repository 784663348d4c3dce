//! `sigil-flash`: prepares the flash of a device running the Sigil bootloader.
//!
//! A board port describes its flash map in a `board.toml` ([`BoardConfig`]); the firmware is
//! built from the same file. From it this crate
//!
//! - assembles a flash image: the installed bundle in the active slot, optionally the factory
//!   floors in the protected state, the device's X25519 key in the board's key store
//!   ([`read_device_key`], [`FlashImage::provision_device_key`]), a staged bundle (with the key
//!   record of an encrypted one) and an install request ([`FlashImage`]);
//! - stages an update into an existing image, as the device agent would, and reads the
//!   boot-control state back (after QEMU runs, the image holds what the device wrote);
//! - turns an application ELF into the payload to sign, checking that it is linked where the
//!   bootloader will start it ([`payload_from_elf`]).
//!
//! Requests are written by `sigil_bootloader::BootControl` and the factory floors by
//! `sigil_bootloader::provision`, over an in-memory NOR flash of the board's geometry, so they
//! are exactly what the bootloader reads.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod memflash;

/// The board configuration (`board.toml`), shared with the firmware build scripts.
pub use sigil_board_build as board;

use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::NorFlash;
use object::read::elf::{ElfFile32, ProgramHeader, SectionHeader};
use object::Endianness;
use sigil_bootloader::{BootControl, BootState, Floors, Layout, Request};

pub use board::BoardConfig;
use memflash::{with_flash, FlashOp};

/// Why a flash image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The flash image does not have the board's flash size.
    #[error("{path} is {found} bytes, but this board's flash image is {expected} bytes")]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        found: u64,
        /// The board's flash size.
        expected: u64,
    },
    /// A bundle larger than a slot.
    #[error("the bundle is {len} bytes, but a slot holds {max}")]
    BundleTooLarge {
        /// The bundle length.
        len: usize,
        /// The slot size.
        max: u32,
    },
    /// The board's geometry has no flash instance in this tool.
    #[error("flash geometry (erase {erase} B, write {write} B, read {read} B) is not supported by sigil-flash")]
    UnsupportedGeometry {
        /// Erase size.
        erase: u32,
        /// Write size.
        write: u32,
        /// Read size.
        read: u32,
    },
    /// The bootloader's boot-control API refused the request.
    #[error("boot control")]
    Boot(#[from] sigil_bootloader::Error),
    /// The bundle to stage is not a well-formed bundle.
    #[error("not a bundle")]
    Bundle(#[from] sigil_manifests::Error),
    /// The ELF file is not a usable application image.
    #[error("application ELF: {0}")]
    Elf(String),
    /// The device key file is not an X25519 private key.
    #[error("{path} is not an X25519 private key (PKCS#8 PEM, as `sigil keygen --x25519` writes): {reason}")]
    BadDeviceKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The board keeps no device key in this flash (board.toml has no `device_key` sector).
    #[error("this board has no device key store (board.toml [layout] device_key)")]
    NoKeyStore,
    /// The device key store of the image holds something the bootloader refuses.
    #[error("device key store")]
    BadKeyStore(#[source] sigil_bootloader::KeyStoreError),
    /// The device key store of the image is already written.
    #[error("the device key store is already provisioned")]
    KeyStoreWritten,
}

/// The X25519 object identifier (RFC 8410).
const X25519_OID: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.101.110");

/// Reads a device's X25519 private key (PKCS#8 PEM, RFC 8410: what `sigil keygen --x25519` and
/// `openssl genpkey -algorithm x25519` write) and derives its public key, so the key pair the
/// bootloader receives always matches.
pub fn read_device_key(path: &Path) -> Result<sigil_bootloader::DeviceSecret, ImageError> {
    use pkcs8::der::asn1::OctetStringRef;
    use pkcs8::der::Decode as _;
    let bad = |reason: &str| ImageError::BadDeviceKey {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?);
    let text = std::str::from_utf8(&text).map_err(|_| bad("not a PEM text file"))?;
    let (label, doc) =
        pkcs8::SecretDocument::from_pem(text).map_err(|e| bad(&format!("PEM: {e}")))?;
    if label != "PRIVATE KEY" {
        return Err(bad(&format!("a {label:?} PEM block, not \"PRIVATE KEY\"")));
    }
    let info: pkcs8::PrivateKeyInfo<'_> =
        doc.decode_msg().map_err(|e| bad(&format!("PKCS#8: {e}")))?;
    if info.algorithm.oid != X25519_OID {
        return Err(bad(&format!(
            "key algorithm {} (an X25519 key is 1.3.101.110)",
            info.algorithm.oid
        )));
    }
    let secret = OctetStringRef::from_der(info.private_key)
        .map_err(|e| bad(&format!("private key: {e}")))?;
    let secret: [u8; 32] = secret
        .as_bytes()
        .try_into()
        .map_err(|_| bad("the private key is not 32 bytes"))?;
    let pair = sigil_manifests::encryption::DeviceKey::from_secret(secret);
    Ok(sigil_bootloader::DeviceSecret::new(
        secret,
        pair.public_key(),
    ))
}

/// A whole flash device image of one board.
#[derive(Debug, Clone)]
pub struct FlashImage {
    board: BoardConfig,
    layout: Layout,
    bytes: Vec<u8>,
}

struct Stage<'a> {
    bundle: &'a [u8],
    /// The key record of an encrypted bundle, written beside it.
    key_record: Option<&'a [u8]>,
    /// The manifest digest to request the install of.
    pending: Option<[u8; 32]>,
}

impl FlashOp for Stage<'_> {
    type Output = Result<BootState, sigil_bootloader::Error>;

    fn run<F: NorFlash>(self, flash: &mut F, layout: Layout) -> Self::Output {
        let mut control = BootControl::new(flash, layout)?;
        stage(&mut control, self.bundle, self.key_record, self.pending)?;
        Ok(control.state())
    }
}

fn stage<F: NorFlash>(
    control: &mut BootControl<F>,
    bundle: &[u8],
    key_record: Option<&[u8]>,
    pending: Option<[u8; 32]>,
) -> Result<(), sigil_bootloader::Error> {
    let len = u32::try_from(bundle.len()).map_err(|_| sigil_bootloader::Error::OutOfBounds)?;
    control.erase_staging(len)?;
    // Write in write-size units, padding the last one with the erased value.
    let w = control.layout().geometry().write_size as usize;
    let erased = control.layout().geometry().erased;
    let whole = bundle.len() - bundle.len() % w;
    let (body, tail) = bundle.split_at(whole);
    if !body.is_empty() {
        control.write_staging(0, body)?;
    }
    if !tail.is_empty() {
        let mut last = vec![erased; w];
        last[..tail.len()].copy_from_slice(tail);
        control.write_staging(whole as u32, &last)?;
    }
    if let Some(record) = key_record {
        control.write_key_record(bundle.len() as u64, record)?;
    }
    if let Some(digest) = pending {
        control.request_install(&digest)?;
    }
    Ok(())
}

/// The manifest digest of a bundle (the identity an install request names), from its
/// envelope; the bootloader verifies everything else at boot.
pub fn manifest_digest(bundle: &[u8]) -> Result<[u8; 32], sigil_manifests::Error> {
    let parsed = sigil_manifests::UnverifiedBundle::parse(bundle)?;
    Ok(sigil_manifests::manifest_digest(parsed.envelope().manifest))
}

struct Provision(Floors);

impl FlashOp for Provision {
    type Output = Result<(), sigil_bootloader::Error>;

    fn run<F: NorFlash>(self, flash: &mut F, layout: Layout) -> Self::Output {
        sigil_bootloader::provision(flash, &layout, self.0)
    }
}

/// The protected state and the pending request of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootStatus {
    /// The protected state.
    pub state: BootState,
    /// The newest request the bootloader has not acted on.
    pub request: Option<Request>,
}

struct ReadState;

impl FlashOp for ReadState {
    type Output = Result<BootStatus, sigil_bootloader::Error>;

    fn run<F: NorFlash>(self, flash: &mut F, layout: Layout) -> Self::Output {
        let control = BootControl::new(flash, layout)?;
        Ok(BootStatus {
            state: control.state(),
            request: control.request(),
        })
    }
}

impl FlashImage {
    /// A fully erased flash image (blank boot-control state, empty slots).
    pub fn erased(board: &BoardConfig) -> Result<Self, ImageError> {
        let layout = layout_of(board)?;
        let size = board.flash_size().unwrap_or(0) as usize;
        Ok(FlashImage {
            board: board.clone(),
            layout,
            bytes: vec![board.flash.erased; size],
        })
    }

    /// Reads a flash image file; it must have the board's flash size.
    pub fn open(board: &BoardConfig, path: &Path) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
            path: path.to_owned(),
            source,
        })?;
        let expected = u64::from(board.flash_size().unwrap_or(0));
        if bytes.len() as u64 != expected {
            return Err(ImageError::WrongSize {
                path: path.to_owned(),
                found: bytes.len() as u64,
                expected,
            });
        }
        Ok(FlashImage {
            board: board.clone(),
            layout: layout_of(board)?,
            bytes,
        })
    }

    /// Writes the image to `path` atomically (a crash leaves the old file or the new one).
    pub fn save(&self, path: &Path) -> Result<(), ImageError> {
        let io = |source| ImageError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, &self.bytes).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The raw bytes (flash offset 0 first).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The board this image is for.
    pub fn board(&self) -> &BoardConfig {
        &self.board
    }

    /// The flash layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The active slot's bytes.
    pub fn active_slot(&self) -> &[u8] {
        let start = self.layout.active_offset() as usize;
        &self.bytes[start..start + self.layout.max_bundle_len() as usize]
    }

    /// Programs `bundle` into the active slot as a flash programmer does at the factory: the
    /// slot is erased and the bundle written verbatim. The boot-control state is left as it is
    /// (blank on a new image: the bootloader boots the active slot if it verifies).
    pub fn install(&mut self, bundle: &[u8]) -> Result<(), ImageError> {
        let max = self.layout.max_bundle_len();
        if bundle.len() > max as usize {
            return Err(ImageError::BundleTooLarge {
                len: bundle.len(),
                max,
            });
        }
        let start = self.layout.active_offset() as usize;
        let slot = &mut self.bytes[start..start + max as usize];
        slot.fill(self.board.flash.erased);
        slot[..bundle.len()].copy_from_slice(bundle);
        Ok(())
    }

    /// Factory provisioning: writes the first protected record, with these floors, into the
    /// image's blank protected state (`sigil_bootloader::provision`; refused if it is not blank).
    pub fn provision(&mut self, floors: Floors) -> Result<(), ImageError> {
        Ok(self.run(Provision(floors))??)
    }

    /// Provisions the device's X25519 key pair into the board's key store sector (board.toml
    /// `device_key`), in the record the bootloader decodes (`DeviceSecret::decode`). Refused on
    /// a board without a key store and on an image whose store is already written.
    pub fn provision_device_key(
        &mut self,
        key: &sigil_bootloader::DeviceSecret,
    ) -> Result<(), ImageError> {
        let store = self
            .board
            .device_key_region()
            .ok_or(ImageError::NoKeyStore)?;
        let erased = self.board.flash.erased;
        let sector = &mut self.bytes[store.start as usize..store.end as usize];
        if sector.iter().any(|&b| b != erased) {
            return Err(ImageError::KeyStoreWritten);
        }
        let record = zeroize::Zeroizing::new(key.encode());
        sector[..record.len()].copy_from_slice(&record[..]);
        Ok(())
    }

    /// Whether the image's key store holds a device key record, and its public key.
    pub fn device_public_key(&self) -> Result<Option<[u8; 32]>, ImageError> {
        let Some(store) = self.board.device_key_region() else {
            return Ok(None);
        };
        let start = store.start as usize;
        let record: &[u8; sigil_bootloader::DEVICE_KEY_RECORD_LEN] = self.bytes
            [start..start + sigil_bootloader::DEVICE_KEY_RECORD_LEN]
            .try_into()
            .map_err(|_| ImageError::NoKeyStore)?;
        match sigil_bootloader::DeviceSecret::decode(record, self.board.flash.erased) {
            Ok(key) => Ok(key.map(|k| k.public_key())),
            Err(e) => Err(ImageError::BadKeyStore(e)),
        }
    }

    /// Writes `bundle` into the staging slot through the boot-control API, as the agent does,
    /// and with `pending` requests its install at the next boot.
    pub fn stage(&mut self, bundle: &[u8], pending: bool) -> Result<BootState, ImageError> {
        self.stage_with(bundle, None, pending)
    }

    /// As [`FlashImage::stage`], for an encrypted bundle: its device key record (`SGL-WKEY`,
    /// from `sigil sign --encrypt-to`) is written beside it where the bootloader reads it
    /// (`Layout::key_record_offset`), as the agent does.
    pub fn stage_encrypted(
        &mut self,
        bundle: &[u8],
        key_record: &[u8],
        pending: bool,
    ) -> Result<BootState, ImageError> {
        self.stage_with(bundle, Some(key_record), pending)
    }

    fn stage_with(
        &mut self,
        bundle: &[u8],
        key_record: Option<&[u8]>,
        pending: bool,
    ) -> Result<BootState, ImageError> {
        let max = self.layout.max_bundle_len();
        if bundle.len() > max as usize {
            return Err(ImageError::BundleTooLarge {
                len: bundle.len(),
                max,
            });
        }
        let pending = if pending {
            Some(manifest_digest(bundle)?)
        } else {
            None
        };
        let out = self.run(Stage {
            bundle,
            key_record,
            pending,
        })?;
        Ok(out?)
    }

    /// The protected state recorded in the image.
    pub fn state(&self) -> Result<BootState, ImageError> {
        Ok(self.status()?.state)
    }

    /// The protected state and the pending request recorded in the image.
    pub fn status(&self) -> Result<BootStatus, ImageError> {
        let mut copy = self.clone();
        Ok(copy.run(ReadState)??)
    }

    fn run<O: FlashOp>(&mut self, op: O) -> Result<O::Output, ImageError> {
        let bytes = std::mem::take(&mut self.bytes);
        match with_flash(bytes, self.layout, op) {
            Ok((bytes, out)) => {
                self.bytes = bytes;
                Ok(out)
            }
            Err(bytes) => {
                self.bytes = bytes;
                let g = self.layout.geometry();
                Err(ImageError::UnsupportedGeometry {
                    erase: g.erase_size,
                    write: g.write_size,
                    read: g.read_size,
                })
            }
        }
    }
}

fn layout_of(board: &BoardConfig) -> Result<Layout, ImageError> {
    board
        .layout()
        .map_err(|e| ImageError::Boot(sigil_bootloader::Error::Layout(e)))
}

/// Extracts the flat image to sign from an application ELF: every loadable segment with file
/// contents, placed by its load (physical) address, gaps filled with the erased value. The
/// image must start exactly at the board's application address (where the bootloader starts
/// it), with the vector table first.
pub fn payload_from_elf(elf: &[u8], board: &BoardConfig) -> Result<Vec<u8>, ImageError> {
    let origin = u64::from(board.app_origin());
    let file = ElfFile32::<Endianness>::parse(elf).map_err(|e| ImageError::Elf(e.to_string()))?;
    let endian = file.endian();
    // Sections with contents, placed at their load address (LMA): `.data`'s initial values
    // live in flash behind `.rodata`. Segments alone would also pull in the ELF headers that
    // linkers may map below the first section.
    let headers = file.elf_program_headers();
    let mut segments = Vec::new();
    for section in file.elf_section_table().iter() {
        let flags = section.sh_flags(endian);
        let size = section.sh_size(endian);
        if flags & object::elf::SHF_ALLOC == 0
            || section.sh_type(endian) == object::elf::SHT_NOBITS
            || size == 0
        {
            continue;
        }
        let offset = section.sh_offset(endian);
        let lma = headers
            .iter()
            .find(|ph| {
                ph.p_type(endian) == object::elf::PT_LOAD
                    && offset >= ph.p_offset(endian)
                    && offset + size <= ph.p_offset(endian) + ph.p_filesz(endian)
            })
            .map(|ph| ph.p_paddr(endian) + (offset - ph.p_offset(endian)))
            .ok_or_else(|| {
                ImageError::Elf("a section lies outside every loadable segment".into())
            })?;
        let data = section
            .data(endian, elf)
            .map_err(|_| ImageError::Elf("section outside the file".into()))?;
        segments.push((u64::from(lma), data));
    }
    segments.sort_by_key(|(addr, _)| *addr);
    let Some(&(first, _)) = segments.first() else {
        return Err(ImageError::Elf("no loadable segments".into()));
    };
    if first != origin {
        return Err(ImageError::Elf(format!(
            "linked at {first:#x}, but this board starts applications at {origin:#x} \
             (flash base + active slot + payload alignment)"
        )));
    }
    let mut image = Vec::new();
    for (addr, data) in segments {
        let at = (addr - origin) as usize;
        if at < image.len() {
            return Err(ImageError::Elf(format!(
                "overlapping segments at {addr:#x}"
            )));
        }
        image.resize(at, board.flash.erased);
        image.extend_from_slice(data);
    }
    let max = board
        .layout
        .slot_sectors
        .saturating_mul(board.flash.erase_size)
        .saturating_sub(board.device.payload_alignment);
    if image.len() > max as usize {
        return Err(ImageError::Elf(format!(
            "image is {} bytes, more than the {max} a slot holds after the bundle header",
            image.len()
        )));
    }
    Ok(image)
}
