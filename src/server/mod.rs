//! The license server (`tessera-server`): its configuration ([`config`]), the seat table that
//! counts seats by unit and keeps their leases ([`seats`]), its durable, group-committed
//! store ([`store`]), the containers it hosts ([`hosted`]), its hash-chained usage logs
//! ([`usage`]), the seat history ([`history`]), its counters ([`stats`]), the daemon that
//! serves the license protocol on them ([`daemon`]) and the admin HTTP API and page on top
//! ([`admin`]). See `docs/SERVER.md`.
//!
//! Each of these uses only those before it in this list (lowest first: seats, hosted, stats;
//! store; config, usage, history; daemon; admin). [`run`] puts the daemon and the admin API
//! together.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod history;
pub mod hosted;
pub mod seats;
pub mod stats;
pub mod store;
pub mod usage;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::Result;
use daemon::{Bound, Server};

/// Runs the server until `shutdown` resolves: the daemon (the license protocol, discovery
/// and the background work) and, when the configuration turns it on, the admin API beside it.
/// Returns the bound addresses through `bound` as soon as the listeners are up (tests use
/// port 0).
pub async fn run(
    server: Arc<Server>,
    shutdown: impl Future<Output = ()>,
    bound: Option<oneshot::Sender<Bound>>,
) -> Result<()> {
    let mut running = daemon::start(&server)?;
    if server.config().admin {
        let (listener, local) = admin::bind(server.config().admin_listen)?;
        let serving = admin::serve(server.control(), listener, local, running.stopping());
        running.with_admin(local, serving);
    }
    running.ready(bound);
    shutdown.await;
    running.stop().await
}
