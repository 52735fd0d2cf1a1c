//! The machine fingerprint: a handful of traits (machine id, DMI product UUID and serials, CPU,
//! MAC addresses of physical NICs, root disk, installed memory) read from the running system.
//!
//! [`Fingerprint::collect_checked`] reads the real machine from sources a mount cannot fake
//! where Linux has them: the CPU from the CPUID instruction, the MAC addresses from the
//! kernel (`getifaddrs` and the `ethtool` ioctl, which gives each NIC's permanent address and
//! tells a NIC on a bus from a virtual interface). The traits only files hold (machine id,
//! DMI, root disk, memory) are read through the mount guard (`super::mounts`): a trait file
//! or a directory on its path covered by another mount refuses the whole fingerprint with an
//! [`OverMount`] naming the path. [`Fingerprint::collect_from`] reads a fake root from files
//! only, for tests.
//!
//! Traits are kept raw here; what leaves the machine are their salted digests
//! ([`Fingerprint::digests`]). A license binds to a set of traits and is matched with a
//! tolerance ([`Fingerprint::matching`]) so that one changed part does not lock a customer out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mounts::{Anchor, Guard, OverMount};
use super::read::{base_name, dir_names, read_bytes, read_trimmed, under};

/// What a [`Trait`] describes. The order of the variants is the sort order of a
/// [`Fingerprint`]; new kinds are added at the end (files and activation requests carry the
/// variant's position).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TraitKind {
    /// The systemd / D-Bus machine id (`/etc/machine-id`).
    MachineId,
    /// The SMBIOS system UUID (`/sys/class/dmi/id/product_uuid`).
    ProductUuid,
    /// The SMBIOS base board serial number.
    BoardSerial,
    /// The SMBIOS system serial number.
    ProductSerial,
    /// The CPU: vendor, model name, family, model and stepping of the first processor.
    Cpu,
    /// The MAC address of one physical network interface (its permanent address).
    Mac,
    /// The disk holding the root file system: its serial, else its file-system UUID, else its
    /// device number and size.
    RootDisk,
    /// The installed memory: the memory blocks the kernel lists, in MiB.
    Memory,
}

impl TraitKind {
    /// Every kind, in sort order.
    pub const ALL: [TraitKind; 8] = [
        TraitKind::MachineId,
        TraitKind::ProductUuid,
        TraitKind::BoardSerial,
        TraitKind::ProductSerial,
        TraitKind::Cpu,
        TraitKind::Mac,
        TraitKind::RootDisk,
        TraitKind::Memory,
    ];

    /// The one-byte tag hashed in front of a trait's value by [`Fingerprint::digests`].
    /// These numbers are part of the license format: they never change and are never reused.
    pub const fn code(self) -> u8 {
        match self {
            TraitKind::MachineId => 1,
            TraitKind::ProductUuid => 2,
            TraitKind::BoardSerial => 3,
            TraitKind::ProductSerial => 4,
            TraitKind::Cpu => 5,
            TraitKind::Mac => 6,
            TraitKind::RootDisk => 7,
            TraitKind::Memory => 8,
        }
    }

    /// The kind with tag `code`, if any.
    pub fn from_code(code: u8) -> Option<TraitKind> {
        TraitKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl std::fmt::Display for TraitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraitKind::MachineId => "machine id",
            TraitKind::ProductUuid => "product uuid",
            TraitKind::BoardSerial => "board serial",
            TraitKind::ProductSerial => "product serial",
            TraitKind::Cpu => "cpu",
            TraitKind::Mac => "mac address",
            TraitKind::RootDisk => "root disk",
            TraitKind::Memory => "memory",
        })
    }
}

/// One fingerprint trait: its kind and its value as read from the machine (trimmed; MAC
/// addresses lowercased). Values may identify the machine or its owner: hash them
/// ([`Fingerprint::digests`]) before they leave the process.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Trait {
    /// What the value describes.
    pub kind: TraitKind,
    /// The raw value.
    pub value: String,
}

impl Trait {
    /// A trait of `kind` with `value`.
    pub fn new(kind: TraitKind, value: impl Into<String>) -> Trait {
        Trait {
            kind,
            value: value.into(),
        }
    }

    /// SHA-256 of `salt || kind.code() || value`.
    pub fn digest(&self, salt: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update([self.kind.code()]);
        hasher.update(self.value.as_bytes());
        hasher.finalize().into()
    }
}

/// The set of traits that identifies a machine, sorted by (kind, value) and without
/// duplicates (when built by [`Fingerprint::collect`], [`Fingerprint::collect_from`] or
/// [`Fingerprint::from_traits`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Fingerprint {
    /// The traits, sorted by (kind, value), deduplicated.
    pub traits: Vec<Trait>,
}

impl Fingerprint {
    /// Reads the fingerprint of this machine, or refuses when a trait's source is covered by
    /// another mount (a bind mount over `/etc/machine-id`, a tmpfs over `/sys/class/dmi/id`,
    /// `/sys` that is not sysfs, a `chroot`): the error names the path. Skips every trait it
    /// cannot read (a container without `/sys`, an unprivileged user, a VM without DMI).
    /// Never panics.
    pub fn collect_checked() -> Result<Fingerprint, OverMount> {
        let guard = Guard::new()?;
        let src = Real(&guard);
        let mut traits = file_traits(&src)?;
        if let Some(cpu) = cpu_from_cpuid() {
            traits.push(Trait::new(TraitKind::Cpu, cpu));
        } else if let Some(text) = src.read_bytes(Path::new("/proc/cpuinfo"))? {
            traits.extend(cpu_from_cpuinfo(&text).map(|c| Trait::new(TraitKind::Cpu, c)));
        }
        for mac in kernel_macs() {
            traits.push(Trait::new(TraitKind::Mac, mac));
        }
        Ok(Fingerprint::from_traits(traits))
    }

