//! The session id: which login, SSH connection or remote-desktop session the calling process
//! belongs to, so that per-session licenses count one seat per session.
//!
//! Every id starts with the user (`uid:<uid>/`) and a kernel-assigned part (the audit login
//! session `login:<n>`, else the POSIX session `sid:<pid namespace>:<n>`: a `getsid` number
//! means something only within its PID namespace, and `unshare -pf` numbers sessions from 1
//! again, so the namespace is part of it); what comes from the environment
//! (`SSH_CONNECTION`, `XRDP_SESSION`, `DISPLAY`) is only appended. Environment variables can
//! be set by anyone, so they may split one session into several ids but can never make two
//! sessions (or two users) share one.

use serde::{Deserialize, Serialize};

use super::read::{printable, read_trimmed};

/// What kind of session a [`SessionId`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionKind {
    /// A login session with a kernel audit session id (`/proc/self/sessionid`).
    Login,
    /// A session started over SSH (`SSH_CONNECTION` / `SSH_CLIENT`).
    Ssh,
    /// A remote desktop: xrdp (`XRDP_SESSION`) or an X display on another host.
    Remote,
    /// No login session known: the POSIX session (`getsid(0)`) of the process.
    ProcessGroup,
}

impl std::fmt::Display for SessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionKind::Login => "login session",
            SessionKind::Ssh => "SSH session",
            SessionKind::Remote => "remote desktop session",
            SessionKind::ProcessGroup => "process group",
        })
    }
}

/// The session of the calling process: its kind and an id string
/// `uid:<uid>/<login:<n> | sid:<pidns>:<n> | pid:<pidns>:<n>>[/ssh:<client>:<port> | /xrdp:<s> | /display:<d>]`,
/// where `<pidns>` is the [`pid_namespace`] the numbers belong to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId {
    /// What kind of session this is.
    pub kind: SessionKind,
    /// The id, unique per user and session on one machine.
    pub id: String,
}

impl SessionId {
    /// The user id the session belongs to, parsed from the `uid:<uid>/` prefix.
    pub fn uid(&self) -> Option<u32> {
        self.id
            .strip_prefix("uid:")?
            .split('/')
            .next()?
            .parse()
            .ok()
    }
}

impl std::fmt::Display for SessionId {
    /// "process group sid:123 (uid 0)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = printable(&self.id, 256);
        match (self.uid(), id.split_once('/')) {
            (Some(uid), Some((_, rest))) => write!(f, "{} {rest} (uid {uid})", self.kind),
            _ => write!(f, "{} {id}", self.kind),
        }
    }
}

/// The session of the calling process (see the module documentation for the format).
pub fn session_id() -> SessionId {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.trim().is_empty())
    };
    compose(&SessionInputs {
        uid: current_uid(),
        audit_session: read_trimmed(std::path::Path::new("/proc/self/sessionid"))
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&n| n != u32::MAX),
        posix_session: posix_session(),
        pid: std::process::id(),
        pid_namespace: pid_namespace(),
        ssh: var("SSH_CONNECTION").or_else(|| var("SSH_CLIENT")),
        xrdp: var("XRDP_SESSION"),
        display: var("DISPLAY"),
        hostname: super::hostname(),
    })
}

/// The PID namespace of the calling process: the inode number of `/proc/self/ns/pid` (the
/// namespace's identity, unique among the namespaces alive on this machine), or 0 when it
/// cannot be read. A pid (and a `getsid` session id) means something only within its PID
/// namespace: processes started with `unshare -pf` each see themselves as pid 1, so every
/// per-process or per-session identity carries this number beside the pid.
pub fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Everything [`session_id`] reads, so the composition can be tested with canned inputs.
#[derive(Clone, Debug, Default)]
struct SessionInputs {
    uid: u32,
    /// `/proc/self/sessionid`, when set (not 4294967295).
    audit_session: Option<u32>,
    /// `getsid(0)`, when it succeeded.
    posix_session: Option<u32>,
    pid: u32,
    /// [`pid_namespace`]: where `posix_session` and `pid` are numbered.
    pid_namespace: u64,
    /// `SSH_CONNECTION` ("client port server port") or `SSH_CLIENT` ("client port port").
    ssh: Option<String>,
    xrdp: Option<String>,
    display: Option<String>,
    hostname: String,
}

