//! A software TPM for the tests that need one.

/// A software TPM 2.0 (`swtpm`) for one test, on free loopback ports, with its state in a
/// temporary directory; killed and removed when dropped (also when the test fails).
pub struct Swtpm {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts one. Panics when `swtpm` is not installed (scripts/install-deps.sh installs it).
    pub fn start() -> Swtpm {
        use std::net::{TcpListener, TcpStream};
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            // A free port whose successor is free too (the control port).
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if port == u16::MAX || TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
                continue;
            }
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", dir.path().display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm is not installed (scripts/install-deps.sh)");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // a port was taken after all: try others
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", port + 1)).is_ok()
                {
                    return Swtpm {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    /// Its TCTI configuration (for `TESSERA_TPM_TCTI`).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
