//! The wire protocol between a runtime and `tessera-server`: frames, hellos, delegations,
//! requests and responses. Shared by the client (`src/net/`) and the server (`src/server/`).

use std::io::{Read, Write};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::host::MachineKind;
use crate::license::delegation;
use crate::{Error, Result};

// The delegation is a signed document of the trust chain and lives with the others in
// `license`; the wire carries it in a `DelegationBundle`.
pub use crate::license::delegation::{Delegation, sign_delegation};

/// The default TCP (license protocol) and UDP (discovery) port.
pub const DEFAULT_PORT: u16 = 22630;
/// The wire protocol version. 2: the client's hello says its PID namespace
/// ([`HostInfo::pid_namespace`]). A peer of another version is refused at the handshake
/// (`UnknownVersion`, whichever side reads the other's hello first).
pub const PROTOCOL_VERSION: u16 = 2;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 65_536;
/// A discovery probe starts with these bytes, then [`DISCOVERY_VERSION`], then zeros up to
/// [`DISCOVERY_PROBE_LEN`] bytes; the answer starts with `DISCOVERY_ANSWER`.
pub const DISCOVERY_PROBE: &[u8; 16] = b"TESSERA-DISCOVER";
/// The version byte after [`DISCOVERY_PROBE`]. Version 1 was the bare 16-byte magic, which a
/// server no longer answers (its answer was twice as long as the probe).
pub const DISCOVERY_VERSION: u8 = 2;
/// The exact length of a discovery probe. The padding makes a probe at least as long as any
/// answer, so that a server is never a reflection amplifier: it answers only probes of exactly
/// this length, with at most this many bytes. 512 bytes fit in any IPv4 datagram unfragmented
/// (576 bytes is the least every host must accept).
pub const DISCOVERY_PROBE_LEN: usize = 512;
/// The start of a discovery answer, followed by postcard `DiscoveryAnswer`.
pub const DISCOVERY_ANSWER: &[u8; 16] = b"TESSERA-SERVER-1";

/// What a client says about itself in the handshake. None of it is proved: the server counts
/// stations by the host key the client proved in the handshake (`server::seats::station_of`),
/// and uses these claims only to tell apart the sessions and processes of that key, to apply
/// a license's VM policy, and to show who holds a seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Physical or virtual.
    pub machine: MachineKind,
    /// Host name.
    pub hostname: String,
    /// Digest of the machine's fingerprint traits (shown, never counted).
    pub station: [u8; 32],
    /// The login / terminal-server session id.
    pub session: String,
    /// The process id, within its PID namespace.
    pub pid: u32,
    /// The PID namespace of the process (`host::pid_namespace`): processes started with
    /// `unshare -pf` each see themselves as pid 1, in namespaces of their own.
    pub pid_namespace: u64,
}

/// Noise msg 3 payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Protocol version.
    pub version: u16,
    /// The client.
    pub host: HostInfo,
}

/// A certificate and the delegation its container signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationBundle {
    /// The publisher-signed container certificate.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// The container-signed delegation (envelope kind `Delegation`).
    #[serde(with = "serde_bytes")]
    pub delegation: Vec<u8>,
}

/// Noise msg 2 payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// Protocol version.
    pub version: u16,
    /// The server's name (for `tessera_seat_info` and logs).
    pub name: String,
    /// One bundle per hosted container.
    pub delegations: Vec<DelegationBundle>,
}

/// Checks a server's hello against the app's publisher key: at least one bundle must chain
/// publisher → certificate → delegation → `server_key` (the key the server proved), unexpired
/// at `now`. Returns the serials of the containers the server may speak for.
pub fn verify_server(
    hello: &ServerHello,
    publisher: &VerifyingKey,
    vendor_id: u32,
    server_key: &[u8; 32],
    now: u64,
) -> Result<Vec<String>> {
    Ok(
        verified_delegations(hello, publisher, vendor_id, server_key, now)?
            .into_iter()
            .map(|d| d.serial)
            .collect(),
    )
}

