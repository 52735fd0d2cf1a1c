//! A borrowing machine for the tests of borrowing: a container engine of its own (the
//! borrowing container) and a license-protocol connection speaking `Borrow` and `Return`
//! by hand.

use std::time::Duration;

use tessera::container::{ContainerKind, Engine};
use tessera::host::{Fingerprint, MachineKind};
use tessera::license::borrow;
use tessera::net::conn::ServerConn;
use tessera::net::proto::{ClientHello, HostInfo, NetRequest, NetResponse, PROTOCOL_VERSION};

/// A borrowing machine's container (never activated: borrowing needs no activation) and
/// its activation request, which a borrow carries.
pub struct Laptop {
    pub engine: Engine,
    pub request: Vec<u8>,
}

/// A laptop named `name` with a container of `vendor`.
pub fn laptop(vendor: u32, name: &str) -> Laptop {
    let now = tessera::util::now();
    let engine = Engine::create(ContainerKind::Software, vendor, now);
    let request = engine
        .activation_request(&Fingerprint::default(), MachineKind::Physical, name, now)
        .unwrap();
    Laptop { engine, request }
}

impl Laptop {
    /// The container's Ed25519 key.
    pub fn key(&self) -> [u8; 32] {
        self.engine.sign_key().to_bytes()
    }

    /// The container's signature giving `seat` back.
    pub fn return_signature(&self, seat: &[u8; 16]) -> Vec<u8> {
        self.engine.sign(&borrow::return_message(seat)).to_vec()
    }
}

/// A connection to the license server at `addr` as the machine `name` (a host key of its
/// own, derived from the name: a station of its own), user uid 1000.
pub fn connect(
    addr: &str,
    publisher: &ed25519_dalek::VerifyingKey,
    vendor: u32,
    name: &str,
) -> ServerConn {
    let mut host_secret = [0u8; 32];
    for (i, b) in name.bytes().enumerate() {
        host_secret[i % 32] ^= b;
    }
    host_secret[31] ^= 0x5A;
    let hello = ClientHello {
        version: PROTOCOL_VERSION,
        host: HostInfo {
            machine: MachineKind::Physical,
            hostname: name.into(),
            station: [0; 32],
            session: "uid:1000/tty1".into(),
            pid: 1,
            pid_namespace: 1,
        },
    };
    ServerConn::connect(
        addr,
        &host_secret,
        &hello,
        publisher,
        vendor,
        Duration::from_secs(10),
    )
    .unwrap()
}

/// Borrows seat `seat_id` of `vendor`'s `product` for `days` into `l`'s container: the
/// grant and the lending container's certificate.
pub fn borrow(
    conn: &mut ServerConn,
    vendor: u32,
    seat_id: [u8; 16],
    product: u32,
    days: u32,
    l: &Laptop,
) -> tessera::Result<(Vec<u8>, Vec<u8>)> {
    match conn.call(&NetRequest::Borrow {
        seat_id,
        vendor_id: vendor,
        product_code: product,
        features: 0,
        days,
        borrower: l.request.clone(),
    })? {
        NetResponse::Borrowed { grant, certificate } => Ok((grant, certificate)),
        other => panic!("{other:?}"),
    }
}

/// Gives seat `seat_id` back with `signature`.
pub fn give_back(
    conn: &mut ServerConn,
    seat_id: [u8; 16],
    signature: Vec<u8>,
) -> tessera::Result<()> {
    match conn.call(&NetRequest::Return { seat_id, signature })? {
        NetResponse::Returned => Ok(()),
        other => panic!("{other:?}"),
    }
}
