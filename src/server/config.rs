//! The server's configuration: a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::net::proto::DEFAULT_PORT;
use crate::{Error, Result};

/// The admin HTTP port (`docs/SERVER.md`, Administration).
pub const ADMIN_PORT: u16 = 22631;

/// The shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin API token: never printed, compared in constant time.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from its text (trailing white space, as a file read gives, is trimmed).
    pub fn new(text: &str) -> AdminToken {
        AdminToken(text.trim().to_string())
    }

    /// The token's bytes, for the constant-time comparison.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Everything `tessera-server` can be told.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The server's name, shown to clients (`tessera_seat_info`) and in logs.
    pub name: String,
    /// TCP addresses for the license protocol (`[::]:22630` listens on IPv6 and IPv4).
    pub listen: Vec<SocketAddr>,
    /// Whether to answer discovery broadcasts on UDP (same port as the first listener).
    pub discovery: bool,
    /// Where the server keeps its key and seat table.
    pub state_dir: PathBuf,
    /// The `TESSERA_HOME` whose software containers (activated for this machine) it hosts.
    pub home: PathBuf,
    /// Whether to host the dongles attached to this machine.
    pub dongles: bool,
    /// Lease length in milliseconds.
    pub lease_ms: u64,
    /// How often clients renew, in milliseconds (`lease_ms` must be at least 3 times this).
    pub renew_ms: u64,
    /// Most connections at once; more are refused.
    pub max_connections: usize,
    /// Most connections at once from one client host (a source address; IPv6 by its /64);
    /// 0: a quarter of `max_connections` (at least 1). One host cannot take them all.
    pub max_connections_per_host: usize,
    /// Milliseconds a client may take for the handshake; a connection that holds a seat and
    /// is idle longer than three leases is closed.
    pub handshake_timeout_ms: u64,
    /// Milliseconds a connection that was never granted a seat may stay silent (after the
    /// handshake, or after its last request) before it is closed (at most three leases).
    pub quiet_timeout_ms: u64,
    /// How long delegations the hosted containers sign for this server last, in days.
    pub delegation_days: u64,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Sync every commit of the seat table to the disk (survives power loss). `false` keeps
    /// grants safe against a killed server process only, at a fraction of the latency.
    pub fsync: bool,
    /// Whether to serve the admin HTTP API and page.
    pub admin: bool,
    /// Where the admin HTTP API listens (default `127.0.0.1:22631`; loopback unless a token
    /// is set).
    pub admin_listen: SocketAddr,
    /// The admin API token (`Authorization: Bearer …`). Required when `admin_listen` is not
    /// a loopback address; when set, every admin API request needs it.
    pub admin_token: Option<AdminToken>,
    /// Further `Host` header values the admin API answers to (`name:port`), besides the bound
    /// address, `localhost:PORT`, `127.0.0.1:PORT` and `[::1]:PORT`.
    pub admin_hosts: Vec<String>,
    /// Most admin connections at once; more are closed as they come. Kept apart from
    /// `max_connections`, so the admin port cannot starve the license port.
    pub admin_max_connections: usize,
    /// Milliseconds an admin client has to send a request's headers, counted from the
    /// connection, or from the previous answer on a kept-alive one (so also the longest an
    /// idle admin connection stays open).
    pub admin_header_timeout_ms: u64,
    /// Milliseconds an admin connection may go without a byte moving either way (a stalled
    /// body, an answer nobody reads) before it is closed.
    pub admin_idle_timeout_ms: u64,
    /// How often, in seconds, a hosted container checkpoints the usage logs (also at
    /// shutdown). Records after the last checkpoint are not yet signed for.
    pub usage_checkpoint_s: u64,
    /// When saturated (a crowd of grants came while a crowd was being committed), the seat
    /// table commits at most once per this many microseconds, gathering what arrives meanwhile
    /// into one transaction (0: commit as they come). Fewer clients, and a lone one, never
    /// wait for it.
    pub commit_window_us: u64,
    /// Threads serving client connections; 0 picks one fewer than the CPUs (at least one),
    /// leaving a CPU to the seat table's commit thread.
    pub worker_threads: usize,
    /// Pool mode (`[pool]`): the seat table is shared with the other members of a pool in
    /// etcd instead of this server's SQLite file. `None`: a single server.
    pub pool: Option<PoolConfig>,
}

