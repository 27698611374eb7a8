//! crossl-serve: streaming human-activity recognition with CroSSL models.
//!
//! Data path: [`ingest`] → [`window`] → [`batch`] → [`infer`] → [`store`] → [`api`].
#![forbid(unsafe_code)]
#![warn(
    clippy::all,
    clippy::dbg_macro,
    clippy::todo,
    clippy::print_stdout,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod app;
pub mod batch;
pub mod check;
pub mod config;
pub mod error;
pub mod infer;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod replay;
pub mod signal;
pub mod store;
pub mod window;

pub use app::{Core, PredictOutput};
pub use error::Error;
