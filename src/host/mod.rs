//! The host layer: who and where the calling process runs.
//!
//! - [`Fingerprint`]: traits of the machine (machine id, DMI product UUID and serials, CPU,
//!   MAC addresses of physical NICs, root disk, memory), matched with a tolerance so that one
//!   changed part does not lock a customer out. The CPU and MACs come from the CPU and the
//!   kernel; the file-held traits are read through a guard that refuses a source covered by
//!   another mount ([`OverMount`]; `mounts.rs`).
//! - [`MachineKind`]: physical or virtual, from the CPUID hypervisor bit and vendor leaf and
//!   the DMI strings ([`detect_machine`]); [`ContainerRuntime`] from the marker files each
//!   runtime leaves ([`detect_container`]).
//! - [`SessionId`]: the login / SSH / remote-desktop session of the calling process.
//!
//! [`HostIdentity::detect`] gathers all of it; it is part of every seat request. Whatever
//! binds to the machine takes [`HostIdentity::trusted_fingerprint`], which refuses when
//! detection found an over-mounted source. Tests simulate several machines by building a
//! `HostIdentity` themselves (the fields are public, and [`HostIdentity::simulated`] makes a
//! deterministic one); the C ABI never lets an app choose its own host identity.
//!
//! Nothing here panics on odd input: missing files, non-UTF-8 bytes and empty values are
//! skipped or read lossily.

mod container;
mod fingerprint;
mod mounts;
mod read;
mod session;
pub mod tpm;
mod vm;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use container::{ContainerRuntime, detect_container, detect_container_with};
pub use fingerprint::{Fingerprint, Trait, TraitKind, is_placeholder};
pub use mounts::OverMount;
pub use session::{SessionId, SessionKind, pid_namespace, session_id};
pub use vm::{
    CpuidReading, DmiReading, Hypervisor, MachineKind, detect_machine, hypervisor_from_dmi,
    hypervisor_from_vendor_leaf, read_cpuid, read_dmi,
};

/// Everything the runtime knows about the host a process runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// The machine's fingerprint traits (raw; hash them before they leave the process).
    pub fingerprint: Fingerprint,
    /// Physical machine or virtual machine (and which hypervisor).
    pub machine: MachineKind,
    /// The container runtime the process runs in, if any.
    pub container: Option<ContainerRuntime>,
    /// The session of the process.
    pub session: SessionId,
    /// The host name (`gethostname`), lossily decoded; empty if unknown.
    pub hostname: String,
    /// Set by [`HostIdentity::detect`] when a fingerprint source is covered by another mount:
    /// the fingerprint is then empty and [`HostIdentity::trusted_fingerprint`] refuses.
    /// Never sent anywhere; an identity built by hand (tests, simulations) has none.
    #[serde(skip)]
    pub overmounted: Option<OverMount>,
    /// The machine's TPM 2.0, if it has one ([`tpm::TpmConfig::from_env`]): software
    /// containers made here are sealed to it and their state anchored in its NV counter.
    /// Never sent anywhere.
    #[serde(skip)]
    pub tpm: Option<tpm::TpmConfig>,
}

impl HostIdentity {
    /// Detects the identity of this machine and process: fingerprint, VM and container
    /// detection, session and host name. Never panics; what cannot be read is left out.
    pub fn detect() -> HostIdentity {
        let root = std::path::Path::new("/");
        let (fingerprint, overmounted) = match Fingerprint::collect_checked() {
            Ok(f) => (f, None),
            Err(e) => (Fingerprint::default(), Some(e)),
        };
        HostIdentity {
            fingerprint,
            overmounted,
            machine: detect_machine(&read_cpuid(), &read_dmi(root)),
            container: detect_container(root),
            session: session_id(),
            hostname: hostname(),
            tpm: tpm::TpmConfig::from_env(),
        }
    }

