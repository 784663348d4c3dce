//! `sigil-flash`'s library: board files, flash images, staging through the boot-control API.

use std::path::Path;

use sigil_bootloader::{Error, Phase};
use sigil_flash::board::BoardError;
use sigil_flash::{BoardConfig, FlashImage, ImageError};

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
    assert_eq!(layout.active_offset(), 0x2000);
    assert_eq!(layout.staged_bundle_offset(), 0x14_3000);
    assert_eq!(board.app_origin(), 0x2_3000);
    assert_eq!(board.flash_size(), Some(0x28_3000));
}

#[test]
fn overlapping_regions_are_refused_like_the_firmware_build_does() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/mps2-an385/board.toml"),
    )
    .unwrap();
    let overlapping = text.replace("staging = 0x14_2000", "staging = 0x14_0000");
    let err = BoardConfig::parse(&overlapping, Path::new("board.toml")).unwrap_err();
    assert!(matches!(err, BoardError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("overlap"), "{err}");

    let unaligned = text.replace("payload_alignment = 4096", "payload_alignment = 3000");
    assert!(BoardConfig::parse(&unaligned, Path::new("board.toml")).is_err());
}

#[test]
fn assembled_image_holds_the_bundles_verbatim_and_a_pending_request() {
    let board = mps2();
    let installed: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let staged: Vec<u8> = (0..5_001u32).map(|i| (i * 13) as u8).collect(); // not write-aligned
    let mut image = FlashImage::erased(&board).unwrap();
    assert_eq!(image.state().unwrap().phase, Phase::Idle);
    image.install(&installed).unwrap();
    let state = image.stage(&staged, true).unwrap();
    assert_eq!(state.phase, Phase::Pending);

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

    // Saved and reopened, the state is what the bootloader's own code reads back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash.bin");
    image.save(&path).unwrap();
    let reopened = FlashImage::open(&board, &path).unwrap();
    assert_eq!(reopened.state().unwrap().phase, Phase::Pending);
}

#[test]
fn staging_is_refused_while_an_update_is_pending() {
    let board = mps2();
    let mut image = FlashImage::erased(&board).unwrap();
    image.stage(&[1; 64], true).unwrap();
    let err = image.stage(&[2; 64], true).unwrap_err();
    assert!(
        matches!(err, ImageError::Boot(Error::WrongPhase(Phase::Pending))),
        "{err}"
    );
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