    /// Like [`Fingerprint::collect_checked`], but an over-mounted source gives an empty
    /// fingerprint (which opens nothing) instead of an error.
    pub fn collect() -> Fingerprint {
        Fingerprint::collect_checked().unwrap_or_default()
    }

    /// Reads every trait from files under `root` (`root/etc/machine-id`,
    /// `root/sys/class/...`, `root/proc/cpuinfo`, `root/proc/self/mountinfo`, ...), the CPU
    /// from `/proc/cpuinfo` and the MACs from `/sys/class/net`, without the mount guard.
    /// Tests build a fake root to simulate machines.
    pub fn collect_from(root: &Path) -> Fingerprint {
        let src = FakeRoot(root);
        let Ok(mut traits) = file_traits(&src);
        if let Ok(Some(text)) = src.read_bytes(Path::new("/proc/cpuinfo")) {
            traits.extend(cpu_from_cpuinfo(&text).map(|c| Trait::new(TraitKind::Cpu, c)));
        }
        for mac in physical_macs(root) {
            traits.push(Trait::new(TraitKind::Mac, mac));
        }
        Fingerprint::from_traits(traits)
    }

    /// A fingerprint of `traits`, sorted by (kind, value) and deduplicated.
    pub fn from_traits(mut traits: Vec<Trait>) -> Fingerprint {
        traits.sort();
        traits.dedup();
        Fingerprint { traits }
    }

    /// SHA-256 of (`salt` || kind tag || value) for each trait, in the order of `traits`. The
    /// kind tag is the single byte [`TraitKind::code`], so no two kinds can collide.
    pub fn digests(&self, salt: &[u8]) -> Vec<(TraitKind, [u8; 32])> {
        self.traits
            .iter()
            .map(|t| (t.kind, t.digest(salt)))
            .collect()
    }

    /// How many traits of `self` also appear (same kind and value) in `other`. Each trait of
    /// `self` counts once, so `a.matching(&a)` is the number of distinct traits of `a`.
    pub fn matching(&self, other: &Fingerprint) -> usize {
        let mut seen: Vec<&Trait> = Vec::with_capacity(self.traits.len());
        self.traits
            .iter()
            .filter(|t| {
                if seen.contains(t) {
                    return false;
                }
                seen.push(t);
                other.traits.contains(t)
            })
            .count()
    }

    /// The traits of one kind.
    pub fn of_kind(&self, kind: TraitKind) -> impl Iterator<Item = &Trait> {
        self.traits.iter().filter(move |t| t.kind == kind)
    }

    /// Number of traits.
    pub fn len(&self) -> usize {
        self.traits.len()
    }

    /// Whether no trait could be read.
    pub fn is_empty(&self) -> bool {
        self.traits.is_empty()
    }
}

/// Where the file-held traits are read from: the real machine through the mount guard, or a
/// fake root in tests. Paths are absolute as on a real machine (`/sys/class/dmi/id/...`).
trait Source {
    /// The error of a refused read.
    type Refusal;
    /// A small text file, trimmed; `None` when missing, unreadable or empty.
    fn read_trimmed(&self, path: &Path) -> Result<Option<String>, Self::Refusal>;
    /// A small file's bytes.
    fn read_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>, Self::Refusal>;
    /// A symbolic link's target.
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, Self::Refusal>;
    /// Whether the path exists.
    fn exists(&self, path: &Path) -> Result<bool, Self::Refusal>;
    /// The sorted names in a directory.
    fn dir_names(&self, path: &Path) -> Result<Vec<String>, Self::Refusal>;
    /// The mount of the process's root: (major:minor, source).
    fn root_mount(&self) -> Result<Option<(String, String)>, Self::Refusal> {
        let Some(bytes) = self.read_bytes(Path::new("/proc/self/mountinfo"))? else {
            return Ok(None);
        };
        Ok(root_mount(&String::from_utf8_lossy(&bytes)))
    }
}

/// The running machine's files, each checked against the mount it must be on.
struct Real<'a>(&'a Guard);

/// The mount a real source path must live on.
fn anchor_of(path: &Path) -> Anchor {
    if path.starts_with("/sys") {
        Anchor::Sys
    } else if path.starts_with("/proc") {
        Anchor::Proc
    } else if path.starts_with("/dev") {
        Anchor::Dev
    } else {
        Anchor::Root
    }
}

impl Source for Real<'_> {
    type Refusal = OverMount;
    fn read_trimmed(&self, path: &Path) -> Result<Option<String>, OverMount> {
        self.0.read_trimmed(path, anchor_of(path))
    }
    fn read_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>, OverMount> {
        Ok(self
            .0
            .read_trimmed(path, anchor_of(path))?
            .map(String::into_bytes))
    }
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, OverMount> {
        self.0.read_link(path, anchor_of(path))
    }
    fn exists(&self, path: &Path) -> Result<bool, OverMount> {
        self.0.exists(path, anchor_of(path))
    }
    fn dir_names(&self, path: &Path) -> Result<Vec<String>, OverMount> {
        self.0.dir_names(path, anchor_of(path))
    }
    fn root_mount(&self) -> Result<Option<(String, String)>, OverMount> {
        // The mount the kernel says "/" is on, not whichever line mountinfo lists last.
        Ok(self
            .0
            .root_entry()?
            .map(|m| (m.majmin.clone(), m.source.clone())))
    }
}

/// A fake root: every path is read under it, nothing is refused.
struct FakeRoot<'a>(&'a Path);

impl FakeRoot<'_> {
    fn at(&self, path: &Path) -> PathBuf {
        under(self.0, &path.to_string_lossy())
    }
}

impl Source for FakeRoot<'_> {
    type Refusal = std::convert::Infallible;
    fn read_trimmed(&self, path: &Path) -> Result<Option<String>, Self::Refusal> {
        Ok(read_trimmed(&self.at(path)))
    }
    fn read_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>, Self::Refusal> {
        Ok(read_bytes(&self.at(path)))
    }
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>, Self::Refusal> {
        Ok(std::fs::read_link(self.at(path)).ok())
    }
    fn exists(&self, path: &Path) -> Result<bool, Self::Refusal> {
        Ok(std::fs::symlink_metadata(self.at(path)).is_ok())
    }
    fn dir_names(&self, path: &Path) -> Result<Vec<String>, Self::Refusal> {
        Ok(dir_names(&self.at(path)))
    }
}

