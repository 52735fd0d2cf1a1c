//! A connection to one license server: the Noise XX handshake with server hellos (both ends,
//! as sans-IO state machines and as blocking helpers), the transport channel over it, and
//! [`ServerConn`], the client's blocking TCP connection (`docs/SERVER.md`, "Wire").
//!
//! The handshake is the dongle channel's (`src/channel/`) with other payloads: the client
//! (initiator, its host key) sends message 1 (empty), the server (responder, its static key)
//! answers message 2 with a [`ServerHello`], which the client checks against its publisher
//! key ([`proto::verified_delegations`]), and the client sends message 3 with a [`ClientHello`].
//! After that each frame is one [`NetChannel`] frame: `counter u64 LE | ciphertext`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use snow::HandshakeState;
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

use super::proto::{
    self, ClientHello, DEFAULT_PORT, MAX_FRAME, NetRequest, NetResponse, ServerHello,
};
use crate::channel::Channel;
use crate::channel::handshake::{self, check_contributory, read, remote_static, write};
use crate::{Error, Result};

const HANDSHAKE: &str = "server handshake";
/// The bytes a channel frame adds to its plaintext: the counter (8) and the tag (16).
pub const FRAME_OVERHEAD: usize = 8 + 16;
/// The largest plaintext a [`NetChannel`] frame carries, so that the frame fits [`MAX_FRAME`].
pub const MAX_PLAINTEXT: usize = MAX_FRAME - FRAME_OVERHEAD;

// --- the channel ----------------------------------------------------------------------------

/// One end of an established server channel: the same counter-numbered frames as a
/// dongle's [`Channel`], with frames up to the server wire's [`MAX_FRAME`].
pub type NetChannel = Channel;

impl Channel {
    /// Seals `postcard((PROTOCOL_VERSION, value))`.
    pub fn seal_message<T: Serialize>(&mut self, value: &T) -> Result<Vec<u8>> {
        let plain = proto::encode(value)?;
        self.seal(&plain)
    }

    /// Opens a frame and decodes `postcard((PROTOCOL_VERSION, T))`.
    pub fn open_message<T: DeserializeOwned>(
        &mut self,
        frame: &[u8],
        what: &'static str,
    ) -> Result<T> {
        let plain = self.open(frame)?;
        proto::decode(&plain, what)
    }
}

// --- the handshake --------------------------------------------------------------------------

// The Noise steps are the dongle channel's (src/channel/handshake.rs); only the hellos and
// the frame limit differ.
fn noise(secret: &[u8; 32], initiator: bool) -> Result<HandshakeState> {
    handshake::noise(secret, initiator, None)
}

fn into_channel(noise: HandshakeState) -> Result<NetChannel> {
    handshake::into_channel_with(noise, MAX_FRAME)
}

fn out_of_order(what: &str) -> Error {
    Error::Internal(format!("{HANDSHAKE}: {what}"))
}

enum ClientStep {
    Start,
    SentMessage1,
    SentMessage3(Box<(ServerHello, Vec<proto::Delegation>)>),
    Failed,
}

/// The client's side of the handshake (Noise initiator), sans I/O:
/// [`write_message1`](Self::write_message1), [`read_message2`](Self::read_message2) (which
/// returns message 3), [`finish`](Self::finish). Any error leaves it failed.
pub struct ClientHandshake {
    noise: HandshakeState,
    hello: Vec<u8>,
    step: ClientStep,
}

impl ClientHandshake {
    /// Starts a handshake with the host's static secret; `hello` goes in message 3.
    pub fn new(host_secret: &[u8; 32], hello: &ClientHello) -> Result<Self> {
        Ok(ClientHandshake {
            noise: noise(host_secret, true)?,
            hello: proto::encode(hello)?,
            step: ClientStep::Start,
        })
    }

    /// Message 1: an ephemeral key, empty payload.
    pub fn write_message1(&mut self) -> Result<Vec<u8>> {
        if !matches!(self.step, ClientStep::Start) {
            return Err(out_of_order("message 1 was already written"));
        }
        self.step = ClientStep::Failed;
        let message = write(&mut self.noise, "message 1", &[])?;
        self.step = ClientStep::SentMessage1;
        Ok(message)
    }

