//! Boots of the mps2-an385 bootloader firmware in `qemu-system-arm`.
//!
//! [`firmware`] prepares everything once per test process: it checks the tools, creates test
//! keys with `sigil` (kept in `target/qemu/fixtures`, so the bootloader, which compiles the
//! trust root in, is rebuilt only when its sources change), builds the bootloader and the
//! test application variants for `thumbv7m-none-eabi` in their own target directory
//! (`target/qemu`, so the outer cargo's lock is never waited on) under a file lock shared by
//! concurrently running test processes, and copies the ELF files into a private directory.
//!
//! A [`Device`] is one flash image in its own directory; [`Device::boot`] is one power-on:
//! one QEMU run that loads `flash.bin`, which the bootloader writes through to (the application
//! writes through the bootloader's flash service). [`Device::boot_attacked`] boots the hostile
//! test application with one of its [`Attack`]s, optionally on the control bootloader whose
//! lock protects nothing ([`Firmware::unlocked_bootloader`]).
// Test harness: a broken set-up (missing tool, failed build) must stop the test loudly, with
// its cause, rather than be reported as a boot result.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sigil_bootloader::{BootState, Phase};
use sigil_flash::{payload_from_elf, BoardConfig, FlashImage};

use crate::gdb::{Gdb, Stop};
use crate::sigil::sigil;

/// Exit code: the bootloader refused to boot (no verified image; it did not jump).
pub const EXIT_NO_BOOTABLE_IMAGE: i32 = 0x50;
/// Exit code: flash (or its host file) error.
pub const EXIT_FLASH_ERROR: i32 = 0x51;
/// Exit code: a verified image's vector table was refused.
pub const EXIT_BAD_VECTOR_TABLE: i32 = 0x52;
/// Exit code: the bootloader's fault handler stopped the application (it broke the lock).
pub const EXIT_APP_FAULT: i32 = 0x54;
/// Exit code of the bootloader when it took an exception of its own (on microbit: one its
/// vector table did not forward to a started image).
pub const EXIT_BOOTLOADER_EXCEPTION: i32 = 0x56;
/// Exit code of the hostile application when a store or a semihosting call the lock must stop
/// went through.
pub const EXIT_LOCK_BREACHED: i32 = 0x49;

/// The board's test strap (`sigil_board_mps2_an385::TEST_STRAP`): a word past the flash device
/// that QEMU sets at power-on to pick the hostile application's attack.
const TEST_STRAP: u32 = 0x003F_F000;

/// Longest one QEMU boot may take before it is killed and the test fails.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A board port the QEMU tests run: the same stories (tests/tests/qemu_boot.rs) on each.
#[derive(Debug)]
pub struct Board {
    /// Its directory under `bootloader/boards`.
    pub dir: &'static str,
    /// The Rust target.
    pub target: &'static str,
    /// The bootloader package (built with `log`).
    pub boot_package: &'static str,
    /// The test application package.
    pub app_package: &'static str,
    /// QEMU's machine arguments.
    pub machine: &'static [&'static str],
    /// The application variants built for it.
    pub variants: &'static [AppVariant],
    /// Whether it has the hostile application and the control bootloader (`dangerous-unlocked`).
    pub hostile: bool,
}

/// QEMU mps2-an385 (Cortex-M3): the reference port, with the MPU lock and the hostile tests.
pub static MPS2_AN385: Board = Board {
    dir: "mps2-an385",
    target: "thumbv7m-none-eabi",
    boot_package: "sigil-boot-mps2-an385",
    app_package: "sigil-app-mps2-an385",
    machine: &["-machine", "mps2-an385", "-cpu", "cortex-m3"],
    variants: &VARIANTS,
    hostile: true,
};

/// QEMU microbit (nRF51822, Cortex-M0, 16 KiB RAM): the NVMC flash controller.
pub static MICROBIT: Board = Board {
    dir: "microbit",
    target: "thumbv6m-none-eabi",
    boot_package: "sigil-boot-microbit",
    app_package: "sigil-app-microbit",
    machine: &["-machine", "microbit"],
    variants: &[APP_V1, APP_V2, APP_V2_NO_CONFIRM],
    hostile: false,
};

/// The Rust target of the reference board (mps2-an385).
pub const TARGET: &str = "thumbv7m-none-eabi";

