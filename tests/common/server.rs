//! A `tessera-server` process for the integration tests.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

pub const LEASE_MS: u64 = 1500;
pub const RENEW_MS: u64 = 300;

/// A command prefix that runs a process in a mount namespace of its own with a private
/// `/dev/shm` (where the machine-wide hosting locks live): servers of a pool on one machine
/// may each host a copy of the same container. Needs root (the tests run as root).
pub const PRIVATE_SHM: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -t tmpfs tmpfs /dev/shm && exec \"$0\" \"$@\"",
];

/// A running `tessera-server`; killed on drop.
pub struct ServerProc {
    pub child: Option<Child>,
    pub addr: String,
    /// The admin API's address (`host:port`).
    pub admin: String,
    /// Extra arguments it was started with (kept for a restart).
    pub extra: Vec<String>,
    pub state: PathBuf,
    pub home: PathBuf,
    pub port: u16,
    /// `lease_ms` and `renew_ms` it was started with (kept for a restart).
    pub lease: (u64, u64),
    /// The command prefix it runs under (kept for a restart; empty: none).
    pub wrap: Vec<String>,
}

impl ServerProc {
    pub fn start(state: &Path, home: &Path, port: u16) -> ServerProc {
        Self::start_with(state, home, port, &[])
    }

    /// Starts a server with extra arguments (the admin API listens on a free loopback port
    /// unless they say otherwise). With `--config FILE` among them, the server gets only
    /// these arguments: the file says everything (flags would override it).
    pub fn start_with(state: &Path, home: &Path, port: u16, extra: &[&str]) -> ServerProc {
        Self::start_full(state, home, port, extra, (LEASE_MS, RENEW_MS), &[])
    }

    /// [`ServerProc::start_with`] under a command prefix (`wrap`: e.g. a private mount
    /// namespace, [`PRIVATE_SHM`], so that servers on one machine may host copies of one
    /// container; or `ip netns exec NS`).
    pub fn start_wrapped(
        state: &Path,
        home: &Path,
        port: u16,
        extra: &[&str],
        wrap: &[&str],
    ) -> ServerProc {
        let wrap: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
        Self::start_inner(state, home, port, extra, (LEASE_MS, RENEW_MS), &[], &wrap)
    }

    /// [`ServerProc::start_with`], with extra environment variables (a shifted clock:
    /// [`faketime_at`]). A restart starts it without them.
    pub fn start_with_env(
        state: &Path,
        home: &Path,
        port: u16,
        extra: &[&str],
        env: &[(String, String)],
    ) -> ServerProc {
        Self::start_full(state, home, port, extra, (LEASE_MS, RENEW_MS), env)
    }

    /// Starts a server with leases of `lease_ms`, renewed every `renew_ms` (kept across
    /// [`ServerProc::restart`]).
    pub fn start_leased(
        state: &Path,
        home: &Path,
        port: u16,
        lease_ms: u64,
        renew_ms: u64,
    ) -> ServerProc {
        Self::start_full(state, home, port, &[], (lease_ms, renew_ms), &[])
    }

    fn start_full(
        state: &Path,
        home: &Path,
        port: u16,
        extra: &[&str],
        lease: (u64, u64),
        env: &[(String, String)],
    ) -> ServerProc {
        Self::start_inner(state, home, port, extra, lease, env, &[])
    }