/// [`verify_server`], returning the delegations that verified: each names a container
/// (serial and key) the server may speak for, and so the only containers a granted license
/// may be bound to.
pub fn verified_delegations(
    hello: &ServerHello,
    publisher: &VerifyingKey,
    vendor_id: u32,
    server_key: &[u8; 32],
    now: u64,
) -> Result<Vec<Delegation>> {
    let mut ok = Vec::new();
    let mut why = None;
    for b in &hello.delegations {
        match verify_bundle(b, publisher, vendor_id, server_key, now) {
            Ok(serial) => ok.push(serial),
            Err(e) => why = Some(e),
        }
    }
    if ok.is_empty() {
        return Err(Error::Tampered(format!(
            "server {} holds no delegation from a container of this publisher{}",
            hello.name,
            why.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    }
    Ok(ok)
}

fn verify_bundle(
    b: &DelegationBundle,
    publisher: &VerifyingKey,
    vendor_id: u32,
    server_key: &[u8; 32],
    now: u64,
) -> Result<Delegation> {
    delegation::verify_chain(
        &b.certificate,
        &b.delegation,
        publisher,
        vendor_id,
        server_key,
        now,
    )
}

/// Checks a seat grant against the delegations the server's hello proved: the license must
/// be signed by `publisher` for `vendor_id` and bound to one of the delegating containers,
/// the one the grant names (`BindingMismatch` otherwise: a license taken from another
/// container is refused, whatever it grants). A pool license (`Binding::Pool`) is accepted
/// from any of its member containers that delegated. Returns the license.
pub fn check_grant(
    grant: &SeatGrant,
    delegations: &[Delegation],
    publisher: &VerifyingKey,
    vendor_id: u32,
) -> Result<crate::license::License> {
    let s = crate::license::SignedLicense::verify(&grant.license, publisher).map_err(|e| {
        Error::Tampered(format!(
            "the server granted a seat of a license the publisher did not sign ({e})"
        ))
    })?;
    s.check_vendor(vendor_id)?;
    let lic = s.license;
    let Some(d) = delegations
        .iter()
        .find(|d| d.serial == grant.container_serial)
    else {
        return Err(Error::BindingMismatch(format!(
            "the server granted license {} from container {}, which has not delegated to it",
            lic.id_hex(),
            grant.container_serial
        )));
    };
    lic.check_binding(&d.serial, Some(&d.container_key))?;
    Ok(lic)
}

/// What a client asks a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetRequest {
    /// A seat of a product; idempotent for the same `seat_id`.
    Acquire {
        /// Chosen by the client, kept across reconnects.
        seat_id: [u8; 16],
        /// The publisher.
        vendor_id: u32,
        /// The product.
        product_code: u32,
        /// Feature bits needed.
        features: u32,
        /// Exclusive use.
        exclusive: bool,
    },
    /// Renews the leases of these seats.
    Renew {
        /// The seats.
        seat_ids: Vec<[u8; 16]>,
    },
    /// Releases a seat.
    Release {
        /// The seat.
        seat_id: [u8; 16],
    },
    /// A derived-mode message key for a 40-byte header, from the seat's container.
    DeriveKey {
        /// The seat.
        seat_id: [u8; 16],
        /// The ciphertext header.
        #[serde(with = "serde_bytes")]
        header: Vec<u8>,
    },
    /// Direct-mode encryption in the seat's container.
    Encrypt {
        /// The seat.
        seat_id: [u8; 16],
        /// The plaintext.
        #[serde(with = "serde_bytes")]
        plaintext: Vec<u8>,
    },
    /// Direct-mode decryption in the seat's container.
    Decrypt {
        /// The seat.
        seat_id: [u8; 16],
        /// The ciphertext.
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    },
    /// Seats in use of the seat's license.
    SeatInfo {
        /// The seat.
        seat_id: [u8; 16],
    },
    /// Liveness.
    Ping,
    /// The licenses of a publisher the server serves, with their seats in use (added in
    /// protocol 2's lifetime at the end of the enum: an older server answers it with a
    /// decoding error, which the client reports).
    Licenses {
        /// The publisher.
        vendor_id: u32,
    },
    /// Borrows a seat for use with no server until `days` from now (`license::borrow`): the
    /// server counts it as held until then or until it is returned, and the container
    /// holding the license lends it to the borrowing container. Idempotent for `seat_id`.
    Borrow {
        /// Chosen by the client; the seat's id on the server while it is lent.
        seat_id: [u8; 16],
        /// The publisher.
        vendor_id: u32,
        /// The product.
        product_code: u32,
        /// Feature bits needed.
        features: u32,
        /// Days wanted (1 to the license's `borrow_days`).
        days: u32,
        /// The borrowing container's activation request: self-signed, so it proves the
        /// container's keys (the product secret is sealed to them) and names its machine.
        #[serde(with = "serde_bytes")]
        borrower: Vec<u8>,
    },
    /// Gives a borrowed seat back before its end; the server frees it at once.
    Return {
        /// The borrowed seat.
        seat_id: [u8; 16],
        /// The borrowing container's signature over `license::borrow::return_message`.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// The seat key of `key_id` for a held seat's product, from the seat's container
    /// (`cipher::seat_key`): the seat then encrypts and decrypts format-2 ciphertext under
    /// that key id by itself, also while the server is out of reach. Answered with
    /// [`NetResponse::SeatKey`]; an older server answers with a decoding error, and the client
    /// keeps asking for every message as before. (Variants are numbered on the wire: new ones go last.)
    SeatKey {
        /// The seat.
        seat_id: [u8; 16],
        /// The key id the seat picked.
        key_id: [u8; 12],
    },
    /// Renews the leases of these seats, as `Renew`, answered with
    /// [`NetResponse::RenewedWhy`], which says why each lost seat was lost (an admin revoked
    /// it, its lease ran out, ...). An older server answers with a decoding error, and the
    /// client renews with `Renew` from then on. (Variants are numbered on the wire: new
    /// ones go last.)
    RenewWhy {
        /// The seats.
        seat_ids: Vec<[u8; 16]>,
    },
}

/// Why a server no longer holds a seat it was asked to renew.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LossReason {
    /// Not known to the server: its lease ran out, or it was released.
    Unknown,
    /// An administrator revoked it (the reason they gave; may be empty).
    Revoked {
        /// The administrator's reason.
        reason: String,
    },
    /// The server no longer hosts the container holding its license.
    NotHosted,
}

impl LossReason {
    /// Says in words that the license server `server` no longer holds `seat_id`, and why.
    pub fn describe(&self, server: &str, seat_id: &[u8; 16]) -> String {
        let seat = hex::encode(seat_id);
        match self {
            LossReason::Unknown => format!(
                "the license server {server} no longer holds seat {seat} (its lease ran out or \
                 it was released)"
            ),
            LossReason::Revoked { reason } if reason.trim().is_empty() => format!(
                "seat {seat} was revoked by an administrator of the license server {server}"
            ),
            LossReason::Revoked { reason } => format!(
                "seat {seat} was revoked by an administrator of the license server {server}: \
                 {}",
                reason
                    .chars()
                    .take(200)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect::<String>()
            ),
            LossReason::NotHosted => format!(
                "the license server {server} no longer hosts the container of seat {seat} \
                 (another server took it)"
            ),
        }
    }
}

/// A seat a renewal reports lost, with why ([`NetResponse::RenewedWhy`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostSeat {
    /// The seat.
    pub seat_id: [u8; 16],
    /// Why.
    pub reason: LossReason,
}

/// One license a server serves, as [`NetRequest::Licenses`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedLicense {
    /// The publisher-signed license (the client verifies it; the server's word is not
    /// trusted for what a license grants).
    #[serde(with = "serde_bytes")]
    pub license: Vec<u8>,
    /// The serial of the container holding it.
    pub container_serial: String,
    /// Seats of it in use now (distinct unit keys).
    pub in_use: u32,
}