/// A build-time variant of the test application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppVariant {
    /// File stem of its artifacts.
    pub name: &'static str,
    /// The version it prints and is signed with.
    pub version: &'static str,
    /// Its distinctive QEMU exit code.
    pub exit_code: u8,
    /// Whether it confirms a trial boot.
    pub confirms: bool,
    /// The hostile test application (binary `sigil-hostile-app`) instead of the test
    /// application.
    pub hostile: bool,
}

/// Release 1.0.0: confirms, exits 0x11.
pub const APP_V1: AppVariant = AppVariant {
    name: "app-v1",
    version: "1.0.0",
    exit_code: 0x11,
    confirms: true,
    hostile: false,
};

/// Release 2.0.0: confirms, exits 0x22.
pub const APP_V2: AppVariant = AppVariant {
    name: "app-v2",
    version: "2.0.0",
    exit_code: 0x22,
    confirms: true,
    hostile: false,
};

/// A broken 2.0.1 that never confirms (the bootloader must revert it); exits 0x2E.
pub const APP_V2_NO_CONFIRM: AppVariant = AppVariant {
    name: "app-v2-no-confirm",
    version: "2.0.1",
    exit_code: 0x2E,
    confirms: false,
    hostile: false,
};

/// Compromised application firmware, validly signed (`app/src/hostile.rs`): 6.6.6, exits 0x48
/// after an attack the lock refused (or with none), confirms a trial boot.
pub const APP_HOSTILE: AppVariant = AppVariant {
    name: "app-hostile",
    version: "6.6.6",
    exit_code: 0x48,
    confirms: true,
    hostile: true,
};

const VARIANTS: [AppVariant; 4] = [APP_V1, APP_V2, APP_V2_NO_CONFIRM, APP_HOSTILE];

/// The hostile application's attacks (the table in `app/src/hostile.rs`), picked per boot with
/// the board's test strap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Attack {
    /// A forged protected record that installs the staged bundle with floors 0, written
    /// through the flash service.
    ForgedFloor = 1,
    /// Erase the protected state through the flash service.
    EraseProtected = 2,
    /// A forged protected record that marks the staged bundle rejected.
    ForgedRejection = 3,
    /// A protected record with sequence `u32::MAX`, then the request sector programmed to zeros.
    ExhaustSequence = 4,
    /// An install request for the staged bundle.
    OldImageRequest = 5,
    /// A store into the protected state through the memory window.
    StoreProtected = 6,
    /// The same store through QEMU's mirror of SSRAM1.
    StoreMirror = 7,
    /// A store into the bootloader's RAM (the latch).
    StoreLatch = 8,
    /// A store of 0 to the MPU's control register.
    MpuOff = 9,
    /// Its own semihosting call, opening `flash.bin`.
    Semihosting = 10,
    /// The flash service asked to copy and print the bootloader's memory.
    ServiceDeputy = 11,
    /// Erase the active slot (the running verified image) through the flash service.
    EraseActive = 12,
    /// On a trial boot, erase the staging slot, which holds the image to revert to.
    EraseRevertImage = 13,
    /// A read of the device key store (the X25519 private key) through the memory window.
    ReadKey = 14,
    /// The same read through QEMU's mirror of SSRAM1.
    ReadKeyMirror = 15,
    /// The flash service asked to copy the key store into the staging slot and to print it.
    ServiceKey = 16,
    /// Erase the key store through the flash service.
    EraseKey = 17,
}

/// How to sign an application image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignSpec {
    /// The product (`VENDOR/DEVICE`); `None` is the board's own.
    pub product: Option<&'static str>,
    /// The security counter.
    pub counter: u32,
}

impl SignSpec {
    /// The board's product with `counter`.
    pub fn counter(counter: u32) -> Self {
        SignSpec {
            product: None,
            counter,
        }
    }
}

/// Built firmware, keys and signing, shared by the tests of one process.
#[derive(Debug)]
pub struct Firmware {
    spec: &'static Board,
    dir: tempfile::TempDir,
    board_path: PathBuf,
    board: BoardConfig,
    bootloader: PathBuf,
    unlocked: OnceLock<PathBuf>,
    decrypting: OnceLock<PathBuf>,
    flash_write: u64,
    keys: PathBuf,
    signed: Mutex<HashMap<(String, SignSpec), PathBuf>>,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The reference board port's directory (mps2-an385).
pub fn board_dir() -> PathBuf {
    board_dir_of(&MPS2_AN385)
}

fn board_dir_of(board: &Board) -> PathBuf {
    repo_root().join("bootloader/boards").join(board.dir)
}

/// Where the firmware is built and the test keys are kept.
pub fn qemu_target_dir() -> PathBuf {
    repo_root().join("target/qemu")
}

/// The shared firmware of the reference board (mps2-an385), built on first use.
pub fn firmware() -> &'static Firmware {
    firmware_for(&MPS2_AN385)
}

