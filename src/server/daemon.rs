//! The daemon: tokio listeners set up with socket2 (dual-stack, reuse-address, keepalive,
//! no-delay), the license protocol inside Noise on TCP, discovery on UDP, the seat table with
//! its durable store, lease expiry, the usage log, limits on connections, frames and time,
//! and a graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::config::ServerConfig;
use super::hosted::Hosted;
use super::seats::{AcquireSpec, Change, SeatTable};
use super::store::{GroupCommitter, SqliteStore};
use super::usage::{self, CheckpointSigner, UsageLog, UsageOptions};
use crate::container::protocol::{Request, Response};
use crate::net::conn::{NetChannel, ServerHandshake};
use crate::net::proto::{
    self, ClientHello, DiscoveryAnswer, MAX_FRAME, NetRequest, NetResponse, SeatGrant, ServerHello,
};
use crate::{Error, Result};

/// Counters the admin page and the load tool read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Connections refused (limit) or dropped (bad frames, timeouts).
    pub refused: AtomicU64,
}

/// A running server's shared state.
pub struct Server {
    config: ServerConfig,
    hosted: Hosted,
    table: Mutex<SeatTable>,
    committer: GroupCommitter,
    usage: UsageLog,
    static_secret: zeroize::Zeroizing<[u8; 32]>,
    hello: ServerHello,
    /// Counters.
    pub stats: Stats,
}

/// What an acquire asks for.
struct Want {
    seat_id: [u8; 16],
    vendor_id: u32,
    product_code: u32,
    features: u32,
    exclusive: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Loads (or makes) the server's static key in `state_dir/server.key`.
fn server_key(state_dir: &std::path::Path) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    crate::client::hostkey::load_or_create_at(&state_dir.join("server.key"))
}