/// The traits only files hold: machine id, DMI, root disk, memory.
fn file_traits<S: Source>(src: &S) -> Result<Vec<Trait>, S::Refusal> {
    let mut traits = Vec::new();
    if let Some(id) = machine_id(src)? {
        traits.push(Trait::new(TraitKind::MachineId, id));
    }
    for (kind, file) in [
        (TraitKind::ProductUuid, "product_uuid"),
        (TraitKind::BoardSerial, "board_serial"),
        (TraitKind::ProductSerial, "product_serial"),
    ] {
        let path = Path::new("/sys/class/dmi/id").join(file);
        if let Some(value) = src.read_trimmed(&path)?.filter(|v| !is_placeholder(v)) {
            traits.push(Trait::new(kind, value));
        }
    }
    if let Some(disk) = root_disk(src)? {
        traits.push(Trait::new(TraitKind::RootDisk, disk));
    }
    if let Some(memory) = memory(src)? {
        traits.push(Trait::new(TraitKind::Memory, memory));
    }
    Ok(traits)
}

/// Whether a DMI or disk value is one of the placeholders firmware writes instead of a real
/// serial ("To be filled by O.E.M.", "Not Specified", all zeros, an all-F UUID, ...).
pub fn is_placeholder(value: &str) -> bool {
    const PLACEHOLDERS: &[&str] = &[
        "to be filled by o.e.m.",
        "to be filled by oem",
        "not specified",
        "not applicable",
        "not available",
        "not present",
        "default string",
        "system serial number",
        "system product name",
        "chassis serial number",
        "base board serial number",
        "serial number",
        "none",
        "n/a",
        "na",
        "unknown",
        "invalid",
        "empty",
        "oem",
        "o.e.m.",
        "0123456789",
        "123456789",
        "1234567890",
        "xxxxxxxxxxxx",
    ];
    let v = value.trim();
    if v.is_empty() {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    if PLACEHOLDERS.contains(&lower.as_str()) {
        return true;
    }
    // All zeros (any length: "0", "00000000", "00000000-0000-0000-0000-000000000000"), or all
    // F when long enough to be a filler ("FFFFFFFF-FFFF-...").
    let digits: Vec<char> = lower
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | ':' | '.'))
        .collect();
    if digits.is_empty() {
        return true;
    }
    digits.iter().all(|&c| c == '0') || (digits.len() >= 8 && digits.iter().all(|&c| c == 'f'))
}

/// `/etc/machine-id`, else `/var/lib/dbus/machine-id`; skipping empty, "uninitialized" and
/// all-zero ids.
fn machine_id<S: Source>(src: &S) -> Result<Option<String>, S::Refusal> {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Some(id) = src.read_trimmed(Path::new(p))?
            && id != "uninitialized"
            && !is_placeholder(&id)
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The CPU trait from the first processor block of `/proc/cpuinfo`:
/// `vendor|model name|family|model|stepping` on x86; on other architectures the
/// implementer / architecture / variant / part / revision fields.
fn cpu_from_cpuinfo(bytes: &[u8]) -> Option<String> {
    const X86: [&str; 5] = ["vendor_id", "model name", "cpu family", "model", "stepping"];
    const ARM: [&str; 5] = [
        "CPU implementer",
        "CPU architecture",
        "CPU variant",
        "CPU part",
        "CPU revision",
    ];
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            // The blank line ends the first processor's block on x86; ARM puts the CPU
            // fields after the per-processor blocks, so only stop once something was found.
            if fields
                .iter()
                .any(|(k, _)| X86.contains(&k.as_str()) || ARM.contains(&k.as_str()))
            {
                break;
            }
            continue;
        }
        if let Some((key, value)) = text.split_once(':') {
            let key = key.trim().to_owned();
            if !fields.iter().any(|(k, _)| *k == key) {
                let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                fields.push((key, value));
            }
        }
    }
    let pick = |keys: &[&str]| -> Option<String> {
        let values: Vec<&str> = keys
            .iter()
            .map(|k| {
                fields
                    .iter()
                    .find(|(key, _)| key == k)
                    .map_or("", |(_, v)| v.as_str())
            })
            .collect();
        if values.iter().all(|v| v.is_empty()) {
            None
        } else {
            Some(values.join("|"))
        }
    };
    pick(&X86).or_else(|| pick(&ARM))
}

