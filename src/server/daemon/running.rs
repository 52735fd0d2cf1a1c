//! The daemon's lifecycle. [`start`] binds the license protocol's listeners and discovery;
//! a service that runs beside them (the admin API: `server::run` wires it) joins the
//! [`Running`] server; [`Running::ready`] starts the background work (seat history samples,
//! lease expiry, delegation renewal) and announces the addresses; [`Running::stop`] stops
//! everything and leaves the state for the next start: the seat table flushed, who holds
//! which seat saved, the usage logs checkpointed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Bound, Server, listen};
use crate::Result;
use crate::server::history;
use crate::server::store::{HistoryPoint, HolderRow};
use crate::util::now_ms;

/// A started server: its listeners, the tasks beside them, and how to stop them.
pub struct Running {
    server: Arc<Server>,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    bound: Bound,
}

/// Binds the license protocol's listeners (and discovery) and serves them; nothing else
/// runs until [`Running::ready`]. Call within a tokio runtime.
pub fn start(server: &Arc<Server>) -> Result<Running> {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let listen = listen::serve(server, &stopped, &mut tasks)?;
    Ok(Running {
        server: Arc::clone(server),
        stop,
        stopped,
        tasks,
        bound: Bound {
            listen,
            admin: None,
        },
    })
}

impl Running {
    /// Resolves when the server is told to stop: the shutdown signal of a service beside it.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    }

    /// Runs the admin API (`serving`, listening on `local`) beside the license protocol; the
    /// server's stop waits for it to end.
    pub fn with_admin(
        &mut self,
        local: SocketAddr,
        serving: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.push(tokio::spawn(serving));
        self.bound.admin = Some(local);
    }

    /// Starts the background work and announces where the server listens: in the server's
    /// state, and through `bound` (tests use port 0).
    pub fn ready(&mut self, bound: Option<oneshot::Sender<Bound>>) {
        self.tasks.push(tokio::spawn(sample_history(
            self.server.clone(),
            self.stopped.clone(),
        )));
        self.tasks.push(tokio::spawn(expire_leases(
            self.server.clone(),
            self.stopped.clone(),
        )));
        self.tasks.push(tokio::spawn(renew_delegations(
            self.server.clone(),
            self.stopped.clone(),
        )));
        if let Some(pool) = self.server.pool.clone() {
            // The pool's caches follow etcd.
            self.tasks.push(tokio::spawn(pool.follow(self.stopping())));
        }
        if let Ok(mut mine) = self.server.bound.lock() {
            *mine = self.bound.clone();
        }
        // The first history sample, so the chart starts at the start.
        self.server.sample_history();
        if let Some(tx) = bound {
            let _ = tx.send(self.bound.clone());
        }
    }

    /// Stops the listeners and everything beside them, and waits for them; then flushes the
    /// seat table, saves who holds which seat and closes the usage logs.
    pub async fn stop(self) -> Result<()> {
        info!("shutting down");
        let server = self.server;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        server.committer.submit(Vec::new()).wait_async().await?;
        // Who holds which seat, for the admin page after the restart (clients re-attach their
        // seats, but the page would not know who held them until then, nor since when).
        let s = server.clone();
        let _ = tokio::task::spawn_blocking(move || s.save_holders()).await;
        // The last checkpoint, signed by the hosted containers, before the server goes.
        server.usage.close_async().await;
        Ok(())
    }
}

/// Samples the seat table for the history every few seconds, writing each minute once it is
/// over, and the minute in progress at the stop.
async fn sample_history(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(history::SAMPLE_EVERY) => {
                let finished = server.sample_history();
                if !finished.is_empty() {
                    let s = server.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Err(e) = s.history.write(&finished) {
                            warn!(error = %e, "seat history not written");
                        }
                    })
                    .await;
                }
            }
        }
    }
    // The minute in progress, as it stands (and one that just ended).
    let finished = server.sample_history();
    let s = server.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = s.history.write(&finished).and_then(|()| s.history.flush()) {
            warn!(error = %e, "seat history not written");
        }
    })
    .await;
}

/// Ends the leases that ran out, several times per renewal interval.
async fn expire_leases(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis((server.config.renew_ms / 4).clamp(50, 1000));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => server.expire(),
        }
    }
}

/// Delegations are signed for `delegation_days`: renews them well before they run out
/// (checked hourly).
async fn renew_delegations(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {
                let s = server.clone();
                let _ = tokio::task::spawn_blocking(move || s.renew_delegations()).await;
            }
        }
    }
}

impl Server {
    /// Adds a history sample of the seats in use now; returns the points of a minute that
    /// just ended (to be written).
    pub(super) fn sample_history(&self) -> Vec<HistoryPoint> {
        self.history.sample(now_ms() / 60_000, &self.usage())
    }

    /// Saves who holds the live seats (see `HistoryStore::save_holders`). Blocking.
    fn save_holders(&self) {
        let meta = self.seat_meta();
        let rows: Vec<HolderRow> = match self.table() {
            Ok(t) => meta
                .iter()
                .filter(|(id, _)| t.seat(id).is_some())
                .filter_map(|(id, m)| {
                    Some((*id, postcard::to_allocvec(&*m.holder).ok()?, m.since_ms))
                })
                .collect(),
            Err(_) => return,
        };
        match self.history.save_holders(&rows) {
            Ok(()) => debug!(seats = rows.len(), "seat holders saved"),
            Err(e) => warn!(error = %e, "seat holders not saved"),
        }
    }
}
