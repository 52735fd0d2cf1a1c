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

    /// The nodes `nodes`, started and healthy (panics after 30 s).
    pub fn start(nodes: Vec<EtcdNode>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("tessera-test-{}", std::process::id());
        let mut e = Etcd {
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            dir,
            token,
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
            .arg(format!("http://{}:{}", n.ip, n.client_port))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}:{}", n.ip, n.client_port))
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
            .map(|(n, _)| n.endpoint())
            .collect()
    }

    /// `etcdctl` on the live nodes.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.live_endpoints().join(",")))
            .arg("--command-timeout=2s")
            .args(args)
            .output()
            .expect("etcdctl")
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