/// The `[pool]` section: where the pool's shared seat table lives in etcd.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The etcd cluster's client endpoints (`host:port`, `http://host:port`).
    pub endpoints: Vec<String>,
    /// The key prefix of this pool in etcd (default `/tessera/<name>/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The pool's name (default `default`).
    #[serde(default)]
    pub name: Option<String>,
    /// How often a member compacts etcd's history, keeping at least that much of it, in
    /// seconds (default 300; 0: never, for an etcd that compacts itself with
    /// `--auto-compaction-retention`). Without compaction every grant and release stays in
    /// etcd's history until its database reaches its quota and refuses all writes.
    #[serde(default)]
    pub compact_s: Option<u64>,
    /// TLS towards etcd: the CA certificate (PEM) that signed the etcd nodes' server
    /// certificates. With it, endpoints without a scheme are reached over `https://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This member's client certificate (PEM), for etcd run with `--client-cert-auth`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// An etcd user, for etcd with authentication enabled.
    #[serde(default)]
    pub user: Option<String>,
    /// The file holding `user`'s password (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// How a member reaches etcd: TLS and a user, read from the files [`PoolConfig`] names.
#[derive(Clone, Debug, Default)]
pub struct EtcdAccess {
    tls: Option<etcd_client::TlsOptions>,
    user: Option<(String, String)>,
}

impl EtcdAccess {
    /// `base` with this TLS configuration and user.
    pub fn options(&self, base: etcd_client::ConnectOptions) -> etcd_client::ConnectOptions {
        let mut o = base;
        if let Some(t) = &self.tls {
            o = o.with_tls(t.clone());
        }
        if let Some((u, p)) = &self.user {
            o = o.with_user(u.clone(), p.clone());
        }
        o
    }

    /// An endpoint as the etcd client takes it: `endpoint` when it has a scheme, else
    /// `https://endpoint` with TLS and `http://endpoint` without.
    pub fn url(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.to_string()
        } else if self.tls.is_some() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }
}