impl Server {
    /// Opens the state, loads the seat table and the hosted containers.
    pub fn open(config: ServerConfig) -> Result<Arc<Server>> {
        config.check()?;
        crate::util::ensure_dir(&config.state_dir)?;
        let static_secret = server_key(&config.state_dir)?;
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*static_secret))
                .to_bytes();
        let host = crate::host::HostIdentity::detect();
        let expiry = crate::util::now() + config.delegation_days * 86_400;
        let hosted = Hosted::load(
            &config.home,
            &host,
            &static_secret,
            public,
            expiry,
            config.dongles,
        );
        for p in &hosted.problems {
            warn!(problem = %p, "container not hosted");
        }
        for c in &hosted.containers {
            info!(serial = %c.serial, vendor = c.vendor_id, licenses = c.licenses.len(), "hosting container");
        }
        let durability = if config.fsync {
            super::store::Durability::PowerLoss
        } else {
            super::store::Durability::ProcessCrash
        };
        let mut store = SqliteStore::open_with(&config.state_dir.join("seats.db"), durability)?;
        let rows = super::store::SeatStore::load(&mut store)?;
        let mut table = SeatTable::new();
        let n = rows.len();
        table.load(rows, now_ms());
        info!(seats = table.len(), loaded = n, "seat table loaded");
        let (usage, _refused) = UsageLog::open(
            UsageOptions {
                dir: config.state_dir.join("usage"),
                server_key: public,
                server_name: config.name.clone(),
                fsync: config.fsync,
                checkpoint_every: Duration::from_secs(config.usage_checkpoint_s),
            },
            &hosted.vendors(),
        )?;
        // Leases that ran out while the server was down.
        if let Err(e) = usage.write(usage::expired(&hosted, &mut table)) {
            warn!(error = %e, "expiries while the server was down not logged");
        }
        let hello = ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: config.name.clone(),
            delegations: hosted.bundles(),
        };
        let server = Arc::new(Server {
            committer: GroupCommitter::start_with(
                Box::new(store),
                Some(Box::new(usage.journal()?)),
            ),
            usage,
            table: Mutex::new(table),
            hosted,
            static_secret,
            hello,
            config,
            stats: Stats::default(),
        });
        server
            .usage
            .set_signer(Arc::new(UsageSigner(Arc::downgrade(&server))));
        Ok(server)
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Seats held now.
    pub fn seats(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, SeatTable>> {
        self.table
            .lock()
            .map_err(|_| Error::Internal("seat table lock poisoned".into()))
    }

    async fn acquire(
        &self,
        client: &[u8; 32],
        hello: &ClientHello,
        want: Want,
    ) -> Result<NetResponse> {
        let Want {
            seat_id,
            vendor_id,
            product_code,
            features,
            exclusive,
        } = want;
        let candidates = self.hosted.find(vendor_id, product_code);
        if candidates.is_empty() {
            return Err(Error::NoLicense(format!(
                "server {} hosts no license for vendor {vendor_id} product {product_code}",
                self.config.name
            )));
        }
        let mut best: Option<(Error, &crate::license::License)> = None;
        let now = now_ms();
        for (ci, li) in candidates {
            let c = &self.hosted.containers[ci];
            let lic = &c.licenses[li];
            let spec = AcquireSpec {
                seat_id,
                license: lic,
                host: &hello.host,
                client: *client,
                exclusive,
                features,
                now_ms: now,
                lease_ms: self.config.lease_ms,
            };
            // Submitted under the table's lock, so that the store and the usage log keep the
            // table's order.
            let outcome = {
                let mut t = self.table()?;
                // Only a new seat is a grant in the usage log; re-attaching a live one is not.
                let held = t.seat(&seat_id).is_some_and(|r| {
                    r.expires_ms > now && r.client == *client && r.license_id == lic.license_id
                });
                let granted = t.acquire(&spec);
                let mut events = usage::expired(&self.hosted, &mut t);
                match granted {
                    Ok((row, change, in_use)) => {
                        if !held {
                            events.push(usage::granted(lic, &row, &hello.host));
                        }
                        Ok((
                            row,
                            in_use,
                            self.committer.submit_with(vec![change], events),
                        ))
                    }
                    Err(e) => {
                        self.committer.submit_lazy_with(Vec::new(), events);
                        Err(e)
                    }
                }
            };
            match outcome {
                Ok((row, in_use, waiter)) => {
                    // Durable, and in the usage log, before it is answered: a server killed now
                    // never over-grants, and never grants a seat its log does not show.
                    if let Err(e) = waiter.wait_async().await {
                        let mut t = self.table()?;
                        if let Some(undo) = t.release_row(&row.seat_id, client) {
                            let events =
                                usage::released(&self.hosted, &undo, &hello.host, now_ms());
                            drop(self.committer.submit_with(
                                vec![Change::Delete(undo.seat_id)],
                                events.into_iter().collect(),
                            ));
                        }
                        return Err(e);
                    }
                    return Ok(NetResponse::Granted(SeatGrant {
                        seat_id,
                        license: c.license_bytes[li].clone(),
                        container_serial: c.serial.clone(),
                        lease_ms: self.config.lease_ms,
                        renew_ms: self.config.renew_ms,
                        in_use,
                    }));
                }
                Err(e) => {
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| e.specificity() > b.specificity())
                    {
                        best = Some((e, lic));
                    }
                }
            }
        }
        match best {
            Some((e, lic)) => {
                let denied = usage::denied(lic, &seat_id, &hello.host, &e);
                self.committer.submit_lazy_with(Vec::new(), vec![denied]);
                Err(e)
            }
            None => Err(Error::NoLicense("no license fits".into())),
        }
    }

    fn seat_container(&self, client: &[u8; 32], seat_id: &[u8; 16]) -> Result<(usize, [u8; 16])> {
        let t = self.table()?;
        let row = t
            .seat(seat_id)
            .filter(|r| r.client == *client && r.expires_ms > now_ms())
            .ok_or_else(|| {
                Error::LeaseLost(format!(
                    "server {} holds no seat {}",
                    self.config.name,
                    hex::encode(seat_id)
                ))
            })?;
        let (ci, _) = self
            .hosted
            .by_license_id(&row.license_id)
            .ok_or_else(|| Error::NoLicense("the seat's license is no longer hosted".into()))?;
        Ok((ci, row.license_id))
    }

    async fn container_call(
        self: &Arc<Self>,
        client: &[u8; 32],
        seat_id: &[u8; 16],
        make: impl FnOnce([u8; 16]) -> Request,
    ) -> Result<Response> {
        let (ci, license_id) = self.seat_container(client, seat_id)?;
        let req = make(license_id);
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.hosted.containers[ci].call(req))
            .await
            .map_err(|e| Error::Internal(format!("container task: {e}")))?
    }

    async fn dispatch(
        self: &Arc<Self>,
        client: &[u8; 32],
        hello: &ClientHello,
        req: NetRequest,
    ) -> Result<NetResponse> {
        match req {
            NetRequest::Acquire {
                seat_id,
                vendor_id,
                product_code,
                features,
                exclusive,
            } => {
                let want = Want {
                    seat_id,
                    vendor_id,
                    product_code,
                    features,
                    exclusive,
                };
                self.acquire(client, hello, want).await
            }
            NetRequest::Renew { seat_ids } => {
                let (changes, lost) =
                    self.table()?
                        .renew(&seat_ids, client, now_ms(), self.config.lease_ms);
                if !changes.is_empty() {
                    // Renewals need not wait for the disk: a lost renewal only shortens a lease.
                    self.committer.submit_lazy(changes);
                }
                Ok(NetResponse::Renewed {
                    lost,
                    lease_ms: self.config.lease_ms,
                })
            }
            NetRequest::Release { seat_id } => {
                let mut t = self.table()?;
                if let Some(row) = t.release_row(&seat_id, client) {
                    let events = usage::released(&self.hosted, &row, &hello.host, now_ms());
                    // Under the table's lock: the usage log keeps the table's order.
                    drop(self.committer.submit_with(
                        vec![Change::Delete(row.seat_id)],
                        events.into_iter().collect(),
                    ));
                }
                Ok(NetResponse::Released)
            }
            NetRequest::DeriveKey { seat_id, header } => {
                match self
                    .container_call(client, &seat_id, |license_id| Request::DeriveKey {
                        license_id,
                        header,
                    })
                    .await?
                {
                    Response::Key(k) => Ok(NetResponse::Key(k)),
                    other => Err(Error::malformed("container answer", format!("{other:?}"))),
                }
            }
            NetRequest::Encrypt { seat_id, plaintext } => {
                match self
                    .container_call(client, &seat_id, |license_id| Request::Encrypt {
                        license_id,
                        plaintext,
                    })
                    .await?
                {
                    Response::Data(d) => Ok(NetResponse::Data(d)),
                    other => Err(Error::malformed("container answer", format!("{other:?}"))),
                }
            }
            NetRequest::Decrypt {
                seat_id,
                ciphertext,
            } => {
                match self
                    .container_call(client, &seat_id, |license_id| Request::Decrypt {
                        license_id,
                        ciphertext,
                    })
                    .await?
                {
                    Response::Data(d) => Ok(NetResponse::Data(d)),
                    other => Err(Error::malformed("container answer", format!("{other:?}"))),
                }
            }
            NetRequest::SeatInfo { seat_id } => {
                let (ci, license_id) = self.seat_container(client, &seat_id)?;
                let quantity = self.hosted.containers[ci]
                    .licenses
                    .iter()
                    .find(|l| l.license_id == license_id)
                    .map(|l| l.quantity)
                    .unwrap_or(0);
                let in_use = self.table()?.in_use(&license_id, now_ms());
                Ok(NetResponse::Info { in_use, quantity })
            }
            NetRequest::Ping => Ok(NetResponse::Pong),
        }
    }

    fn expire(&self) {
        let Ok(mut t) = self.table() else { return };
        let changes = t.expire(now_ms());
        let events = usage::expired(&self.hosted, &mut t);
        if !changes.is_empty() {
            debug!(expired = changes.len(), "leases ran out");
        }
        // Under the table's lock: the usage log keeps the table's order.
        self.committer.submit_lazy_with(changes, events);
    }
}

