//! The daemon's sockets: TCP listeners and the UDP discovery socket set up with socket2
//! (dual-stack, reuse-address; no-delay and keepalive on accepted sockets), the accept loop
//! with its connection limit, one task per connection (the Noise handshake, then frames
//! read, answered by `requests` and sealed back, under a handshake timeout and an idle
//! timeout), and the discovery answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::Server;
use super::requests::Peer;
use crate::net::conn::{NetChannel, ServerHandshake};
use crate::net::proto::{self, ClientHello, DiscoveryAnswer, MAX_FRAME, NetRequest, NetResponse};
use crate::server::stats::{Denial, RequestKind};
use crate::{Error, Result};

/// Binds the license protocol's listeners (and the discovery socket, when discovery is on)
/// and starts serving them until `stop` changes. Returns the addresses bound.
pub(super) fn serve(
    server: &Arc<Server>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    // One count of connections per client host for all the listeners.
    let per_host = Arc::new(PerHost::default());
    for addr in server.config.listen.clone() {
        let l = TcpListener::from_std(tcp_listener(addr)?)
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let local = l.local_addr().map_err(|e| Error::io(addr.to_string(), e))?;
        info!(address = %local, "listening");
        addrs.push(local);
        tasks.push(tokio::spawn(accept_loop(
            server.clone(),
            l,
            per_host.clone(),
            stop.clone(),
        )));
    }
    if server.config.discovery
        && let Some(first) = addrs.first().copied()
    {
        let mut udp_addr = server.config.listen[0];
        udp_addr.set_port(first.port());
        match udp_socket(udp_addr)
            .and_then(|s| UdpSocket::from_std(s).map_err(|e| Error::io(udp_addr.to_string(), e)))
        {
            Ok(sock) => {
                info!(address = %udp_addr, "answering discovery");
                tasks.push(tokio::spawn(discovery_loop(
                    server.clone(),
                    sock,
                    first.port(),
                    stop.clone(),
                )));
            }
            Err(e) => warn!(error = %e, "no discovery"),
        }
    }
    Ok(addrs)
}

/// A failed bind, saying plainly when the port is taken.
fn bind_error(addr: SocketAddr, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        let port = addr.port();
        return Error::io(
            format!(
                "{addr} (port {port} is in use: another tessera-server or another program \
                 listens on it; `ss -lntup 'sport = :{port}'` names it)"
            ),
            e,
        );
    }
    Error::io(addr.to_string(), e)
}

/// A TCP listener made with socket2: dual-stack for `[::]`, reuse-address, no-delay and
/// keepalive on accepted sockets are set per connection.
pub(crate) fn tcp_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::io(addr.to_string(), e))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.set_reuse_address(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.bind(&addr.into()).map_err(|e| bind_error(addr, e))?;
    s.listen(1024).map_err(|e| Error::io(addr.to_string(), e))?;
    Ok(s.into())
}

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io(addr.to_string(), e))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.set_reuse_address(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_broadcast(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.bind(&addr.into()).map_err(|e| bind_error(addr, e))?;
    Ok(s.into())
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_frame_into(s, &mut buf).await?;
    Ok(buf)
}

/// Reads one frame into `buf` (a buffer the connection reuses). The buffer grows as the
/// frame's bytes arrive, never ahead of them: a peer that announces 64 KiB and sends nothing
/// costs no more than one that announced 64 bytes.
async fn read_frame_into(
    s: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {n}"),
        ));
    }
    buf.clear();
    // What a large frame left behind is given back: a connection keeps a small buffer.
    if buf.capacity() > KEPT_BUFFER {
        buf.shrink_to(KEPT_BUFFER);
    }
    // `read_to_end` reserves in small steps, as data comes.
    let got = (&mut *s).take(n as u64).read_to_end(buf).await?;
    if got < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The most of a frame buffer a connection keeps between frames.
const KEPT_BUFFER: usize = 4096;

async fn write_frame(s: &mut (impl AsyncWriteExt + Unpin), payload: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    s.write_all(&buf).await
}

