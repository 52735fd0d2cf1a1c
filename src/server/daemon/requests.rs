//! The license protocol's requests as the server answers them: acquire (counted by unit, one
//! license after another until one grants), renew, release, the calls that run in a seat's
//! container (derive a key, a seat key, encrypt, decrypt), seat information; and lease expiry.
//!
//! Every change to the seat table is submitted to the group committer under the table's
//! lock, with its usage-log events, so that the store and the usage log keep the table's
//! order; a grant is answered only once both are durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::debug;

use super::{Hosting, SeatHolder, SeatMeta, Server};
use crate::container::protocol::{Request, Response};
use crate::license::borrow::{self, BorrowGrant};
use crate::net::proto::{
    ClientHello, LossReason, LostSeat, NetRequest, NetResponse, SeatGrant, ServedLicense,
};
use crate::server::seats::{AcquireSpec, BorrowSpec, Borrowed, Change, SeatId};
use crate::server::usage;
use crate::util::now_ms;
use crate::{Error, Result};

/// One connection's client: its hello, and what the admin page and the usage log keep of
/// it, made once at the handshake rather than for every seat.
pub(super) struct Peer {
    pub(super) hello: ClientHello,
    pub(super) holder: Arc<SeatHolder>,
    pub(super) client_info: Arc<crate::license::usage::ClientInfo>,
}

impl Peer {
    pub(super) fn new(hello: ClientHello) -> Peer {
        let h = &hello.host;
        let holder = Arc::new(SeatHolder {
            hostname: printable(&h.hostname),
            session: printable(&h.session),
            machine: h.machine.clone(),
            pid: h.pid,
        });
        let client_info = Arc::new(usage::client_info(h));
        Peer {
            hello,
            holder,
            client_info,
        }
    }
}

/// What an acquire asks for.
pub(super) struct Want {
    pub(super) seat_id: [u8; 16],
    pub(super) vendor_id: u32,
    pub(super) product_code: u32,
    pub(super) features: u32,
    pub(super) exclusive: bool,
}

/// What a borrow asks for.
pub(super) struct Lend {
    pub(super) seat_id: [u8; 16],
    pub(super) vendor_id: u32,
    pub(super) product_code: u32,
    pub(super) features: u32,
    pub(super) days: u32,
    pub(super) borrower: Vec<u8>,
}

impl Server {
    /// A `Renewed` answer as `RenewedWhy` (the answer to `RenewWhy`): why each lost seat was
    /// lost. Other answers pass as they are.
    pub(super) fn explain_lost(&self, resp: NetResponse) -> NetResponse {
        let NetResponse::Renewed { lost, lease_ms } = resp else {
            return resp;
        };
        if lost.is_empty() {
            // The common case, on the hot path: no lock to take.
            return NetResponse::RenewedWhy {
                lost: Vec::new(),
                lease_ms,
            };
        }
        let held: Vec<bool> = match self.table() {
            Ok(t) => lost.iter().map(|id| t.seat(id).is_some()).collect(),
            Err(_) => vec![false; lost.len()],
        };
        let lost = lost
            .into_iter()
            .zip(held)
            .map(|(seat_id, held)| {
                let reason = match self.stats.revoked.reason(&seat_id) {
                    Some(reason) => LossReason::Revoked { reason },
                    // Still in the table, yet lost: its container is no longer hosted here.
                    None if held => LossReason::NotHosted,
                    None => LossReason::Unknown,
                };
                LostSeat { seat_id, reason }
            })
            .collect();
        NetResponse::RenewedWhy { lost, lease_ms }
    }

    /// Answers one decoded request of a client that proved the key `client` and said `hello`,
    /// as a connection answers it (for the fuzz target of the request handler,
    /// `crate::fuzzing::ServerHarness`).
    pub(crate) async fn answer(
        self: &Arc<Self>,
        client: &[u8; 32],
        hello: ClientHello,
        req: NetRequest,
    ) -> NetResponse {
        let peer = Peer::new(hello);
        self.dispatch(client, &peer, req)
            .await
            .unwrap_or_else(|e| crate::net::proto::error_response(&e))
    }