/// The CPU trait from the CPUID instruction, in the form Linux prints in `/proc/cpuinfo`
/// (so containers made from cpuinfo keep opening): `vendor|brand string|family|model|
/// stepping`, family and model with their extended parts as the kernel computes them. `None`
/// off x86-64.
fn cpu_from_cpuid() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__cpuid;
        let regs = |leaf: u32| {
            // SAFETY: CPUID exists on every x86-64 CPU and has no side effects; leaves past
            // the maximum return harmless values. (`__cpuid` is safe in newer Rust.)
            #[allow(unused_unsafe)]
            let r = unsafe { __cpuid(leaf) };
            r
        };
        let l0 = regs(0);
        let mut vendor = Vec::with_capacity(12);
        for reg in [l0.ebx, l0.edx, l0.ecx] {
            vendor.extend_from_slice(&reg.to_le_bytes());
        }
        let vendor = String::from_utf8_lossy(&vendor)
            .trim_matches('\0')
            .trim()
            .to_owned();
        let sig = if l0.eax >= 1 { regs(1).eax } else { 0 };
        let mut family = (sig >> 8) & 0xf;
        if family == 0xf {
            family += (sig >> 20) & 0xff;
        }
        let mut model = (sig >> 4) & 0xf;
        if family >= 6 {
            model += ((sig >> 16) & 0xf) << 4;
        }
        let stepping = sig & 0xf;
        let mut brand = Vec::with_capacity(48);
        if regs(0x8000_0000).eax >= 0x8000_0004 {
            for leaf in 0x8000_0002..=0x8000_0004 {
                let r = regs(leaf);
                for reg in [r.eax, r.ebx, r.ecx, r.edx] {
                    brand.extend_from_slice(&reg.to_le_bytes());
                }
            }
        }
        let brand = String::from_utf8_lossy(&brand).replace('\0', " ");
        let brand = brand.split_whitespace().collect::<Vec<_>>().join(" ");
        if vendor.is_empty() && sig == 0 {
            return None;
        }
        Some(format!("{vendor}|{brand}|{family}|{model}|{stepping}"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// MAC addresses of the interfaces in `/sys/class/net` that have a `device` link (a real or
/// paravirtual NIC: not `lo`, veth, bridges, ifb, tun, `docker0`), lowercased, skipping
/// all-zero and broadcast addresses. For fake roots; the real machine asks the kernel
/// ([`kernel_macs`]).
fn physical_macs(root: &Path) -> Vec<String> {
    let net = under(root, "/sys/class/net");
    let mut macs = Vec::new();
    for name in dir_names(&net) {
        let iface = net.join(&name);
        if std::fs::symlink_metadata(iface.join("device")).is_err() {
            continue;
        }
        let Some(mac) = read_trimmed(&iface.join("address")) else {
            continue;
        };
        let mac = mac.to_ascii_lowercase();
        let well_formed =
            mac.contains(':') && mac.chars().all(|c| c == ':' || c.is_ascii_hexdigit());
        if well_formed && usable_mac(&mac) {
            macs.push(mac);
        }
    }
    macs
}

/// Whether a lowercase `aa:bb:..` address is neither all zeros nor broadcast.
fn usable_mac(mac: &str) -> bool {
    let hex: Vec<char> = mac.chars().filter(|&c| c != ':').collect();
    !hex.is_empty() && !hex.iter().all(|&c| c == '0') && !hex.iter().all(|&c| c == 'f')
}

/// `aa:bb:cc:..` of `bytes`.
fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC addresses of this network namespace's physical NICs, from the kernel: the link
/// addresses `getifaddrs` lists (`AF_PACKET`), of the interfaces the `ethtool` ioctl places
/// on a bus (a NIC has a parent device; `lo`, veth, bridges, tun, dummies do not), each as
/// the NIC's permanent address (`ETHTOOL_GPERMADDR`, which `ip link set address` does not
/// change), else its current one. Nothing here reads a file.
fn kernel_macs() -> Vec<String> {
    let mut macs = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `ifap`; it is freed below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return macs;
    }
    // SAFETY: plain socket creation; the descriptor is owned (and closed) by `sock`.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let sock = (sock >= 0).then(|| {
        // SAFETY: `sock` is a fresh descriptor nobody else owns.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) }
    });
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points at a sockaddr of at least its family's size.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_PACKET {
            continue;
        }
        // SAFETY: AF_PACKET entries carry a sockaddr_ll.
        let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
        let len = usize::from(ll.sll_halen);
        if len == 0 || len > ll.sll_addr.len() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        let Some(sock) = &sock else { continue };
        if !on_a_bus(sock, name) {
            continue;
        }
        let addr =
            permanent_address(sock, name, len).unwrap_or_else(|| ll.sll_addr[..len].to_vec());
        let mac = format_mac(&addr);
        if usable_mac(&mac) {
            macs.push(mac);
        }
    }
    // SAFETY: `ifap` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    macs.sort();
    macs.dedup();
    macs
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GPERMADDR: u32 = 0x0000_0020;

/// `struct ethtool_drvinfo` of `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ethtool_perm_addr` with room for a 32-byte address.
#[repr(C)]
struct EthtoolPermAddr {
    cmd: u32,
    size: u32,
    data: [u8; 32],
}

/// Runs the `SIOCETHTOOL` ioctl on interface `name` with `data` as the request.
fn ethtool<T>(sock: &std::os::fd::OwnedFd, name: &std::ffi::CStr, data: &mut T) -> bool {
    use std::os::fd::AsRawFd;
    let bytes = name.to_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return false;
    }
    // SAFETY: an all-zero ifreq is a valid value of the plain C struct.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (data as *mut T).cast();
    // SAFETY: `ifr` names the interface and points at `data`, a live request struct of the
    // layout the kernel expects for its `cmd`.
    unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) == 0 }
}

/// Whether the interface sits on a bus (PCI, virtio, USB, a platform device): the kernel
/// reports its parent device as the bus info. Virtual interfaces report none (or "N/A",
/// "tun", "tap").
fn on_a_bus(sock: &std::os::fd::OwnedFd, name: &std::ffi::CStr) -> bool {
    // SAFETY: an all-zero ethtool_drvinfo is a valid value of the plain C struct.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    if !ethtool(sock, name, &mut info) {
        return false;
    }
    let end = info.bus_info.iter().position(|&b| b == 0).unwrap_or(32);
    let bus = String::from_utf8_lossy(&info.bus_info[..end]);
    let bus = bus.trim();
    !bus.is_empty() && !matches!(bus, "N/A" | "tun" | "tap")
}

/// The interface's permanent (burned-in) address, when the driver has one of `len` bytes.
fn permanent_address(
    sock: &std::os::fd::OwnedFd,
    name: &std::ffi::CStr,
    len: usize,
) -> Option<Vec<u8>> {
    let mut req = EthtoolPermAddr {
        cmd: ETHTOOL_GPERMADDR,
        size: 32,
        data: [0; 32],
    };
    if !ethtool(sock, name, &mut req) || req.size as usize != len {
        return None;
    }
    let addr = req.data.get(..len)?.to_vec();
    addr.iter().any(|&b| b != 0).then_some(addr)
}

