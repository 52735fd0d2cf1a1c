//! The container protocol: the requests a container answers and its responses, the same for
//! a dongle and a software container. Encoded with postcard behind a version number; over a
//! dongle they travel inside the secure channel (`src/channel/`).

use serde::{Deserialize, Serialize};

use crate::license::ContainerKind;
use crate::{Error, Result};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// What the runtime (or the publisher's tool) asks a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Who are you: serial, kind, certificate, clock, shared or exclusive.
    Identify,
    /// The signed licenses the container holds, one page from `offset` on.
    ListLicenses {
        /// Index of the first license wanted.
        offset: u32,
    },
    /// A signature by the container key over a seat request, proving to a license server
    /// that the container holding the license takes part.
    SeatTicket {
        /// The license.
        license_id: [u8; 16],
        /// The server's challenge.
        challenge: [u8; 32],
    },
    /// A derived-mode message key for a ciphertext header.
    DeriveKey {
        /// The license whose product secret keys it.
        license_id: [u8; 16],
        /// The 40-byte ciphertext header.
        header: Vec<u8>,
    },
    /// Direct mode: encrypt inside the container.
    Encrypt {
        /// The license whose product secret keys it.
        license_id: [u8; 16],
        /// The plaintext.
        plaintext: Vec<u8>,
    },
    /// Direct mode: decrypt inside the container.
    Decrypt {
        /// The license whose product secret keys it.
        license_id: [u8; 16],
        /// The ciphertext.
        ciphertext: Vec<u8>,
    },
    /// An activation request for the container (the publisher's tool programs with it).
    ActivationRequest,
    /// Installs an activation (certificate, licenses, sealed secrets).
    Program {
        /// The signed activation.
        activation: Vec<u8>,
    },
    /// Signs a delegation of the container's licenses to a license server's key.
    Delegate {
        /// The server's Noise static key.
        server_key: [u8; 32],
        /// When the delegation ends (Unix seconds).
        expiry: u64,
    },
    /// Tells the container the time; it answers with its high-water mark.
    Clock {
        /// Seconds since the Unix epoch.
        now: u64,
    },
    /// Signs a license server's usage log checkpoint: the container signs a
    /// `license::usage::UsageStatement` over `digest` (envelope kind `UsageCheckpoint`, so the
    /// signature can never pass for a seat ticket, a delegation or a request).
    SignUsage {
        /// `license::usage::checkpoint_digest` of the log's head.
        digest: [u8; 32],
    },
    /// Lends a seat of a license to another machine's container for `days`
    /// (`license::borrow`): the container checks the license is usable and allows it, seals
    /// its product secret to the borrowing container and signs a `BorrowGrant` with its own
    /// key. The license server counts the seat; the container only signs.
    Lend {
        /// The license to lend a seat of.
        license_id: [u8; 16],
        /// The seat id the license server counts the lent seat under.
        seat_id: [u8; 16],
        /// The borrowing container's activation request (self-signed by its key).
        borrower: Vec<u8>,
        /// Days wanted (1 to the license's `borrow_days`).
        days: u32,
    },
    /// The seat key of a key id (`cipher::seat_key`), answered with [`Response::Key`]: a
    /// license server hands it to a network seat, which then encrypts and decrypts format-2
    /// ciphertext under that key id by itself. (Variants are numbered on the wire: new ones go last.)
    SeatKey {
        /// The license whose product secret keys it.
        license_id: [u8; 16],
        /// The key id the seat picked.
        key_id: [u8; 12],
    },
    /// Signs this container's registration as a member of a license-server pool
    /// (`license::PoolRegistration`, envelope kind `PoolMember`), answered with
    /// [`Response::PoolRegistration`]: the container checks it holds the pool license, usable
    /// now, with a pool binding that names it.
    SignPoolMember {
        /// The pool license.
        license_id: [u8; 16],
        /// The member server's Noise static key.
        server_key: [u8; 32],
        /// The etcd cluster id the member registers in.
        cluster_id: u64,
    },
}