/// The shared firmware of `board`, built on first use.
pub fn firmware_for(board: &'static Board) -> &'static Firmware {
    static MPS2: OnceLock<Firmware> = OnceLock::new();
    static MICRO: OnceLock<Firmware> = OnceLock::new();
    let cell = if std::ptr::eq(board, &MICROBIT) {
        &MICRO
    } else {
        &MPS2
    };
    cell.get_or_init(|| Firmware::prepare(board))
}

fn require_tools(board: &Board) {
    match Command::new("qemu-system-arm").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "qemu-system-arm is missing: the QEMU boot tests need it \
             (Debian/Ubuntu: apt-get install qemu-system-arm; scripts/test installs it)"
        ),
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(board_dir_of(board))
        .output()
        .expect("rustc runs");
    let target = board.target;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
    {
        panic!(
            "the Rust target {target} is missing (sysroot {}): rustup target add {target} \
             (scripts/test installs it)",
            sysroot.display()
        );
    }
}

fn cargo_build(board: &Board, args: &[&str], envs: &[(&str, &str)]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(board_dir_of(board))
        .args(["build", "--release", "--locked", "--target", board.target])
        .args(args)
        .env("CARGO_TARGET_DIR", qemu_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cargo runs");
    if !out.status.success() {
        panic!(
            "building firmware failed: cargo build {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The lock that serialises firmware builds across test processes (held until dropped).
fn build_lock() -> std::fs::File {
    let target = qemu_target_dir();
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::File::create(target.join("sigil-tests.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    lock
}

fn artifact(board: &Board, bin: &str) -> PathBuf {
    qemu_target_dir()
        .join(board.target)
        .join("release")
        .join(bin)
}

/// Creates the test keys with `sigil` unless a previous run did (kept so the bootloader,
/// which compiles the trust root in, is not rebuilt every run).
fn ensure_keys(keys: &Path) {
    if keys.join("keyset.sgl").is_file() {
        return;
    }
    let staging = keys.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    let p = |name: &str| staging.join(name).into_os_string();
    sigil(["keygen".into(), "--out".into(), p("root1.pem")]).unwrap();
    sigil(["keygen".into(), "--out".into(), p("release1.pem")]).unwrap();
    sigil([
        "root".into(),
        "init".into(),
        "--threshold".into(),
        "1".into(),
        "--out".into(),
        p("root.sgl"),
        p("root1.pub.pem"),
    ])
    .unwrap();
    sigil([
        "keyset".into(),
        "create".into(),
        "--threshold".into(),
        "1".into(),
        "--key-set-version".into(),
        "1".into(),
        "--out".into(),
        p("keyset.sgl"),
        p("release1.pub.pem"),
    ])
    .unwrap();
    sigil([
        "keyset".into(),
        "sign".into(),
        p("keyset.sgl"),
        "--key".into(),
        p("root1.pem"),
        "--root".into(),
        p("root.sgl"),
    ])
    .unwrap();
    let _ = std::fs::remove_dir_all(keys);
    std::fs::rename(&staging, keys).unwrap();
}

/// A fingerprint of every input of the test application builds: the sources and manifests of
/// the board workspace, the bootloader core and the format crate, the toolchain file, the
/// variant definitions and the compiler version.
fn app_fingerprint(spec: &Board) -> String {
    use std::hash::{Hash, Hasher};
    fn walk(path: &Path, hasher: &mut std::hash::DefaultHasher) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().is_some_and(|n| n != "target"))
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, hasher);
            }
        } else if let Ok(bytes) = std::fs::read(path) {
            path.hash(hasher);
            bytes.hash(hasher);
        }
    }
    let repo = repo_root();
    let board = board_dir_of(spec);
    let common = repo.join("bootloader/boards/common");
    let mut hasher = std::hash::DefaultHasher::new();
    for input in [
        board.join("app"),
        board.join("board"),
        board.join("board.toml"),
        board.join("Cargo.toml"),
        board.join("Cargo.lock"),
        common.clone(),
        repo.join("bootloader/boards/build"),
        repo.join("bootloader/src"),
        repo.join("bootloader/Cargo.toml"),
        repo.join("manifests/src"),
        repo.join("manifests/Cargo.toml"),
        repo.join("Cargo.toml"),
        repo.join("rust-toolchain.toml"),
    ] {
        walk(&input, &mut hasher);
    }
    format!("{:?}", spec.variants).hash(&mut hasher);
    let rustc = Command::new("rustc")
        .arg("--version")
        .current_dir(board_dir_of(spec))
        .output()
        .expect("rustc runs");
    rustc.stdout.hash(&mut hasher);
    format!("{:016x}\n", hasher.finish())
}

/// The board flash driver's `Flash::persist`, where each erase or write chunk reaches the
/// persistent flash (the host file): the power-cut tests break there.
fn flash_write_address(elf: &[u8]) -> u64 {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(elf).expect("the bootloader ELF parses");
    let found: Vec<u64> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text)
        .filter(|s| s.name().is_ok_and(|n| n.contains("5Flash7persist")))
        .map(|s| s.address())
        .collect();
    // Exactly one: a second copy (a clone LLVM made, say) would let writes go uncounted.
    let [address] = found[..] else {
        panic!("the bootloader ELF must have one Flash::persist function, found {found:x?}");
    };
    // Thumb function symbols carry the mode in bit 0.
    address & !1
}

