//! The test application's story, the same on every board: print its version and the
//! boot-control state, confirm itself when it runs on trial (a confirm request, which the
//! bootloader acts on at the next boot; never when built not to confirm, which makes the
//! bootloader revert it). Each board's `app` binary wraps it with its console, flash and exit.

use core::fmt::Arguments;

use embedded_storage::nor_flash::NorFlash;
use sigil_bootloader::{BootControl, Layout, Phase};

/// Runs the story over `flash` with `layout`, printing each line with `println` (formatted,
/// no newline). Returns `false` if the boot-control state could not be read.
pub fn run<F: NorFlash>(
    flash: F,
    layout: Layout,
    version: &str,
    confirms: bool,
    println: &mut dyn FnMut(Arguments<'_>),
) -> bool {
    println(format_args!(
        "app: sigil test application {version} running"
    ));
    let Ok(mut control) = BootControl::new(flash, layout) else {
        println(format_args!("app: boot-control state unreadable"));
        return false;
    };
    let state = control.state();
    println(format_args!(
        "app: phase {}, trial boots left {}, minimum security counter {}",
        state.phase, state.attempts_left, state.min_security_counter
    ));
    if state.phase == Phase::Trial {
        if confirms {
            // The image this is: the active bundle, which the bootloader verified this boot.
            let mut buf = [0u8; sigil_manifests::MAX_ENVELOPE_LEN];
            let running =
                crate::manifest_digest_read(control.flash(), layout.active_offset(), &mut buf);
            match running.map(|d| control.confirm(&d)) {
                Some(Ok(())) => println(format_args!(
                    "app: confirmed; the floors rise at the next boot"
                )),
                Some(Err(e)) => println(format_args!("app: confirm failed: {e}")),
                None => println(format_args!(
                    "app: confirm failed: the active bundle does not parse"
                )),
            }
        } else {
            println(format_args!(
                "app: not confirming (this build never confirms)"
            ));
        }
    }
    true
}