/// A granted seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatGrant {
    /// The seat.
    pub seat_id: [u8; 16],
    /// The publisher-signed license it is a seat of.
    #[serde(with = "serde_bytes")]
    pub license: Vec<u8>,
    /// The serial of the container holding it.
    pub container_serial: String,
    /// Lease length in milliseconds.
    pub lease_ms: u64,
    /// How often to renew, in milliseconds.
    pub renew_ms: u64,
    /// Seats of the license in use (distinct unit keys).
    pub in_use: u32,
}

/// What a server answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetResponse {
    /// A seat.
    Granted(SeatGrant),
    /// Renewed; `lost` are seats the server no longer has.
    Renewed {
        /// Seats the server does not know (expired or released).
        lost: Vec<[u8; 16]>,
        /// New lease length.
        lease_ms: u64,
    },
    /// Released.
    Released,
    /// A message key.
    Key([u8; 32]),
    /// Encrypted or decrypted bytes.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Seat counts.
    Info {
        /// Seats in use.
        in_use: u32,
        /// License quantity.
        quantity: u32,
    },
    /// Liveness.
    Pong,
    /// Failure: a status number ([`crate::status::Status`]) and a message.
    Error {
        /// Status number.
        status: u32,
        /// Message.
        message: String,
    },
    /// The licenses asked for by [`NetRequest::Licenses`] (variants are numbered on the
    /// wire: new ones go at the end).
    Licenses(Vec<ServedLicense>),
    /// A lent seat: the lending container's signed [`crate::license::BorrowGrant`] and its
    /// publisher-signed certificate.
    Borrowed {
        /// The signed grant (envelope kind `Borrow`).
        #[serde(with = "serde_bytes")]
        grant: Vec<u8>,
        /// The lending container's certificate.
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
    },
    /// The borrowed seat is free again.
    Returned,
    /// The seat key asked for by [`NetRequest::SeatKey`] (variants are numbered on the
    /// wire).
    SeatKey {
        /// The seat key.
        key: [u8; 32],
    },
    /// The answer to [`NetRequest::RenewWhy`]: `Renewed`, with why each lost seat was lost
    /// (variants are numbered on the wire: new ones go last; only a client that asked with
    /// `RenewWhy` gets it).
    RenewedWhy {
        /// Seats the server no longer holds, and why.
        lost: Vec<LostSeat>,
        /// New lease length.
        lease_ms: u64,
    },
}