fn compose(inputs: &SessionInputs) -> SessionId {
    let kernel = match (inputs.audit_session, inputs.posix_session) {
        (Some(n), _) => format!("login:{n}"),
        (None, Some(n)) => format!("sid:{}:{n}", inputs.pid_namespace),
        (None, None) => format!("pid:{}:{}", inputs.pid_namespace, inputs.pid),
    };
    let base = format!("uid:{}/{kernel}", inputs.uid);
    let clean = |s: &str| printable(s.trim(), 128);

    if let Some(xrdp) = &inputs.xrdp {
        return SessionId {
            kind: SessionKind::Remote,
            id: format!("{base}/xrdp:{}", clean(xrdp)),
        };
    }
    if let Some(display) = &inputs.display
        && is_remote_display(display, &inputs.hostname)
    {
        return SessionId {
            kind: SessionKind::Remote,
            id: format!("{base}/display:{}", clean(display)),
        };
    }
    if let Some(ssh) = &inputs.ssh {
        let mut parts = ssh.split_whitespace();
        let client = match (parts.next(), parts.next()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => String::new(),
        };
        return SessionId {
            kind: SessionKind::Ssh,
            id: format!("{base}/ssh:{}", clean(&client)),
        };
    }
    SessionId {
        kind: if inputs.audit_session.is_some() {
            SessionKind::Login
        } else {
            SessionKind::ProcessGroup
        },
        id: base,
    }
}

/// Whether an X `DISPLAY` ("[host]:display[.screen]") names another host. Local: no host,
/// `unix`, `localhost`, a loopback address, this host's name, or a socket path (macOS).
fn is_remote_display(display: &str, hostname: &str) -> bool {
    let display = display.trim();
    if display.starts_with('/') {
        return false;
    }
    let Some((host, _)) = display.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix("/unix").unwrap_or(host);
    let local = host.is_empty()
        || host == "unix"
        || host.eq_ignore_ascii_case("localhost")
        || host.starts_with("127.")
        || host == "::1"
        || host == ":" // "::0" is the IPv6 form of ":0"
        || (!hostname.is_empty() && host.eq_ignore_ascii_case(hostname));
    !local
}

fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: getuid takes no arguments, cannot fail and touches no memory of ours.
        unsafe { libc::getuid() }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

