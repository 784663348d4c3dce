//! Sigil's update server: releases, devices, deployments, staged rollouts and an audit trail.
//!
//! `sigil-server` with no configuration listens on `127.0.0.1:8080`, keeps an SQLite database
//! and a content-addressed bundle store in `./sigil-data`, and prints a first admin token. See
//! [`config`] for every setting, [`api`] for the endpoints and their roles, [`rollout`] for the
//! staged-rollout algorithm and [`audit`] for the hash-chained audit log. The OpenAPI document
//! is served at `/openapi.json`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod bundles;
pub mod config;
pub mod error;
pub mod metrics;
pub mod range;
pub mod ratelimit;
pub mod rollout;
pub mod serve;
pub mod store;
