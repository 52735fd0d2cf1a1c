//! A `tessera-server` process for the integration tests.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const LEASE_MS: u64 = 1500;
pub const RENEW_MS: u64 = 300;

/// A running `tessera-server`; killed on drop.
pub struct ServerProc {
    pub child: Option<Child>,
    pub addr: String,
    /// Extra arguments it was started with (kept for a restart).
    pub extra: Vec<String>,
    pub state: PathBuf,
    pub home: PathBuf,
    pub port: u16,
}

impl ServerProc {
    pub fn start(state: &Path, home: &Path, port: u16) -> ServerProc {
        Self::start_with(state, home, port, &[])
    }

    /// Starts a server with extra arguments.
    pub fn start_with(state: &Path, home: &Path, port: u16, extra: &[&str]) -> ServerProc {
        let mut child = Command::new(super::bin("tessera-server"))
            .args(["--name", "test-server", "--no-discovery", "--no-dongles"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state)
            .arg("--home")
            .arg(home)
            .args([
                "--lease-ms",
                &LEASE_MS.to_string(),
                "--renew-ms",
                &RENEW_MS.to_string(),
            ])
            .args(extra)
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_string();
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        ServerProc {
            child: Some(child),
            addr,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            state: state.to_path_buf(),
            home: home.to_path_buf(),
            port,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        let extra = self.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        *self = ServerProc::start_with(&self.state.clone(), &self.home.clone(), self.port, &extra);
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