    async fn acquire(&self, client: &[u8; 32], peer: &Peer, want: Want) -> Result<NetResponse> {
        if let Some(pool) = &self.pool {
            return self.pool_acquire(pool, client, peer, want).await;
        }
        let hello = &peer.hello;
        let Want {
            seat_id,
            vendor_id,
            product_code,
            features,
            exclusive,
        } = want;
        let hosting = self.hosting();
        let candidates = hosting.hosted.find(vendor_id, product_code);
        if candidates.is_empty() {
            return Err(self.no_license_here(vendor_id, product_code));
        }
        let mut closest = Closest::new();
        let now = now_ms();
        for (ci, li) in candidates {
            let c = &hosting.hosted.containers[ci];
            let lic = &c.licenses[li];
            // A license taken from another container and put into a hosted one is not served,
            // nor one of a container another server on this machine has taken meanwhile.
            if let Err(e) = self.may_grant(c, lic) {
                closest.keep(e, lic);
                continue;
            }
            let spec = AcquireSpec {
                seat_id,
                license: lic,
                host: &hello.host,
                client: *client,
                exclusive,
                features,
                now_ms: now,
                lease_ms: self.lease_ms(),
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
                // The seats the table dropped so far go out with this grant, in its batch:
                // a grant may take a dropped seat's slot, and a restart keeps every row it
                // loads for one more lease (`SeatTable::load_extended`), so a dropped seat
                // must never be on disk beside the grant that took its slot.
                let mut changes = t.expire(now);
                self.dropped(&changes);
                let mut events = usage::expired(&hosting.hosted, &mut t);
                match granted {
                    Ok((row, change, in_use)) => {
                        if !held {
                            events.push(usage::granted(lic, &row, &peer.client_info));
                        }
                        changes.push(change);
                        Ok((
                            row,
                            in_use,
                            held,
                            self.committer.submit_with(changes, events),
                        ))
                    }
                    Err(e) => {
                        self.committer.submit_lazy_with(changes, events);
                        Err(e)
                    }
                }
            };
            match outcome {
                Ok((row, in_use, held, waiter)) => {
                    // Durable, and in the usage log, before it is answered: a server killed now
                    // never over-grants, and never grants a seat its log does not show.
                    if let Err(e) = waiter.wait_async().await {
                        // Undo a new grant; a seat that was already held (a client
                        // re-attaching) is already on disk and stays.
                        let mut t = self.table()?;
                        if !held && let Some(undo) = t.release_row(&row.seat_id, client) {
                            let events = usage::released(
                                &hosting.hosted,
                                &undo,
                                &peer.client_info,
                                now_ms(),
                            );
                            drop(self.committer.submit_with(
                                vec![Change::Delete(undo.seat_id)],
                                events.into_iter().collect(),
                            ));
                        }
                        return Err(e);
                    }
                    self.remember(&seat_id, &peer.holder, spec.now_ms);
                    return Ok(NetResponse::Granted(SeatGrant {
                        seat_id,
                        license: c.license_bytes[li].clone(),
                        container_serial: c.serial.clone(),
                        lease_ms: spec.lease_ms,
                        renew_ms: self.renew_ms(),
                        in_use,
                    }));
                }
                Err(e) => {
                    closest.keep(e, lic);
                }
            }
        }
        Err(closest.refuse(self, &seat_id, client, peer))
    }

