//! Work in progress (this crate is being built in this session).
