//! Yatagarasu: a thread-per-core io_uring S3 proxy. One request's journey through one core:
//! [`http::server`] reads it, [`pipeline`] runs its phases (route with [`router`], limit,
//! authenticate with [`auth`], look up the [`cache`] tiers, fetch through [`upstream`] with a
//! request [`s3`] describes and signs, respond, log), and the object streams back to the
//! client. [`admin`] serves the control plane; [`config`] and [`metrics`] are shared.
//!
//! The per-core substrate (pinning, one monoio runtime and SO_REUSEPORT listener per shard,
//! signals, drain, config snapshots) lives in the `yatagarasu-runtime` crate; [`app`] wires the
//! two together. Not on the hot path itself: this file only declares modules.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod ratelimit;
pub mod router;
pub mod s3;
pub mod upstream;