async fn handshake(
    server: &Server,
    rd: &mut (impl AsyncReadExt + Unpin),
    wr: &mut (impl AsyncWriteExt + Unpin),
) -> Result<(NetChannel, [u8; 32], ClientHello)> {
    let io = |e: std::io::Error| Error::io("client connection", e);
    let hosting = server.hosting();
    let mut hs = ServerHandshake::new(&server.static_secret, &hosting.hello)?;
    let m1 = read_frame(rd).await.map_err(io)?;
    let m2 = hs.read_message1(&m1)?;
    write_frame(wr, &m2).await.map_err(io)?;
    let m3 = read_frame(rd).await.map_err(io)?;
    hs.read_message3(&m3)
}

/// Connections open now per client host, for its share of `max_connections`.
///
/// A host is its source address (an IPv6 one by its /64, what one site is given), not the
/// host key its hello names: host keys are made by the clients themselves, so one machine can
/// present any number of them, while a source address has passed TCP's handshake.
#[derive(Default)]
struct PerHost(Mutex<HashMap<IpAddr, usize>>);

impl PerHost {
    /// A slot for a connection from `ip`, or None when that host has `limit` already.
    fn enter(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<HostSlot> {
        let key = host_of(ip);
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(HostSlot {
            map: Arc::clone(self),
            key,
        })
    }
}

/// The host a source address counts for: an IPv4 address (also IPv4-mapped IPv6) as it is,
/// an IPv6 address by its /64.
fn host_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

/// One connection counted for its host; uncounted when dropped.
struct HostSlot {
    map: Arc<PerHost>,
    key: IpAddr,
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

async fn serve_connection(server: Arc<Server>, s: TcpStream, peer: SocketAddr) {
    let hs_timeout = Duration::from_millis(server.config.handshake_timeout_ms);
    // Buffered reads: one receive call per request, not one per length and body. Seat
    // requests are under 256 bytes; a larger frame (network encryption) is read past the
    // buffer. 1 KiB rather than 8: with 10,000 clients the buffers alone were 80 MB.
    let (rd, mut wr) = s.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(1024, rd);
    let (mut channel, client, hello) =
        match tokio::time::timeout(hs_timeout, handshake(&server, &mut rd, &mut wr)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                server.stats.refused.fetch_add(1, Ordering::Relaxed);
                info!(%peer, error = %e, "handshake refused");
                return;
            }
            Err(_) => {
                server.stats.refused.fetch_add(1, Ordering::Relaxed);
                info!(%peer, "handshake timed out");
                return;
            }
        };
    debug!(%peer, host = %hello.host.hostname, "client connected");
    let who = Peer::new(hello);
    // A connection that holds a seat may stay quiet for three leases (its renewals keep it
    // busier than that); one that was never granted a seat gets `quiet_timeout_ms` at most:
    // silent connections must not fill `max_connections`.
    let seat_idle = Duration::from_millis(server.lease_ms().saturating_mul(3));
    let mut idle = seat_idle.min(Duration::from_millis(server.config.quiet_timeout_ms));
    // Buffers reused for every request: the frame read, the encoded answer, and the answer
    // as it goes on the wire (length prefix and sealed frame).
    let (mut frame, mut answer, mut wire) = (Vec::new(), Vec::new(), Vec::new());
    // One idle timer per connection, pushed on only when it fires: arming a timer per request
    // costs the timer wheel two updates per request.
    let mut last_request = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let got = {
            let read = read_frame_into(&mut rd, &mut frame);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    biased;
                    r = &mut read => break Some(r),
                    () = &mut idle_timer => {
                        // The read in progress stays (a frame may be half read); the timer
                        // moves on to a full idle period after the last request.
                        let due = last_request + idle;
                        if due <= Instant::now() {
                            break None;
                        }
                        idle_timer.as_mut().reset(due.into());
                    }
                }
            }
        };
        match got {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    server.stats.refused.fetch_add(1, Ordering::Relaxed);
                    info!(%peer, error = %e, "connection dropped");
                }
                return;
            }
            None => {
                info!(%peer, "idle connection closed");
                return;
            }
        }
        let plain = match channel.open(&frame) {
            Ok(p) => p,
            Err(e) => {
                server.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, error = %e, "refused a frame; closing");
                return;
            }
        };
        let started = Instant::now();
        last_request = started;
        let mut asked = None;
        let (kind, resp) = match proto::decode::<NetRequest>(&plain, "request") {
            Ok(req) => {
                asked = seat_asked(&req);
                (
                    RequestKind::of(&req),
                    server
                        .dispatch(&client, &who, req)
                        .await
                        .unwrap_or_else(|e| proto::error_response(&e)),
                )
            }
            Err(e) => (RequestKind::Malformed, proto::error_response(&e)),
        };
        if let (Some((vendor_id, product_code, features)), NetResponse::Error { status, message }) =
            (asked, &resp)
        {
            server.stats.recent_denials.record(Denial {
                at_ms: crate::util::now_ms(),
                vendor_id,
                product_code,
                features,
                host: who.holder.hostname.clone(),
                session: who.holder.session.clone(),
                pid: who.holder.pid,
                status: *status,
                message: message.clone(),
            });
        }
        if matches!(
            resp,
            NetResponse::Granted(_) | NetResponse::Renewed { .. } | NetResponse::RenewedWhy { .. }
        ) {
            idle = seat_idle;
        }
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
        server.stats.count_answer(&resp);
        server.stats.latency.observe(kind, started.elapsed());
        answer.clear();
        wire.clear();
        wire.extend_from_slice(&[0; 4]);
        if let Err(e) = proto::encode_into(&resp, &mut answer)
            .and_then(|()| channel.seal_into(&answer, &mut wire))
        {
            warn!(%peer, error = %e, "could not answer");
            return;
        }
        let len = (wire.len() - 4) as u32;
        wire[..4].copy_from_slice(&len.to_be_bytes());
        if wr.write_all(&wire).await.is_err() {
            return;
        }
    }
}

