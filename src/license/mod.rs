//! Licenses: the model and its versioned, publisher-signed binary encoding.
//!
//! A [`License`] is a statement by a publisher: which product, which features, how many
//! seats counted by which [`CountingUnit`], until when, on which kinds of machine, bound to
//! which container. It travels as a [`envelope`] of kind `License`: magic, format version,
//! a postcard body and an Ed25519 signature by the publisher.

pub mod envelope;
mod model;
pub mod usage;

pub use envelope::{Envelope, Kind};
pub use model::*;
