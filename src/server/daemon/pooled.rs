//! The license protocol's seat requests in pool mode (issue 17): the same rules as
//! `requests`, on the pool's seat table in etcd ([`EtcdSeats`]) instead of this server's
//! table and SQLite file. The usage log stays this member's: its records go through the
//! group committer (which writes no seats in pool mode), and a grant is answered only once
//! its record is written, as on a single server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::requests::{Closest, Lend, Peer, Want};
use super::{Hosting, Server};
use crate::container::protocol::{Request, Response};
use crate::license::License;
use crate::license::borrow;
use crate::net::proto::{NetResponse, SeatGrant, ServedLicense};
use crate::server::pool::EtcdSeats;
use crate::server::pool::members::{Members, Served, Signer};
use crate::server::seats::{AcquireSpec, BorrowSpec, SeatId};
use crate::server::usage;
use crate::util::now_ms;
use crate::{Error, Result};

impl Server {
    /// Pool mode: starts this member's registrations (`start`: at the start, from
    /// `Running::ready`), or restarts them when the pool licenses hosted now are not those it
    /// registers for (after a reload). Each registration is signed by the hosted container
    /// holding the license, for this server's key, on an etcd lease of one seat lease.
    pub(super) fn refresh_pool_members(&self, start: bool) {
        let Some(pool) = &self.pool else { return };
        let hosting = self.hosting();
        let served: Vec<Served> = hosting
            .hosted
            .containers
            .iter()
            .flat_map(|c| {
                c.licenses
                    .iter()
                    .filter(|l| l.binding.pool().is_some())
                    .map(|l| Served {
                        serial: c.serial.clone(),
                        license: l.clone(),
                    })
            })
            .collect();
        let mut members = match self.members.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match members.as_ref() {
            None if !start => return,
            Some(m) if m.serves(&served) => return,
            _ => {}
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let server_key = self.public_key();
        let snapshot = hosting.clone();
        let signer: Signer = Arc::new(move |serial: &str, license_id: &[u8; 16], cluster_id| {
            let c = snapshot
                .hosted
                .containers
                .iter()
                .find(|c| c.serial == serial)
                .ok_or_else(|| Error::NoLicense(format!("container {serial} is not hosted")))?;
            match c.call(Request::SignPoolMember {
                license_id: *license_id,
                server_key,
                cluster_id,
            })? {
                Response::PoolRegistration(r) => Ok(r),
                other => Err(Error::malformed("container answer", format!("{other:?}"))),
            }
        });
        let ttl = Duration::from_millis(self.lease_ms().max(1000));
        *members = Some(Arc::new(Members::start(
            pool.endpoints().to_vec(),
            pool.access().clone(),
            pool.prefix(),
            served,
            signer,
            ttl,
        )));
    }

    /// May this server grant a seat of `license`? A pool license only in pool mode, and only
    /// while a strict majority of its members are registered in the pool's etcd cluster
    /// ([`Members::check`]): a member run as a single server would count its own seats.
    /// Any other license, yes.
    pub(super) fn pool_quorum(&self, license: &License) -> Result<()> {
        let Some((name, _)) = license.binding.pool() else {
            return Ok(());
        };
        if self.pool.is_none() {
            return Err(Error::NoLicense(format!(
                "license {} belongs to pool {name}: only a pool member (tessera-server --pool) serves it",
                license.id_hex()
            )));
        }
        let members = match self.members.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        match members {
            Some(m) => m.check(license),
            None => Err(Error::Timeout(format!(
                "pool {name}: this member has not registered in the pool's etcd cluster yet"
            ))),
        }
    }

    /// Pool mode: stops this member's registrations (at the server's stop: their leases run
    /// out, and a reload does not start them again).
    pub(super) fn stop_pool_members(&self) {
        let stopped = match self.members.write() {
            Ok(mut m) => m.take(),
            Err(p) => p.into_inner().take(),
        };
        drop(stopped);
    }

    /// Pool mode: this member's registrations and its view of the others' (for the admin
    /// API), once started.
    pub fn pool_members(&self) -> Option<Arc<Members>> {
        match self.members.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// `Acquire` on the pool: the first hosted license that grants, as on a single server.
    pub(super) async fn pool_acquire(
        &self,
        pool: &EtcdSeats,
        client: &[u8; 32],
        peer: &Peer,
        want: Want,
    ) -> Result<NetResponse> {
        let hello = &peer.hello;
        let hosting = self.hosting();
        let candidates = hosting.hosted.find(want.vendor_id, want.product_code);
        if candidates.is_empty() {
            return Err(self.no_license_here(want.vendor_id, want.product_code));
        }
        let mut closest = Closest::new();
        for (ci, li) in candidates {
            let c = &hosting.hosted.containers[ci];
            let lic = &c.licenses[li];
            if let Err(e) = self.may_grant(c, lic) {
                closest.keep(e, lic);
                continue;
            }
            let spec = AcquireSpec {
                seat_id: want.seat_id,
                license: lic,
                host: &hello.host,
                client: *client,
                exclusive: want.exclusive,
                features: want.features,
                now_ms: now_ms(),
                lease_ms: self.lease_ms(),
            };
            match pool.acquire(&spec, &peer.holder.encode()).await {
                Ok(claimed) => {
                    if !claimed.held {
                        // In this member's usage log before it is answered.
                        let event = usage::granted(lic, &claimed.row, &peer.client_info);
                        self.committer
                            .submit_with(Vec::new(), vec![event])
                            .wait_async()
                            .await?;
                    }
                    self.remember(&want.seat_id, &peer.holder, spec.now_ms);
                    return Ok(NetResponse::Granted(SeatGrant {
                        seat_id: want.seat_id,
                        license: c.license_bytes[li].clone(),
                        container_serial: c.serial.clone(),
                        lease_ms: spec.lease_ms,
                        renew_ms: self.renew_ms(),
                        in_use: claimed.in_use,
                    }));
                }
                // etcd unreachable: a transient error, never a refusal.
                Err(e @ Error::Timeout(_)) => return Err(e),
                Err(e) => closest.keep(e, lic),
            }
        }
        Err(closest.refuse(self, &want.seat_id, client, peer))
    }

    /// `Renew` on the pool: the seats' etcd leases kept alive.
    pub(super) async fn pool_renew(
        &self,
        pool: &EtcdSeats,
        client: &[u8; 32],
        seat_ids: &[SeatId],
    ) -> Result<NetResponse> {
        let lease_ms = self.lease_ms();
        let lost = pool.renew(seat_ids, client).await?;
        if lost.is_empty() {
            return Ok(NetResponse::Renewed { lost, lease_ms });
        }
        if let Ok(mut m) = self.seat_meta.lock() {
            for id in &lost {
                m.remove(id);
            }
        }
        // Seats an administrator revoked through another member: why, from etcd, for the
        // answer to `RenewWhy` and the calls on them. Without an answer they are lost all
        // the same, without the reason.
        let unexplained: Vec<SeatId> = lost
            .iter()
            .filter(|id| self.stats.revoked.reason(id).is_none())
            .copied()
            .collect();
        if !unexplained.is_empty() {
            match pool.revoked_reasons(&unexplained).await {
                Ok(found) => {
                    for (id, reason) in found {
                        self.stats.revoked.add(id, &reason);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "pool: why seats were revoked, unread"),
            }
        }
        Ok(NetResponse::Renewed { lost, lease_ms })
    }

    /// `Release` on the pool.
    pub(super) async fn pool_release(
        &self,
        pool: &EtcdSeats,
        client: &[u8; 32],
        peer: &Peer,
        seat_id: &SeatId,
    ) -> Result<NetResponse> {
        if let Some(mut row) = pool.release(seat_id, client).await? {
            let now = now_ms();
            // Released while live (etcd held it): not an expiry.
            row.expires_ms = row.expires_ms.max(now + 1);
            let events = usage::released(&self.hosting().hosted, &row, &peer.client_info, now);
            if let Ok(mut m) = self.seat_meta.lock() {
                m.remove(seat_id);
            }
            drop(
                self.committer
                    .submit_with(Vec::new(), events.into_iter().collect()),
            );
        }
        Ok(NetResponse::Released)
    }

    /// The container and license of a seat this member serves for `client`.
    pub(super) fn pool_seat_container(
        &self,
        pool: &EtcdSeats,
        hosting: &Hosting,
        client: &[u8; 32],
        seat_id: &SeatId,
    ) -> Result<(usize, [u8; 16])> {
        let license_id = pool
            .served(seat_id, client)
            .ok_or_else(|| self.seat_gone(seat_id, "pool member"))?;
        let (ci, _) = hosting
            .hosted
            .by_license_id(&license_id)
            .ok_or_else(|| Error::NoLicense("the seat's license is no longer hosted".into()))?;
        hosting.hosted.containers[ci].keep_hosting().map_err(|e| {
            Error::LeaseLost(format!("this server no longer hosts the container: {e}"))
        })?;
        Ok((ci, license_id))
    }

    /// `SeatInfo` on the pool: the license's seats in use across the pool, read now.
    pub(super) async fn pool_seat_info(
        &self,
        pool: &EtcdSeats,
        client: &[u8; 32],
        seat_id: &SeatId,
    ) -> Result<NetResponse> {
        let hosting = self.hosting();
        let (ci, license_id) = self.pool_seat_container(pool, &hosting, client, seat_id)?;
        let quantity = hosting.hosted.containers[ci]
            .licenses
            .iter()
            .find(|l| l.license_id == license_id)
            .map(|l| l.quantity)
            .unwrap_or(0);
        let in_use = pool.in_use(&license_id).await?;
        Ok(NetResponse::Info { in_use, quantity })
    }

    /// `Licenses` on the pool: what an acquire could be served from, with the seats in use
    /// across the pool.
    pub(super) async fn pool_licenses(
        &self,
        pool: &EtcdSeats,
        vendor_id: u32,
    ) -> Result<NetResponse> {
        let hosting = self.hosting();
        let mut out = Vec::new();
        for c in &hosting.hosted.containers {
            for (li, lic) in c.licenses.iter().enumerate() {
                if lic.vendor_id != vendor_id
                    || lic
                        .check_binding(&c.serial, c.sign_key.as_ref())
                        .and_then(|()| c.keep_hosting())
                        .is_err()
                {
                    continue;
                }
                out.push(ServedLicense {
                    license: c.license_bytes[li].clone(),
                    container_serial: c.serial.clone(),
                    in_use: pool.in_use(&lic.license_id).await?,
                });
            }
        }
        Ok(NetResponse::Licenses(out))
    }

    /// The grant of a seat lent to the container with key `borrower`, as the pool holds it.
    async fn pool_lent_again(
        &self,
        pool: &EtcdSeats,
        seat_id: &SeatId,
        borrower: &[u8; 32],
    ) -> Result<Option<NetResponse>> {
        let Some(row) = pool.seat(seat_id).await? else {
            return Ok(None);
        };
        let row = row.seat_row()?;
        Ok(row
            .borrow
            .filter(|b| b.borrower_key == *borrower && b.until.saturating_mul(1000) > now_ms())
            .map(|b| NetResponse::Borrowed {
                grant: b.grant.clone(),
                certificate: b.certificate.clone(),
            }))
    }

    /// `Borrow` on the pool: as on a single server, the row in etcd under a lease that runs
    /// to the seat's end (it survives every member).
    pub(super) async fn pool_borrow(
        &self,
        pool: &EtcdSeats,
        client: &[u8; 32],
        peer: &Peer,
        want: Lend,
    ) -> Result<NetResponse> {
        let Lend {
            seat_id,
            vendor_id,
            product_code,
            features,
            days,
            borrower,
        } = want;
        let req = borrow::read_borrower(&borrower, vendor_id)?;
        if let Some(again) = self.pool_lent_again(pool, &seat_id, &req.sign_key).await? {
            return Ok(again);
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
            let fits = self
                .may_grant(c, lic)
                .and_then(|()| borrow::borrow_until(lic, days, spec.now_ms / 1000).map(drop));
            let fits = match fits {
                Ok(()) => pool.check_borrow(&spec).await,
                Err(e) => Err(e),
            };
            match fits {
                Ok(()) => {}
                Err(e @ Error::Timeout(_)) => return Err(e),
                Err(e) => {
                    closest.keep(e, lic);
                    continue;
                }
            }
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
            match pool.borrow(&spec, Arc::clone(&record)).await {
                Ok(claimed) => {
                    let event = usage::borrowed(lic, &claimed.row, &peer.client_info);
                    self.committer
                        .submit_with(Vec::new(), vec![event])
                        .wait_async()
                        .await?;
                    return Ok(NetResponse::Borrowed {
                        grant: record.grant.clone(),
                        certificate: record.certificate.clone(),
                    });
                }
                Err(e @ Error::Timeout(_)) => return Err(e),
                Err(e) => {
                    if let Some(again) = self.pool_lent_again(pool, &seat_id, &req.sign_key).await?
                    {
                        return Ok(again);
                    }
                    closest.keep(e, lic)
                }
            }
        }
        Err(closest.refuse(self, &seat_id, client, peer))
    }

    /// `Return` on the pool: signed by the borrowing container; freed at once.
    pub(super) async fn pool_give_back(
        &self,
        pool: &EtcdSeats,
        seat_id: &SeatId,
        signature: &[u8],
    ) -> Result<NetResponse> {
        let gone = || {
            Error::LeaseLost(format!(
                "the pool has no borrowed seat {} (returned, or its time ended)",
                hex::encode(seat_id)
            ))
        };
        let row = pool.seat(seat_id).await?.ok_or_else(gone)?.seat_row()?;
        let Some(b) = row.borrow.clone() else {
            return Err(gone());
        };
        if b.until.saturating_mul(1000) <= now_ms() {
            return Err(gone());
        }
        borrow::verify_return(&b.borrower_key, seat_id, signature)?;
        if pool.give_back(seat_id).await?.is_some() {
            let hosting = self.hosting();
            if let Some((ci, li)) = hosting.hosted.by_license_id(&row.license_id) {
                let event =
                    usage::returned(&hosting.hosted.containers[ci].licenses[li], seat_id, &b);
                self.committer
                    .submit_with(Vec::new(), vec![event])
                    .wait_async()
                    .await?;
            }
        }
        Ok(NetResponse::Returned)
    }

    /// An admin's revoke on the pool, from any member: the row deleted and its lease
    /// revoked; the holder learns at its next renewal. `Ok(false)` when the pool has no
    /// such seat. The reason goes into etcd with the deletion, for the member that serves
    /// the holder.
    pub(super) async fn pool_revoke(
        &self,
        pool: &EtcdSeats,
        seat_id: &SeatId,
        reason: &str,
    ) -> Result<bool> {
        let Some(row) = pool.seat(seat_id).await? else {
            return Ok(false);
        };
        let row = row.seat_row()?;
        if let Some(b) = &row.borrow
            && b.until.saturating_mul(1000) > now_ms()
        {
            return Err(Error::InvalidArgument(format!(
                "seat {} is borrowed by {} on {} until {}: a borrowed seat cannot be revoked \
                 (the machine that has it may be offline); it ends at its time or when it is \
                 returned",
                hex::encode(seat_id),
                b.borrower_serial,
                b.hostname,
                crate::util::format_time(b.until)
            )));
        }
        let Some(row) = pool.revoke(seat_id, reason).await? else {
            return Ok(false);
        };
        let events = usage::revoked(&self.hosting().hosted, &row)
            .into_iter()
            .collect();
        self.committer
            .submit_with(Vec::new(), events)
            .wait_async()
            .await?;
        if let Ok(mut m) = self.seat_meta.lock() {
            m.remove(seat_id);
        }
        self.stats.revocations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(seat = %hex::encode(seat_id), "pool seat revoked by an admin");
        Ok(true)
    }
}