/// The root mount in mountinfo `text`: (major:minor, source). The last line whose mount
/// point is `/` wins (later mounts hide earlier ones).
fn root_mount(text: &str) -> Option<(String, String)> {
    super::mounts::parse_mountinfo(text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == "/")
        .map(|m| (m.majmin, m.source))
}

/// The kernel name (`vda1`, `nvme0n1p2`, `dm-0`) of the root block device, from
/// `/sys/dev/block/<major:minor>` or else the mount source.
fn root_device_name<S: Source>(
    src: &S,
    majmin: &str,
    source: &str,
) -> Result<Option<String>, S::Refusal> {
    if is_block_number(majmin) {
        let link = Path::new("/sys/dev/block").join(majmin);
        if let Some(name) = src.read_link(&link)?.and_then(|t| base_name(&t)) {
            return Ok(Some(name));
        }
    }
    let Some(dev) = source.strip_prefix("/dev/") else {
        return Ok(None);
    };
    if dev.is_empty() || dev == "root" {
        return Ok(None);
    }
    // `/dev/mapper/x` and friends are links to the kernel name.
    if let Some(name) = src
        .read_link(Path::new(source))?
        .and_then(|t| base_name(&t))
    {
        return Ok(Some(name));
    }
    Ok(base_name(Path::new(dev)))
}

/// Whether `majmin` is a well-formed `major:minor` of a real block device (major 0 is the
/// kernel's anonymous devices: overlay, tmpfs, btrfs subvolumes).
fn is_block_number(majmin: &str) -> bool {
    let Some((major, minor)) = majmin.split_once(':') else {
        return false;
    };
    matches!(major.parse::<u32>(), Ok(m) if m != 0) && minor.parse::<u32>().is_ok()
}

/// The whole disk a partition belongs to (`vda1` → `vda`), when `dev` is a partition.
fn parent_device<S: Source>(src: &S, dev: &str) -> Result<Option<String>, S::Refusal> {
    let class = Path::new("/sys/class/block").join(dev);
    if !src.exists(&class.join("partition"))? {
        return Ok(None);
    }
    // sysfs: /sys/class/block/vda1 -> ../../devices/.../block/vda/vda1
    if let Some(target) = src.read_link(&class)?
        && let Some(parent) = target.parent().and_then(base_name)
        && parent != "block"
        && !parent.is_empty()
    {
        return Ok(Some(parent));
    }
    // Fall back to the naming rules: nvme0n1p1 / mmcblk0p1 → strip "pN"; sda1 → strip digits.
    let trimmed = dev.trim_end_matches(|c: char| c.is_ascii_digit());
    let stripped = match trimmed.strip_suffix('p') {
        Some(base) if base.ends_with(|c: char| c.is_ascii_digit()) => base,
        _ => trimmed,
    };
    Ok((!stripped.is_empty() && stripped != dev).then(|| stripped.to_owned()))
}

/// The serial number of block device `dev` (or of its parent disk, or of the one device
/// beneath a device-mapper / md device), if the kernel exposes one.
fn disk_serial<S: Source>(src: &S, dev: &str, depth: u32) -> Result<Option<String>, S::Refusal> {
    let mut names = vec![dev.to_owned()];
    if let Some(parent) = parent_device(src, dev)? {
        names.push(parent);
    }
    for name in &names {
        for path in [
            Path::new("/sys/class/block")
                .join(name)
                .join("device/serial"),
            Path::new("/sys/block").join(name).join("serial"),
        ] {
            if let Some(serial) = src.read_trimmed(&path)?.filter(|s| !is_placeholder(s)) {
                return Ok(Some(serial));
            }
        }
    }
    if depth < 4 {
        // dm / md: follow the first slave.
        let slaves = src.dir_names(&Path::new("/sys/class/block").join(dev).join("slaves"))?;
        if let Some(slave) = slaves.first() {
            return disk_serial(src, slave, depth + 1);
        }
    }
    Ok(None)
}

/// The file-system UUID whose `/dev/disk/by-uuid` link points at `dev`.
fn fs_uuid<S: Source>(src: &S, dev: &str) -> Result<Option<String>, S::Refusal> {
    let dir = Path::new("/dev/disk/by-uuid");
    for uuid in src.dir_names(dir)? {
        if src
            .read_link(&dir.join(&uuid))?
            .and_then(|t| base_name(&t))
            .is_some_and(|target| target == dev)
        {
            return Ok(Some(uuid));
        }
    }
    Ok(None)
}

/// The root disk trait: `serial:<s>`, else `uuid:<fs uuid>`, else `dev:<major:minor>` with
/// ` size:<sectors>` when known. `None` for a root that is not a block device (overlay,
/// tmpfs: a container's root says nothing about the machine).
fn root_disk<S: Source>(src: &S) -> Result<Option<String>, S::Refusal> {
    let Some((majmin, source)) = src.root_mount()? else {
        return Ok(None);
    };
    let dev = root_device_name(src, &majmin, &source)?;
    if let Some(dev) = &dev {
        if let Some(serial) = disk_serial(src, dev, 0)? {
            return Ok(Some(format!("serial:{serial}")));
        }
        if let Some(uuid) = fs_uuid(src, dev)? {
            return Ok(Some(format!("uuid:{uuid}")));
        }
    }
    let sys = match &dev {
        Some(dev) => Path::new("/sys/class/block").join(dev),
        None => Path::new("/sys/dev/block").join(&majmin),
    };
    let Some(number) = src
        .read_trimmed(&sys.join("dev"))?
        .into_iter()
        .chain(Some(majmin))
        .find(|n| is_block_number(n))
    else {
        return Ok(None);
    };
    Ok(Some(match src.read_trimmed(&sys.join("size"))? {
        Some(size) => format!("dev:{number} size:{size}"),
        None => format!("dev:{number}"),
    }))
}

