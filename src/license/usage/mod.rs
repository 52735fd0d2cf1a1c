//! The usage log: every grant, release, expiry, denial and revoke a license server made with
//! one publisher's licenses, hash-chained and checkpointed by a container of that publisher, so
//! that the publisher can check a customer's report offline (`tessera-vendor verify-usage`).
//!
//! The server writes it (`server::usage`); this module is the format, the checks and the
//! per-product, per-month summary, with no I/O of its own beyond a
//! [`Read`](std::io::Read), so the publisher's tool needs no server feature.
//!
//! ```text
//! header:  "TSUL" | format version u16 LE | vendor_id u32 LE | server key [32]     (42 bytes)
//! record:  length u32 LE | postcard((RECORD_VERSION u16, Record))                  (repeated)
//! ```
//!
//! Each [`Record`] carries its sequence number (0, 1, 2, ...) and `prev`: the SHA-256 of the
//! previous record's body (the bytes after its length), or for record 0 the genesis value
//! `SHA-256("tessera usage log v1 genesis" | header)`. A [`Event::Checkpoint`] record covers
//! every record before it: it carries their count and the hash of the last one (its own
//! `prev`), and a [`UsageStatement`] a container signed over
//! [`checkpoint_digest`]`(header, count, head)` (envelope kind `UsageCheckpoint`), with the
//! container's publisher certificate. See `docs/SERVER.md`, "Usage log".
//!
//! [`log`] is the format and its reading, [`checkpoint`] the container's signature over a
//! log's head and its check against the publisher key, [`report`] the publisher's summary of
//! a verified log, [`pool`] the sum of a license-server pool's logs (one per member) that
//! counts a seat re-attached to another member once. Everything is re-exported here.

pub mod checkpoint;
pub mod log;
pub mod pool;
pub mod report;

pub use checkpoint::*;
pub use log::*;
pub use pool::*;
pub use report::*;

#[cfg(test)]
pub(crate) mod tests;