/// A TCP listener made with socket2: dual-stack for `[::]`, reuse-address, no-delay and
/// keepalive on accepted sockets are set per connection.
fn tcp_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::io(addr.to_string(), e))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.set_reuse_address(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(addr.to_string(), e))?;
    s.bind(&addr.into())
        .map_err(|e| Error::io(addr.to_string(), e))?;
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
    s.bind(&addr.into())
        .map_err(|e| Error::io(addr.to_string(), e))?;
    Ok(s.into())
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_frame_into(s, &mut buf).await?;
    Ok(buf)
}

/// Reads one frame into `buf` (a buffer the connection reuses).
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
    buf.resize(n, 0);
    s.read_exact(buf).await?;
    Ok(())
}

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
    let mut hs = ServerHandshake::new(&server.static_secret, &server.hello)?;
    let m1 = read_frame(rd).await.map_err(io)?;
    let m2 = hs.read_message1(&m1)?;
    write_frame(wr, &m2).await.map_err(io)?;
    let m3 = read_frame(rd).await.map_err(io)?;
    hs.read_message3(&m3)
}

async fn serve_connection(server: Arc<Server>, s: TcpStream, peer: SocketAddr) {
    let hs_timeout = Duration::from_millis(server.config.handshake_timeout_ms);
    // Buffered reads: one receive call per request, not one per length and body.
    let (rd, mut wr) = s.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(8192, rd);
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
    let idle = Duration::from_millis(server.config.lease_ms.saturating_mul(3));
    // Buffers reused for every request: the frame read, the encoded answer, and the answer
    // as it goes on the wire (length prefix and sealed frame).
    let (mut frame, mut answer, mut wire) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        match tokio::time::timeout(idle, read_frame_into(&mut rd, &mut frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    server.stats.refused.fetch_add(1, Ordering::Relaxed);
                    info!(%peer, error = %e, "connection dropped");
                }
                return;
            }
            Err(_) => {
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
        let resp = match proto::decode::<NetRequest>(&plain, "request") {
            Ok(req) => server
                .dispatch(&client, &hello, req)
                .await
                .unwrap_or_else(|e| proto::error_response(&e)),
            Err(e) => proto::error_response(&e),
        };
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
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

async fn accept_loop(server: Arc<Server>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    if server.stats.connections.load(Ordering::Relaxed) >= server.config.max_connections {
                        server.stats.refused.fetch_add(1, Ordering::Relaxed);
                        warn!(%peer, "connection limit reached; refused");
                        drop(s);
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    let _ = SockRef::from(&s).set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(60)));
                    let server = server.clone();
                    server.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let st = server.clone();
                        serve_connection(server, s, peer).await;
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
    let answer = DiscoveryAnswer {
        name: server.config.name.clone(),
        port,
        vendors: server.hosted.vendors(),
    };
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r
                && let Some(reply) = crate::net::discovery::answer_probe(&buf[..n], &answer)
            {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    }
}

/// Runs the server until `shutdown` resolves. Returns the bound addresses through `bound`
/// as soon as the listeners are up (tests use port 0).
pub async fn run(
    server: Arc<Server>,
    shutdown: impl std::future::Future<Output = ()>,
    bound: Option<tokio::sync::oneshot::Sender<Vec<SocketAddr>>>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for addr in server.config.listen.clone() {
        let l = TcpListener::from_std(tcp_listener(addr)?)
            .map_err(|e| Error::io(addr.to_string(), e))?;
        let local = l.local_addr().map_err(|e| Error::io(addr.to_string(), e))?;
        info!(address = %local, "listening");
        addrs.push(local);
        tasks.push(tokio::spawn(accept_loop(
            server.clone(),
            l,
            stop_rx.clone(),
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
                    stop_rx.clone(),
                )));
            }
            Err(e) => warn!(error = %e, "no discovery"),
        }
    }
    {
        let server = server.clone();
        let mut stop = stop_rx.clone();
        let every = Duration::from_millis((server.config.renew_ms / 4).clamp(50, 1000));
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(every) => server.expire(),
                }
            }
        }));
    }
    if let Some(tx) = bound {
        let _ = tx.send(addrs);
    }
    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    server.committer.submit(Vec::new()).wait_async().await?;
    // The last checkpoint, signed by the hosted containers, before the server goes.
    server.usage.close_async().await;
    Ok(())
}

/// Signs usage checkpoints with the server's hosted containers (weak: the usage log's
/// thread must not keep the server alive).
struct UsageSigner(std::sync::Weak<Server>);

impl CheckpointSigner for UsageSigner {
    fn sign_usage(&self, vendor_id: u32, digest: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>)> {
        let server = self
            .0
            .upgrade()
            .ok_or_else(|| Error::Internal("the server is gone".into()))?;
        server.hosted.sign_usage(vendor_id, digest)
    }
}

/// What the store keeps for the changes the table makes (re-exported for tests).
pub type SeatChange = Change;
