//! The QEMU ports' logging: with the `log` feature, lines go to the host's stderr over
//! semihosting (and the `log` crate's records, the core's and the boot sequence's, through
//! [`SemihostingLog`]); without it they compile to nothing, so a release bootloader carries no
//! formatting code.

/// Logs one line (`format!` syntax) to the host's stderr. Nothing is emitted without the `log`
/// feature, but the arguments are still type-checked. Ports re-export it as their `log!`.
#[cfg(feature = "log")]
#[macro_export]
macro_rules! semihosting_log {
    ($($arg:tt)*) => {
        $crate::__semihosting::eprintln!($($arg)*)
    };
}

/// Logs one line (`format!` syntax). Nothing is emitted without the `log` feature, but the
/// arguments are still type-checked.
#[cfg(not(feature = "log"))]
#[macro_export]
macro_rules! semihosting_log {
    ($($arg:tt)*) => {{
        if false {
            $crate::__semihosting::eprintln!($($arg)*);
        }
    }};
}

/// The `log` crate's records as `sigil-boot: LEVEL: message` lines over semihosting; a port
/// installs [`LOGGER`] (`log::set_logger`, or the racy variant on a core without atomics).
#[cfg(feature = "log")]
#[derive(Debug)]
pub struct SemihostingLog;

/// The one [`SemihostingLog`].
#[cfg(feature = "log")]
pub static LOGGER: SemihostingLog = SemihostingLog;

#[cfg(feature = "log")]
impl log::Log for SemihostingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        semihosting::eprintln!("sigil-boot: {}: {}", record.level(), record.args());
    }

    fn flush(&self) {}
}
