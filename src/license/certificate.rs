//! The container certificate: the publisher's signature over a container's keys (envelope
//! kind `Certificate`). It is the first link of the trust chain below the publisher key: a
//! dongle's secure channel proves its `noise_key`, and delegations, seat tickets and usage
//! checkpoints are signed with its `sign_key`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of container runs the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerKind {
    /// A file bound to one machine.
    Software,
    /// A USB dongle.
    Dongle,
}

impl fmt::Display for ContainerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerKind::Software => "software container",
            ContainerKind::Dongle => "dongle",
        })
    }
}

/// The publisher's certificate for a container's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCertificate {
    /// The publisher.
    pub vendor_id: u32,
    /// The container serial.
    pub serial: String,
    /// The container kind.
    pub kind: ContainerKind,
    /// The container's Ed25519 public key.
    pub sign_key: [u8; 32],
    /// The container's X25519 public key.
    pub seal_key: [u8; 32],
    /// The container's X25519 Noise static key: the key a dongle proves in its channel.
    pub noise_key: [u8; 32],
    /// When it was issued.
    pub issued_at: u64,
    /// When it stops being valid, if ever.
    pub expiry: Option<u64>,
}