    /// Lends a seat (`license::borrow`): the license as an acquire finds it, which must
    /// allow borrowing for `days`; a seat counted against its quantity until the grant's end,
    /// under a slot of its own; the grant signed by the container holding the license.
    /// Durable (and in the usage log) before it is answered. Idempotent for the seat id: a
    /// retry by the same borrowing container gets the grant it was given.
    async fn borrow(
        self: &Arc<Self>,
        client: &[u8; 32],
        peer: &Peer,
        want: Lend,
    ) -> Result<NetResponse> {
        if let Some(pool) = &self.pool {
            return self.pool_borrow(pool, client, peer, want).await;
        }
        let Lend {
            seat_id,
            vendor_id,
            product_code,
            features,
            days,
            borrower,
        } = want;
        let req = borrow::read_borrower(&borrower, vendor_id)?;
        // A retry after a lost answer.
        if let Some(again) = self.lent_again(&seat_id, &req.sign_key).await? {
            return Ok(again);
        }
        if self
            .table()?
            .seat(&seat_id)
            .is_some_and(|r| r.expires_ms > now_ms())
        {
            return Err(Error::InvalidArgument(format!(
                "seat id {} is in use",
                hex::encode(seat_id)
            )));
        }
        let hosting = self.hosting();
        let candidates = hosting.hosted.find(vendor_id, product_code);
        if candidates.is_empty() {
            return Err(self.no_license_here(vendor_id, product_code));
        }
        let mut closest = Closest::new();
        for (ci, li) in candidates {
            let c = &hosting.hosted.containers[ci];
            let lic = &c.licenses[li];
            let spec = BorrowSpec {
                seat_id,
                license: lic,
                machine: &peer.hello.host.machine,
                client: *client,
                features,
                now_ms: now_ms(),
            };
            // What can be refused without the container: the license's own rules, its
            // borrowing, and whether a slot is free now.
            let fits = self
                .may_grant(c, lic)
                .and_then(|()| borrow::borrow_until(lic, days, spec.now_ms / 1000).map(drop))
                .and_then(|()| self.table()?.check_borrow(&spec));
            if let Err(e) = fits {
                closest.keep(e, lic);
                continue;
            }
            // The container lends (signs); the table counts. The table is not held while
            // the container works: it checks the quantity again when the seat goes in, and a
            // grant refused then is never answered, so it is worth nothing.
            let record = match self
                .lend_in(c, lic, seat_id, &borrower, days, &req, peer)
                .await?
            {
                Ok(r) => r,
                Err(e) => {
                    closest.keep(e, lic);
                    continue;
                }
            };
            let spec = BorrowSpec {
                now_ms: now_ms(),
                ..spec
            };
            // Submitted under the table's lock, so that the store and the usage log keep
            // the table's order.
            let outcome = {
                let mut t = self.table()?;
                let lent = t.borrow(&spec, Arc::clone(&record));
                let mut changes = t.expire(spec.now_ms);
                self.dropped(&changes);
                let mut events = usage::expired(&hosting.hosted, &mut t);
                match lent {
                    Ok((row, change, _)) => {
                        events.push(usage::borrowed(lic, &row, &peer.client_info));
                        changes.push(change);
                        Ok(self.committer.submit_with(changes, events))
                    }
                    Err(e) => {
                        self.committer.submit_lazy_with(changes, events);
                        Err(e)
                    }
                }
            };
            match outcome {
                Ok(waiter) => {
                    if let Err(e) = waiter.wait_async().await {
                        // Not durable: undone, and not answered.
                        let mut t = self.table()?;
                        if t.give_back(&seat_id, now_ms()).is_some() {
                            drop(self.committer.submit_with(
                                vec![Change::Delete(seat_id)],
                                vec![usage::returned(lic, &seat_id, &record)],
                            ));
                        }
                        return Err(e);
                    }
                    return Ok(NetResponse::Borrowed {
                        grant: record.grant.clone(),
                        certificate: record.certificate.clone(),
                    });
                }
                Err(e) => {
                    // A retry that overtook its first try: the first's grant is the answer.
                    if let Some(again) = self.lent_again(&seat_id, &req.sign_key).await? {
                        return Ok(again);
                    }
                    closest.keep(e, lic)
                }
            }
        }
        Err(closest.refuse(self, &seat_id, client, peer))
    }