/// What a container answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Identify`.
    Identity {
        /// Serial.
        serial: String,
        /// Kind.
        kind: ContainerKind,
        /// The publisher it serves.
        vendor_id: u32,
        /// Its Ed25519 public key.
        sign_key: [u8; 32],
        /// Its publisher certificate, if programmed.
        certificate: Option<Vec<u8>>,
        /// Its clock high-water mark.
        clock_high_water: u64,
        /// Whether it is locked out as shared by several hosts.
        shared: bool,
    },
    /// Answer to `ListLicenses`: a page of signed licenses and how many there are in all.
    Licenses {
        /// Signed licenses from the offset asked for.
        licenses: Vec<Vec<u8>>,
        /// All licenses the container holds.
        total: u32,
    },
    /// Answer to `SeatTicket`.
    Ticket {
        /// Ed25519 signature by the container key.
        signature: Vec<u8>,
        /// The container's time.
        now: u64,
    },
    /// Answer to `DeriveKey` and `SeatKey`.
    Key([u8; 32]),
    /// Answer to `Encrypt` / `Decrypt`.
    Data(Vec<u8>),
    /// Answer to `ActivationRequest`.
    ActivationRequest(Vec<u8>),
    /// Answer to `Program`.
    Programmed {
        /// Licenses added.
        added: u32,
        /// Licenses replaced.
        replaced: u32,
    },
    /// Answer to `Delegate`: the signed delegation and the container's certificate.
    Delegation {
        /// The container-signed delegation.
        delegation: Vec<u8>,
        /// The publisher-signed container certificate.
        certificate: Vec<u8>,
    },
    /// Answer to `Clock`.
    Clock {
        /// The high-water mark.
        high_water: u64,
        /// Whether the clock given is behind it beyond the tolerance.
        rollback: bool,
    },
    /// Answer to `SignUsage`: the signed statement and the container's certificate.
    UsageSignature {
        /// The container-signed `UsageStatement` (envelope kind `UsageCheckpoint`).
        statement: Vec<u8>,
        /// The publisher-signed container certificate.
        certificate: Vec<u8>,
    },
    /// The request failed: a status number ([`crate::status::Status`]) and a message.
    Error {
        /// The status number.
        status: u32,
        /// What went wrong.
        message: String,
    },
    /// Answer to `Lend`: the signed grant and the lending container's certificate.
    Lent {
        /// The container-signed `BorrowGrant` (envelope kind `Borrow`).
        grant: Vec<u8>,
        /// The publisher-signed container certificate.
        certificate: Vec<u8>,
    },
    /// Answer to `SignPoolMember`: the container-signed `PoolRegistration`.
    PoolRegistration(Vec<u8>),
}

/// Encodes a request with the protocol version in front.
pub fn encode_request(r: &Request) -> Result<Vec<u8>> {
    crate::util::encode_versioned(PROTOCOL_VERSION, r, "request")
}

/// Decodes a request; an unknown version or malformed bytes give a clear error.
pub fn decode_request(b: &[u8]) -> Result<Request> {
    crate::util::decode_versioned(PROTOCOL_VERSION, b, "container request")
}

/// Encodes a response with the protocol version in front.
pub fn encode_response(r: &Response) -> Result<Vec<u8>> {
    crate::util::encode_versioned(PROTOCOL_VERSION, r, "response")
}

/// Decodes a response.
pub fn decode_response(b: &[u8]) -> Result<Response> {
    crate::util::decode_versioned(PROTOCOL_VERSION, b, "container response")
}

/// The response for an error: its status number and message.
pub fn error_response(e: &Error) -> Response {
    Response::Error {
        status: e.status().code(),
        message: e.to_string(),
    }
}

/// The error a response carries, rebuilt on the runtime's side with the same status.
pub fn response_error(status: u32, message: String) -> Error {
    crate::status::error_from_code(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_versions_and_garbage() {
        let r = Request::Encrypt {
            license_id: [1; 16],
            plaintext: vec![1, 2, 3],
        };
        assert_eq!(decode_request(&encode_request(&r).unwrap()).unwrap(), r);
        let mut b = encode_request(&r).unwrap();
        b[0] = 9;
        assert!(matches!(
            decode_request(&b),
            Err(Error::UnknownVersion { found: 9, .. })
        ));
        assert!(decode_request(&[]).is_err());
        assert!(decode_request(&[1, 200, 7]).is_err());
        let mut long = encode_request(&Request::Identify).unwrap();
        long.push(0);
        assert!(decode_request(&long).is_err());
        let e = error_response(&Error::DongleShared("x".into()));
        let Response::Error { status, message } = e else {
            panic!()
        };
        assert!(matches!(
            response_error(status, message),
            Error::DongleShared(_)
        ));
    }
}