fn posix_session() -> Option<u32> {
    #[cfg(unix)]
    {
        // SAFETY: getsid(0) only reads the calling process's session id; it returns -1 on
        // error and touches no memory of ours.
        let sid = unsafe { libc::getsid(0) };
        u32::try_from(sid).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_namespace_is_the_inode_of_the_namespace_link() {
        use std::os::unix::fs::MetadataExt;
        let ns = pid_namespace();
        assert_ne!(ns, 0, "Linux always has /proc/self/ns/pid");
        assert_eq!(ns, std::fs::metadata("/proc/self/ns/pid").unwrap().ino());
        // A process in another PID namespace sees another inode.
        let out = std::process::Command::new("unshare")
            .args([
                "-pf",
                "--mount-proc",
                "stat",
                "-L",
                "-c",
                "%i",
                "/proc/self/ns/pid",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            let other: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            assert_ne!(other, ns);
        }
    }

    fn inputs() -> SessionInputs {
        SessionInputs {
            uid: 1000,
            audit_session: None,
            posix_session: Some(4242),
            pid: 4300,
            pid_namespace: 4026531836,
            hostname: "box1".into(),
            ..SessionInputs::default()
        }
    }

    #[test]
    fn fallback_is_the_posix_session() {
        let id = compose(&inputs());
        assert_eq!(
            id,
            SessionId {
                kind: SessionKind::ProcessGroup,
                id: "uid:1000/sid:4026531836:4242".into()
            }
        );
        assert_eq!(id.uid(), Some(1000));
        assert_eq!(
            id.to_string(),
            "process group sid:4026531836:4242 (uid 1000)"
        );
        let no_sid = SessionInputs {
            posix_session: None,
            ..inputs()
        };
        assert_eq!(compose(&no_sid).id, "uid:1000/pid:4026531836:4300");
        // The same numbers in another PID namespace are another session.
        let other_ns = SessionInputs {
            pid_namespace: 4026532000,
            ..inputs()
        };
        assert_ne!(compose(&other_ns).id, id.id);
        assert_eq!(compose(&other_ns).id, "uid:1000/sid:4026532000:4242");
    }

    #[test]
    fn audit_session_is_a_login() {
        let i = SessionInputs {
            audit_session: Some(7),
            ..inputs()
        };
        assert_eq!(
            compose(&i),
            SessionId {
                kind: SessionKind::Login,
                id: "uid:1000/login:7".into()
            }
        );
    }

    #[test]
    fn ssh_session() {
        let i = SessionInputs {
            audit_session: Some(7),
            ssh: Some("10.0.0.5 51234 10.0.0.1 22".into()),
            ..inputs()
        };
        let id = compose(&i);
        assert_eq!(id.kind, SessionKind::Ssh);
        assert_eq!(id.id, "uid:1000/login:7/ssh:10.0.0.5:51234");
        // SSH_CLIENT has the same first two fields.
        let i = SessionInputs {
            ssh: Some("10.0.0.5 51234 22".into()),
            ..inputs()
        };
        assert_eq!(
            compose(&i).id,
            "uid:1000/sid:4026531836:4242/ssh:10.0.0.5:51234"
        );
    }

    #[test]
    fn remote_desktop_sessions() {
        let xrdp = SessionInputs {
            xrdp: Some("12".into()),
            display: Some(":10.0".into()),
            ssh: Some("10.0.0.5 51234 10.0.0.1 22".into()),
            ..inputs()
        };
        let id = compose(&xrdp);
        assert_eq!(id.kind, SessionKind::Remote);
        assert_eq!(id.id, "uid:1000/sid:4026531836:4242/xrdp:12");

        let x = SessionInputs {
            display: Some("workstation7.example.com:0.0".into()),
            ..inputs()
        };
        let id = compose(&x);
        assert_eq!(id.kind, SessionKind::Remote);
        assert_eq!(
            id.id,
            "uid:1000/sid:4026531836:4242/display:workstation7.example.com:0.0"
        );
    }

    #[test]
    fn local_displays_are_not_remote() {
        for d in [
            ":0",
            ":1.0",
            "unix:0",
            "localhost:10.0",
            "127.0.0.1:0",
            "[::1]:0",
            "::0",
            "box1:0",
            "/private/tmp/com.apple.launchd.abc/org.xquartz:0",
            "garbage",
            "",
        ] {
            assert!(!is_remote_display(d, "box1"), "{d:?}");
        }
        assert!(is_remote_display("10.1.2.3:0", "box1"));
        assert!(is_remote_display("other:0", "box1"));
        assert!(is_remote_display("other:0", ""));
    }

    #[test]
    fn different_users_never_share_an_id() {
        let a = compose(&inputs());
        let b = compose(&SessionInputs {
            uid: 1001,
            ..inputs()
        });
        assert_ne!(a, b);
        // Forged environment can only add to the kernel part, never replace it.
        let forged = compose(&SessionInputs {
            uid: 1001,
            ssh: Some("x/uid:1000/sid:4242".into()),
            ..inputs()
        });
        assert!(forged.id.starts_with("uid:1001/sid:4026531836:4242/"));
        assert_ne!(forged.id, a.id);
    }

    #[test]
    fn hostile_environment_is_sanitized() {
        let id = compose(&SessionInputs {
            xrdp: Some("a\u{1b}[2J\nb".into()),
            ..inputs()
        });
        assert_eq!(id.id, "uid:1000/sid:4026531836:4242/xrdp:a?[2J?b");
        let empty_ssh = compose(&SessionInputs {
            ssh: Some(String::new()),
            ..inputs()
        });
        assert_eq!(empty_ssh.id, "uid:1000/sid:4026531836:4242/ssh:");
    }

    #[test]
    fn uid_parse_and_display_of_odd_ids() {
        let odd = SessionId {
            kind: SessionKind::Login,
            id: "weird".into(),
        };
        assert_eq!(odd.uid(), None);
        assert_eq!(odd.to_string(), "login session weird");
        let empty = SessionId {
            kind: SessionKind::ProcessGroup,
            id: String::new(),
        };
        assert_eq!(empty.uid(), None);
        assert_eq!(empty.to_string(), "process group ");
    }

    #[test]
    fn session_id_of_this_process_is_stable() {
        let a = session_id();
        let b = session_id();
        assert_eq!(a, b);
        assert!(!a.id.is_empty());
        assert_eq!(a.uid(), Some(current_uid()));
        if read_trimmed(std::path::Path::new("/proc/self/sessionid")).as_deref()
            == Some("4294967295")
            && std::env::var_os("SSH_CONNECTION").is_none()
            && std::env::var_os("SSH_CLIENT").is_none()
            && std::env::var_os("XRDP_SESSION").is_none()
            && std::env::var_os("DISPLAY").is_none()
        {
            assert_eq!(a.kind, SessionKind::ProcessGroup);
            assert!(
                a.id.contains(&format!("/sid:{}:", pid_namespace())),
                "{a:?}"
            );
        }
    }
}