    /// Reads message 2, decodes the [`ServerHello`] and checks its delegations against the
    /// publisher key and the static key the server proved ([`proto::verified_delegations`]:
    /// `Tampered` when none chains); returns message 3.
    pub fn read_message2(
        &mut self,
        message2: &[u8],
        publisher: &VerifyingKey,
        vendor_id: u32,
        now: u64,
    ) -> Result<Vec<u8>> {
        if !matches!(self.step, ClientStep::SentMessage1) {
            return Err(out_of_order("message 2 is read once, after message 1"));
        }
        self.step = ClientStep::Failed;
        check_contributory(message2, "the server's ephemeral key")?;
        let payload = read(&mut self.noise, "message 2", message2)?;
        let proved = remote_static(&self.noise)?;
        let hello: ServerHello = proto::decode(&payload, "server hello")?;
        let delegations = proto::verified_delegations(&hello, publisher, vendor_id, &proved, now)?;
        let message = write(&mut self.noise, "message 3", &self.hello)?;
        self.step = ClientStep::SentMessage3(Box::new((hello, delegations)));
        Ok(message)
    }

    /// After message 3: the channel, the server's hello, and the delegations that verified
    /// (each names a container the server may speak for).
    pub fn finish(self) -> Result<(NetChannel, ServerHello, Vec<proto::Delegation>)> {
        let ClientStep::SentMessage3(verified) = self.step else {
            return Err(out_of_order("finish before a successful message 2"));
        };
        let (hello, delegations) = *verified;
        Ok((into_channel(self.noise)?, hello, delegations))
    }
}

/// The server's side of the handshake (Noise responder), sans I/O:
/// [`read_message1`](Self::read_message1) (which returns message 2), then
/// [`read_message3`](Self::read_message3). Any error leaves it failed. The same responder as
/// the dongle's ([`handshake::Responder`]), with the license protocol's hellos and frames.
pub struct ServerHandshake(handshake::Responder);

impl ServerHandshake {
    /// Starts a handshake with the server's static secret; `hello` goes in message 2.
    pub fn new(static_secret: &[u8; 32], hello: &ServerHello) -> Result<Self> {
        Ok(ServerHandshake(handshake::Responder::new(
            noise(static_secret, false)?,
            proto::encode(hello)?,
            HANDSHAKE,
            "the client's ephemeral key",
            MAX_FRAME,
        )))
    }

    /// Reads message 1 (no payload allowed), returns message 2.
    pub fn read_message1(&mut self, message1: &[u8]) -> Result<Vec<u8>> {
        self.0.message2(message1)
    }

    /// Reads message 3; returns the channel, the client's static public key (its host key)
    /// and its [`ClientHello`].
    pub fn read_message3(self, message3: &[u8]) -> Result<(NetChannel, [u8; 32], ClientHello)> {
        let (channel, client, payload) = self.0.finish(message3)?;
        let hello: ClientHello = proto::decode(&payload, "client hello")?;
        Ok((channel, client, hello))
    }
}

/// The server's handshake over a blocking stream: reads message 1, writes message 2, reads
/// message 3.
pub fn server_handshake(
    stream: &mut (impl Read + Write),
    static_secret: &[u8; 32],
    hello: &ServerHello,
) -> Result<(NetChannel, [u8; 32], ClientHello)> {
    let mut hs = ServerHandshake::new(static_secret, hello)?;
    let message1 = proto::read_frame(stream)?;
    let message2 = hs.read_message1(&message1)?;
    proto::write_frame(stream, &message2).map_err(transport_error)?;
    let message3 = proto::read_frame(stream)?;
    hs.read_message3(&message3)
}

/// The client's handshake over a blocking stream: returns the channel, the server's hello
/// and the delegations that verified.
pub fn client_handshake(
    stream: &mut (impl Read + Write),
    host_secret: &[u8; 32],
    hello: &ClientHello,
    publisher: &VerifyingKey,
    vendor_id: u32,
    now: u64,
) -> Result<(NetChannel, ServerHello, Vec<proto::Delegation>)> {
    let mut hs = ClientHandshake::new(host_secret, hello)?;
    let message1 = hs.write_message1()?;
    proto::write_frame(stream, &message1).map_err(transport_error)?;
    let message2 = proto::read_frame(stream)?;
    let message3 = hs.read_message2(&message2, publisher, vendor_id, now)?;
    proto::write_frame(stream, &message3).map_err(transport_error)?;
    hs.finish()
}