impl Firmware {
    fn prepare(spec: &'static Board) -> Firmware {
        require_tools(spec);
        let target = qemu_target_dir();
        std::fs::create_dir_all(&target).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let board_path = board_dir_of(spec).join("board.toml");
        let board = BoardConfig::load(&board_path).unwrap();
        let keys = target.join("fixtures/keys");

        // One builder at a time across test processes: the app variants share one target
        // directory, and each build replaces the previous variant's binary.
        let lock = build_lock();
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        ensure_keys(&keys);
        let root = keys.join("root.sgl");
        cargo_build(
            spec,
            &["-p", spec.boot_package, "--features", "log"],
            &[("SIGIL_TRUST_ROOT", root.to_str().unwrap())],
        );
        let bootloader = dir.path().join("sigil-boot.elf");
        std::fs::copy(artifact(spec, "sigil-boot"), &bootloader).unwrap();
        let flash_write = flash_write_address(&std::fs::read(&bootloader).unwrap());
        // The variants differ only in build-time settings, so each build replaces the previous
        // binary; their payloads are cached under a fingerprint of everything they are built
        // from, so later test processes skip the three rebuilds.
        let apps = target.join("fixtures/apps").join(spec.dir);
        let stamp = apps.join("fingerprint");
        let fingerprint = app_fingerprint(spec);
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(fingerprint.as_str()) {
            let _ = std::fs::remove_dir_all(&apps);
            std::fs::create_dir_all(&apps).unwrap();
            for &v in spec.variants {
                let features = if v.confirms { "" } else { "no-confirm" };
                let bin = if v.hostile {
                    "sigil-hostile-app"
                } else {
                    "sigil-test-app"
                };
                let code = v.exit_code.to_string();
                cargo_build(
                    spec,
                    &["-p", spec.app_package, "--bin", bin, "--features", features],
                    &[
                        ("SIGIL_APP_VERSION", v.version),
                        ("SIGIL_APP_EXIT_CODE", &code),
                    ],
                );
                let elf = std::fs::read(artifact(spec, bin)).unwrap();
                let payload = payload_from_elf(&elf, &board).unwrap();
                std::fs::write(apps.join(format!("{}.bin", v.name)), payload).unwrap();
            }
            std::fs::write(&stamp, &fingerprint).unwrap();
        }
        for v in spec.variants {
            let name = format!("{}.bin", v.name);
            std::fs::copy(apps.join(&name), dir.path().join(&name)).unwrap();
        }
        drop(lock);

        Firmware {
            spec,
            dir,
            board_path,
            board,
            bootloader,
            unlocked: OnceLock::new(),
            decrypting: OnceLock::new(),
            flash_write,
            keys,
            signed: Mutex::new(HashMap::new()),
        }
    }

    /// The board configuration.
    pub fn board(&self) -> &BoardConfig {
        &self.board
    }

    /// The board configuration file.
    pub fn board_path(&self) -> &Path {
        &self.board_path
    }

    /// The board's product id, `VENDOR/DEVICE`.
    pub fn product(&self) -> String {
        format!("{}/{}", self.board.device.vendor, self.board.device.device)
    }

    /// The bootloader ELF (built with logging).
    pub fn bootloader(&self) -> &Path {
        &self.bootloader
    }