    /// The grant of seat `seat_id` when it is lent to the container with key `borrower`, once
    /// it is durable (a retry may come while its first try waits for the disk: everything
    /// submitted before an empty commit is written when that commit is).
    async fn lent_again(
        &self,
        seat_id: &[u8; 16],
        borrower: &[u8; 32],
    ) -> Result<Option<NetResponse>> {
        let lent = |t: &crate::server::seats::SeatTable| {
            t.borrowed(seat_id, now_ms())
                .and_then(|r| r.borrow.clone())
                .filter(|b| b.borrower_key == *borrower)
        };
        if lent(&*self.table()?).is_none() {
            return Ok(None);
        }
        self.committer.submit(Vec::new()).wait_async().await?;
        // Still there: its first try was not undone.
        Ok(lent(&*self.table()?).map(|b| NetResponse::Borrowed {
            grant: b.grant.clone(),
            certificate: b.certificate.clone(),
        }))
    }

    /// Takes a borrowed seat back before its end: the return must be signed by the
    /// borrowing container. Freed at once, durably, before it is answered.
    async fn give_back(&self, seat_id: &[u8; 16], signature: &[u8]) -> Result<NetResponse> {
        if let Some(pool) = &self.pool {
            return self.pool_give_back(pool, seat_id, signature).await;
        }
        let waiter = {
            let mut t = self.table()?;
            let now = now_ms();
            let row = t.borrowed(seat_id, now).cloned().ok_or_else(|| {
                Error::LeaseLost(format!(
                    "server {} has no borrowed seat {} (returned, or its time ended)",
                    self.config.name,
                    hex::encode(seat_id)
                ))
            })?;
            let Some(b) = &row.borrow else {
                return Err(Error::Internal("a borrowed seat without its record".into()));
            };
            borrow::verify_return(&b.borrower_key, seat_id, signature)?;
            t.give_back(seat_id, now);
            let hosting = self.hosting();
            let events = match hosting.hosted.by_license_id(&row.license_id) {
                Some((ci, li)) => vec![usage::returned(
                    &hosting.hosted.containers[ci].licenses[li],
                    seat_id,
                    b,
                )],
                None => Vec::new(),
            };
            self.committer
                .submit_with(vec![Change::Delete(*seat_id)], events)
        };
        waiter.wait_async().await?;
        Ok(NetResponse::Returned)
    }

    /// Notes who holds a seat (kept from its first grant on).
    pub(super) fn remember(&self, seat_id: &SeatId, holder: &Arc<SeatHolder>, now_ms: u64) {
        if let Ok(mut m) = self.seat_meta.lock() {
            m.entry(*seat_id).or_insert_with(|| SeatMeta {
                holder: Arc::clone(holder),
                since_ms: now_ms,
            });
        }
    }

    fn forget(&self, changes: &[Change]) {
        if let Ok(mut m) = self.seat_meta.lock() {
            for c in changes {
                if let Change::Delete(id) = c {
                    m.remove(id);
                }
            }
        }
    }

    /// A call on a seat this server does not serve (now): `LEASE_LOST`, saying so, or that
    /// an administrator revoked it and why. `who` names this server ("server", "pool member").
    pub(super) fn seat_gone(&self, seat_id: &[u8; 16], who: &str) -> Error {
        Error::LeaseLost(match self.stats.revoked.reason(seat_id) {
            Some(reason) => LossReason::Revoked { reason }.describe(&self.config.name, seat_id),
            None => format!(
                "{who} {} holds no seat {}",
                self.config.name,
                hex::encode(seat_id)
            ),
        })
    }