// --- the connection -------------------------------------------------------------------------

/// `write_frame` reports every write failure as I/O; a write that timed out is a timeout.
fn transport_error(e: Error) -> Error {
    match e {
        Error::Io { error: source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Error::Timeout("the license server did not take the request in time".into())
        }
        e => e,
    }
}

fn connect_error(addr: SocketAddr, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Error::Timeout(format!("connecting to the license server {addr}"))
        }
        _ => Error::io(format!("license server {addr}"), e),
    }
}

/// Splits `host[:port]` (IPv6 literals bare or in brackets) into host and port.
fn split_host_port(addr: &str) -> Result<(String, u16)> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(Error::InvalidArgument(
            "empty license server address".into(),
        ));
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port.parse::<u16>().map_err(|_| {
                Error::InvalidArgument(format!("license server address {addr}: bad port"))
            })?;
            Ok((host.to_string(), port))
        }
        _ => Ok((addr.to_string(), DEFAULT_PORT)),
    }
}

fn open_socket(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    socket.set_keepalive(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    socket.set_tcp_keepalive(&keepalive)?;
    socket.connect_timeout(&SockAddr::from(addr), timeout)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket.into())
}

/// A blocking, authenticated connection to one license server. Requests and responses
/// strictly alternate; after a transport failure (timeout, disconnect, a frame that does not
/// open) the connection is [broken](Self::is_broken) and every further call fails.
pub struct ServerConn {
    stream: TcpStream,
    channel: NetChannel,
    name: String,
    address: SocketAddr,
    delegations: Vec<proto::Delegation>,
    broken: bool,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl ServerConn {
    /// Connects to `addr` (`host[:port]`, port [`DEFAULT_PORT`] by default), trying each
    /// address it resolves to, and runs the handshake: the server must prove a key that one
    /// of its delegations, chained to `publisher`, names (`Tampered` otherwise). `timeout`
    /// bounds the connect and each read and write. When every address fails, the most
    /// specific error is returned.
    pub fn connect(
        addr: &str,
        host_secret: &[u8; 32],
        client: &ClientHello,
        publisher: &VerifyingKey,
        vendor_id: u32,
        timeout: Duration,
    ) -> Result<ServerConn> {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument("a zero timeout".into()));
        }
        let (host, port) = split_host_port(addr)?;
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("license server {addr}"), e))?
            .collect();
        let mut best: Option<Error> = None;
        for a in addrs {
            match Self::connect_one(a, host_secret, client, publisher, vendor_id, timeout) {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(server = %a, error = %e, "license server connection failed");
                    if best
                        .as_ref()
                        .is_none_or(|b| e.specificity() > b.specificity())
                    {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| {
            Error::io(
                format!("license server {addr}"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            )
        }))
    }

    fn connect_one(
        addr: SocketAddr,
        host_secret: &[u8; 32],
        client: &ClientHello,
        publisher: &VerifyingKey,
        vendor_id: u32,
        timeout: Duration,
    ) -> Result<ServerConn> {
        let mut stream = open_socket(addr, timeout).map_err(|e| connect_error(addr, e))?;
        let now = crate::util::now();
        let (channel, hello, delegations) =
            client_handshake(&mut stream, host_secret, client, publisher, vendor_id, now)?;
        tracing::debug!(server = %addr, name = %hello.name, "license server connected");
        Ok(ServerConn {
            stream,
            channel,
            name: hello.name,
            address: addr,
            delegations,
            broken: false,
        })
    }

    /// Sends a request, waits for the response. A `NetResponse::Error` becomes the error its
    /// status names ([`proto::response_error`]); the connection stays usable then. Timeouts
    /// are `Timeout`, disconnects `Io`; both break the connection.
    pub fn call(&mut self, req: &NetRequest) -> Result<NetResponse> {
        if self.broken {
            return Err(Error::io(
                format!("license server {}", self.address),
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the connection failed earlier",
                ),
            ));
        }
        match self.exchange(req) {
            Ok(NetResponse::Error { status, message }) => {
                Err(proto::response_error(status, message))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    fn exchange(&mut self, req: &NetRequest) -> Result<NetResponse> {
        let frame = self.channel.seal_message(req)?;
        proto::write_frame(&mut self.stream, &frame).map_err(transport_error)?;
        let frame = proto::read_frame(&mut self.stream)?;
        self.channel.open_message(&frame, "server response")
    }

    /// Whether a transport failure broke the connection.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The server's name from its hello.
    pub fn server_name(&self) -> &str {
        &self.name
    }

    /// The address connected to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The serials of the containers whose delegations to this server verified.
    pub fn serials(&self) -> Vec<String> {
        self.delegations.iter().map(|d| d.serial.clone()).collect()
    }

    /// The delegations to this server that verified: the containers (serial and key) whose
    /// licenses it may grant.
    pub fn delegations(&self) -> &[proto::Delegation] {
        &self.delegations
    }

    /// The server's Noise static public key.
    pub fn server_key(&self) -> [u8; 32] {
        self.channel.remote_static()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::MachineKind;
    use crate::license::envelope::{self, Kind};
    use crate::license::{ContainerCertificate, ContainerKind};
    use crate::net::proto::{Delegation, DelegationBundle, HostInfo};
    use ed25519_dalek::SigningKey;
    use std::collections::{HashMap, HashSet};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    pub(crate) const VENDOR: u32 = 77;

    /// A publisher key and a server static secret with a hello whose delegation is for
    /// `delegated_key` (the server's own key unless a test says otherwise), chained to
    /// `publisher`.
    pub(crate) fn server_hello(
        name: &str,
        publisher: &SigningKey,
        delegated_key: [u8; 32],
    ) -> ServerHello {
        let container = container_key(name);
        let cert = ContainerCertificate {
            vendor_id: VENDOR,
            serial: format!("SW-{name}"),
            kind: ContainerKind::Software,
            sign_key: container.verifying_key().to_bytes(),
            seal_key: [0; 32],
            noise_key: [0; 32],
            issued_at: 0,
            expiry: None,
        };
        let certificate = envelope::sign(Kind::Certificate, &cert, publisher).unwrap();
        let now = crate::util::now();
        let d = Delegation {
            vendor_id: VENDOR,
            serial: cert.serial.clone(),
            container_key: cert.sign_key,
            server_key: delegated_key,
            issued_at: now,
            expiry: now + 3600,
        };
        ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: name.into(),
            delegations: vec![DelegationBundle {
                certificate,
                delegation: proto::sign_delegation(&d, &container).unwrap(),
            }],
        }
    }

    /// The key of the container `SW-{name}` that delegates to the mock server `name`.
    pub(crate) fn container_key(name: &str) -> SigningKey {
        use sha2::{Digest, Sha256};
        SigningKey::from_bytes(&Sha256::digest(format!("mock container {name}")).into())
    }

    /// A license of product 7 signed by `publisher`, bound to the container `SW-{name}`.
    pub(crate) fn bound_license(name: &str, publisher: &SigningKey) -> Vec<u8> {
        use crate::license::{Binding, CountingUnit, License, VmPolicy};
        License {
            license_id: [7; 16],
            vendor_id: VENDOR,
            product_code: 7,
            product_name: "seven".into(),
            features: 0xFF,
            quantity: 100,
            counting_unit: CountingUnit::Handle,
            exclusive_allowed: true,
            borrow_days: 0,
            issued_at: 0,
            expiry: None,
            vm_policy: VmPolicy::Allow,
            binding: Binding::Container {
                serial: format!("SW-{name}"),
                key: container_key(name).verifying_key().to_bytes(),
            },
        }
        .sign(publisher)
        .unwrap()
        .bytes
    }

    pub(crate) fn public(secret: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
    }

    pub(crate) fn client_hello() -> ClientHello {
        ClientHello {
            version: proto::PROTOCOL_VERSION,
            host: HostInfo {
                machine: MachineKind::Physical,
                hostname: "test-host".into(),
                station: [3; 32],
                session: "1".into(),
                pid: std::process::id(),
                pid_namespace: crate::host::pid_namespace(),
            },
        }
    }

    pub(crate) const LEASE_MS: u64 = 400;
    pub(crate) const RENEW_MS: u64 = 100;
    /// The product secret of the mock's product 7 (its key requests answer with it).
    pub(crate) const PRODUCT_SECRET: [u8; 32] = [0x33; 32];

    /// What a mock server saw.
    #[derive(Default, Debug)]
    pub(crate) struct MockState {
        /// Live seats and when their leases run out.
        pub seats: HashMap<[u8; 16], Instant>,
        /// Every seat id ever acquired.
        pub seen: HashSet<[u8; 16]>,
        /// Acquire requests in order.
        pub acquires: Vec<[u8; 16]>,
        pub renews: usize,
        pub releases: usize,
        pub connections: usize,
        /// Requests for a key or for encryption (`SeatKey`, `DeriveKey`, `Encrypt`,
        /// `Decrypt`).
        pub key_calls: usize,
        /// Answers `SeatKey` and `RenewWhy` as a server from before them (a decoding error).
        pub old: bool,
        /// Seats an admin revoked (`RenewWhy` says so).
        pub revoked: HashSet<[u8; 16]>,
        /// `Renew` requests (not `RenewWhy`).
        pub plain_renews: usize,
    }

    /// A tiny blocking license server on 127.0.0.1: one thread accepting, one per
    /// connection, a seat table honouring idempotent acquire, renew and release.
    pub(crate) struct Mock {
        pub addr: SocketAddr,
        pub state: Arc<Mutex<MockState>>,
        stop: Arc<AtomicBool>,
        conns: Arc<Mutex<Vec<TcpStream>>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Mock {
        /// A server with a proper delegation from `publisher`.
        pub(crate) fn start(name: &str, publisher: &SigningKey) -> Mock {
            let secret: [u8; 32] = crate::util::random();
            let hello = server_hello(name, publisher, public(&secret));
            Mock::start_granting(secret, hello, bound_license(name, publisher))
        }

        pub(crate) fn start_with(secret: [u8; 32], hello: ServerHello) -> Mock {
            Mock::start_granting(secret, hello, Vec::new())
        }

        /// A server with `hello` that grants seats of the signed `license`.
        pub(crate) fn start_granting(
            secret: [u8; 32],
            hello: ServerHello,
            license: Vec<u8>,
        ) -> Mock {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let state = Arc::new(Mutex::new(MockState::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let conns = Arc::new(Mutex::new(Vec::new()));
            let thread = {
                let (state, stop, conns) = (state.clone(), stop.clone(), conns.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((s, _)) => {
                                s.set_nonblocking(false).unwrap();
                                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                                conns.lock().unwrap().push(s.try_clone().unwrap());
                                state.lock().unwrap().connections += 1;
                                let (state, hello) = (state.clone(), hello.clone());
                                let license = license.clone();
                                std::thread::spawn(move || serve(s, secret, hello, license, state));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            };
            Mock {
                addr,
                state,
                stop,
                conns,
                thread: Some(thread),
            }
        }

        pub(crate) fn address(&self) -> String {
            self.addr.to_string()
        }

        /// Drops every open connection (the clients see a disconnect).
        pub(crate) fn kill_connections(&self) {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }

        /// Stops listening and drops every connection.
        pub(crate) fn stop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
            self.kill_connections();
        }
    }

    impl Drop for Mock {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn serve(
        mut s: TcpStream,
        secret: [u8; 32],
        hello: ServerHello,
        license: Vec<u8>,
        state: Arc<Mutex<MockState>>,
    ) {
        let Ok((mut channel, _, _)) = server_handshake(&mut s, &secret, &hello) else {
            return;
        };
        loop {
            let Ok(frame) = proto::read_frame(&mut s) else {
                return;
            };
            let Ok(req) = channel.open_message::<NetRequest>(&frame, "request") else {
                return;
            };
            let resp = answer(&hello.name, &license, req, &mut state.lock().unwrap());
            let frame = channel.seal_message(&resp).unwrap();
            if proto::write_frame(&mut s, &frame).is_err() {
                return;
            }
        }
    }

    fn answer(name: &str, license: &[u8], req: NetRequest, st: &mut MockState) -> NetResponse {
        let now = Instant::now();
        let lease = Duration::from_millis(LEASE_MS);
        st.seats.retain(|_, expiry| *expiry > now);
        let unknown = || proto::error_response(&Error::LeaseLost(format!("{name}: unknown seat")));
        match req {
            NetRequest::Acquire {
                product_code: 0, ..
            } => proto::error_response(&Error::NoLicense(format!("{name}: no product 0"))),
            NetRequest::Acquire { seat_id, .. } => {
                st.seats.insert(seat_id, now + lease);
                st.seen.insert(seat_id);
                st.acquires.push(seat_id);
                NetResponse::Granted(proto::SeatGrant {
                    seat_id,
                    license: license.to_vec(),
                    container_serial: format!("SW-{name}"),
                    lease_ms: LEASE_MS,
                    renew_ms: RENEW_MS,
                    in_use: st.seats.len() as u32,
                })
            }
            NetRequest::Renew { seat_ids } => {
                st.renews += 1;
                st.plain_renews += 1;
                let mut lost = Vec::new();
                for id in seat_ids {
                    match st.seats.get_mut(&id) {
                        Some(expiry) => *expiry = now + lease,
                        None => lost.push(id),
                    }
                }
                NetResponse::Renewed {
                    lost,
                    lease_ms: LEASE_MS,
                }
            }
            // An old mock does not know it (it answers with a decoding error).
            NetRequest::RenewWhy { seat_ids } if !st.old => {
                st.renews += 1;
                let mut lost = Vec::new();
                for id in seat_ids {
                    match st.seats.get_mut(&id) {
                        Some(expiry) => *expiry = now + lease,
                        None => lost.push(proto::LostSeat {
                            seat_id: id,
                            reason: match st.revoked.contains(&id) {
                                true => proto::LossReason::Revoked {
                                    reason: "mock".into(),
                                },
                                false => proto::LossReason::Unknown,
                            },
                        }),
                    }
                }
                NetResponse::RenewedWhy {
                    lost,
                    lease_ms: LEASE_MS,
                }
            }
            NetRequest::RenewWhy { .. } => {
                proto::error_response(&Error::malformed("request", "unknown variant index 12"))
            }
            NetRequest::Release { seat_id } => match st.seats.remove(&seat_id) {
                Some(_) => {
                    st.releases += 1;
                    NetResponse::Released
                }
                None => unknown(),
            },
            NetRequest::SeatInfo { seat_id } if st.seats.contains_key(&seat_id) => {
                NetResponse::Info {
                    in_use: st.seats.len() as u32,
                    quantity: 10,
                }
            }
            NetRequest::SeatInfo { .. } => unknown(),
            NetRequest::Ping => NetResponse::Pong,
            NetRequest::SeatKey { .. }
            | NetRequest::DeriveKey { .. }
            | NetRequest::Encrypt { .. }
            | NetRequest::Decrypt { .. } => {
                st.key_calls += 1;
                key_answer(req, st.old).unwrap_or_else(|e| proto::error_response(&e))
            }
            _ => proto::error_response(&Error::Unsupported("mock".into())),
        }
    }

    /// The mock's container: product 7 of [`VENDOR`] under [`PRODUCT_SECRET`].
    fn key_answer(req: NetRequest, old: bool) -> Result<NetResponse> {
        use crate::cipher::{self, Header, Mode};
        Ok(match req {
            NetRequest::SeatKey { .. } if old => {
                return Err(Error::malformed("request", "unknown variant index 9"));
            }
            NetRequest::SeatKey { key_id, .. } => NetResponse::SeatKey {
                key: *cipher::seat_key(&PRODUCT_SECRET, VENDOR, 7, &key_id),
            },
            NetRequest::DeriveKey { header, .. } => NetResponse::Key(*cipher::message_key(
                &PRODUCT_SECRET,
                &Header::parse_header(&header)?,
            )),
            NetRequest::Encrypt { plaintext, .. } => NetResponse::Data(cipher::encrypt(
                &PRODUCT_SECRET,
                &Header::new(Mode::Direct, VENDOR, 7),
                &plaintext,
            )?),
            NetRequest::Decrypt { ciphertext, .. } => {
                NetResponse::Data(cipher::decrypt(&PRODUCT_SECRET, &ciphertext)?)
            }
            other => return Err(Error::Internal(format!("not a key request: {other:?}"))),
        })
    }

    #[test]
    fn connect_calls_and_errors_over_tcp() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let mock = Mock::start("alpha", &publisher);
        let pk = publisher.verifying_key();
        let t = Duration::from_secs(2);
        let mut conn =
            ServerConn::connect(&mock.address(), &[5; 32], &client_hello(), &pk, VENDOR, t)
                .unwrap();
        assert_eq!(conn.server_name(), "alpha");
        assert_eq!(conn.address(), mock.addr);
        assert_eq!(conn.serials(), ["SW-alpha".to_string()]);
        assert_eq!(conn.call(&NetRequest::Ping).unwrap(), NetResponse::Pong);
        let acquire = NetRequest::Acquire {
            seat_id: [1; 16],
            vendor_id: VENDOR,
            product_code: 1,
            features: 0,
            exclusive: false,
        };
        assert!(
            matches!(conn.call(&acquire).unwrap(), NetResponse::Granted(g) if g.seat_id == [1; 16])
        );
        let renew = NetRequest::Renew {
            seat_ids: vec![[1; 16], [2; 16]],
        };
        assert_eq!(
            conn.call(&renew).unwrap(),
            NetResponse::Renewed {
                lost: vec![[2; 16]],
                lease_ms: LEASE_MS
            }
        );
        let release = NetRequest::Release { seat_id: [1; 16] };
        assert_eq!(conn.call(&release).unwrap(), NetResponse::Released);
        // An error response is the error its status names, and the connection stays usable.
        assert!(matches!(conn.call(&release), Err(Error::LeaseLost(_))));
        assert!(!conn.is_broken());
        assert_eq!(conn.call(&NetRequest::Ping).unwrap(), NetResponse::Pong);
        // A disconnect is an I/O error and breaks the connection.
        mock.kill_connections();
        assert!(matches!(
            conn.call(&NetRequest::Ping),
            Err(Error::Io { .. })
        ));
        assert!(conn.is_broken());
        assert!(matches!(
            conn.call(&NetRequest::Ping),
            Err(Error::Io { .. })
        ));
        let st = mock.state.lock().unwrap();
        assert_eq!((st.acquires.len(), st.renews, st.releases), (1, 1, 1));
    }

    #[test]
    fn a_server_without_a_delegation_for_its_key_or_publisher_is_tampered() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let pk = publisher.verifying_key();
        let t = Duration::from_secs(2);
        let connect = |mock: &Mock| {
            ServerConn::connect(&mock.address(), &[5; 32], &client_hello(), &pk, VENDOR, t)
        };
        let secret: [u8; 32] = crate::util::random();
        let other_key = Mock::start_with(secret, server_hello("k", &publisher, [9; 32]));
        assert!(matches!(connect(&other_key), Err(Error::Tampered(_))));
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let other_publisher =
            Mock::start_with(secret, server_hello("p", &stranger, public(&secret)));
        assert!(matches!(connect(&other_publisher), Err(Error::Tampered(_))));
        let wrong_vendor = ServerConn::connect(
            &Mock::start("v", &publisher).address(),
            &[5; 32],
            &client_hello(),
            &pk,
            VENDOR + 1,
            t,
        );
        assert!(matches!(wrong_vendor, Err(Error::Tampered(_))));
    }

    #[test]
    fn connect_failures_are_io_or_timeout() {
        let pk = SigningKey::from_bytes(&[1; 32]).verifying_key();
        // A port nobody listens on: bind, take the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Duration::from_secs(1);
        let r = ServerConn::connect(
            &format!("127.0.0.1:{port}"),
            &[5; 32],
            &client_hello(),
            &pk,
            VENDOR,
            t,
        );
        assert!(matches!(r, Err(Error::Io { .. })));
        // A server that accepts but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let r = ServerConn::connect(
            &addr,
            &[5; 32],
            &client_hello(),
            &pk,
            VENDOR,
            Duration::from_millis(200),
        );
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    }

    #[test]
    fn handshake_sans_io_round_trip_and_channel_refuses_replays() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let server_secret: [u8; 32] = crate::util::random();
        let host_secret: [u8; 32] = crate::util::random();
        let hello = server_hello("s1", &publisher, public(&server_secret));
        let mut c = ClientHandshake::new(&host_secret, &client_hello()).unwrap();
        let mut s = ServerHandshake::new(&server_secret, &hello).unwrap();
        let m1 = c.write_message1().unwrap();
        let m2 = s.read_message1(&m1).unwrap();
        let m3 = c
            .read_message2(&m2, &publisher.verifying_key(), VENDOR, crate::util::now())
            .unwrap();
        let (mut cc, got_hello, delegations) = c.finish().unwrap();
        let serials: Vec<String> = delegations.into_iter().map(|d| d.serial).collect();
        let (mut sc, client_key, got_client) = s.read_message3(&m3).unwrap();
        assert_eq!(got_hello, hello);
        assert_eq!(serials, vec!["SW-s1".to_string()]);
        assert_eq!(client_key, public(&host_secret));
        assert_eq!(got_client, client_hello());
        assert_eq!(cc.handshake_hash(), sc.handshake_hash());
        assert_eq!(cc.remote_static(), public(&server_secret));

        let f1 = cc.seal_message(&NetRequest::Ping).unwrap();
        assert_eq!(
            sc.open_message::<NetRequest>(&f1, "request").unwrap(),
            NetRequest::Ping
        );
        assert!(matches!(sc.open(&f1), Err(Error::Tampered(_))), "replay");
        let mut f2 = cc.seal(b"x").unwrap();
        let last = f2.len() - 1;
        f2[last] ^= 1;
        assert!(matches!(sc.open(&f2), Err(Error::Tampered(_))), "modified");
        assert!(matches!(sc.open(&[0; 5]), Err(Error::Malformed { .. })));
        let big = vec![0u8; MAX_PLAINTEXT];
        let f3 = sc.seal(&big).unwrap();
        assert_eq!(f3.len(), MAX_FRAME);
        assert_eq!(cc.open(&f3).unwrap(), big);
        assert!(sc.seal(&vec![0u8; MAX_PLAINTEXT + 1]).is_err());
    }

    #[test]
    fn handshake_refuses_out_of_order_and_garbage() {
        let publisher = SigningKey::from_bytes(&[1; 32]);
        let server_secret: [u8; 32] = crate::util::random();
        let hello = server_hello("s1", &publisher, public(&server_secret));
        let mut s = ServerHandshake::new(&server_secret, &hello).unwrap();
        assert!(s.read_message1(&[0u8; 32]).is_err(), "low-order ephemeral");
        assert!(
            s.read_message1(&[7u8; 40]).is_err(),
            "failed machine stays failed"
        );
        let s = ServerHandshake::new(&server_secret, &hello).unwrap();
        assert!(s.read_message3(&[1; 64]).is_err(), "message 3 first");
        let mut c = ClientHandshake::new(&[9; 32], &client_hello()).unwrap();
        assert!(
            c.read_message2(&[1; 64], &publisher.verifying_key(), VENDOR, 0)
                .is_err()
        );
        assert!(c.finish().is_err());
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("srv").unwrap(),
            ("srv".into(), DEFAULT_PORT)
        );
        assert_eq!(split_host_port("srv:99").unwrap(), ("srv".into(), 99));
        assert_eq!(
            split_host_port("10.0.0.1:5").unwrap(),
            ("10.0.0.1".into(), 5)
        );
        assert_eq!(
            split_host_port("::1").unwrap(),
            ("::1".into(), DEFAULT_PORT)
        );
        assert_eq!(
            split_host_port("[::1]").unwrap(),
            ("::1".into(), DEFAULT_PORT)
        );
        assert_eq!(split_host_port("[::1]:7").unwrap(), ("::1".into(), 7));
        assert!(split_host_port("srv:x").is_err());
        assert!(split_host_port("").is_err());
    }
}
