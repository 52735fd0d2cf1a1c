//! One simulated client: its own host key and station, the runtime's handshake, and the
//! channel with the write and the read apart so that many requests can be in flight.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tessera::host::MachineKind;
use tessera::net::conn::{NetChannel, client_handshake};
use tessera::net::proto::{self, ClientHello, HostInfo, NetRequest, NetResponse};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Op {
    Acquire,
    Release,
    Renew,
}

/// One simulated client: a socket and its Noise channel (the same handshake and channel as
/// `ServerConn`, with the write and the read apart so that many requests can be in flight).
pub(crate) struct Conn {
    id: u32,
    /// The connection, read through a buffer: one receive call per answer, not two.
    pub(crate) io: BufReader<TcpStream>,
    channel: NetChannel,
    /// Reused buffers: the encoded request, and the request on the wire.
    plain: Vec<u8>,
    wire: Vec<u8>,
    /// The request in flight: what and when it was sent.
    pub(crate) pending: Option<(Op, Instant)>,
    /// The seat id in the request in flight.
    pub(crate) pending_seat: [u8; 16],
    /// Cycle: the seat held now. Hold: not used.
    pub(crate) holding: Option<[u8; 16]>,
    /// Hold: the seats held.
    pub(crate) seats: Vec<[u8; 16]>,
    /// Acquires tried (hold).
    pub(crate) tried: usize,
    seq: u64,
    pub(crate) dead: bool,
}

pub(crate) fn connect(
    addr: SocketAddr,
    id: u32,
    publisher: &VerifyingKey,
    vendor_id: u32,
    timeout: Duration,
) -> tessera::Result<Conn> {
    let io = |e| tessera::Error::io(format!("license server {addr}"), e);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let host_secret: [u8; 32] = tessera::util::random();
    let hello = ClientHello {
        version: proto::PROTOCOL_VERSION,
        host: HostInfo {
            machine: MachineKind::Physical,
            hostname: format!("load-{id}"),
            station: tessera::util::random(),
            session: "1".into(),
            pid: id,
            pid_namespace: 0,
        },
    };
    let (channel, _, _) = client_handshake(
        &mut stream,
        &host_secret,
        &hello,
        publisher,
        vendor_id,
        tessera::util::now(),
    )?;
    Ok(Conn {
        id,
        io: BufReader::with_capacity(4096, stream),
        channel,
        plain: Vec::with_capacity(256),
        wire: Vec::with_capacity(256),
        pending: None,
        pending_seat: [0; 16],
        holding: None,
        seats: Vec::new(),
        tried: 0,
        seq: 0,
        dead: false,
    })
}

impl Conn {
    /// A seat id no other client or run uses: run nonce | client id | sequence.
    pub(crate) fn new_seat(&mut self, nonce: [u8; 4]) -> [u8; 16] {
        self.seq += 1;
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&nonce);
        s[4..8].copy_from_slice(&self.id.to_le_bytes());
        s[8..].copy_from_slice(&self.seq.to_le_bytes());
        s
    }

    /// Sends a request; returns the frame's size on the wire.
    pub(crate) fn send(&mut self, req: &NetRequest) -> tessera::Result<usize> {
        // One buffer for the length prefix and the sealed frame: one allocation-free write.
        let (mut plain, mut wire) = (
            std::mem::take(&mut self.plain),
            std::mem::take(&mut self.wire),
        );
        plain.clear();
        wire.clear();
        wire.extend_from_slice(&[0; 4]);
        let sealed = proto::encode_into(req, &mut plain)
            .and_then(|()| self.channel.seal_into(&plain, &mut wire));
        let result = sealed.and_then(|()| {
            let len = (wire.len() - 4) as u32;
            wire[..4].copy_from_slice(&len.to_be_bytes());
            self.io
                .get_mut()
                .write_all(&wire)
                .map_err(|e| tessera::Error::io("server connection", e))
                .map(|()| wire.len())
        });
        (self.plain, self.wire) = (plain, wire);
        result
    }

    /// Reads the response; returns it and the frame's size on the wire.
    pub(crate) fn recv(&mut self) -> tessera::Result<(NetResponse, usize)> {
        let frame = proto::read_frame(&mut self.io)?;
        let n = 4 + frame.len();
        Ok((self.channel.open_message(&frame, "server response")?, n))
    }
}
