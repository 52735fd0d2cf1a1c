//! Tessera: a licensing runtime for software publishers.
//!
//! A protected application opens a [`client::Session`], acquires a [`client::Seat`] of a
//! product from a container that holds its license, encrypts and decrypts its data with the
//! product's key, and releases the seat. `src/ffi/` exposes the same through a C ABI
//! (`include/tessera.h`); the binaries in `src/bin/` are the end user's (`tessera`) and the
//! publisher's (`tessera-vendor`) command lines. See `DESIGN.md` for the map of the layers.

#[cfg(feature = "cli")]
pub mod admin_client;
pub mod channel;
pub mod cipher;
pub mod client;
pub mod container;
pub mod dongle;
pub mod error;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod license;
pub mod net;
pub mod publisher;
#[cfg(feature = "server")]
pub mod server;
pub mod status;
pub mod util;
pub mod view;

pub use error::{Error, Result};

/// The library version (from `Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
