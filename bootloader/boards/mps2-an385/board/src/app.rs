//! What an application on this board uses after the jump, in unprivileged mode: console output
//! and the exit, both through the bootloader's service (semihosting, which QEMU refuses to
//! unprivileged code, is the bootloader's alone). Flash access is [`crate::AppFlash`].

use core::fmt::{self, Write as _};

use crate::glue;
use crate::service::Op;

/// Writes `text` to the console (the host's semihosting output), through a stack buffer: the
/// service takes text from the application's RAM only, and a string constant lives in flash.
pub fn print(text: &str) {
    for piece in text.as_bytes().chunks(64) {
        let mut buf = [0u8; 64];
        if let Some(slot) = buf.get_mut(..piece.len()) {
            slot.copy_from_slice(piece);
            let _ = glue::service_call(
                Op::Console as u32,
                slot.as_ptr() as u32,
                slot.len() as u32,
                0,
            );
        }
    }
}

/// Ends the QEMU run with `code`. Through the service, so this works in unprivileged mode.
pub fn exit(code: u8) -> ! {
    let _ = glue::service_call(Op::Exit as u32, u32::from(code), 0, 0);
    // The service ends the run; there is nothing to return to if it did not.
    loop {
        cortex_m::asm::wfi();
    }
}

/// Formatted console output in 64-byte pieces (a stack buffer; no allocation).
struct Console {
    buf: [u8; 64],
    len: usize,
}

impl Console {
    fn flush(&mut self) {
        if let Some(bytes) = self.buf.get(..self.len) {
            if let Ok(text) = core::str::from_utf8(bytes) {
                print(text);
            }
        }
        self.len = 0;
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if self.len.saturating_add(bytes.len()) > self.buf.len() {
                self.flush();
            }
            let end = self.len.saturating_add(bytes.len());
            if let Some(slot) = self.buf.get_mut(self.len..end) {
                slot.copy_from_slice(bytes);
                self.len = end;
            }
        }
        Ok(())
    }
}

/// Prints `args` and a newline (used by [`crate::app_println!`]).
pub fn println(args: fmt::Arguments<'_>) {
    let mut console = Console {
        buf: [0; 64],
        len: 0,
    };
    let _ = console.write_fmt(args);
    let _ = console.write_str("\n");
    console.flush();
}

/// `println!` for applications on this board: formats on the stack and prints through the
/// bootloader's service.
#[macro_export]
macro_rules! app_println {
    ($($arg:tt)*) => {
        $crate::app::println(format_args!($($arg)*))
    };
}
