//! The documents of offline activation, in the two steps the established products use:
//! the runtime writes an [`ActivationRequest`] (signed by the new container's own key, so the
//! publisher knows the requester holds it); the publisher's tool answers with an
//! [`Activation`] (signed by the publisher) that carries a
//! [`ContainerCertificate`](super::ContainerCertificate), licenses bound to the container,
//! and product secrets sealed to the container's X25519 key.

use serde::{Deserialize, Serialize};

use super::certificate::ContainerKind;
use crate::cipher::SealedSecret;
use crate::host::{MachineKind, TraitKind};
use crate::util::format_time;

/// Asks a publisher to activate a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRequest {
    /// The publisher asked.
    pub vendor_id: u32,
    /// The container serial.
    pub serial: String,
    /// The container kind.
    pub kind: ContainerKind,
    /// The container's Ed25519 public key (the request is signed with it).
    pub sign_key: [u8; 32],
    /// The container's X25519 public key (product secrets are sealed to it).
    pub seal_key: [u8; 32],
    /// The container's X25519 Noise static key (a dongle's secure channel authenticates it).
    pub noise_key: [u8; 32],
    /// Digests of the machine's fingerprint traits (salted with the serial), for the
    /// publisher's records.
    pub fingerprint: Vec<(TraitKind, [u8; 32])>,
    /// What kind of machine asks.
    pub machine: MachineKind,
    /// The machine's host name.
    pub hostname: String,
    /// When the request was made.
    pub created_at: u64,
}

impl std::fmt::Display for ActivationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "activation request")?;
        writeln!(f, "  vendor:      {}", self.vendor_id)?;
        writeln!(f, "  container:   {} ({})", self.serial, self.kind)?;
        writeln!(f, "  key:         {}", hex::encode(self.sign_key))?;
        writeln!(f, "  host:        {} ({})", self.hostname, self.machine)?;
        writeln!(f, "  traits:      {}", self.fingerprint.len())?;
        write!(f, "  created:     {}", format_time(self.created_at))
    }
}

/// The publisher's answer to a request: licenses and sealed product secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The publisher.
    pub vendor_id: u32,
    /// The publisher's public key (the activation is signed with it).
    pub publisher_key: [u8; 32],
    /// The container it is for.
    pub serial: String,
    /// The container's Ed25519 key it is for.
    pub sign_key: [u8; 32],
    /// The signed [`ContainerCertificate`](super::ContainerCertificate).
    pub certificate: Vec<u8>,
    /// Signed licenses, each bound to this container.
    pub licenses: Vec<Vec<u8>>,
    /// The product secrets of those licenses, sealed to the container.
    pub secrets: Vec<SealedSecret>,
    /// When it was issued.
    pub issued_at: u64,
}