impl PoolConfig {
    /// The pool of `tessera-server --pool etcd://h1:2379,h2:2379`: its endpoints, with the
    /// default name and prefix.
    pub fn from_url(url: &str) -> Result<PoolConfig> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "--pool {url:?}: {why}; expected etcd://host:port[,host:port...]"
            ))
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("not an etcd:// URL"))?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(|e| e.trim().to_string())
            .collect();
        let c = PoolConfig {
            endpoints,
            ..PoolConfig::default()
        };
        c.check().map_err(|e| bad(&e.to_string()))?;
        Ok(c)
    }

    /// How often a member compacts etcd's history (zero: never).
    pub fn compact_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.compact_s.unwrap_or(300))
    }

    /// The pool's name.
    pub fn pool_name(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// The key prefix, ending in `/`: `prefix`, or `/tessera/<name>/`.
    pub fn key_prefix(&self) -> String {
        let mut p = match &self.prefix {
            Some(p) => p.clone(),
            None => format!("/tessera/{}/", self.pool_name()),
        };
        if !p.ends_with('/') {
            p.push('/');
        }
        p
    }

    /// The endpoints as URLs the etcd client takes (`http://host:port`, or `https://` with
    /// `ca_file`).
    pub fn urls(&self) -> Vec<String> {
        let tls = self.ca_file.is_some();
        self.endpoints
            .iter()
            .map(|e| {
                if e.starts_with("http://") || e.starts_with("https://") {
                    e.clone()
                } else if tls {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect()
    }

    /// Reads the TLS files and the password file this names.
    pub fn access(&self) -> Result<EtcdAccess> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p)
                .map_err(|e| Error::InvalidArgument(format!("pool: {what} {}: {e}", p.display())))
        };
        let tls = match &self.ca_file {
            None => None,
            Some(ca) => {
                let mut t = etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read("ca_file", ca)?));
                if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
                    t = t.identity(etcd_client::Identity::from_pem(
                        read("cert_file", c)?,
                        read("key_file", k)?,
                    ));
                }
                Some(t)
            }
        };
        let user = match (&self.user, &self.password_file) {
            (Some(u), Some(p)) => {
                let text = String::from_utf8(read("password_file", p)?).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "pool: password_file {} is not text",
                        p.display()
                    ))
                })?;
                Some((u.clone(), text.lines().next().unwrap_or("").to_string()))
            }
            _ => None,
        };
        Ok(EtcdAccess { tls, user })
    }

    /// Checks the endpoints (`host:port` each), the name and the prefix.
    pub fn check(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "pool: at least one etcd endpoint".into(),
            ));
        }
        for e in &self.endpoints {
            let hostport = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .unwrap_or(e);
            let ok = hostport.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b))
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(Error::InvalidArgument(format!(
                    "pool: etcd endpoint {e:?} is not host:port"
                )));
            }
        }
        if let Some(n) = &self.name
            && (n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(Error::InvalidArgument(format!(
                "pool: name {n:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if let Some(p) = &self.prefix
            && (!p.starts_with('/') || p.len() > 256 || p.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(Error::InvalidArgument(format!(
                "pool: prefix {p:?} must start with '/' (at most 256 characters)"
            )));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Error::InvalidArgument(
                "pool: cert_file and key_file go together".into(),
            ));
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return Err(Error::InvalidArgument(
                "pool: cert_file needs ca_file (the CA of etcd's server certificates)".into(),
            ));
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(Error::InvalidArgument(
                "pool: user and password_file go together".into(),
            ));
        }
        if self.ca_file.is_some() && self.endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(Error::InvalidArgument(
                "pool: ca_file is set but an endpoint says http://".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            name: crate::host::hostname(),
            listen: vec![SocketAddr::from(([0u16; 8], DEFAULT_PORT))],
            discovery: true,
            state_dir: PathBuf::from("/var/lib/tessera-server"),
            home: crate::client::default_home(),
            dongles: true,
            lease_ms: 90_000,
            renew_ms: 30_000,
            max_connections: 20_000,
            max_connections_per_host: 0,
            handshake_timeout_ms: 5_000,
            quiet_timeout_ms: 10_000,
            delegation_days: 7,
            log_format: "text".into(),
            fsync: true,
            admin: true,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT)),
            admin_token: None,
            admin_hosts: Vec::new(),
            admin_max_connections: 128,
            admin_header_timeout_ms: 10_000,
            admin_idle_timeout_ms: 30_000,
            usage_checkpoint_s: 60,
            commit_window_us: super::store::DEFAULT_COMMIT_WINDOW.as_micros() as u64,
            worker_threads: 0,
            pool: None,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file (missing keys take their defaults; unknown keys are an error).
    pub fn from_file(path: &Path) -> Result<ServerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<ServerConfig> {
        let c: ServerConfig = toml::from_str(text)
            .map_err(|e| Error::malformed("server configuration", e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// Checks the values make sense together.
    pub fn check(&self) -> Result<()> {
        if self.listen.is_empty() {
            return Err(Error::InvalidArgument(
                "listen: at least one address".into(),
            ));
        }
        if self.renew_ms == 0 || self.lease_ms < 3 * self.renew_ms {
            return Err(Error::InvalidArgument(format!(
                "lease_ms ({}) must be at least three renewal intervals (renew_ms {})",
                self.lease_ms, self.renew_ms
            )));
        }
        if self.max_connections == 0 {
            return Err(Error::InvalidArgument(
                "max_connections must be at least 1".into(),
            ));
        }
        if self.max_connections_per_host > self.max_connections {
            return Err(Error::InvalidArgument(format!(
                "max_connections_per_host ({}) must be at most max_connections ({}); 0 is a \
                 quarter of it",
                self.max_connections_per_host, self.max_connections
            )));
        }
        if !(100..=3_600_000).contains(&self.quiet_timeout_ms) {
            return Err(Error::InvalidArgument(format!(
                "quiet_timeout_ms ({}) must be from 100 to 3600000",
                self.quiet_timeout_ms
            )));
        }
        if !(1..=65_536).contains(&self.admin_max_connections) {
            return Err(Error::InvalidArgument(format!(
                "admin_max_connections ({}) must be from 1 to 65536",
                self.admin_max_connections
            )));
        }
        for (name, ms) in [
            ("admin_header_timeout_ms", self.admin_header_timeout_ms),
            ("admin_idle_timeout_ms", self.admin_idle_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return Err(Error::InvalidArgument(format!(
                    "{name} ({ms}) must be from 100 to 3600000"
                )));
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::InvalidArgument("log_format is text or json".into()));
        }
        if let Some(t) = &self.admin_token
            && t.expose().len() < MIN_TOKEN_LEN
        {
            return Err(Error::InvalidArgument(format!(
                "admin_token is too short: at least {MIN_TOKEN_LEN} characters"
            )));
        }
        if self.admin && !self.admin_listen.ip().is_loopback() && self.admin_token.is_none() {
            return Err(Error::InvalidArgument(format!(
                "admin_listen {} is not a loopback address: set admin_token (at least \
                 {MIN_TOKEN_LEN} characters) to serve the admin API beyond this machine, or \
                 listen on 127.0.0.1 / [::1]",
                self.admin_listen
            )));
        }
        for h in &self.admin_hosts {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::InvalidArgument(format!(
                    "admin_hosts: {h:?} is not a host[:port]"
                )));
            }
        }
        if !(1..=3600).contains(&self.usage_checkpoint_s) {
            return Err(Error::InvalidArgument(format!(
                "usage_checkpoint_s ({}) must be from 1 to 3600 seconds",
                self.usage_checkpoint_s
            )));
        }
        if self.commit_window_us > MAX_COMMIT_WINDOW_US {
            return Err(Error::InvalidArgument(format!(
                "commit_window_us ({}) must be at most {MAX_COMMIT_WINDOW_US} (100 ms)",
                self.commit_window_us
            )));
        }
        if let Some(p) = &self.pool {
            p.check()?;
        }
        if self.worker_threads > 1024 {
            return Err(Error::InvalidArgument(format!(
                "worker_threads ({}) must be at most 1024 (0 picks one fewer than the CPUs)",
                self.worker_threads
            )));
        }
        Ok(())
    }

    /// The most connections one client host may hold at once.
    pub fn per_host_limit(&self) -> usize {
        match self.max_connections_per_host {
            0 => (self.max_connections / 4).max(1),
            n => n,
        }
    }

    /// The open files the configured limits need: every connection is a socket, on both
    /// ports, and [`FILE_RESERVE`] for the rest (the seat table, logs, listeners, dongles).
    pub fn files_needed(&self) -> u64 {
        let admin = if self.admin {
            self.admin_max_connections
        } else {
            0
        };
        (self.max_connections + admin) as u64 + FILE_RESERVE
    }

    /// The commit window as a duration.
    pub fn commit_window(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.commit_window_us)
    }

    /// How many threads serve connections: `worker_threads`, or for 0 one fewer than the
    /// CPUs this process may use, at least one.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n,
        }
    }
}