    /// The control bootloader (logging, feature `dangerous-unlocked`): the same firmware
    /// whose lock protects nothing, built on first use. Attacks that change the device when
    /// booted on it are real attacks, which the lock of [`Firmware::bootloader`] must stop.
    pub fn unlocked_bootloader(&self) -> &Path {
        self.unlocked.get_or_init(|| {
            let lock = build_lock();
            let root = self.keys.join("root.sgl");
            assert!(
                self.spec.hostile,
                "{} has no control bootloader",
                self.spec.dir
            );
            cargo_build(
                self.spec,
                &[
                    "-p",
                    self.spec.boot_package,
                    "--features",
                    "log,dangerous-unlocked",
                ],
                &[("SIGIL_TRUST_ROOT", root.to_str().unwrap())],
            );
            let elf = self.dir.path().join("sigil-boot-unlocked.elf");
            std::fs::copy(artifact(self.spec, "sigil-boot"), &elf).unwrap();
            drop(lock);
            elf
        })
    }

    /// The bootloader built with logging and feature `encryption`: it reads the device key
    /// store and decrypts encrypted releases while installing. Built on first use.
    pub fn decrypting_bootloader(&self) -> &Path {
        self.decrypting.get_or_init(|| {
            let lock = build_lock();
            let root = self.keys.join("root.sgl");
            cargo_build(
                self.spec,
                &["-p", self.spec.boot_package, "--features", "log,encryption"],
                &[("SIGIL_TRUST_ROOT", root.to_str().unwrap())],
            );
            let elf = self.dir.path().join("sigil-boot-encryption.elf");
            std::fs::copy(artifact(self.spec, "sigil-boot"), &elf).unwrap();
            drop(lock);
            elf
        })
    }

    /// Signs `variant` as an encrypted release (`sigil sign --encrypt-to` each of
    /// `recipients`, X25519 public key files) into `out`; the key records go to
    /// `out` + `.wkeys/<recipient id>.wkey`.
    pub fn sign_encrypted(
        &self,
        variant: AppVariant,
        counter: u32,
        recipients: &[&Path],
        out: &Path,
    ) -> PathBuf {
        let k = |name: &str| self.keys.join(name).into_os_string();
        let mut args: Vec<std::ffi::OsString> = vec![
            "sign".into(),
            self.payload(variant).into_os_string(),
            "--key-set".into(),
            k("keyset.sgl"),
            "--key".into(),
            k("release1.pem"),
            "--product".into(),
            self.product().into(),
            "--component".into(),
            "app".into(),
            "--version".into(),
            variant.version.into(),
            "--security-counter".into(),
            counter.to_string().into(),
            "--alignment".into(),
            self.board.device.payload_alignment.to_string().into(),
            "--content-key".into(),
            out.with_extension("cek").into_os_string(),
            "--out".into(),
            out.as_os_str().to_owned(),
        ];
        for r in recipients {
            args.push("--encrypt-to".into());
            args.push(r.as_os_str().to_owned());
        }
        sigil(args).unwrap();
        out.to_path_buf()
    }

    /// Signs `variant` with `sigil sign` (once per spec) and returns the bundle file.
    pub fn bundle(&self, variant: AppVariant, spec: SignSpec) -> PathBuf {
        let payload = self.dir.path().join(format!("{}.bin", variant.name));
        self.sign(variant.name, &payload, variant.version, spec)
    }

    /// The unsigned payload (the application image) of `variant`.
    pub fn payload(&self, variant: AppVariant) -> PathBuf {
        self.dir.path().join(format!("{}.bin", variant.name))
    }

    /// The test keys: `root1.pem`, `root.sgl` (the trust root the bootloader is built with),
    /// `release1.pem` and `keyset.sgl` (key-set version 1, release key 1).
    pub fn keys(&self) -> &Path {
        &self.keys
    }

    /// Signs `variant`'s image as `version` with any key set and release key (key-rotation
    /// and replay stories); written to `out`.
    pub fn sign_as(
        &self,
        variant: AppVariant,
        version: &str,
        counter: u32,
        key_set: &Path,
        key: &Path,
        out: &Path,
    ) -> PathBuf {
        sigil([
            "sign".into(),
            self.payload(variant).into_os_string(),
            "--key-set".into(),
            key_set.as_os_str().to_owned(),
            "--key".into(),
            key.as_os_str().to_owned(),
            "--product".into(),
            self.product().into(),
            "--component".into(),
            "app".into(),
            "--version".into(),
            version.into(),
            "--security-counter".into(),
            counter.to_string().into(),
            "--alignment".into(),
            self.board.device.payload_alignment.to_string().into(),
            "--out".into(),
            out.as_os_str().to_owned(),
        ])
        .unwrap();
        out.to_path_buf()
    }

