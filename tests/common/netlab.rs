//! Network namespaces for the tests that need real links (tests/netns.rs,
//! tests/pool_chaos.rs): hosts on a bridge in a "switch" namespace, each joined to it by a
//! veth pair whose switch end is its cable. Needs root; nothing here skips.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Runs `ip args...`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip netns exec <ns> <program>`, killed with SIGKILL if the spawning thread dies (a test
/// that panics without unwinding leaves nothing running).
pub fn in_ns(ns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Removes namespaces of earlier runs whose process is gone (a run killed with SIGKILL
/// cannot clean up): names of `fields` dash-separated fields starting with `prefix`, the
/// third being the pid of the run that made them.
pub fn sweep_stale_namespaces(prefix: &str, fields: usize) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() != fields || parts[0] != prefix {
            continue;
        }
        let Ok(pid) = parts[2].parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A switch (a bridge `br0` in a namespace of its own) and the namespaces plugged into it.
/// Dropping it kills whatever still runs in its namespaces (started by the test) and deletes
/// them.
pub struct Net {
    switch: String,
    made: Vec<String>,
}

impl Net {
    /// The switch, in the namespace `switch`.
    pub fn new(switch: &str) -> Net {
        let mut net = Net {
            switch: switch.to_string(),
            made: Vec::new(),
        };
        net.add_ns(switch);
        ip(&["-n", switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", switch, "link", "set", "br0", "up"]);
        net
    }

    /// The switch's namespace.
    pub fn switch(&self) -> &str {
        &self.switch
    }

    /// A namespace with its loopback up.
    pub fn add_ns(&mut self, ns: &str) {
        let out = Command::new("ip")
            .args(["netns", "add", ns])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is required): {e}"));
        assert!(
            out.status.success(),
            "`ip netns add {ns}` failed: {}\nThese tests need root (CAP_SYS_ADMIN + \
             CAP_NET_ADMIN) and a kernel with network namespaces and veth; they do not skip.",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.made.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// A host `host` in the new namespace `ns`, plugged into the switch (its cable: the
    /// switch's port `p-<host>`), with `eth0` at `cidr` (`addr ... dev eth0` takes `extra`
    /// too, e.g. `brd +`).
    pub fn add_host(&mut self, host: &str, ns: &str, cidr: &str, extra: &[&str]) {
        self.add_ns(ns);
        let sw = self.switch.clone();
        let port = format!("p-{host}");
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &sw, "link", "set", &port, "up"]);
        let mut args = vec!["-n", ns, "addr", "add", cidr];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["dev", "eth0"]);
        ip(&args);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Pulls (`false`) or plugs (`true`) the cable of `host`: its port on the switch.
    pub fn link(&self, host: &str, up: bool) {
        let port = format!("p-{host}");
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.made {
            // Whatever still runs in our namespaces was started by this test.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