/// The installed memory, `<n> MiB`: the memory blocks the kernel lists under
/// `/sys/devices/system/memory` (present blocks, online or not) times their size. Unlike the
/// free / total counters this does not move with a balloon driver or with the kernel's own
/// reservations; it changes when memory is added or removed.
fn memory<S: Source>(src: &S) -> Result<Option<String>, S::Refusal> {
    let dir = Path::new("/sys/devices/system/memory");
    let Some(size) = src.read_trimmed(&dir.join("block_size_bytes"))? else {
        return Ok(None);
    };
    let Ok(block) = u64::from_str_radix(size.trim_start_matches("0x"), 16) else {
        return Ok(None);
    };
    let blocks = src
        .dir_names(dir)?
        .iter()
        .filter(|n| {
            n.strip_prefix("memory")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u64;
    let mib = blocks.saturating_mul(block) >> 20;
    Ok((mib > 0).then(|| format!("{mib} MiB")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, path: &str, contents: &[u8]) {
        let p = under(root, path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    fn link(root: &Path, path: &str, target: &str) {
        let p = under(root, path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model\t\t: 167\nmodel name\t: Intel(R)  Xeon(R) Processor\nstepping\t: 1\n\
        flags\t\t: fpu hypervisor\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n\n";

    const MOUNTINFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
        27 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw,discard\n\
        30 27 0:25 / /tmp rw - tmpfs tmpfs rw\n";

    /// A fake machine with every trait available; the disk has a serial.
    fn full_machine() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "/etc/machine-id", b"3d1207c4a11b4e21b8d5f1e0c4a2b948\n");
        write(
            r,
            "/sys/class/dmi/id/product_uuid",
            b"4C4C4544-0042-3510-8052-B4C04F4D3732\n",
        );
        write(
            r,
            "/sys/class/dmi/id/board_serial",
            b"/7Q5BMK2/CNWS20085D00KU/\n",
        );
        write(r, "/sys/class/dmi/id/product_serial", b"7Q5BMK2\n");
        write(r, "/proc/cpuinfo", CPUINFO.as_bytes());
        // eth0: PCI NIC; wlan0: another; lo, docker0, veth, ifb: virtual (no device link).
        write(r, "/sys/class/net/eth0/address", b"02:FC:00:00:00:01\n");
        link(r, "/sys/class/net/eth0/device", "../../../0000:00:03.0");
        write(r, "/sys/class/net/wlan0/address", b"a4:c3:f0:11:22:33\n");
        link(r, "/sys/class/net/wlan0/device", "../../../0000:00:14.3");
        write(r, "/sys/class/net/lo/address", b"00:00:00:00:00:00\n");
        write(r, "/sys/class/net/docker0/address", b"02:42:ac:11:00:01\n");
        write(r, "/sys/class/net/veth1a2b/address", b"9e:11:22:33:44:55\n");
        write(r, "/sys/class/net/ifb0/address", b"aa:bb:cc:dd:ee:ff\n");
        // A NIC with a device link but a zero MAC is skipped.
        write(r, "/sys/class/net/eth9/address", b"00:00:00:00:00:00\n");
        link(r, "/sys/class/net/eth9/device", "../../../0000:00:09.0");
        write(r, "/proc/self/mountinfo", MOUNTINFO.as_bytes());
        link(
            r,
            "/sys/dev/block/254:1",
            "../../devices/pci0000:00/virtio1/block/vda/vda1",
        );
        write(r, "/sys/class/block/vda1/partition", b"1\n");
        write(
            r,
            "/sys/class/block/vda/device/serial",
            b"  WD-WCC4N7XXXXXX \n",
        );
        dir
    }

    #[test]
    fn collect_from_reads_every_trait_of_a_fake_machine() {
        let dir = full_machine();
        let fp = Fingerprint::collect_from(dir.path());
        let got: Vec<(TraitKind, &str)> = fp
            .traits
            .iter()
            .map(|t| (t.kind, t.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (TraitKind::MachineId, "3d1207c4a11b4e21b8d5f1e0c4a2b948"),
                (
                    TraitKind::ProductUuid,
                    "4C4C4544-0042-3510-8052-B4C04F4D3732"
                ),
                (TraitKind::BoardSerial, "/7Q5BMK2/CNWS20085D00KU/"),
                (TraitKind::ProductSerial, "7Q5BMK2"),
                (
                    TraitKind::Cpu,
                    "GenuineIntel|Intel(R) Xeon(R) Processor|6|167|1"
                ),
                (TraitKind::Mac, "02:fc:00:00:00:01"),
                (TraitKind::Mac, "a4:c3:f0:11:22:33"),
                (TraitKind::RootDisk, "serial:WD-WCC4N7XXXXXX"),
            ]
        );
    }

    #[test]
    fn collect_from_an_empty_root_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Fingerprint::collect_from(dir.path()).is_empty());
        assert!(Fingerprint::collect_from(Path::new("/nonexistent/tessera/root")).is_empty());
    }

    #[test]
    fn dmi_placeholders_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/sys/class/dmi/id/product_uuid",
            b"00000000-0000-0000-0000-000000000000\n",
        );
        write(
            r,
            "/sys/class/dmi/id/board_serial",
            b"To be filled by O.E.M.\n",
        );
        write(r, "/sys/class/dmi/id/product_serial", b"Not Specified\n");
        assert!(Fingerprint::collect_from(r).is_empty());
        for v in [
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "Default string",
            "0",
            "",
            "   ",
            "System Serial Number",
            "To Be Filled By O.E.M.",
        ] {
            assert!(is_placeholder(v), "{v:?}");
        }
        for v in [
            "7Q5BMK2",
            "4C4C4544-0042-3510-8052-B4C04F4D3732",
            "F00D",
            "0001",
        ] {
            assert!(!is_placeholder(v), "{v:?}");
        }
    }

    #[test]
    fn machine_id_falls_back_to_dbus_and_skips_uninitialized() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "/etc/machine-id", b"uninitialized\n");
        write(
            r,
            "/var/lib/dbus/machine-id",
            b"abcdef0123456789abcdef0123456789\n",
        );
        let fp = Fingerprint::collect_from(r);
        assert_eq!(
            fp.traits,
            vec![Trait::new(
                TraitKind::MachineId,
                "abcdef0123456789abcdef0123456789"
            )]
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "/etc/machine-id", b"\xff\xfe\x00abc");
        write(
            r,
            "/proc/cpuinfo",
            b"\xff: \xff\n:\n::::\nno colon\nvendor_id\t: \xff\n\n",
        );
        write(
            r,
            "/proc/self/mountinfo",
            b"garbage\n1 2 3 4 / 6\n1 2 x:y / / o - \\0\n",
        );
        write(r, "/sys/class/net/x/address", b"");
        link(r, "/sys/class/net/x/device", "nowhere");
        // A directory where a file is expected.
        fs::create_dir_all(under(r, "/sys/class/dmi/id/product_uuid")).unwrap();
        let fp = Fingerprint::collect_from(r);
        assert_eq!(
            fp.traits,
            vec![
                Trait::new(TraitKind::MachineId, "\u{fffd}\u{fffd}abc"),
                Trait::new(TraitKind::Cpu, "\u{fffd}||||"),
            ]
        );
    }

    #[test]
    fn root_disk_uses_fs_uuid_when_there_is_no_serial() {
        let dir = full_machine();
        let r = dir.path();
        fs::remove_file(under(r, "/sys/class/block/vda/device/serial")).unwrap();
        write(r, "/sys/block/vda/serial", b"\n"); // empty serial: skipped
        link(r, "/dev/disk/by-uuid/0d5e-11aa", "../../vda2");
        link(
            r,
            "/dev/disk/by-uuid/5a1c2f4e-9d3b-4b8e-a1f0-2c7e9b6d8a10",
            "../../vda1",
        );
        let fp = Fingerprint::collect_from(r);
        let disk: Vec<_> = fp.of_kind(TraitKind::RootDisk).collect();
        assert_eq!(disk.len(), 1);
        assert_eq!(disk[0].value, "uuid:5a1c2f4e-9d3b-4b8e-a1f0-2c7e9b6d8a10");
    }

    #[test]
    fn root_disk_falls_back_to_device_number_and_size() {
        // Like this development VM: /dev/vda ext4, empty serial, no /dev/disk/by-uuid.
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/proc/self/mountinfo",
            b"27 1 254:0 / / rw - ext4 /dev/vda rw\n",
        );
        link(
            r,
            "/sys/dev/block/254:0",
            "../../devices/pci0000:00/virtio1/block/vda",
        );
        write(r, "/sys/class/block/vda/dev", b"254:0\n");
        write(r, "/sys/class/block/vda/size", b"536870912\n");
        write(r, "/sys/block/vda/serial", b"");
        let fp = Fingerprint::collect_from(r);
        assert_eq!(
            fp.traits,
            vec![Trait::new(TraitKind::RootDisk, "dev:254:0 size:536870912")]
        );
    }

    #[test]
    fn root_disk_resolves_dev_root_and_nvme_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/proc/self/mountinfo",
            b"25 1 259:2 / / rw - xfs /dev/root rw\n",
        );
        link(
            r,
            "/sys/dev/block/259:2",
            "../../devices/pci/nvme/nvme0/nvme0n1/nvme0n1p2",
        );
        // No link for /sys/class/block/nvme0n1p2 here: the naming rule finds the parent.
        write(r, "/sys/class/block/nvme0n1p2/partition", b"2\n");
        write(
            r,
            "/sys/class/block/nvme0n1/device/serial",
            b"S4EWNX0R123456\n",
        );
        let fp = Fingerprint::collect_from(r);
        assert_eq!(
            fp.traits,
            vec![Trait::new(TraitKind::RootDisk, "serial:S4EWNX0R123456")]
        );
        let src = FakeRoot(r);
        assert_eq!(
            parent_device(&src, "nvme0n1p2").unwrap().as_deref(),
            Some("nvme0n1")
        );
        assert_eq!(parent_device(&src, "nvme0n1").unwrap(), None); // not a partition
    }

    #[test]
    fn root_disk_follows_device_mapper_slaves() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/proc/self/mountinfo",
            b"25 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n",
        );
        link(
            r,
            "/sys/dev/block/253:0",
            "../../devices/virtual/block/dm-0",
        );
        fs::create_dir_all(under(r, "/sys/class/block/dm-0/slaves/sda3")).unwrap();
        write(r, "/sys/class/block/sda3/partition", b"3\n");
        write(r, "/sys/class/block/sda/device/serial", b"ZA1B2C3D\n");
        let fp = Fingerprint::collect_from(r);
        assert_eq!(
            fp.traits,
            vec![Trait::new(TraitKind::RootDisk, "serial:ZA1B2C3D")]
        );
    }

    #[test]
    fn overlay_root_gives_no_disk_trait() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/proc/self/mountinfo",
            b"500 400 0:52 / / rw - overlay overlay rw\n",
        );
        assert!(Fingerprint::collect_from(r).is_empty());
    }

    #[test]
    fn block_numbers() {
        assert!(is_block_number("254:0"));
        assert!(is_block_number("8:17"));
        for bad in ["0:52", "x:y", "254", "254:", ":0", "", "-1:2", "254:0:1"] {
            assert!(!is_block_number(bad), "{bad:?}");
        }
    }

    #[test]
    fn from_traits_sorts_and_dedups() {
        let fp = Fingerprint::from_traits(vec![
            Trait::new(TraitKind::Mac, "b"),
            Trait::new(TraitKind::MachineId, "z"),
            Trait::new(TraitKind::Mac, "a"),
            Trait::new(TraitKind::Mac, "b"),
        ]);
        assert_eq!(
            fp.traits,
            vec![
                Trait::new(TraitKind::MachineId, "z"),
                Trait::new(TraitKind::Mac, "a"),
                Trait::new(TraitKind::Mac, "b"),
            ]
        );
    }

    #[test]
    fn digests_are_salted_tagged_and_in_trait_order() {
        let fp = Fingerprint::from_traits(vec![
            Trait::new(TraitKind::Cpu, "x"),
            Trait::new(TraitKind::MachineId, "x"),
        ]);
        let d = fp.digests(b"salt");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, TraitKind::MachineId);
        assert_eq!(d[1].0, TraitKind::Cpu);
        let mut h = Sha256::new();
        h.update(b"salt");
        h.update([1u8]);
        h.update(b"x");
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(d[0].1, expected);
        // Same value, different kind: different digest. Different salt: different digest.
        assert_ne!(d[0].1, d[1].1);
        assert_ne!(fp.digests(b"other")[0].1, d[0].1);
        assert_eq!(fp.digests(b"salt"), d);
    }

    #[test]
    fn trait_codes_are_stable_and_round_trip() {
        let codes: Vec<u8> = TraitKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        for k in TraitKind::ALL {
            assert_eq!(TraitKind::from_code(k.code()), Some(k));
        }
        assert_eq!(TraitKind::from_code(0), None);
        assert_eq!(TraitKind::from_code(9), None);
        // Files and activation requests carry the variant's position (postcard): the kinds
        // made before `Memory` keep theirs, so old containers and requests still decode.
        for (i, k) in TraitKind::ALL.into_iter().enumerate() {
            assert_eq!(postcard::to_allocvec(&k).unwrap(), vec![i as u8]);
        }
    }

    #[test]
    fn matching_counts_shared_traits() {
        let a = Fingerprint::from_traits(vec![
            Trait::new(TraitKind::MachineId, "m"),
            Trait::new(TraitKind::Cpu, "c"),
            Trait::new(TraitKind::Mac, "01"),
            Trait::new(TraitKind::RootDisk, "d"),
        ]);
        let mut b = a.clone();
        b.traits[2].value = "02".into(); // a NIC was replaced
        assert_eq!(a.matching(&a), 4);
        assert_eq!(a.matching(&b), 3);
        assert_eq!(b.matching(&a), 3);
        // Same value under another kind does not match.
        let c = Fingerprint::from_traits(vec![Trait::new(TraitKind::BoardSerial, "m")]);
        assert_eq!(a.matching(&c), 0);
        assert_eq!(a.matching(&Fingerprint::default()), 0);
        // Duplicates in a hand-built fingerprint count once.
        let dup = Fingerprint {
            traits: vec![
                Trait::new(TraitKind::Cpu, "c"),
                Trait::new(TraitKind::Cpu, "c"),
            ],
        };
        assert_eq!(dup.matching(&a), 1);
    }

    #[test]
    fn cpuid_gives_the_cpu_trait_that_proc_cpuinfo_gives() {
        // Containers made before the CPU was read from CPUID bound the cpuinfo form: the two
        // must agree, or they would lose a trait.
        let Some(bytes) = read_bytes(Path::new("/proc/cpuinfo")) else {
            return;
        };
        if cfg!(target_arch = "x86_64") {
            let from_cpuid = cpu_from_cpuid().expect("CPUID on x86-64");
            assert_eq!(Some(from_cpuid), cpu_from_cpuinfo(&bytes));
        } else {
            assert_eq!(cpu_from_cpuid(), None);
        }
    }

    #[test]
    fn kernel_macs_are_the_sysfs_macs_of_this_machines_nics() {
        // Containers made before the MACs came from the kernel bound the sysfs addresses of
        // interfaces with a device link: the two must agree (a NIC's permanent address is its
        // address unless someone changed it).
        assert_eq!(kernel_macs(), physical_macs(Path::new("/")));
        for mac in kernel_macs() {
            assert!(usable_mac(&mac), "{mac}");
        }
    }

    #[test]
    fn memory_is_the_sum_of_the_memory_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/sys/devices/system/memory/block_size_bytes",
            b"8000000\n",
        );
        for n in ["memory0", "memory1", "memory32"] {
            fs::create_dir_all(under(r, "/sys/devices/system/memory").join(n)).unwrap();
        }
        // Not blocks.
        write(
            r,
            "/sys/devices/system/memory/auto_online_blocks",
            b"online\n",
        );
        fs::create_dir_all(under(r, "/sys/devices/system/memory/memoryX")).unwrap();
        fs::create_dir_all(under(r, "/sys/devices/system/memory/power")).unwrap();
        let fp = Fingerprint::collect_from(r);
        assert_eq!(fp.traits, vec![Trait::new(TraitKind::Memory, "384 MiB")]);
        // A garbled block size gives no trait.
        write(r, "/sys/devices/system/memory/block_size_bytes", b"lots\n");
        assert!(Fingerprint::collect_from(r).is_empty());
    }

    #[test]
    fn cpuinfo_and_macs_are_read_from_a_fake_root_only() {
        let dir = full_machine();
        let fp = Fingerprint::collect_from(dir.path());
        assert_eq!(fp.of_kind(TraitKind::Mac).count(), 2);
        assert_eq!(
            fp.of_kind(TraitKind::Cpu).next().unwrap().value,
            "GenuineIntel|Intel(R) Xeon(R) Processor|6|167|1"
        );
    }

    #[test]
    fn collect_on_this_machine_is_sorted_and_stable() {
        let a = Fingerprint::collect();
        let b = Fingerprint::collect();
        assert_eq!(a, b);
        // This machine (and CI) has nothing mounted over the sources.
        assert_eq!(Fingerprint::collect_checked(), Ok(a.clone()));
        assert_eq!(Fingerprint::from_traits(a.traits.clone()), a);
        // Whatever this machine is, it has a kernel with /proc/cpuinfo on Linux.
        if cfg!(target_os = "linux") && Path::new("/proc/cpuinfo").exists() {
            assert_eq!(a.of_kind(TraitKind::Cpu).count(), 1);
        }
    }
}
