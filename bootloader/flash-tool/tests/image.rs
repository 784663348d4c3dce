//! `sigil-flash`'s library: board files, flash images, staging through the boot-control API.

use std::path::Path;

mod common;

use sigil_bootloader::{Error, Floors, Phase, Request};
use sigil_flash::board::BoardError;
use sigil_flash::{manifest_digest, BoardConfig, FlashImage, ImageError};

// Test helper: the reference board file must load, or every test here is meaningless.
#[allow(clippy::unwrap_used)]
fn mps2() -> BoardConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/mps2-an385/board.toml");
    BoardConfig::load(&path).unwrap()
}

#[test]
fn reference_board_file_gives_the_documented_flash_map() {
    let board = mps2();
    let layout = board.layout().unwrap();
    assert_eq!(board.flash.base, 0x2_0000);
    assert_eq!(layout.protected_region(), 0..0x2000);
    assert_eq!(layout.request_region(), 0x2000..0x3000);
    assert_eq!(layout.active_offset(), 0x3000);
    assert_eq!(layout.staged_bundle_offset(), 0x14_4000);
    assert_eq!(board.app_origin(), 0x2_4000);
    assert_eq!(board.device_key_region(), Some(0x28_4000..0x28_5000));
    assert_eq!(board.flash_size(), Some(0x28_5000));
    assert_eq!(board.device.component, "app");
}

/// The hardware ports' board files give the flash maps their READMEs document, and each fits
/// its part: the microbit's 256 KiB (its benchmark variant QEMU's 512 KiB), the nRF52840's
/// 1 MiB; sigil-flash assembles an image for each.
#[test]
fn every_port_board_file_gives_its_documented_flash_map() {
    let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
    for (file, base, staged, app, end) in [
        (
            "microbit/board.toml",
            0x1_0000,
            0x1_8c00,
            0x1_1800,
            0x4_0000,
        ),
        (
            "microbit/bench.board.toml",
            0x1_0000,
            0x3_3800,
            0x1_1800,
            0x7_5800,
        ),
        (
            "nrf52840-dk/board.toml",
            0x1_0000,
            0x7_a000,
            0x1_4000,
            0x10_0000,
        ),
    ] {
        let board = BoardConfig::load(&boards.join(file)).unwrap();
        let layout = board.layout().unwrap();
        assert_eq!(board.flash.base, base, "{file}");
        assert_eq!(layout.staged_bundle_offset(), staged, "{file}");
        assert_eq!(board.app_origin(), app, "{file}");
        assert_eq!(
            board.flash.base + board.flash_size().unwrap(),
            end,
            "{file}"
        );
        let image = FlashImage::erased(&board).unwrap();
        assert_eq!(image.bytes().len() as u32, end - base, "{file}");
    }
}

#[test]
fn overlapping_regions_are_refused_like_the_firmware_build_does() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/mps2-an385/board.toml"),
    )
    .unwrap();
    let overlapping = text.replace("staging = 0x14_3000", "staging = 0x14_0000");
    let err = BoardConfig::parse(&overlapping, Path::new("board.toml")).unwrap_err();
    assert!(matches!(err, BoardError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("overlap"), "{err}");

    let unaligned = text.replace("payload_alignment = 4096", "payload_alignment = 3000");
    assert!(BoardConfig::parse(&unaligned, Path::new("board.toml")).is_err());
}

#[test]
fn a_device_key_store_must_be_a_sector_of_its_own() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/mps2-an385/board.toml"),
    )
    .unwrap();
    for bad in ["0x28_3000", "0x28_4100", "0x2000"] {
        let moved = text.replace("device_key = 0x28_4000", &format!("device_key = {bad}"));
        let err = BoardConfig::parse(&moved, Path::new("board.toml")).unwrap_err();
        assert!(err.to_string().contains("device_key"), "{bad}: {err}");
    }
}

/// RFC 8410 §10.3's X25519 private key.
const RFC8410_X25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";

#[test]
fn the_device_key_is_provisioned_once_in_the_record_the_bootloader_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("device.pem");
    std::fs::write(&pem, RFC8410_X25519).unwrap();
    let key = sigil_flash::read_device_key(&pem).unwrap();
    let secret: [u8; 32] =
        hex::decode("d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842")
            .unwrap()
            .try_into()
            .unwrap();
    let expected = sigil_manifests::encryption::DeviceKey::from_secret(secret).public_key();
    assert_eq!(
        key.public_key(),
        expected,
        "the public half is derived from the PEM"
    );

    let board = mps2();
    let mut image = FlashImage::erased(&board).unwrap();
    assert_eq!(image.device_public_key().unwrap(), None, "erased: no key");
    image.provision_device_key(&key).unwrap();
    assert_eq!(image.device_public_key().unwrap(), Some(expected));
    let store = board.device_key_region().unwrap();
    let sector = &image.bytes()[store.start as usize..store.end as usize];
    let record: &[u8; sigil_bootloader::DEVICE_KEY_RECORD_LEN] = sector
        [..sigil_bootloader::DEVICE_KEY_RECORD_LEN]
        .try_into()
        .unwrap();
    let decoded = sigil_bootloader::DeviceSecret::decode(record, 0xFF)
        .unwrap()
        .unwrap();
    assert_eq!(decoded.public_key(), expected);
    assert!(
        sector[sigil_bootloader::DEVICE_KEY_RECORD_LEN..]
            .iter()
            .all(|&b| b == 0xFF),
        "the rest of the store stays erased"
    );
    assert!(matches!(
        image.provision_device_key(&key),
        Err(ImageError::KeyStoreWritten)
    ));

    // A board without a key store refuses it.
    let microbit = BoardConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/microbit/board.toml"),
    )
    .unwrap();
    assert!(matches!(
        FlashImage::erased(&microbit)
            .unwrap()
            .provision_device_key(&key),
        Err(ImageError::NoKeyStore)
    ));
}