/// Open files the server needs besides its connections: the seat table and its journal, the
/// usage logs, listeners, the runtime's own descriptors, dongles.
pub const FILE_RESERVE: u64 = 64;

/// The longest commit window accepted: beyond it, the added latency is no longer small.
pub const MAX_COMMIT_WINDOW_US: u64 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_defaults_and_checks() {
        let c = ServerConfig::from_toml(
            "name = \"s1\"\nlease_ms = 9000\nrenew_ms = 3000\nlisten = [\"127.0.0.1:5000\"]\n",
        )
        .unwrap();
        assert_eq!(c.name, "s1");
        assert_eq!(c.listen, vec!["127.0.0.1:5000".parse().unwrap()]);
        assert!(c.discovery);
        assert!(ServerConfig::from_toml("lease_ms = 1000\nrenew_ms = 1000\n").is_err());
        assert!(ServerConfig::from_toml("bogus = 1\n").is_err());
        assert!(ServerConfig::from_toml("listen = []\n").is_err());
        assert!(ServerConfig::from_toml("name = ").is_err());
        assert_eq!(c.usage_checkpoint_s, 60);
        assert!(ServerConfig::from_toml("usage_checkpoint_s = 0\n").is_err());
        assert!(ServerConfig::from_toml("usage_checkpoint_s = 3601\n").is_err());
        assert_eq!(
            ServerConfig::from_toml("usage_checkpoint_s = 1\n")
                .unwrap()
                .usage_checkpoint_s,
            1
        );
        assert_eq!(c.commit_window_us, 3_000);
        assert!(ServerConfig::from_toml("commit_window_us = 100001\n").is_err());
        assert_eq!(
            ServerConfig::from_toml("commit_window_us = 0\n")
                .unwrap()
                .commit_window(),
            std::time::Duration::ZERO
        );
        assert!(c.workers() >= 1);
        assert_eq!(
            ServerConfig::from_toml("worker_threads = 3\n")
                .unwrap()
                .workers(),
            3
        );
        assert!(ServerConfig::from_toml("worker_threads = 5000\n").is_err());
    }

    #[test]
    fn connection_limits_per_host_and_on_the_admin_port() {
        let c = ServerConfig::from_toml("max_connections = 40\n").unwrap();
        assert_eq!(c.per_host_limit(), 10, "a quarter by default");
        assert_eq!(c.quiet_timeout_ms, 10_000);
        assert_eq!(c.admin_max_connections, 128);
        assert_eq!(c.files_needed(), 40 + 128 + FILE_RESERVE);
        let c =
            ServerConfig::from_toml("max_connections = 3\nmax_connections_per_host = 3\n").unwrap();
        assert_eq!(c.per_host_limit(), 3);
        assert_eq!(
            ServerConfig::from_toml("max_connections = 3\n")
                .unwrap()
                .per_host_limit(),
            1
        );
        let e = ServerConfig::from_toml("max_connections = 3\nmax_connections_per_host = 4\n")
            .unwrap_err();
        assert!(e.to_string().contains("max_connections_per_host"), "{e}");
        assert!(ServerConfig::from_toml("quiet_timeout_ms = 0\n").is_err());
        assert!(ServerConfig::from_toml("admin_max_connections = 0\n").is_err());
        assert!(ServerConfig::from_toml("admin_header_timeout_ms = 10\n").is_err());
        assert!(ServerConfig::from_toml("admin_idle_timeout_ms = 99999999\n").is_err());
        let c = ServerConfig::from_toml("admin = false\nmax_connections = 10\n").unwrap();
        assert_eq!(c.files_needed(), 10 + FILE_RESERVE);
    }

    #[test]
    fn the_admin_api_beyond_loopback_needs_a_token() {
        let c = ServerConfig::from_toml("").unwrap();
        assert!(c.admin);
        assert_eq!(c.admin_listen, "127.0.0.1:22631".parse().unwrap());
        assert!(ServerConfig::from_toml("admin_listen = \"[::1]:22631\"\n").is_ok());
        let e = ServerConfig::from_toml("admin_listen = \"0.0.0.0:22631\"\n").unwrap_err();
        assert!(e.to_string().contains("admin_token"), "{e}");
        assert!(
            ServerConfig::from_toml("admin = false\nadmin_listen = \"0.0.0.0:22631\"\n").is_ok(),
            "no admin API, no token needed"
        );
        let e = ServerConfig::from_toml("admin_token = \"short\"\n").unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
        let c = ServerConfig::from_toml(
            "admin_listen = \"0.0.0.0:22631\"\nadmin_token = \"0123456789abcdef-secret\"\n",
        )
        .unwrap();
        assert!(
            !format!("{c:?}").contains("secret"),
            "the token never shows in Debug output"
        );
        assert!(ServerConfig::from_toml("admin_hosts = [\"a b\"]\n").is_err());
    }

    #[test]
    fn a_pool_is_an_etcd_url_or_a_pool_section() {
        let p = PoolConfig::from_url("etcd://h1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(p.endpoints, vec!["h1:2379", "10.0.0.2:2379"]);
        assert_eq!(p.urls(), vec!["http://h1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(p.key_prefix(), "/tessera/default/");
        for bad in [
            "http://h1:2379",
            "etcd://",
            "etcd://h1",
            "etcd://h1:x",
            "etcd://h1:0,h2:1",
        ] {
            let e = PoolConfig::from_url(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
            assert!(e.to_string().contains("etcd://host:port"), "{e}");
        }
        let c = ServerConfig::from_toml(
            "[pool]\nendpoints = [\"a:1\", \"http://b:2\"]\nname = \"site-1\"\n",
        )
        .unwrap();
        let p = c.pool.unwrap();
        assert_eq!(p.key_prefix(), "/tessera/site-1/");
        assert_eq!(p.urls(), vec!["http://a:1", "http://b:2"]);
        let c =
            ServerConfig::from_toml("[pool]\nendpoints = [\"a:1\"]\nprefix = \"/x/y\"\n").unwrap();
        assert_eq!(c.pool.unwrap().key_prefix(), "/x/y/");
        assert!(ServerConfig::from_toml("[pool]\nendpoints = []\n").is_err());
        assert!(
            ServerConfig::from_toml("[pool]\nendpoints = [\"a:1\"]\nprefix = \"x\"\n").is_err()
        );
        assert!(ServerConfig::from_toml("[pool]\nendpoints = [\"a:1\"]\nfoo = 1\n").is_err());
        assert!(ServerConfig::from_toml("").unwrap().pool.is_none());
    }

    #[test]
    fn the_pool_s_tls_and_user_settings_go_together() {
        let pool = |more: &str| {
            ServerConfig::from_toml(&format!("[pool]\nendpoints = [\"a:1\"]\n{more}\n"))
                .map(|c| c.pool.unwrap())
        };
        let p = pool("ca_file = \"/c\"").unwrap();
        assert_eq!(p.urls(), vec!["https://a:1"], "TLS: https");
        assert_eq!(pool("compact_s = 0").unwrap().compact_every().as_secs(), 0);
        assert_eq!(pool("").unwrap().compact_every().as_secs(), 300);
        for (bad, says) in [
            (
                "ca_file = \"/c\"\ncert_file = \"/x\"",
                "cert_file and key_file",
            ),
            ("cert_file = \"/x\"\nkey_file = \"/k\"", "needs ca_file"),
            ("user = \"u\"", "user and password_file"),
        ] {
            let e = pool(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = ServerConfig::from_toml("[pool]\nendpoints = [\"http://a:1\"]\nca_file = \"/c\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://"), "{e}");
        // Files are read when the server starts: a missing one is named.
        let e = pool("ca_file = \"/nonexistent/ca.pem\"")
            .unwrap()
            .access()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
