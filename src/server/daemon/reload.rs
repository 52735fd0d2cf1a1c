//! What changes while the server runs: a configuration reload (lease and renewal times, the
//! admin token and hosts, the software containers rescanned with fresh delegations) and the
//! renewal of the delegations before they run out. Both replace the [`Hosting`] as a whole.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{AdminAuth, Hosting, Server};
use crate::Result;
use crate::net::proto::{self, ServerHello};
use crate::server::config::ServerConfig;
use crate::server::hosted::{Hosted, HostedContainer, HostedKind};

/// Reads the configuration anew for a reload (the file, with the command line's overrides).
pub type ConfigSource = Box<dyn Fn() -> Result<ServerConfig> + Send + Sync>;

/// What a reload did.
#[derive(Clone, Debug, Default)]
pub struct ReloadReport {
    /// Settings now in force with their new values.
    pub applied: Vec<String>,
    /// Settings that changed in the file but need a restart.
    pub restart_needed: Vec<String>,
    /// Containers hosted after the reload.
    pub containers: usize,
    /// Licenses hosted after the reload.
    pub licenses: usize,
    /// Containers that could not be hosted.
    pub problems: Vec<String>,
}

impl Server {
    /// The software containers under `home` read anew, delegating until `expiry`, and the
    /// dongles hosted now, kept as they are.
    fn rehost(&self, expiry: u64) -> Hosted {
        let hosted = self.hosting().hosted.reload_software(
            &self.config.home,
            &self.host,
            self.public_key,
            expiry,
        );
        for p in &hosted.problems {
            warn!(problem = %p, "container not hosted");
        }
        hosted
    }

    fn set_hosting(&self, hosted: Hosted, hello: ServerHello) {
        let hosting = Arc::new(Hosting { hosted, hello });
        match self.hosting.write() {
            Ok(mut h) => *h = hosting,
            Err(p) => *p.into_inner() = hosting,
        }
    }

    /// Renews the delegations past half their validity: they are signed for
    /// `delegation_days`, and a server that runs longer than that would otherwise be refused
    /// by every new client. Software containers are read anew (as a reload does); a dongle
    /// signs a new delegation through its channel. Returns whether it renewed any.
    pub fn renew_delegations(&self) -> bool {
        self.renew_delegations_at(crate::util::now())
    }

    /// [`Server::renew_delegations`] as if it were `now` (Unix seconds): the new delegations
    /// last `delegation_days` from `now`.
    pub fn renew_delegations_at(&self, now: u64) -> bool {
        let hosting = self.hosting();
        let days = self.delegation_days.load(Ordering::Relaxed);
        let expiry = now.saturating_add(days * 86_400);
        let half = days * 86_400 / 2;
        let due = |c: &HostedContainer| c.delegation_expiry().saturating_sub(now) < half;
        let mut renewed = false;
        for c in hosting
            .hosted
            .containers
            .iter()
            .filter(|c| matches!(c.kind, HostedKind::Dongle(_)) && due(c))
        {
            match c.renew_delegation(self.public_key, expiry) {
                Ok(()) => {
                    info!(serial = %c.serial, expiry, "dongle delegation renewed");
                    renewed = true;
                }
                Err(e) => warn!(
                    serial = %c.serial,
                    expires = c.delegation_expiry(),
                    error = %e,
                    "a dongle's delegation to this server could not be renewed; retrying within the hour"
                ),
            }
        }
        let software_due = hosting
            .hosted
            .containers
            .iter()
            .any(|c| matches!(c.kind, HostedKind::Software) && due(c));
        if !software_due && !renewed {
            return false;
        }
        let hosted = if software_due {
            self.rehost(expiry)
        } else {
            hosting.hosted.share()
        };
        let hello = ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: self.config.name.clone(),
            delegations: hosted.bundles(),
        };
        info!(
            containers = hosted.containers.len(),
            days, "delegations renewed"
        );
        self.set_hosting(hosted, hello);
        true
    }

    /// Re-reads the configuration: lease and renewal times, the admin token and hosts, and
    /// the containers (software containers rescanned, with fresh delegations; dongles kept).
    /// Blocking: call off the async runtime.
    pub fn reload(&self) -> Result<ReloadReport> {
        let new = match self.config_source.lock().ok().as_deref() {
            Some(Some(source)) => source()?,
            _ => self.config.clone(),
        };
        new.check()?;
        let mut report = ReloadReport::default();
        let old = &self.config;
        let mut restart = |name: &str, changed: bool| {
            if changed {
                report.restart_needed.push(name.to_string());
            }
        };
        restart("name", new.name != old.name);
        restart("listen", new.listen != old.listen);
        restart("discovery", new.discovery != old.discovery);
        restart("state_dir", new.state_dir != old.state_dir);
        restart("home", new.home != old.home);
        restart("dongles", new.dongles != old.dongles);
        restart(
            "max_connections",
            new.max_connections != old.max_connections,
        );
        restart(
            "handshake_timeout_ms",
            new.handshake_timeout_ms != old.handshake_timeout_ms,
        );
        restart(
            "max_connections_per_host",
            new.max_connections_per_host != old.max_connections_per_host,
        );
        restart(
            "quiet_timeout_ms",
            new.quiet_timeout_ms != old.quiet_timeout_ms,
        );
        restart(
            "admin_max_connections",
            new.admin_max_connections != old.admin_max_connections,
        );
        restart(
            "admin_header_timeout_ms",
            new.admin_header_timeout_ms != old.admin_header_timeout_ms,
        );
        restart(
            "admin_idle_timeout_ms",
            new.admin_idle_timeout_ms != old.admin_idle_timeout_ms,
        );
        restart("log_format", new.log_format != old.log_format);
        restart("fsync", new.fsync != old.fsync);
        restart("pool", new.pool != old.pool);
        restart("admin", new.admin != old.admin);
        restart("admin_listen", new.admin_listen != old.admin_listen);
        restart(
            "commit_window_us",
            new.commit_window_us != old.commit_window_us,
        );
        restart("worker_threads", new.worker_threads != old.worker_threads);

        self.lease_ms.store(new.lease_ms, Ordering::Relaxed);
        self.delegation_days
            .store(new.delegation_days, Ordering::Relaxed);
        self.renew_ms.store(new.renew_ms, Ordering::Relaxed);
        report.applied.push(format!("lease_ms = {}", new.lease_ms));
        report.applied.push(format!("renew_ms = {}", new.renew_ms));
        if let Ok(mut a) = self.admin_auth.write() {
            *a = AdminAuth {
                token: new.admin_token.clone(),
                hosts: new.admin_hosts.clone(),
            };
        }
        report.applied.push(format!(
            "admin_token ({})",
            if new.admin_token.is_some() {
                "set"
            } else {
                "none"
            }
        ));
        report
            .applied
            .push(format!("admin_hosts = {:?}", new.admin_hosts));

        let hosted = self.rehost(crate::util::now() + new.delegation_days * 86_400);
        report.applied.push(format!(
            "containers rescanned, delegation_days = {}",
            new.delegation_days
        ));
        report.containers = hosted.containers.len();
        report.licenses = hosted.containers.iter().map(|c| c.licenses.len()).sum();
        report.problems = hosted.problems.clone();
        let hello = ServerHello {
            version: proto::PROTOCOL_VERSION,
            name: old.name.clone(),
            delegations: hosted.bundles(),
        };
        self.set_hosting(hosted, hello);
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        info!(
            containers = report.containers,
            licenses = report.licenses,
            "configuration reloaded"
        );
        Ok(report)
    }
}
