//! etcd for the pool's tests (issue 17): a single node or a cluster, each node an `etcd`
//! process on its own ports and data folder, stopped on drop (also when a test fails).
//!
//! The nodes' addresses are parameters ([`EtcdNode`]: the IP it listens on and a command
//! prefix such as `ip netns exec NS`), so a test can put nodes on separate hosts (network
//! namespaces); [`Etcd::single`] and [`Etcd::cluster`] put them on loopback.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where one node runs.
#[derive(Clone, Debug)]
pub struct EtcdNode {
    /// The address it listens on (client and peer ports).
    pub ip: String,
    /// The client port.
    pub client_port: u16,
    /// The peer port.
    pub peer_port: u16,
    /// A command prefix to run it with (empty: run it directly).
    pub wrap: Vec<String>,
}

impl EtcdNode {
    /// A node on `ip` with ports free on loopback now.
    pub fn at(ip: &str) -> EtcdNode {
        EtcdNode {
            ip: ip.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            wrap: Vec::new(),
        }
    }

    /// `ip:client_port`.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.client_port)
    }
}

/// A port nobody listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running etcd cluster; every node is killed on drop.
pub struct Etcd {
    pub nodes: Vec<EtcdNode>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    token: String,
    /// Client TLS: the nodes serve https and ask for a client certificate of this CA.
    tls: Option<Certs>,
}

/// A test CA, a server certificate for 127.0.0.1, a client certificate it signed, and a
/// client certificate of another CA (made with `openssl`; PEM files).
#[derive(Clone, Debug)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

impl Certs {
    /// Makes them in `dir`.
    pub fn make(dir: &std::path::Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            // On the real clock: etcd is a Go program, which reads the time without libc, so
            // libfaketime (scripts/test-shifted-clock.sh) never moves its clock. Valid from
            // the real now for ten years, a certificate is valid for both clocks.
            let out = Command::new("openssl")
                .args(args)
                .env_remove("LD_PRELOAD")
                .env_remove("FAKETIME")
                .current_dir(dir)
                .output()
                .expect("openssl (scripts/install-deps.sh)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let run = |args: Vec<String>| openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let words = |s: &str| -> Vec<String> { s.split(' ').map(str::to_string).collect() };
        for ca in ["ca", "rogue-ca"] {
            let mut a = words(&format!(
                "req -x509 {ec} -keyout {ca}.key -out {ca}.pem -days 3650 -subj"
            ));
            a.push(format!("/CN=tessera test {ca}"));
            run(a);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, ca, ext) in [
            ("server", "ca", "server.ext"),
            ("client", "ca", "client.ext"),
            ("rogue", "rogue-ca", "client.ext"),
        ] {
            run(words(&format!(
                "req {ec} -keyout {name}.key -out {name}.csr -subj /CN=tessera-test-{name}"
            )));
            run(words(&format!(
                "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
                 -out {name}.pem -days 3650 -extfile {ext}"
            )));
        }
        Certs {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
        }
    }
}

impl Etcd {
    /// One node on loopback, healthy.
    pub fn single() -> Etcd {
        Self::start(vec![EtcdNode::at("127.0.0.1")])
    }

    /// `n` nodes on loopback, healthy.
    pub fn cluster(n: usize) -> Etcd {
        Self::start((0..n).map(|_| EtcdNode::at("127.0.0.1")).collect())
    }

    /// One node on loopback serving https with `certs`' server certificate, and asking
    /// every client for a certificate of `certs`' CA; healthy.
    pub fn single_tls(certs: &Certs) -> Etcd {
        Self::start_with(vec![EtcdNode::at("127.0.0.1")], Some(certs.clone()))
    }

    /// The nodes `nodes`, started and healthy (panics after 30 s).
    pub fn start(nodes: Vec<EtcdNode>) -> Etcd {
        Self::start_with(nodes, None)
    }

    fn start_with(nodes: Vec<EtcdNode>, tls: Option<Certs>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("tessera-test-{}", std::process::id());
        let mut e = Etcd {
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            dir,
            token,
            tls,
        };
        for i in 0..e.nodes.len() {
            e.spawn(i, "new");
        }
        e.wait_healthy(Duration::from_secs(30));
        e
    }

    fn name(i: usize) -> String {
        format!("node{i}")
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(Self::name(i))
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let n = &self.nodes[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let cluster = self
            .nodes
            .iter()
            .enumerate()
            .map(|(j, m)| format!("{}=http://{}:{}", Self::name(j), m.ip, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = match n.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg("etcd");
                c
            }
            None => Command::new("etcd"),
        };
        let log =
            std::fs::File::create(self.dir.path().join(format!("{}.log", Self::name(i)))).unwrap();
        cmd.arg("--name")
            .arg(Self::name(i))
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--listen-client-urls")
            .arg(format!("{scheme}://{}:{}", n.ip, n.client_port))
            .arg("--advertise-client-urls")
            .arg(format!("{scheme}://{}:{}", n.ip, n.client_port))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}:{}", n.ip, n.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}:{}", n.ip, n.peer_port))
            .arg("--initial-cluster")
            .arg(cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.ca);
        }
        if std::env::consts::ARCH != "x86_64" {
            cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        }
        self.children[i] = Some(cmd.spawn().expect("etcd (scripts/install-deps.sh)"));
    }

    /// The client endpoints (`ip:port`) of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(EtcdNode::endpoint).collect()
    }

    /// `etcd://ip:port,...`: what `tessera-server --pool` takes.
    pub fn pool_url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The live nodes' endpoints.
    fn live_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(n, _)| match self.tls {
                Some(_) => format!("https://{}", n.endpoint()),
                None => n.endpoint(),
            })
            .collect()
    }

    /// `etcdctl` on the live nodes.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.live_endpoints().join(",")))
            .arg("--command-timeout=2s");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        cmd.args(args).output().expect("etcdctl")
    }

    /// Waits until every live node says it is healthy (a leader is elected).
    pub fn wait_healthy(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                start.elapsed() < within,
                "etcd did not become healthy: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the node that is the leader now, if the live nodes agree on one.
    pub fn leader(&self) -> Option<usize> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        for s in v.as_array()? {
            let status = &s["Status"];
            let id = status["header"]["member_id"].as_u64()?;
            if status["leader"].as_u64() == Some(id) {
                let ep = s["Endpoint"].as_str()?;
                return self.nodes.iter().position(|n| n.endpoint() == ep);
            }
        }
        None
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }

    /// Whether node `i` runs.
    pub fn alive(&mut self, i: usize) -> bool {
        self.children[i]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Node `i`'s log so far (for a failing test's message).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", Self::name(i))))
            .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
