//! [`Control`]: what the server shows of its state and what an operator may do to it, the
//! whole interface the admin API (`server::admin`) sits on. Reads are of the state as it is
//! now (the seat table only under its lock, read-only, for as long as a closure runs); the
//! actions are a seat's revocation and a configuration reload. The daemon never calls the
//! admin API: it hands out a `Control` ([`Server::control`]) and is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::info;

use super::{AdminAuth, Bound, Hosting, ReloadReport, SeatMeta, Server};
use crate::server::history::Usage;
use crate::server::seats::{SeatId, SeatTable};
use crate::server::stats::Stats;
use crate::server::store::{CommitStats, HistoryPoint};
use crate::server::usage::{self, Export};
use crate::util::now_ms;
use crate::{Error, Result};

/// A handle on a running server for its operator (the admin API); cheap to clone.
#[derive(Clone)]
pub struct Control {
    server: Arc<Server>,
}

impl Control {
    pub(super) fn new(server: Arc<Server>) -> Control {
        Control { server }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.server.config.name
    }

    /// Where the server listens.
    pub fn bound(&self) -> Bound {
        self.server
            .bound
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    /// The admin token and hosts now in force.
    pub fn admin_auth(&self) -> AdminAuth {
        match self.server.admin_auth.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Where the admin API keeps the local admin token of this start
    /// (`<state_dir>/local-admin.token`).
    pub fn local_token_file(&self) -> std::path::PathBuf {
        let p = self
            .server
            .config()
            .state_dir
            .join(crate::admin_client::LOCAL_TOKEN_FILE);
        std::path::absolute(&p).unwrap_or(p)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.server.started.elapsed()
    }

    /// When the server started (Unix seconds).
    pub fn started_unix(&self) -> u64 {
        self.server.started_unix
    }

    /// The lease length now in force, in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.server.lease_ms()
    }

    /// The renewal interval now in force, in milliseconds.
    pub fn renew_ms(&self) -> u64 {
        self.server.renew_ms()
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.server.stats
    }

    /// The seat table committer's counters.
    pub fn commit_stats(&self) -> &CommitStats {
        self.server.committer.stats()
    }

    /// What the server hosts and announces now.
    pub fn hosting(&self) -> Arc<Hosting> {
        self.server.hosting()
    }

    /// Seats in use and quantity per product `(vendor_id, product_code)` now.
    pub fn usage(&self) -> Usage {
        self.server.usage()
    }

    /// Pool mode: the pool's seat table in etcd (`None` for a single server, whose seats
    /// are in [`Control::with_table`]).
    pub fn pool(&self) -> Option<&std::sync::Arc<crate::server::pool::EtcdSeats>> {
        self.server.pool.as_ref()
    }

    /// Runs `f` on the seat table, under its lock (keep it short: grants wait for it).
    pub fn with_table<R>(&self, f: impl FnOnce(&SeatTable) -> R) -> Result<R> {
        Ok(f(&*self.server.table()?))
    }

    /// Who holds which seat, as far as the server has been told since it started.
    pub fn seat_meta(&self) -> HashMap<SeatId, SeatMeta> {
        self.server.seat_meta()
    }

    /// The seat history from Unix minute `since` on, in buckets of `step` minutes.
    /// Blocking: call off the async runtime.
    pub fn history(
        &self,
        since: u64,
        product: Option<(u32, u32)>,
        step: u64,
    ) -> Result<Vec<HistoryPoint>> {
        let finished = self.server.sample_history();
        self.server.history.write(&finished)?;
        self.server.history.query(since, product, step)
    }

    /// A publisher's usage log for export, checkpointed up to now (see
    /// [`usage::UsageLog::export`]). Blocking: call off the async runtime.
    pub fn export_usage(&self, vendor: Option<u32>) -> Result<Export> {
        self.server.usage.export(vendor)
    }

    /// The latest `limit` refusals the usage logs record (see
    /// [`usage::UsageLog::logged_denials`]). Blocking: call off the async runtime.
    pub fn logged_denials(&self, limit: usize) -> Result<Vec<usage::LoggedDenial>> {
        self.server.usage.logged_denials(limit)
    }

    /// Takes a live seat away from its client, durably. `Ok(false)` when there is no such
    /// live seat. The client's next renewal or call for the seat gets
    /// `TESSERA_E_LEASE_LOST`. A borrowed seat is refused (`InvalidArgument`, saying why):
    /// the machine that has it may be offline and keeps using it; it ends at its time or
    /// when it is returned.
    pub async fn revoke(&self, seat_id: &SeatId) -> Result<bool> {
        self.revoke_because(seat_id, "").await
    }

    /// [`Control::revoke`] with the administrator's reason, which the client's renewal (and
    /// any call it makes on the seat) reports with `TESSERA_E_LEASE_LOST`: "revoked by an
    /// administrator".
    pub async fn revoke_because(&self, seat_id: &SeatId, reason: &str) -> Result<bool> {
        let server = &self.server;
        if let Some(pool) = &server.pool {
            let revoked = server.pool_revoke(pool, seat_id, reason).await?;
            if revoked {
                server.stats.revoked.add(*seat_id, reason);
            }
            return Ok(revoked);
        }
        // Submitted under the table's lock, with its usage-log record: the log keeps the
        // table's order.
        let waiter = {
            let mut t = server.table()?;
            let Some(row) = t.seat(seat_id).cloned() else {
                return Ok(false);
            };
            if let Some(b) = &row.borrow
                && row.expires_ms > now_ms()
            {
                return Err(Error::InvalidArgument(format!(
                    "seat {} is borrowed by {} on {} until {}: a borrowed seat cannot be revoked \
                     (the machine that has it may be offline); it ends at its time or when it \
                     is returned",
                    hex::encode(seat_id),
                    b.borrower_serial,
                    b.hostname,
                    crate::util::format_time(b.until)
                )));
            }
            let Some(change) = t.revoke(seat_id, now_ms()) else {
                return Ok(false);
            };
            // Under the table's lock: a renewal that finds the seat gone finds the reason.
            server.stats.revoked.add(*seat_id, reason);
            let events = usage::revoked(&server.hosting().hosted, &row)
                .into_iter()
                .collect();
            server.committer.submit_with(vec![change], events)
        };
        waiter.wait_async().await?;
        if let Ok(mut m) = server.seat_meta.lock() {
            m.remove(seat_id);
        }
        server.stats.revocations.fetch_add(1, Ordering::Relaxed);
        info!(seat = %hex::encode(seat_id), "seat revoked by an admin");
        Ok(true)
    }

    /// Re-reads the configuration (see [`Server::reload`]). Blocking: call off the async
    /// runtime.
    pub fn reload(&self) -> Result<ReloadReport> {
        self.server.reload()
    }
}
