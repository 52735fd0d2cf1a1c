//! The license server (`tessera-server`): its configuration ([`config`]), the seat table that
//! counts seats by unit and keeps their leases ([`seats`]), its durable, group-committed
//! store ([`store`]), the containers it hosts ([`hosted`]), its hash-chained usage logs
//! ([`usage`]), the seat history ([`history`]), its counters ([`stats`]), the pool's seat
//! table shared in etcd ([`pool`], issue 17), the daemon that
//! serves the license protocol on them ([`daemon`]) and the admin HTTP API and page on top
//! ([`admin`]). See `docs/SERVER.md`.
//!
//! Each of these uses only those before it in this list (lowest first: seats, hosted, stats;
//! store; config, usage, history; pool; daemon; admin). [`run`] puts the daemon and the admin API
//! together.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod history;
pub mod hosted;
pub mod pool;
pub mod pool_status;
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
    check_file_limit(server.config());
    let mut running = daemon::start(&server)?;
    if server.config().admin {
        let (listener, local) = admin::bind(server.config().admin_listen)?;
        let serving = admin::serve(
            server.control(),
            listener,
            local,
            admin::AdminLimits::of(server.config()),
            running.stopping(),
        );
        running.with_admin(local, serving);
    }
    running.ready(bound);
    // A pool member announces itself and watches the pool's members and etcd endpoints for
    // the admin API (`pool_status`).
    let monitor = server.pool().map(|pool| {
        let b = server.control().bound();
        let m = pool_status::PoolMonitor::new(
            server
                .config()
                .pool
                .as_ref()
                .map_or_else(Vec::new, |p| p.endpoints.clone()),
            pool.access().clone(),
            pool.prefix().to_string(),
            pool_status::MemberAnnounce {
                name: server.config().name.clone(),
                version: crate::VERSION.to_string(),
                listen: b.listen.iter().map(|a| a.to_string()).collect(),
                admin: b.admin.map(|a| a.to_string()),
                started_at: crate::util::now_ms() / 1000,
            },
            Arc::clone(pool.stats()),
        );
        pool.set_monitor(Arc::clone(&m));
        tokio::spawn(m.run(running.stopping()))
    });
    shutdown.await;
    let stopped = running.stop().await;
    if let Some(m) = monitor {
        // Its heartbeat revoked: the other members see this one down at once.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), m).await;
    }
    stopped
}

/// Raises this process's open-file soft limit to its hard limit (every connection is a
/// socket), and says in the log when even that is fewer than the configured connection
/// limits need ([`config::ServerConfig::files_needed`]): the license port then runs out of
/// descriptors before `max_connections`.
pub fn check_file_limit(c: &config::ServerConfig) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct.
    let ok = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            false
        } else {
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
            true
        }
    };
    let needed = c.files_needed();
    if !ok {
        tracing::warn!("could not read the open-file limit (RLIMIT_NOFILE)");
    } else if lim.rlim_cur < needed {
        tracing::warn!(
            limit = lim.rlim_cur,
            needed,
            max_connections = c.max_connections,
            admin_max_connections = c.admin_max_connections,
            "the open-file limit is below what the connection limits need: raise it \
             (LimitNOFILE= in systemd) or lower max_connections"
        );
    } else {
        tracing::debug!(limit = lim.rlim_cur, needed, "open-file limit");
    }
}