    fn seat_container(
        &self,
        hosting: &Hosting,
        client: &[u8; 32],
        seat_id: &[u8; 16],
    ) -> Result<(usize, [u8; 16])> {
        if let Some(pool) = &self.pool {
            return self.pool_seat_container(pool, hosting, client, seat_id);
        }
        let t = self.table()?;
        let row = t
            .seat(seat_id)
            .filter(|r| r.client == *client && r.expires_ms > now_ms())
            .ok_or_else(|| self.seat_gone(seat_id, "server"))?;
        let (ci, _) = hosting
            .hosted
            .by_license_id(&row.license_id)
            .ok_or_else(|| Error::NoLicense("the seat's license is no longer hosted".into()))?;
        // Every use of a seat fails closed once another server on this machine has taken
        // the container (its hosting lock file was deleted under this server).
        hosting.hosted.containers[ci].keep_hosting().map_err(|e| {
            Error::LeaseLost(format!("this server no longer hosts the container: {e}"))
        })?;
        Ok((ci, row.license_id))
    }

    async fn container_call(
        self: &Arc<Self>,
        client: &[u8; 32],
        seat_id: &[u8; 16],
        make: impl FnOnce([u8; 16]) -> Request,
    ) -> Result<Response> {
        let hosting = self.hosting();
        let (ci, license_id) = self.seat_container(&hosting, client, seat_id)?;
        let req = make(license_id);
        let container = hosting.hosted.containers[ci].clone();
        tokio::task::spawn_blocking(move || container.call(req))
            .await
            .map_err(|e| Error::Internal(format!("container task: {e}")))?
    }

