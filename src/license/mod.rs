//! Licenses and the other signed documents of the trust chain: the model, the versioned,
//! signed binary encoding they all travel in, and the documents that link a publisher's key
//! to a container, a license server and a usage log.
//!
//! ```text
//! publisher key (in the app)
//!   ├─signs─▶ License ............................ model: product, seats, expiry, binding
//!   ├─signs─▶ ContainerCertificate ............... certificate: a container's keys
//!   │           └─ container key ─signs─▶ Delegation ... delegation: a server key, for a while
//!   │           └─ container key ─signs─▶ UsageStatement ... usage: a usage log's head
//!   │           └─ container key ─signs─▶ BorrowGrant ... borrow: a seat lent to a machine
//!   │           └─ container key ─signs─▶ PoolRegistration ... pool: a pool member in etcd
//!   └─signs─▶ Activation ......................... activation: certificate, licenses, sealed
//!               ▲                                  secrets, for an ActivationRequest the
//!               └─ ActivationRequest               container signed
//! ```
//!
//! A [`License`] is a statement by a publisher: which product, which features, how many
//! seats counted by which [`CountingUnit`], until when, on which kinds of machine, bound to
//! which container. Every document travels as an [`envelope`] of its own [`Kind`]: magic,
//! format version, a postcard body and an Ed25519 signature, so a signature over one kind
//! never passes for another. The runtime checks a license server through the chain
//! publisher key → [`ContainerCertificate`] → [`Delegation`] → the server's proven key
//! ([`delegation::verify_chain`]). Nothing here does I/O or knows the network: containers,
//! the wire and the publisher's tool build on these.

pub mod activation;
pub mod borrow;
pub mod certificate;
pub mod delegation;
pub mod envelope;
mod model;
pub mod pool;
pub mod usage;

pub use activation::{Activation, ActivationRequest};
pub use borrow::BorrowGrant;
pub use certificate::{ContainerCertificate, ContainerKind};
pub use delegation::Delegation;
pub use envelope::{Envelope, Kind};
pub use model::*;
pub use pool::PoolRegistration;
