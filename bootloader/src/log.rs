//! The logging shim: with the `log` feature the macros forward to the `log` crate; without it
//! they expand to nothing, so release bootloaders carry no formatting code.

/// Logs at info level (nothing without the `log` feature).
macro_rules! log_info {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::info!($($arg)*);
        // Type-checks the arguments; dead code, removed by the compiler.
        #[cfg(not(feature = "log"))]
        if false {
            let _ = ::core::format_args!($($arg)*);
        }
    }};
}

/// Logs at warn level (nothing without the `log` feature).
macro_rules! log_warn {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::warn!($($arg)*);
        // Type-checks the arguments; dead code, removed by the compiler.
        #[cfg(not(feature = "log"))]
        if false {
            let _ = ::core::format_args!($($arg)*);
        }
    }};
}

/// Logs at debug level (nothing without the `log` feature).
macro_rules! log_debug {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::debug!($($arg)*);
        // Type-checks the arguments; dead code, removed by the compiler.
        #[cfg(not(feature = "log"))]
        if false {
            let _ = ::core::format_args!($($arg)*);
        }
    }};
}