    /// Signs arbitrary `payload` bytes (not an application) as version 9.9.9.
    pub fn bundle_of(&self, name: &str, payload: &[u8], spec: SignSpec) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.bin"));
        std::fs::write(&path, payload).unwrap();
        self.sign(name, &path, "9.9.9", spec)
    }

    fn sign(&self, name: &str, payload: &Path, version: &str, spec: SignSpec) -> PathBuf {
        let mut signed = self.signed.lock().unwrap();
        let key = (name.to_owned(), spec);
        if let Some(path) = signed.get(&key) {
            return path.clone();
        }
        let product = spec.product.map_or_else(|| self.product(), str::to_owned);
        let out = self.dir.path().join(format!(
            "{name}-{}-{}.sgl",
            product.replace('/', "_"),
            spec.counter
        ));
        let k = |name: &str| self.keys.join(name).into_os_string();
        sigil([
            "sign".into(),
            payload.as_os_str().to_owned(),
            "--key-set".into(),
            k("keyset.sgl"),
            "--key".into(),
            k("release1.pem"),
            "--product".into(),
            product.into(),
            "--component".into(),
            "app".into(),
            "--version".into(),
            version.into(),
            "--security-counter".into(),
            spec.counter.to_string().into(),
            "--alignment".into(),
            self.board.device.payload_alignment.to_string().into(),
            "--out".into(),
            out.clone().into_os_string(),
        ])
        .unwrap();
        signed.insert(key, out.clone());
        out
    }

    /// A copy of `bundle` with the last payload byte flipped: the signatures still verify,
    /// the payload digest does not.
    pub fn tampered(&self, bundle: &Path) -> PathBuf {
        let mut bytes = std::fs::read(bundle).unwrap();
        *bytes.last_mut().unwrap() ^= 0x01;
        let out = bundle.with_extension("tampered.sgl");
        std::fs::write(&out, bytes).unwrap();
        out
    }
}

/// The manifest digest that names the bundle file `bundle` in requests and in the rejected list.
pub fn manifest_digest(bundle: &Path) -> [u8; 32] {
    sigil_flash::manifest_digest(&std::fs::read(bundle).unwrap()).unwrap()
}

/// How a device is powered on: which bootloader, and the test strap.
#[derive(Debug, Default)]
struct Power {
    /// The test strap's word (QEMU leaves it 0 without one).
    strap: Option<u32>,
    /// Another bootloader ELF than [`Firmware::bootloader`].
    bootloader: Option<PathBuf>,
}

/// One device: a flash image in its own directory.
#[derive(Debug)]
pub struct Device {
    fw: &'static Firmware,
    dir: tempfile::TempDir,
}

/// A QEMU process that is killed if the test panics before it ended (a debugger connection
/// that fails, say), so no emulator outlives its test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The result of one QEMU run.
#[derive(Debug)]
pub struct Boot {
    /// QEMU's exit code (the firmware's semihosting exit code).
    pub code: Option<i32>,
    /// Everything the firmware printed (stdout, then stderr).
    pub output: String,
}

impl Boot {
    /// Whether the application `variant` ran and ended the run.
    pub fn ran(&self, variant: AppVariant) -> bool {
        self.code == Some(i32::from(variant.exit_code))
            && self.output.contains(&format!(
                "app: sigil test application {} running",
                variant.version
            ))
    }

    /// Whether any application started.
    pub fn app_started(&self) -> bool {
        self.output.contains("app: sigil test application")
    }
}

impl Device {
    /// A device whose flash holds `installed` in the active slot and optionally `staged` (with
    /// a pending request) in the staging slot: `sigil-flash assemble`.
    pub fn assemble(installed: &Path, staged: Option<&Path>, pending: bool) -> Device {
        Device::assemble_on(firmware(), installed, staged, pending)
    }

