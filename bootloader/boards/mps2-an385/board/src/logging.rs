//! The logging shim: `sigil_board_common`'s semihosting log lines and `log` records (see
//! `sigil_board_common::semihosting_log`); nothing without the `log` feature.

/// Routes the bootloader core's log records to semihosting (no-op without the `log` feature).
pub fn init() {
    #[cfg(feature = "log")]
    if log::set_logger(&sigil_board_common::semihosting_log::LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