/// What a server says to a discovery probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryAnswer {
    /// The server's name.
    pub name: String,
    /// The TCP port of the license protocol.
    pub port: u16,
    /// Vendors whose licenses it hosts.
    pub vendors: Vec<u32>,
}

/// Encodes a message with the protocol version in front.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    crate::util::encode_versioned(PROTOCOL_VERSION, v, "message")
}

/// [`encode`], appending to `out` (a buffer the caller reuses).
pub fn encode_into<T: Serialize>(v: &T, out: &mut Vec<u8>) -> Result<()> {
    crate::util::encode_versioned_into(PROTOCOL_VERSION, v, "message", out)
}

/// Decodes a message, checking the version and that nothing trails.
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8], what: &'static str) -> Result<T> {
    crate::util::decode_versioned(PROTOCOL_VERSION, b, what)
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(Error::InvalidArgument(format!(
            "frame of {} bytes is too large",
            payload.len()
        )));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
        .map_err(|e| Error::io("server connection", e))
}

/// Reads one frame (blocking); a length over `MAX_FRAME` is refused before anything is
/// allocated.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(map_read_error)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(Error::malformed(
            "frame",
            format!("length {n} exceeds {MAX_FRAME}"),
        ));
    }
    // Grown as the bytes arrive, not allocated for the announced length at once.
    let mut buf = Vec::new();
    let got = r
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(map_read_error)?;
    if got < n {
        return Err(map_read_error(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(buf)
}

fn map_read_error(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Error::Timeout("the server did not answer in time".into())
        }
        _ => Error::io("server connection", e),
    }
}

/// The error a response carries, rebuilt on the client with the same status.
pub fn response_error(status: u32, message: String) -> Error {
    crate::status::error_from_code(status, message)
}

