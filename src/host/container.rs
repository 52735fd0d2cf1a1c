//! Container detection: whether this process runs inside Docker, Podman, Kubernetes, LXC,
//! systemd-nspawn or WSL, from the marker files and settings each runtime leaves behind.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::read::{printable, read_bytes, read_trimmed, under};

/// A container runtime (or WSL, which hides the host the same way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerRuntime {
    /// Docker (`/.dockerenv`, `container=docker`, a `/docker/` cgroup).
    Docker,
    /// Podman (`/run/.containerenv`, `container=podman`, a `libpod` cgroup).
    Podman,
    /// A Kubernetes pod (`KUBERNETES_SERVICE_HOST`, a `kubepods` cgroup).
    Kubernetes,
    /// LXC / LXD / Incus (`container=lxc`, an `/lxc/` cgroup).
    Lxc,
    /// systemd-nspawn (`container=systemd-nspawn`).
    SystemdNspawn,
    /// Windows Subsystem for Linux (a "microsoft" or "WSL" kernel release).
    Wsl,
    /// Another runtime, named by its `container=` value (printable, at most 64 characters).
    Other(String),
}

impl std::fmt::Display for ContainerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerRuntime::Docker => "Docker",
            ContainerRuntime::Podman => "Podman",
            ContainerRuntime::Kubernetes => "Kubernetes",
            ContainerRuntime::Lxc => "LXC",
            ContainerRuntime::SystemdNspawn => "systemd-nspawn",
            ContainerRuntime::Wsl => "WSL",
            ContainerRuntime::Other(name) => name,
        })
    }
}

/// Detects the container this process runs in, reading files under `root` (pass `/` for this
/// process; the process environment is consulted only then). `None`: no container found.
///
/// Signals, most specific first: `KUBERNETES_SERVICE_HOST` in the environment and a
/// `kubepods` cgroup (a pod, whatever engine runs it); `/.dockerenv`; `/run/.containerenv`;
/// `container=` in the environment of PID 1 (or of this process); `/run/systemd/container`;
/// `/proc/1/cgroup` paths of Docker, Podman and LXC; a WSL kernel in
/// `/proc/sys/kernel/osrelease`.
pub fn detect_container(root: &Path) -> Option<ContainerRuntime> {
    let env = |name: &str| {
        if root == Path::new("/") {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        } else {
            None
        }
    };
    detect_container_with(root, env)
}