    fn start_inner(
        state: &Path,
        home: &Path,
        port: u16,
        extra: &[&str],
        lease: (u64, u64),
        env: &[(String, String)],
        wrap: &[String],
    ) -> ServerProc {
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(super::bin("tessera-server"));
                c
            }
            None => Command::new(super::bin("tessera-server")),
        };
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if !extra.contains(&"--config") {
            if !extra.contains(&"--admin-listen") {
                cmd.args(["--admin-listen", "127.0.0.1:0"]);
            }
            cmd.args(["--name", "test-server", "--no-discovery", "--no-dongles"])
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--state-dir")
                .arg(state)
                .arg("--home")
                .arg(home)
                .args([
                    "--lease-ms",
                    &lease.0.to_string(),
                    "--renew-ms",
                    &lease.1.to_string(),
                ]);
        }
        // TSR_SERVER_LOGS=DIR keeps every server's log (at TSR_SERVER_LOG, else `warn`) in
        // DIR, one file per state folder: for a post-mortem of a failed run.
        let stderr = match std::env::var_os("TSR_SERVER_LOGS") {
            Some(dir) => {
                let name = state.file_name().unwrap_or_default().to_string_lossy();
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(&dir).join(format!("{name}.log")))
                    .unwrap();
                Stdio::from(file)
            }
            None => Stdio::null(),
        };
        let level = std::env::var("TSR_SERVER_LOG").unwrap_or_else(|_| "warn".into());
        let mut child = cmd
            .args(extra)
            .env("TESSERA_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
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
        let mut admin = String::new();
        if !extra.contains(&"--no-admin") {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            admin = line
                .trim()
                .strip_prefix("admin on ")
                .unwrap_or_else(|| panic!("server said {line:?}, not its admin address"))
                .to_string();
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        ServerProc {
            child: Some(child),
            addr,
            admin,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            state: state.to_path_buf(),
            home: home.to_path_buf(),
            port,
            lease,
            wrap: wrap.to_vec(),
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
        *self = ServerProc::start_inner(
            &self.state.clone(),
            &self.home.clone(),
            self.port,
            &extra,
            self.lease,
            &[],
            &self.wrap.clone(),
        );
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

/// The environment that runs a process under libfaketime with its wall clock starting at
/// Unix time `t` and ticking on (the monotonic clock left alone, as
/// scripts/test-shifted-clock.sh does). `None` when libfaketime is not installed.
pub fn faketime_at(t: u64) -> Option<Vec<(String, String)>> {
    let preload = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())?;
    let at = tessera::util::format_time(t);
    Some(vec![
        ("LD_PRELOAD".into(), preload.display().to_string()),
        (
            "FAKETIME".into(),
            format!("@{}", at.trim_end_matches(" UTC")),
        ),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("TZ".into(), "UTC".into()),
    ])
}

/// For a test binary's child mode: a session on the license server named by
/// `TESSERA_TEST_SERVER`, for `vendor` with the publisher key in the file `TESSERA_TEST_KEY`,
/// its state in `TESSERA_TEST_HOME`, as the simulated host `host`. None when this process is
/// not such a child (the variable is unset), so the child-mode test does nothing.
pub fn child_session(vendor: u32, host: &str) -> Option<tessera::client::Session> {
    use tessera::client::{Environment, Session, SessionOptions, sources};
    let addr = std::env::var("TESSERA_TEST_SERVER").ok()?;
    let key_file = std::env::var("TESSERA_TEST_KEY").expect("TESSERA_TEST_KEY");
    let key =
        tessera::publisher::PublisherKey::from_bytes(&std::fs::read(key_file).unwrap()).unwrap();
    let mut o = SessionOptions::new(vendor, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![addr];
    let env = Environment {
        home: PathBuf::from(std::env::var("TESSERA_TEST_HOME").expect("TESSERA_TEST_HOME")),
        host: tessera::host::HostIdentity::simulated(host),
        clock: std::sync::Arc::new(tessera::util::SystemClock),
    };
    Some(Session::open_in(o, env).unwrap())
}

/// The command that runs this test binary's child-mode test `test` as a network client of
/// `server` (what [`child_session`] reads in that process); stdout piped, stderr dropped.
pub fn child_command(test: &str, server: &str, key_file: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("TESSERA_TEST_SERVER", server)
        .env("TESSERA_TEST_KEY", key_file)
        .env("TESSERA_TEST_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// Runs the child-mode test `test` (see [`child_command`]) and returns once it printed that it
/// holds its seat (`SEAT ok`); a child that was refused, or ended, fails the test.
pub fn spawn_seat_holder(test: &str, server: &str, key_file: &Path, home: &Path) -> Child {
    let mut child = child_command(test, server, key_file, home).spawn().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("SEAT") {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    assert!(line.contains("SEAT ok"), "{line}");
    child
}

/// Reads a child's output up to the line holding `prefix`, and returns that line from the
/// prefix on (the test harness may have begun the line: "test child_… ... "). A child that
/// ended first fails the test.
pub fn read_line_with(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before saying {prefix}"
        );
        if let Some(at) = line.find(prefix) {
            return line[at..].trim().to_string();
        }
    }
}

/// A child process killed (and reaped) when this goes out of scope, also on a failed test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM to a server process, and its exit status once it stopped (at most 10 s).
pub fn sigterm(child: &mut Child) -> ExitStatus {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl ServerProc {
    /// SIGTERM, and the exit status once the server stopped.
    pub fn stop(&mut self) -> ExitStatus {
        sigterm(&mut self.child.take().expect("the server is running"))
    }
}

/// A `tessera-server` pool member named `name` of the pool `pool` on the etcd `endpoints`,
/// hosting the container in `home` (in a mount namespace of its own: members on one machine
/// host copies of one container), configured by a TOML file in `dir` with its state there
/// too, its admin API on a free loopback port; `port` 0 for any; `more`: further top-level
/// TOML lines (lease settings, ...).
pub fn pool_member(
    dir: &Path,
    endpoints: &[String],
    pool: &str,
    name: &str,
    home: &Path,
    port: u16,
    more: &str,
) -> ServerProc {
    pool_member_with(dir, endpoints, (pool, ""), name, home, port, more)
}

/// [`pool_member`] with further lines of its `[pool]` table (`pool.1`).
pub fn pool_member_with(
    dir: &Path,
    endpoints: &[String],
    pool: (&str, &str),
    name: &str,
    home: &Path,
    port: u16,
    more: &str,
) -> ServerProc {
    let (pool, pool_more) = pool;
    let state = dir.join(format!("state-{name}"));
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    let config = format!(
        "name = \"{name}\"\nlisten = [\"127.0.0.1:{port}\"]\ndiscovery = false\n\
         dongles = false\nstate_dir = {state:?}\nhome = {home:?}\nfsync = false\n\
         admin_listen = \"127.0.0.1:0\"\n{more}\n[pool]\nendpoints = [{}]\nname = \"{pool}\"\n\
         {pool_more}\n",
        endpoints.join(", ")
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    ServerProc::start_wrapped(
        &state,
        home,
        0,
        &["--config", file.to_str().unwrap()],
        PRIVATE_SHM,
    )
}

/// A copy of the folder `from` at `to` (a container's home, for another pool member).
pub fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}