    /// [`Device::assemble`] on the board of `fw`.
    pub fn assemble_on(
        fw: &'static Firmware,
        installed: &Path,
        staged: Option<&Path>,
        pending: bool,
    ) -> Device {
        let mut image = FlashImage::erased(fw.board()).unwrap();
        image.install(&std::fs::read(installed).unwrap()).unwrap();
        if let Some(staged) = staged {
            image
                .stage(&std::fs::read(staged).unwrap(), pending)
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        image.save(&dir.path().join("flash.bin")).unwrap();
        Device { fw, dir }
    }

    /// The flash image file.
    pub fn flash_path(&self) -> PathBuf {
        self.dir.path().join("flash.bin")
    }

    fn image(&self) -> FlashImage {
        FlashImage::open(self.fw.board(), &self.flash_path()).unwrap()
    }

    /// The boot-control state as the device left it.
    pub fn state(&self) -> BootState {
        self.image().state().unwrap()
    }

    /// Whether the image on trial has written its confirm request (the floors rise at the next
    /// boot).
    pub fn confirm_requested(&self) -> bool {
        let status = self.image().status().unwrap();
        status.state.phase == Phase::Trial
            && status.request == Some(sigil_bootloader::Request::Confirm(status.state.trial_image))
    }

    /// Whether an install request waits for the next boot.
    pub fn install_requested(&self) -> bool {
        matches!(
            self.image().status().unwrap().request,
            Some(sigil_bootloader::Request::Install(_))
        )
    }

    /// The active slot's bytes.
    pub fn active_slot(&self) -> Vec<u8> {
        self.image().active_slot().to_vec()
    }

    /// Stages `bundle` (as the agent does) and requests its install.
    pub fn stage(&self, bundle: &Path) {
        self.stage_with(bundle, true);
    }

    /// Stages `bundle` without an install request.
    pub fn stage_unrequested(&self, bundle: &Path) {
        self.stage_with(bundle, false);
    }

    fn stage_with(&self, bundle: &Path, request: bool) {
        let mut image = self.image();
        image
            .stage(&std::fs::read(bundle).unwrap(), request)
            .unwrap();
        image.save(&self.flash_path()).unwrap();
    }

    /// The whole flash image.
    pub fn flash_bytes(&self) -> Vec<u8> {
        std::fs::read(self.flash_path()).unwrap()
    }

    /// Writes `bundle` over the active slot, bypassing the update process (an attacker with a
    /// flash programmer).
    pub fn dangerous_overwrite_active(&self, bundle: &Path) {
        let mut image = self.image();
        image.install(&std::fs::read(bundle).unwrap()).unwrap();
        image.save(&self.flash_path()).unwrap();
    }

    /// Powers the device on: one QEMU run, killed after a timeout.
    pub fn boot(&self) -> Boot {
        self.run(None, &Power::default()).0
    }

    /// Powers the device on with another bootloader ELF (e.g.
    /// [`Firmware::decrypting_bootloader`]).
    pub fn boot_on(&self, bootloader: &Path) -> Boot {
        let power = Power {
            strap: None,
            bootloader: Some(bootloader.to_path_buf()),
        };
        self.run(None, &power).0
    }

    /// Provisions the device's X25519 key (`sigil keygen --x25519`'s PKCS#8 PEM) into the
    /// flash's key store, as `sigil-flash assemble --device-key` does at the factory; the
    /// public key.
    pub fn provision_device_key(&self, key: &Path) -> [u8; 32] {
        let secret = sigil_flash::read_device_key(key).unwrap();
        let mut image = self.image();
        image.provision_device_key(&secret).unwrap();
        image.save(&self.flash_path()).unwrap();
        secret.public_key()
    }

    /// The staging slot's bytes (its spare sector included).
    pub fn staging_slot(&self) -> Vec<u8> {
        let image = self.image();
        let l = image.layout();
        let start = l.staging_offset() as usize;
        let end = start + ((l.max_bundle_len() + l.sector_size()) as usize);
        image.bytes()[start..end].to_vec()
    }

    /// Powers the device on with the test strap set to `attack`, for the hostile application
    /// ([`APP_HOSTILE`]) installed on it; with `unlocked`, on the control bootloader whose lock
    /// protects nothing ([`Firmware::unlocked_bootloader`]).
    pub fn boot_attacked(&self, attack: Attack, unlocked: bool) -> Boot {
        let power = Power {
            strap: Some(attack as u32),
            bootloader: unlocked.then(|| self.fw.unlocked_bootloader().to_path_buf()),
        };
        self.run(None, &power).0
    }

    /// [`Device::boot_attacked`] on another bootloader ELF (e.g.
    /// [`Firmware::decrypting_bootloader`], which reads the device key store).
    pub fn boot_attacked_on(&self, attack: Attack, bootloader: &Path) -> Boot {
        let power = Power {
            strap: Some(attack as u32),
            bootloader: Some(bootloader.to_path_buf()),
        };
        self.run(None, &power).0
    }

    /// The device key store sector's bytes (board.toml `device_key`), as the flash file holds
    /// them.
    pub fn key_store(&self) -> Vec<u8> {
        let image = self.image();
        let store = image
            .board()
            .device_key_region()
            .expect("the board has a device key store");
        image.bytes()[store.start as usize..store.end as usize].to_vec()
    }

    /// The protected-state region's bytes.
    pub fn protected_region(&self) -> Vec<u8> {
        let image = self.image();
        let range = image.layout().protected_region();
        image.bytes()[range.start as usize..range.end as usize].to_vec()
    }

    /// Powers the device on and cuts the power (kills QEMU) just before the `write`-th flash
    /// write (1-based: one erase or write chunk of at most 256 bytes, the bootloader's or,
    /// through its flash service, the application's) reaches the flash, exactly, whatever the host's load: QEMU runs under its gdbstub with a
    /// breakpoint on the flash driver. A run that ends before that is returned as it is.
    pub fn boot_and_cut(&self, write: usize) -> Boot {
        self.run(Some(write), &Power::default()).0
    }

    /// Powers the device on under the debugger and counts the flash writes until the run ends
    /// (the bootloader's, and the application's, which reach the flash through the
    /// bootloader's flash service): the range to cut in.
    pub fn boot_counting_writes(&self) -> (Boot, usize) {
        self.run(Some(usize::MAX), &Power::default())
    }

    /// Runs the debugger session when cutting (counting flash writes, killing QEMU before the
    /// `cut`-th), then waits for QEMU to end; `Err` says why the boot is a test failure.
    fn wait_for(
        &self,
        child: &mut std::process::Child,
        cut: Option<usize>,
        writes: &mut usize,
    ) -> Result<std::process::ExitStatus, String> {
        if let Some(cut) = cut {
            let deadline = Instant::now() + BOOT_TIMEOUT;
            let socket = self.dir.path().join("gdb.sock");
            let mut gdb = Gdb::connect(&socket, deadline, || {
                child.try_wait().ok().flatten().is_some()
            })?;
            gdb.break_at(self.fw.flash_write)?;
            while gdb.cont()? == Stop::Break {
                *writes += 1;
                if *writes == cut {
                    let _ = child.kill();
                    break;
                }
            }
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if start.elapsed() > BOOT_TIMEOUT {
                return Err(format!("QEMU did not finish within {BOOT_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn run(&self, cut: Option<usize>, power: &Power) -> (Boot, usize) {
        let fw = self.fw;
        let bootloader = power.bootloader.as_deref().unwrap_or(fw.bootloader());
        let strap = power
            .strap
            .map(|word| {
                vec![
                    "-device".to_owned(),
                    format!("loader,addr={TEST_STRAP:#x},data={word},data-len=4"),
                ]
            })
            .unwrap_or_default();
        let mut child = KillOnDrop(
            Command::new("qemu-system-arm")
                .current_dir(self.dir.path())
                .args(fw.spec.machine)
                .arg("-nographic")
                .args(["-monitor", "none", "-serial", "null"])
                .args(["-semihosting-config", "enable=on,target=native"])
                .args(if cut.is_some() {
                    // Halted at reset until the test has set its breakpoint.
                    vec!["-S", "-gdb", "unix:gdb.sock,server=on,wait=off"]
                } else {
                    vec![]
                })
                .arg("-kernel")
                .arg(bootloader)
                .arg("-device")
                .arg(format!(
                    "loader,file=flash.bin,addr={:#x}",
                    fw.board().flash.base
                ))
                .args(strap)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("qemu-system-arm starts"),
        );
        let child = &mut child.0;
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        // Both streams are drained while QEMU runs (the firmware's semihosting output may go
        // to either), so neither pipe fills up and stalls the guest.
        fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        }
        let out = collect(stdout);
        let err = collect(stderr);
        let mut writes = 0;
        let result = self.wait_for(child, cut, &mut writes);
        if result.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let output = format!(
            "{}{}",
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default()
        );
        let status = match result {
            Ok(status) => status,
            Err(why) => {
                panic!("{why} (after {writes} flash writes); QEMU killed. Its output:\n{output}")
            }
        };
        (
            Boot {
                code: status.code(),
                output,
            },
            writes,
        )
    }
}