/// The error response for an error.
pub fn error_response(e: &Error) -> NetResponse {
    NetResponse::Error {
        status: e.status().code(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::ContainerCertificate;
    use crate::license::envelope::{self, Kind};
    use ed25519_dalek::SigningKey;

    #[test]
    fn frames_round_trip_and_refuse_huge_lengths() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"hello");
        let huge = [0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(Error::Malformed { .. })
        ));
        assert!(
            read_frame(&mut [0u8, 0, 0, 9, 1].as_slice()).is_err(),
            "truncated"
        );
        assert!(write_frame(&mut Vec::new(), &vec![0; MAX_FRAME + 1]).is_err());
    }

    /// A hello of protocol 1 (no PID namespace) gets a clear error, not a misread field.
    #[test]
    fn a_version_1_hello_is_refused_as_an_unknown_version() {
        #[derive(Serialize)]
        struct HostInfoV1 {
            machine: MachineKind,
            hostname: String,
            station: [u8; 32],
            session: String,
            pid: u32,
        }
        let old = HostInfoV1 {
            machine: MachineKind::Physical,
            hostname: "old".into(),
            station: [7; 32],
            session: "1".into(),
            pid: 9,
        };
        let bytes = crate::util::encode_versioned(1, &(1u16, old), "hello").unwrap();
        let e = decode::<ClientHello>(&bytes, "client hello").unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnknownVersion {
                    found: 1,
                    supported: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn messages_round_trip_and_check_versions() {
        let r = NetRequest::Renew {
            seat_ids: vec![[1; 16], [2; 16]],
        };
        assert_eq!(
            decode::<NetRequest>(&encode(&r).unwrap(), "request").unwrap(),
            r
        );
        let mut b = encode(&r).unwrap();
        b[0] = 7;
        assert!(matches!(
            decode::<NetRequest>(&b, "request"),
            Err(Error::UnknownVersion { found: 7, .. })
        ));
        assert!(decode::<NetRequest>(&[1, 0, 99, 99], "request").is_err());
    }

    #[test]
    fn renewals_with_reasons_are_new_variants_at_the_end() {
        // Byte 0 is the version, byte 1 the variant: older peers know 0..=11.
        let req = encode(&NetRequest::RenewWhy {
            seat_ids: vec![[1; 16]],
        })
        .unwrap();
        assert_eq!(req[1], 12);
        let lost = vec![
            LostSeat {
                seat_id: [1; 16],
                reason: LossReason::Revoked {
                    reason: "left".into(),
                },
            },
            LostSeat {
                seat_id: [2; 16],
                reason: LossReason::NotHosted,
            },
        ];
        let resp = NetResponse::RenewedWhy { lost, lease_ms: 9 };
        let bytes = encode(&resp).unwrap();
        assert_eq!(bytes[1], 12);
        assert_eq!(decode::<NetResponse>(&bytes, "answer").unwrap(), resp);
        // What older clients get is unchanged.
        let old = encode(&NetResponse::Renewed {
            lost: vec![[3; 16]],
            lease_ms: 9,
        })
        .unwrap();
        assert_eq!(old[1], 1);
        let why = LossReason::Revoked {
            reason: "left\nthe team".into(),
        }
        .describe("srv", &[0xAB; 16]);
        assert!(why.contains("revoked by an administrator"), "{why}");
        assert!(
            why.contains("left?the team") && why.contains("srv"),
            "{why}"
        );
        assert!(
            LossReason::Unknown
                .describe("srv", &[0; 16])
                .contains("lease ran out")
        );
    }

    #[test]
    fn byte_fields_keep_the_wire_format_of_a_sequence_of_bytes() {
        // serde_bytes writes a length and the bytes in one go; postcard wrote a Vec<u8> as the
        // same length and the same bytes one by one. Older peers read either.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum OldResponse {
            Granted(OldGrant),
            Renewed { lost: Vec<[u8; 16]>, lease_ms: u64 },
            Released,
            Key([u8; 32]),
            Data(Vec<u8>),
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct OldGrant {
            seat_id: [u8; 16],
            license: Vec<u8>,
            container_serial: String,
            lease_ms: u64,
            renew_ms: u64,
            in_use: u32,
        }
        let license: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let new = NetResponse::Granted(SeatGrant {
            seat_id: [3; 16],
            license: license.clone(),
            container_serial: "SW-1".into(),
            lease_ms: 90_000,
            renew_ms: 30_000,
            in_use: 4,
        });
        let old = OldResponse::Granted(OldGrant {
            seat_id: [3; 16],
            license,
            container_serial: "SW-1".into(),
            lease_ms: 90_000,
            renew_ms: 30_000,
            in_use: 4,
        });
        assert_eq!(encode(&new).unwrap(), encode(&old).unwrap());
        let data = vec![9u8; 70_000];
        let bytes = encode(&NetResponse::Data(data.clone())).unwrap();
        assert_eq!(bytes, encode(&OldResponse::Data(data.clone())).unwrap());
        assert_eq!(
            decode::<NetResponse>(&bytes, "answer").unwrap(),
            NetResponse::Data(data)
        );
    }

    #[test]
    fn a_delegation_must_chain_to_the_publisher_and_name_the_server() {
        use crate::license::ContainerKind;
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let container = SigningKey::from_bytes(&[2; 32]);
        let cert = ContainerCertificate {
            vendor_id: 5,
            serial: "SW-1".into(),
            kind: ContainerKind::Software,
            sign_key: container.verifying_key().to_bytes(),
            seal_key: [0; 32],
            noise_key: [0; 32],
            issued_at: 0,
            expiry: None,
        };
        let certificate = envelope::sign(Kind::Certificate, &cert, &publisher).unwrap();
        let d = Delegation {
            vendor_id: 5,
            serial: "SW-1".into(),
            container_key: cert.sign_key,
            server_key: [9; 32],
            issued_at: 0,
            expiry: 2_000,
        };
        let hello = |delegation| ServerHello {
            version: 1,
            name: "s".into(),
            delegations: vec![DelegationBundle {
                certificate: certificate.clone(),
                delegation,
            }],
        };
        let good = hello(sign_delegation(&d, &container).unwrap());
        let pk = publisher.verifying_key();
        assert_eq!(
            verify_server(&good, &pk, 5, &[9; 32], 1_000).unwrap(),
            vec!["SW-1"]
        );
        let tampered = |r: Result<Vec<String>>| matches!(r, Err(Error::Tampered(_)));
        assert!(
            tampered(verify_server(&good, &pk, 5, &[8; 32], 1_000)),
            "another server key"
        );
        assert!(
            tampered(verify_server(&good, &pk, 5, &[9; 32], 3_000)),
            "expired"
        );
        assert!(
            tampered(verify_server(&good, &pk, 6, &[9; 32], 1_000)),
            "another vendor"
        );
        let other = SigningKey::from_bytes(&[3; 32]).verifying_key();
        assert!(
            tampered(verify_server(&good, &other, 5, &[9; 32], 1_000)),
            "another publisher"
        );
        let forged = hello(sign_delegation(&d, &SigningKey::from_bytes(&[4; 32])).unwrap());
        assert!(
            tampered(verify_server(&forged, &pk, 5, &[9; 32], 1_000)),
            "forged delegation"
        );
        let empty = ServerHello {
            version: 1,
            name: "s".into(),
            delegations: vec![],
        };
        assert!(tampered(verify_server(&empty, &pk, 5, &[9; 32], 1_000)));
    }

    /// A client accepts a seat of a pool license from any member whose container delegated
    /// to the server it talks to, and from no container outside the pool.
    #[test]
    fn a_pool_license_is_granted_by_any_member_that_delegated() {
        use crate::license::{Binding, CountingUnit, License, VmPolicy};
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let member = |i: u8| (format!("SW-{i}"), SigningKey::from_bytes(&[i; 32]));
        let lic = License {
            license_id: [7; 16],
            vendor_id: 5,
            product_code: 1,
            product_name: "P".into(),
            features: 1,
            quantity: 2,
            counting_unit: CountingUnit::Station,
            exclusive_allowed: false,
            issued_at: 0,
            expiry: None,
            vm_policy: VmPolicy::Allow,
            binding: Binding::Pool {
                name: "site".into(),
                members: (2..=4)
                    .map(|i| (member(i).0, member(i).1.verifying_key().to_bytes()))
                    .collect(),
            },
            borrow_days: 0,
        };
        let signed = lic.sign(&publisher).unwrap().bytes;
        let delegation = |(serial, key): (String, SigningKey)| Delegation {
            vendor_id: 5,
            serial,
            container_key: key.verifying_key().to_bytes(),
            server_key: [9; 32],
            issued_at: 0,
            expiry: 2_000,
        };
        let grant = |serial: &str| SeatGrant {
            seat_id: [1; 16],
            license: signed.clone(),
            container_serial: serial.into(),
            lease_ms: 1,
            renew_ms: 1,
            in_use: 1,
        };
        let pk = publisher.verifying_key();
        for i in 2..=4 {
            let d = [delegation(member(i))];
            assert_eq!(
                check_grant(&grant(&format!("SW-{i}")), &d, &pk, 5).unwrap(),
                lic
            );
        }
        // A container outside the pool, even one that delegated.
        let outsider = [delegation(member(5))];
        assert!(matches!(
            check_grant(&grant("SW-5"), &outsider, &pk, 5),
            Err(Error::BindingMismatch(_))
        ));
        // A member's serial with another key.
        let mut impostor = delegation(member(2));
        impostor.container_key = [5; 32];
        assert!(matches!(
            check_grant(&grant("SW-2"), &[impostor], &pk, 5),
            Err(Error::BindingMismatch(_))
        ));
        // A member that did not delegate to this server.
        assert!(matches!(
            check_grant(&grant("SW-3"), &[delegation(member(2))], &pk, 5),
            Err(Error::BindingMismatch(_))
        ));
    }
}