    /// A deterministic, made-up physical machine named `name`, for tests and simulations of
    /// several hosts: the same name always gives the same identity; different names share
    /// only the CPU trait (like a fleet of identical machines).
    pub fn simulated(name: &str) -> HostIdentity {
        let h = |label: &str| -> [u8; 32] {
            let mut hasher = Sha256::new();
            hasher.update(b"tessera simulated host\0");
            hasher.update(label.as_bytes());
            hasher.update([0]);
            hasher.update(name.as_bytes());
            hasher.finalize().into()
        };
        let id = h("machine-id");
        let uuid = hex::encode(&h("product-uuid")[..16]);
        let mac = h("mac");
        let traits = vec![
            Trait::new(TraitKind::MachineId, hex::encode(&id[..16])),
            Trait::new(
                TraitKind::ProductUuid,
                format!(
                    "{}-{}-{}-{}-{}",
                    &uuid[0..8],
                    &uuid[8..12],
                    &uuid[12..16],
                    &uuid[16..20],
                    &uuid[20..32]
                )
                .to_ascii_uppercase(),
            ),
            Trait::new(TraitKind::Cpu, "GenuineIntel|Simulated CPU|6|0|0"),
            Trait::new(
                TraitKind::Mac,
                // Locally administered, unicast.
                format!(
                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    (mac[0] & 0xfc) | 0x02,
                    mac[1],
                    mac[2],
                    mac[3],
                    mac[4],
                    mac[5]
                ),
            ),
            Trait::new(
                TraitKind::RootDisk,
                format!(
                    "serial:SIM-{}",
                    hex::encode(&h("disk")[..6]).to_ascii_uppercase()
                ),
            ),
        ];
        HostIdentity {
            fingerprint: Fingerprint::from_traits(traits),
            machine: MachineKind::Physical,
            container: None,
            session: SessionId {
                kind: SessionKind::ProcessGroup,
                id: "uid:1000/sid:1".into(),
            },
            hostname: name.to_owned(),
            overmounted: None,
            tpm: None,
        }
    }

    /// The fingerprint to bind a software container to, open one with, or put in an
    /// activation request: refused (`BindingMismatch`, naming the path) when detection found
    /// a fingerprint source covered by another mount (a bind mount of a fake
    /// `/etc/machine-id`, a tmpfs over `/sys/class/dmi/id`, also in a user namespace).
    pub fn trusted_fingerprint(&self) -> crate::Result<&Fingerprint> {
        match &self.overmounted {
            Some(e) => Err(crate::Error::BindingMismatch(e.to_string())),
            None => Ok(&self.fingerprint),
        }
    }

    /// Whether the host is a virtual machine.
    pub fn is_virtual(&self) -> bool {
        self.machine.is_virtual()
    }
}

impl fmt::Display for HostIdentity {
    /// A multi-line report. Trait values are shown only as the first 8 hex digits of their
    /// SHA-256, never raw.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hostname = read::printable(&self.hostname, 255);
        writeln!(
            f,
            "hostname:     {}",
            if hostname.is_empty() {
                "(unknown)"
            } else {
                &hostname
            }
        )?;
        writeln!(f, "machine:      {}", self.machine)?;
        match &self.container {
            Some(c) => writeln!(f, "container:    {c}")?,
            None => writeln!(f, "container:    none")?,
        }
        writeln!(f, "session:      {}", self.session)?;
        if let Some(e) = &self.overmounted {
            writeln!(f, "refused:      {e}")?;
        }
        let n = self.fingerprint.traits.len();
        write!(
            f,
            "fingerprint:  {n} trait{}",
            if n == 1 { "" } else { "s" }
        )?;
        for t in &self.fingerprint.traits {
            let digest = Sha256::digest(t.value.as_bytes());
            write!(
                f,
                "\n  {:<16}{}",
                t.kind.to_string(),
                hex::encode(digest.get(..4).unwrap_or_default())
            )?;
        }
        Ok(())
    }
}