/// The product a seat request (acquire or borrow) asks for: `(vendor, product, features)`.
fn seat_asked(req: &NetRequest) -> Option<(u32, u32, u32)> {
    match req {
        NetRequest::Acquire {
            vendor_id,
            product_code,
            features,
            ..
        }
        | NetRequest::Borrow {
            vendor_id,
            product_code,
            features,
            ..
        } => Some((*vendor_id, *product_code, *features)),
        _ => None,
    }
}

async fn accept_loop(
    server: Arc<Server>,
    listener: TcpListener,
    per_host: Arc<PerHost>,
    mut stop: watch::Receiver<bool>,
) {
    let per_host_limit = server.config.per_host_limit();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    // Counted before it is checked: two listeners accepting at once cannot
                    // both slip under the limit.
                    if server.stats.connections.fetch_add(1, Ordering::Relaxed) >= server.config.max_connections {
                        server.stats.connections.fetch_sub(1, Ordering::Relaxed);
                        server.stats.refused.fetch_add(1, Ordering::Relaxed);
                        warn!(%peer, "connection limit reached; refused");
                        drop(s);
                        continue;
                    }
                    let Some(slot) = per_host.enter(peer.ip(), per_host_limit) else {
                        server.stats.connections.fetch_sub(1, Ordering::Relaxed);
                        server.stats.refused.fetch_add(1, Ordering::Relaxed);
                        warn!(%peer, "this host's share of the connections is taken; refused");
                        drop(s);
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let _ = SockRef::from(&s).set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(60)));
                    let server = server.clone();
                    server.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let st = server.clone();
                        serve_connection(server, s, peer).await;
                        drop(slot);
                        st.stats.connections.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn discovery_loop(
    server: Arc<Server>,
    sock: UdpSocket,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    // One byte more than a probe, so that a longer datagram is seen as longer (the kernel
    // truncates to the buffer) and goes unanswered.
    let mut buf = [0u8; crate::net::proto::DISCOVERY_PROBE_LEN + 1];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r {
                // The vendors of what is hosted now (a reload may change them).
                let answer = DiscoveryAnswer {
                    name: server.config.name.clone(),
                    port,
                    vendors: server.hosting().hosted.vendors(),
                };
                if let Some(reply) = crate::net::discovery::answer_probe(&buf[..n], &answer) {
                    let _ = sock.send_to(&reply, from).await;
                }
            }
        }
    }
}