#[test]
fn malformed_device_keys_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ed25519 = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
    let public = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VuAyEAhSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=
-----END PUBLIC KEY-----
";
    for (name, text, says) in [
        ("ed25519.pem", ed25519, "1.3.101.112"),
        ("public.pem", public, "PUBLIC KEY"),
        ("text.pem", "not a key\n", ": PEM: "),
        ("truncated.pem", &RFC8410_X25519[..60], ": PEM: "),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = sigil_flash::read_device_key(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(says), "{name}: {msg}");
    }
}

#[test]
fn assembled_image_holds_the_bundles_verbatim_and_an_install_request() {
    let board = mps2();
    let installed: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let staged = common::bundle(3, 5_001); // not write-aligned
    let mut image = FlashImage::erased(&board).unwrap();
    assert_eq!(image.state().unwrap().phase, Phase::Idle);
    image.install(&installed).unwrap();
    let state = image.stage(&staged, true).unwrap();
    assert_eq!(
        state.phase,
        Phase::Idle,
        "a request does not touch the protected state"
    );
    let digest = manifest_digest(&staged).unwrap();
    assert_eq!(
        image.status().unwrap().request,
        Some(Request::Install(digest))
    );

    let layout = *image.layout();
    assert_eq!(&image.active_slot()[..installed.len()], &installed[..]);
    assert!(image.active_slot()[installed.len()..]
        .iter()
        .all(|&b| b == 0xFF));
    let at = layout.staged_bundle_offset() as usize;
    assert_eq!(&image.bytes()[at..at + staged.len()], &staged[..]);
    assert_eq!(
        image.bytes()[at + staged.len()],
        0xFF,
        "padding is the erased value"
    );

    // Saved and reopened, the request is what the bootloader's own code reads back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash.bin");
    image.save(&path).unwrap();
    let reopened = FlashImage::open(&board, &path).unwrap();
    assert_eq!(
        reopened.status().unwrap().request,
        Some(Request::Install(digest))
    );
}

#[test]
fn a_new_install_request_names_the_newly_staged_bundle() {
    let board = mps2();
    let mut image = FlashImage::erased(&board).unwrap();
    let (a, b) = (common::bundle(1, 64), common::bundle(2, 64));
    image.stage(&a, true).unwrap();
    image.stage(&b, true).unwrap();
    assert_eq!(
        image.status().unwrap().request,
        Some(Request::Install(manifest_digest(&b).unwrap()))
    );
    // Something that is not a bundle cannot be requested (it has no manifest to name).
    let err = image.stage(&[2; 64], true).unwrap_err();
    assert!(matches!(err, ImageError::Bundle(_)), "{err}");
}

#[test]
fn factory_provisioning_writes_the_floors_once() {
    let board = mps2();
    let mut image = FlashImage::erased(&board).unwrap();
    let floors = Floors {
        security_counter: 7,
        key_set_version: 2,
        root: None,
    };
    image.provision(floors).unwrap();
    assert_eq!(image.state().unwrap().floors(), floors);
    let err = image.provision(Floors::default()).unwrap_err();
    assert!(
        matches!(err, ImageError::Boot(Error::AlreadyProvisioned)),
        "{err}"
    );
    assert_eq!(image.state().unwrap().floors(), floors, "never lowered");
}

#[test]
fn oversized_bundles_and_foreign_images_are_refused() {
    let board = mps2();
    let mut image = FlashImage::erased(&board).unwrap();
    let too_big = vec![0u8; image.layout().max_bundle_len() as usize + 1];
    assert!(matches!(
        image.install(&too_big),
        Err(ImageError::BundleTooLarge { .. })
    ));
    assert!(matches!(
        image.stage(&too_big, false),
        Err(ImageError::BundleTooLarge { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.bin");
    std::fs::write(&path, [0xFF; 4096]).unwrap();
    assert!(matches!(
        FlashImage::open(&board, &path),
        Err(ImageError::WrongSize { found: 4096, .. })
    ));
}

#[test]
fn an_elf_linked_elsewhere_is_not_a_payload() {
    let board = mps2();
    assert!(matches!(
        sigil_flash::payload_from_elf(b"not an elf", &board),
        Err(ImageError::Elf(_))
    ));
}
