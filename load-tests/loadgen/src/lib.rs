//! crossl-loadgen: an open-loop load generator for crossl-serve (docs: load-tests/README.md).
//!
//! [`schedule`] (timing math, timer wheel) → [`step`] (shared state, scheduler) → [`grpc`] / [`ws`]
//! (connections, pre-encoded [`frames`]) → [`stats`] → [`report`]; [`probe`] watches the server's
//! `/metrics` and `/proc`; [`run`] strings the steps together.
#![forbid(unsafe_code)]
#![warn(clippy::all, rust_2018_idioms)]

pub mod config;
pub mod frames;
pub mod grpc;
pub mod probe;
pub mod report;
pub mod run;
pub mod samples;
pub mod schedule;
pub mod stats;
pub mod step;
pub mod ws;
