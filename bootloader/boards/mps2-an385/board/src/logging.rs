//! The logging shim: with the `log` feature, lines go to the host's stderr over semihosting
//! (and the bootloader core's `log` records too); without it they compile to nothing, so a
//! release bootloader carries no formatting code.

/// Logs one line (`format!` syntax). Nothing is emitted without the `log` feature, but the
/// arguments are still type-checked.
#[cfg(feature = "log")]
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::__semihosting::eprintln!($($arg)*)
    };
}

/// Logs one line (`format!` syntax). Nothing is emitted without the `log` feature, but the
/// arguments are still type-checked.
#[cfg(not(feature = "log"))]
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        if false {
            $crate::__semihosting::eprintln!($($arg)*);
        }
    }};
}

#[cfg(feature = "log")]
struct Semihosting;

#[cfg(feature = "log")]
impl log::Log for Semihosting {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        semihosting::eprintln!("sigil-boot: {}: {}", record.level(), record.args());
    }

    fn flush(&self) {}
}

/// Routes the bootloader core's log records to semihosting (no-op without the `log` feature).
pub fn init() {
    #[cfg(feature = "log")]
    {
        static LOGGER: Semihosting = Semihosting;
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}