/// The host name from `gethostname`, else `/proc/sys/kernel/hostname`; empty if neither is
/// readable. Lossily decoded.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the pointer and length describe `buf`; one byte is held back so the result
        // is NUL-terminated even when the name is truncated.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
        if rc == 0 {
            let name = buf.split(|&b| b == 0).next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_owned();
            if !name.is_empty() {
                return name;
            }
        }
    }
    read::read_trimmed(std::path::Path::new("/proc/sys/kernel/hostname")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_on_this_machine() {
        let a = HostIdentity::detect();
        let b = HostIdentity::detect();
        assert_eq!(a, b, "detection is stable");
        assert_eq!(a.is_virtual(), a.machine.is_virtual());
        if read_cpuid().hypervisor_bit {
            assert!(a.is_virtual());
        }
        assert!(!a.session.id.is_empty());
        let text = a.to_string();
        assert!(text.starts_with("hostname:     "));
        assert!(text.contains(&format!("machine:      {}", a.machine)));
        // Raw values never appear in the report.
        for t in &a.fingerprint.traits {
            if t.value.len() >= 8 {
                assert!(!text.contains(&t.value), "{:?} leaked", t.kind);
            }
        }
        assert_eq!(text.lines().count(), 5 + a.fingerprint.traits.len());
    }

    #[test]
    fn display_format() {
        let id = HostIdentity {
            fingerprint: Fingerprint::from_traits(vec![
                Trait::new(TraitKind::MachineId, "abc"),
                Trait::new(TraitKind::Cpu, "GenuineIntel|X|6|1|1"),
            ]),
            machine: MachineKind::Virtual(Hypervisor::Kvm),
            container: Some(ContainerRuntime::Docker),
            session: SessionId {
                kind: SessionKind::ProcessGroup,
                id: "uid:0/sid:123".into(),
            },
            hostname: "box1".into(),
            overmounted: None,
            tpm: None,
        };
        let abc = hex::encode(&Sha256::digest(b"abc")[..4]);
        assert_eq!(abc, "ba7816bf");
        let cpu = hex::encode(&Sha256::digest(b"GenuineIntel|X|6|1|1")[..4]);
        assert_eq!(
            id.to_string(),
            format!(
                "hostname:     box1\n\
                 machine:      virtual machine (KVM)\n\
                 container:    Docker\n\
                 session:      process group sid:123 (uid 0)\n\
                 fingerprint:  2 traits\n  \
                 machine id      {abc}\n  \
                 cpu             {cpu}"
            )
        );
        let bare = HostIdentity {
            fingerprint: Fingerprint::default(),
            machine: MachineKind::Physical,
            container: None,
            hostname: "\u{1b}]0;x".into(),
            ..id
        };
        let text = bare.to_string();
        assert!(text.contains("machine:      physical machine\n"));
        assert!(text.contains("container:    none\n"));
        assert!(text.starts_with("hostname:     ?]0;x\n"));
        assert!(text.ends_with("fingerprint:  0 traits"));
    }

    #[test]
    fn simulated_hosts_are_deterministic_and_distinct() {
        let a = HostIdentity::simulated("alpha");
        assert_eq!(a, HostIdentity::simulated("alpha"));
        let b = HostIdentity::simulated("beta");
        assert_eq!(a.fingerprint.len(), 5);
        assert_eq!(a.fingerprint.matching(&a.fingerprint), 5);
        // Only the CPU model is shared (a fleet of identical machines).
        assert_eq!(a.fingerprint.matching(&b.fingerprint), 1);
        assert!(!a.is_virtual());
        assert_eq!(a.hostname, "alpha");
        let mac = &a.fingerprint.of_kind(TraitKind::Mac).next().unwrap().value;
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "locally administered unicast: {mac}");
    }

    #[test]
    fn serde_round_trip() {
        let a = HostIdentity::simulated("alpha");
        let bytes = postcard::to_allocvec(&a).unwrap();
        let back: HostIdentity = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a, back);
    }

    #[test]
    fn hostname_is_readable() {
        let h = hostname();
        assert_eq!(h, hostname());
        if let Some(proc_name) =
            read::read_trimmed(std::path::Path::new("/proc/sys/kernel/hostname"))
        {
            assert_eq!(h, proc_name);
        }
    }
}
