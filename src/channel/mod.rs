//! The secure channel between the runtime and a dongle: Noise XX; see `docs/DONGLES.md`.
//!
//! The runtime is the Noise initiator ([`ClientHandshake`]) with its host static key; the
//! dongle is the responder ([`DeviceHandshake`]) with its device static key. Three handshake
//! messages:
//!
//! 1. runtime → dongle: an ephemeral key, empty payload;
//! 2. dongle → runtime: [`DeviceHello`] (with the dongle's signed certificate, unless blank),
//!    which the runtime checks per [`Trust`];
//! 3. runtime → dongle: [`HostHello`]. The host's identity is its Noise static public key.
//!
//! Then both sides hold a [`Channel`]: frames `counter u64 LE | ciphertext`, sealed with the
//! counter as the Noise nonce (snow's stateless transport). A receiver accepts only counters
//! above the last it accepted, so recorded frames replayed to either side are rejected.
//!
//! Nothing here panics on hostile input: truncated, oversized or garbage messages are errors.

pub(crate) mod handshake;
mod transport;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use handshake::{ClientHandshake, DeviceHandshake, Trust};
pub use transport::Channel;

use crate::host::MachineKind;
use crate::{Error, Result};

/// The Noise protocol of the channel.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The version of the hello payloads this build speaks.
pub const CHANNEL_VERSION: u16 = 1;
/// The largest frame (counter, ciphertext and tag): one framing message is 7609 bytes.
pub const MAX_FRAME: usize = 7600;
/// The bytes a frame adds to its plaintext: the counter (8) and the Poly1305 tag (16).
pub const FRAME_OVERHEAD: usize = 8 + 16;
/// The largest plaintext [`Channel::seal`] accepts.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - FRAME_OVERHEAD;
/// The largest handshake message (the Noise limit).
pub const MAX_HANDSHAKE: usize = 65535;

/// What the dongle says about itself in handshake message 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHello {
    /// The channel protocol version ([`CHANNEL_VERSION`]).
    pub version: u16,
    /// The dongle's serial.
    pub serial: String,
    /// The publisher the dongle belongs to (0 for a blank dongle).
    pub vendor_id: u32,
    /// The signed [`crate::license::ContainerCertificate`]; `None` for a blank dongle.
    pub certificate: Option<Vec<u8>>,
}

impl DeviceHello {
    /// A hello of this build's version.
    pub fn new(serial: impl Into<String>, vendor_id: u32, certificate: Option<Vec<u8>>) -> Self {
        DeviceHello {
            version: CHANNEL_VERSION,
            serial: serial.into(),
            vendor_id,
            certificate,
        }
    }
}

/// What the runtime says about its host in handshake message 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHello {
    /// The channel protocol version ([`CHANNEL_VERSION`]).
    pub version: u16,
    /// Physical or virtual machine.
    pub machine: MachineKind,
    /// The host name.
    pub hostname: String,
}

impl HostHello {
    /// A hello of this build's version.
    pub fn new(machine: MachineKind, hostname: impl Into<String>) -> Self {
        HostHello {
            version: CHANNEL_VERSION,
            machine,
            hostname: hostname.into(),
        }
    }
}

/// Encodes a hello payload.
pub(crate) fn encode_hello<T: Serialize>(what: &'static str, hello: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(hello).map_err(|e| Error::Internal(format!("encoding the {what}: {e}")))
}

/// Decodes a hello payload whose first field is its `version`: the version is checked
/// before the rest is decoded, so a future layout is reported as an unknown version.
pub(crate) fn decode_hello<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let (version, _) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|e| Error::malformed(what, format!("version: {e}")))?;
    if version != CHANNEL_VERSION {
        return Err(Error::UnknownVersion {
            what,
            found: version,
            supported: CHANNEL_VERSION,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::malformed(what, e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::malformed(
            what,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}