    pub(super) async fn dispatch(
        self: &Arc<Self>,
        client: &[u8; 32],
        peer: &Peer,
        req: NetRequest,
    ) -> Result<NetResponse> {
        // `RenewWhy` is `Renew` with the reasons of the seats lost added.
        if let NetRequest::RenewWhy { seat_ids } = req {
            let renewed = Box::pin(self.dispatch(client, peer, NetRequest::Renew { seat_ids }));
            return Ok(self.explain_lost(renewed.await?));
        }
        // Pool mode: the seat requests go to the pool's seat table in etcd.
        let req = match (&self.pool, req) {
            (Some(pool), NetRequest::Renew { seat_ids }) => {
                return self.pool_renew(pool, client, &seat_ids).await;
            }
            (Some(pool), NetRequest::Release { seat_id }) => {
                return self.pool_release(pool, client, peer, &seat_id).await;
            }
            (Some(pool), NetRequest::SeatInfo { seat_id }) => {
                return self.pool_seat_info(pool, client, &seat_id).await;
            }
            (Some(pool), NetRequest::Licenses { vendor_id }) => {
                return self.pool_licenses(pool, vendor_id).await;
            }
            (_, req) => req,
        };
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
                self.acquire(client, peer, want).await
            }
            NetRequest::Renew { seat_ids } | NetRequest::RenewWhy { seat_ids } => {
                let lease_ms = self.lease_ms();
                // A seat of a container this server no longer hosts (another server took it)
                // is not renewed: it is lost. A network seat encrypts by itself between
                // renewals, so a renewal is where it learns it.
                let hosting = self.hosting();
                let unhosted: Vec<[u8; 16]> = hosting
                    .hosted
                    .containers
                    .iter()
                    .filter(|c| c.keep_hosting().is_err())
                    .flat_map(|c| c.licenses.iter().map(|l| l.license_id))
                    .collect();
                let mut t = self.table()?;
                let (changes, lost) = if unhosted.is_empty() {
                    t.renew(&seat_ids, client, now_ms(), lease_ms)
                } else {
                    let (gone, keep): (Vec<[u8; 16]>, Vec<[u8; 16]>) =
                        seat_ids.iter().partition(|id| {
                            t.seat(id).is_some_and(|r| unhosted.contains(&r.license_id))
                        });
                    let (changes, mut lost) = t.renew(&keep, client, now_ms(), lease_ms);
                    lost.extend(gone);
                    (changes, lost)
                };
                drop(t);
                if !changes.is_empty() {
                    // Renewals need not wait for the disk: a restart keeps every stored seat
                    // for one more lease, which covers any renewal a SIGKILL lost.
                    self.committer.submit_lazy(changes);
                }
                Ok(NetResponse::Renewed { lost, lease_ms })
            }
            NetRequest::Release { seat_id } => {
                let mut t = self.table()?;
                if let Some(row) = t.release_row(&seat_id, client) {
                    let hosting = self.hosting();
                    let events =
                        usage::released(&hosting.hosted, &row, &peer.client_info, now_ms());
                    let change = Change::Delete(row.seat_id);
                    self.forget(std::slice::from_ref(&change));
                    // Under the table's lock: the usage log keeps the table's order.
                    drop(
                        self.committer
                            .submit_with(vec![change], events.into_iter().collect()),
                    );
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
            NetRequest::SeatKey { seat_id, key_id } => {
                // As `DeriveKey`: the seat must be live and this client's; the hosted
                // container derives it.
                match self
                    .container_call(client, &seat_id, |license_id| Request::SeatKey {
                        license_id,
                        key_id,
                    })
                    .await?
                {
                    Response::Key(key) => Ok(NetResponse::SeatKey { key }),
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
                let hosting = self.hosting();
                let (ci, license_id) = self.seat_container(&hosting, client, &seat_id)?;
                let quantity = hosting.hosted.containers[ci]
                    .licenses
                    .iter()
                    .find(|l| l.license_id == license_id)
                    .map(|l| l.quantity)
                    .unwrap_or(0);
                let in_use = self.table()?.in_use(&license_id, now_ms());
                Ok(NetResponse::Info { in_use, quantity })
            }
            NetRequest::Ping => Ok(NetResponse::Pong),
            NetRequest::Licenses { vendor_id } => {
                let hosting = self.hosting();
                let now = now_ms();
                let table = self.table()?;
                let mut out = Vec::new();
                for c in &hosting.hosted.containers {
                    for (li, lic) in c.licenses.iter().enumerate() {
                        // Only what an acquire could be served from.
                        if lic.vendor_id != vendor_id || self.may_grant(c, lic).is_err() {
                            continue;
                        }
                        out.push(ServedLicense {
                            license: c.license_bytes[li].clone(),
                            container_serial: c.serial.clone(),
                            in_use: table.in_use(&lic.license_id, now),
                        });
                    }
                }
                Ok(NetResponse::Licenses(out))
            }
            NetRequest::Borrow {
                seat_id,
                vendor_id,
                product_code,
                features,
                days,
                borrower,
            } => {
                let want = Lend {
                    seat_id,
                    vendor_id,
                    product_code,
                    features,
                    days,
                    borrower,
                };
                self.borrow(client, peer, want).await
            }
            NetRequest::Return { seat_id, signature } => self.give_back(&seat_id, &signature).await,
        }
    }

    pub(super) fn expire(&self) {
        if let Some(pool) = &self.pool {
            // The pool's seats expire with their etcd leases; those this member wrote are
            // logged here as etcd drops them (no one else's log has their grant).
            let ended = pool.take_ended();
            if !ended.is_empty() {
                self.stats
                    .lease_expiries
                    .fetch_add(ended.len() as u64, Ordering::Relaxed);
                let events = usage::ended(&self.hosting().hosted, ended);
                self.committer.submit_lazy_with(Vec::new(), events);
            }
            return;
        }
        let Ok(mut t) = self.table() else { return };
        let changes = t.expire(now_ms());
        let events = usage::expired(&self.hosting().hosted, &mut t);
        self.dropped(&changes);
        // Under the table's lock: the usage log keeps the table's order. Expiries are
        // written at once with their usage records (nobody waits for them): a restart
        // keeps every row it loads for one more lease, and a seat the usage log shows
        // expired should not come back.
        if changes.is_empty() {
            self.committer.submit_lazy_with(changes, events);
        } else {
            drop(self.committer.submit_with(changes, events));
        }
    }

    /// Counts and forgets the seats whose lease ran out (their `Delete`s).
    fn dropped(&self, changes: &[Change]) {
        if !changes.is_empty() {
            debug!(expired = changes.len(), "leases ran out");
            self.stats
                .lease_expiries
                .fetch_add(changes.len() as u64, Ordering::Relaxed);
            self.forget(changes);
        }
    }
}

/// A client-supplied string made fit to show: control characters replaced, at most 256
/// characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The license that came closest to granting a request, and why it did not: the most
/// specific refusal among the candidates (`Error::specificity`).
pub(super) struct Closest<'a> {
    best: Option<(Error, &'a crate::license::License)>,
}

impl<'a> Closest<'a> {
    pub(super) fn new() -> Closest<'a> {
        Closest { best: None }
    }