/// [`detect_container`] with the environment supplied by the caller (`env(name)` returns the
/// variable's value), so tests need not change the process environment.
pub fn detect_container_with(
    root: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Option<ContainerRuntime> {
    let cgroup = read_bytes(&under(root, "/proc/1/cgroup"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();

    if env("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
        || cgroup
            .lines()
            .any(|l| l.contains("/kubepods") || l.contains("kubepods-"))
    {
        return Some(ContainerRuntime::Kubernetes);
    }
    if exists(&under(root, "/.dockerenv")) {
        return Some(ContainerRuntime::Docker);
    }
    if exists(&under(root, "/run/.containerenv")) {
        return Some(ContainerRuntime::Podman);
    }
    let pid1_env = read_bytes(&under(root, "/proc/1/environ")).unwrap_or_default();
    let from_pid1 = pid1_env
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"container="))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    if let Some(runtime) = from_pid1
        .or_else(|| env("container"))
        .and_then(|v| runtime_from_name(&v))
    {
        return Some(runtime);
    }
    if let Some(runtime) =
        read_trimmed(&under(root, "/run/systemd/container")).and_then(|v| runtime_from_name(&v))
    {
        return Some(runtime);
    }
    for line in cgroup.lines() {
        // "12:devices:/docker/<id>", "0::/system.slice/docker-<id>.scope",
        // "0::/machine.slice/libpod-<id>.scope", "0::/lxc/<name>", "0::/lxc.payload.<name>".
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if path.contains("/docker/") || path.contains("/docker-") {
            return Some(ContainerRuntime::Docker);
        }
        if path.contains("libpod") {
            return Some(ContainerRuntime::Podman);
        }
        if path.contains("/lxc/") || path.contains("/lxc.payload") {
            return Some(ContainerRuntime::Lxc);
        }
    }
    if let Some(release) = read_trimmed(&under(root, "/proc/sys/kernel/osrelease"))
        && (release.to_ascii_lowercase().contains("microsoft") || release.contains("WSL"))
    {
        return Some(ContainerRuntime::Wsl);
    }
    None
}

/// The runtime for a `container=` / `/run/systemd/container` value.
fn runtime_from_name(name: &str) -> Option<ContainerRuntime> {
    let name = name.trim();
    Some(match name.to_ascii_lowercase().as_str() {
        "" => return None,
        "docker" => ContainerRuntime::Docker,
        "podman" => ContainerRuntime::Podman,
        "lxc" | "lxc-libvirt" | "lxd" | "incus" => ContainerRuntime::Lxc,
        "systemd-nspawn" => ContainerRuntime::SystemdNspawn,
        "wsl" => ContainerRuntime::Wsl,
        "kubernetes" => ContainerRuntime::Kubernetes,
        _ => ContainerRuntime::Other(printable(name, 64)),
    })
}

/// Whether `path` exists (a file, a directory or even a dangling link).
fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn root_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in files {
            let p = under(dir.path(), path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, contents).unwrap();
        }
        dir
    }

    fn detect(files: &[(&str, &[u8])]) -> Option<ContainerRuntime> {
        let dir = root_with(files);
        detect_container_with(dir.path(), no_env)
    }

    #[test]
    fn nothing_is_no_container() {
        assert_eq!(detect(&[]), None);
        assert_eq!(
            detect(&[
                ("/proc/1/cgroup", b"0::/init.scope\n"),
                ("/proc/sys/kernel/osrelease", b"6.8.0-45-generic\n"),
                ("/proc/1/environ", b"HOME=/\0TERM=linux\0"),
            ]),
            None
        );
        assert_eq!(
            detect_container(Path::new("/nonexistent/tessera/root")),
            None
        );
    }

    #[test]
    fn dockerenv_is_docker() {
        assert_eq!(
            detect(&[("/.dockerenv", b"")]),
            Some(ContainerRuntime::Docker)
        );
    }

    #[test]
    fn containerenv_is_podman() {
        assert_eq!(
            detect(&[("/run/.containerenv", b"engine=\"podman-4.9\"\n")]),
            Some(ContainerRuntime::Podman)
        );
    }

    #[test]
    fn kubernetes_env_counts_only_through_the_supplied_environment() {
        let dir = root_with(&[("/.dockerenv", b"")]);
        let k8s = |name: &str| (name == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".to_owned());
        assert_eq!(
            detect_container_with(dir.path(), k8s),
            Some(ContainerRuntime::Kubernetes)
        );
        // detect_container with a fake root never reads the process environment.
        assert_eq!(detect_container(dir.path()), Some(ContainerRuntime::Docker));
    }

    #[test]
    fn pid1_environ_container_values() {
        for (value, expected) in [
            (&b"lxc"[..], ContainerRuntime::Lxc),
            (b"systemd-nspawn", ContainerRuntime::SystemdNspawn),
            (b"podman", ContainerRuntime::Podman),
            (b"docker", ContainerRuntime::Docker),
            (b"oci", ContainerRuntime::Other("oci".into())),
        ] {
            let mut environ = b"PATH=/bin\0container=".to_vec();
            environ.extend_from_slice(value);
            environ.extend_from_slice(b"\0HOME=/\0");
            assert_eq!(detect(&[("/proc/1/environ", &environ)]), Some(expected));
        }
        // The process's own `container` variable when PID 1's environment is unreadable.
        let dir = root_with(&[]);
        let own = |name: &str| (name == "container").then(|| "systemd-nspawn".to_owned());
        assert_eq!(
            detect_container_with(dir.path(), own),
            Some(ContainerRuntime::SystemdNspawn)
        );
    }

    #[test]
    fn run_systemd_container_file() {
        assert_eq!(
            detect(&[("/run/systemd/container", b"systemd-nspawn\n")]),
            Some(ContainerRuntime::SystemdNspawn)
        );
        assert_eq!(
            detect(&[("/run/systemd/container", b"lxc\n")]),
            Some(ContainerRuntime::Lxc)
        );
        assert_eq!(detect(&[("/run/systemd/container", b"\n")]), None);
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            detect(&[("/proc/1/cgroup", b"12:devices:/docker/0123abcd\n0::/\n")]),
            Some(ContainerRuntime::Docker)
        );
        assert_eq!(
            detect(&[(
                "/proc/1/cgroup",
                b"0::/system.slice/docker-0123abcd.scope\n"
            )]),
            Some(ContainerRuntime::Docker)
        );
        assert_eq!(
            detect(&[(
                "/proc/1/cgroup",
                b"0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-1.scope\n"
            )]),
            Some(ContainerRuntime::Kubernetes)
        );
        assert_eq!(
            detect(&[(
                "/proc/1/cgroup",
                b"11:memory:/kubepods/besteffort/pod1/abc\n"
            )]),
            Some(ContainerRuntime::Kubernetes)
        );
        assert_eq!(
            detect(&[("/proc/1/cgroup", b"5:cpu:/lxc/web1\n")]),
            Some(ContainerRuntime::Lxc)
        );
        assert_eq!(
            detect(&[("/proc/1/cgroup", b"0::/machine.slice/libpod-abc.scope\n")]),
            Some(ContainerRuntime::Podman)
        );
        // A kubepods cgroup wins over /.dockerenv: a pod run by dockershim is a pod.
        assert_eq!(
            detect(&[
                ("/.dockerenv", b""),
                ("/proc/1/cgroup", b"1:name=systemd:/kubepods/pod1/abc\n")
            ]),
            Some(ContainerRuntime::Kubernetes)
        );
    }

    #[test]
    fn wsl_kernel_release() {
        assert_eq!(
            detect(&[(
                "/proc/sys/kernel/osrelease",
                b"5.15.153.1-microsoft-standard-WSL2\n"
            )]),
            Some(ContainerRuntime::Wsl)
        );
        assert_eq!(
            detect(&[("/proc/sys/kernel/osrelease", b"4.4.0-19041-Microsoft\n")]),
            Some(ContainerRuntime::Wsl)
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        let dir = root_with(&[
            ("/proc/1/environ", b"\xff\0container=\xff\x1b\0"),
            ("/proc/1/cgroup", b"\xff:::\n::\n:\n"),
            ("/proc/sys/kernel/osrelease", b"\xff\xfe"),
        ]);
        assert_eq!(
            detect_container_with(dir.path(), no_env),
            Some(ContainerRuntime::Other("\u{fffd}?".into()))
        );
        // A directory where /proc/1/environ should be.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("proc/1/environ")).unwrap();
        assert_eq!(detect_container_with(dir.path(), no_env), None);
    }

    #[test]
    fn this_process_is_detected_without_panicking() {
        let a = detect_container(Path::new("/"));
        assert_eq!(detect_container(Path::new("/")), a);
        if Path::new("/.dockerenv").exists()
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
        {
            assert!(a.is_some());
        }
    }

    #[test]
    fn display_words() {
        assert_eq!(ContainerRuntime::Lxc.to_string(), "LXC");
        assert_eq!(
            ContainerRuntime::SystemdNspawn.to_string(),
            "systemd-nspawn"
        );
        assert_eq!(ContainerRuntime::Other("oci".into()).to_string(), "oci");
    }
}