    /// Keeps `e`, the refusal of `lic`, if it says more than the one kept.
    pub(super) fn keep(&mut self, e: Error, lic: &'a crate::license::License) {
        if self
            .best
            .as_ref()
            .is_none_or(|(b, _)| e.specificity() > b.specificity())
        {
            self.best = Some((e, lic));
        }
    }

    /// The refusal the client gets, written to the usage log as a denial of `seat_id`.
    pub(super) fn refuse(
        self,
        server: &Server,
        seat_id: &SeatId,
        client: &[u8; 32],
        peer: &Peer,
    ) -> Error {
        match self.best {
            Some((e, lic)) => {
                let denied = usage::denied(
                    lic,
                    seat_id,
                    client,
                    &peer.hello.host,
                    &peer.client_info,
                    &e,
                );
                server.committer.submit_lazy_with(Vec::new(), vec![denied]);
                e
            }
            None => Error::NoLicense("no license fits".into()),
        }
    }
}

impl Server {
    /// Whether this server may grant a seat of `lic`, held by the container `c`, now: the
    /// license is bound to that container, the container is still hosted here (no other
    /// server on this machine took it), and a pool license has its pool's majority.
    pub(super) fn may_grant(
        &self,
        c: &crate::server::hosted::HostedContainer,
        lic: &crate::license::License,
    ) -> Result<()> {
        lic.check_binding(&c.serial, c.sign_key.as_ref())
            .and_then(|()| c.keep_hosting())
            .and_then(|()| self.pool_quorum(lic))
    }

    /// The refusal of a request for a product this server hosts no license of.
    pub(super) fn no_license_here(&self, vendor_id: u32, product_code: u32) -> Error {
        Error::NoLicense(format!(
            "server {} hosts no license for vendor {vendor_id:#x} product {product_code}",
            self.config.name
        ))
    }

    /// Has the container `c` lend a seat of `lic` to the borrowing container `req`
    /// (`borrower`: its request as sent) and makes the seat's record. `Ok(Err(e))`: the
    /// container refused (the next candidate may lend); `Err`: the request fails.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn lend_in(
        &self,
        c: &Arc<crate::server::hosted::HostedContainer>,
        lic: &crate::license::License,
        seat_id: SeatId,
        borrower: &[u8],
        days: u32,
        req: &crate::license::activation::ActivationRequest,
        peer: &Peer,
    ) -> Result<std::result::Result<Arc<Borrowed>, Error>> {
        let container = Arc::clone(c);
        let request = Request::Lend {
            license_id: lic.license_id,
            seat_id,
            borrower: borrower.to_vec(),
            days,
        };
        let lent = tokio::task::spawn_blocking(move || container.call(request))
            .await
            .map_err(|e| Error::Internal(format!("container task: {e}")))?;
        let (grant, certificate) = match lent {
            Ok(Response::Lent { grant, certificate }) => (grant, certificate),
            Ok(other) => {
                return Err(Error::malformed("container answer", format!("{other:?}")));
            }
            Err(e) => return Ok(Err(e)),
        };
        let g = BorrowGrant::parse_unverified(&grant)?;
        Ok(Ok(Arc::new(Borrowed {
            borrower_key: req.sign_key,
            borrower_serial: req.serial.clone(),
            hostname: peer.holder.hostname.clone(),
            user: peer.holder.session.clone(),
            issued_at: g.issued_at,
            until: g.until,
            grant,
            certificate,
        })))
    }
}
