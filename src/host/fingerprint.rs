//! The machine fingerprint: a handful of traits (machine id, DMI product UUID and serials, CPU,
//! MAC addresses of physical NICs, root disk) read from the running system.
//!
//! Traits are kept raw here; what leaves the machine are their salted digests
//! ([`Fingerprint::digests`]). A license binds to a set of traits and is matched with a
//! tolerance ([`Fingerprint::matching`]) so that one changed part does not lock a customer out.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::read::{MAX_FILE, base_name, dir_names, read_trimmed, under};

/// What a [`Trait`] describes. The order of the variants is the sort order of a
/// [`Fingerprint`].
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
    /// The MAC address of one physical network interface.
    Mac,
    /// The disk holding the root file system: its serial, else its file-system UUID, else its
    /// device number and size.
    RootDisk,
}

impl TraitKind {
    /// Every kind, in sort order.
    pub const ALL: [TraitKind; 7] = [
        TraitKind::MachineId,
        TraitKind::ProductUuid,
        TraitKind::BoardSerial,
        TraitKind::ProductSerial,
        TraitKind::Cpu,
        TraitKind::Mac,
        TraitKind::RootDisk,
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
    /// Reads the fingerprint of this machine. Never panics; skips every trait it cannot read
    /// (a container without `/sys`, an unprivileged user, a VM without DMI).
    pub fn collect() -> Fingerprint {
        Fingerprint::collect_from(Path::new("/"))
    }

    /// Like [`Fingerprint::collect`], but reads every file under `root` (`root/etc/machine-id`,
    /// `root/sys/class/...`, `root/proc/cpuinfo`, `root/proc/self/mountinfo`, ...). Tests build
    /// a fake root to simulate machines.
    pub fn collect_from(root: &Path) -> Fingerprint {
        let mut traits = Vec::new();
        if let Some(id) = machine_id(root) {
            traits.push(Trait::new(TraitKind::MachineId, id));
        }
        for (kind, file) in [
            (TraitKind::ProductUuid, "product_uuid"),
            (TraitKind::BoardSerial, "board_serial"),
            (TraitKind::ProductSerial, "product_serial"),
        ] {
            let path = under(root, "/sys/class/dmi/id").join(file);
            if let Some(value) = read_trimmed(&path).filter(|v| !is_placeholder(v)) {
                traits.push(Trait::new(kind, value));
            }
        }
        if let Some(cpu) = cpu(root) {
            traits.push(Trait::new(TraitKind::Cpu, cpu));
        }
        for mac in physical_macs(root) {
            traits.push(Trait::new(TraitKind::Mac, mac));
        }
        if let Some(disk) = root_disk(root) {
            traits.push(Trait::new(TraitKind::RootDisk, disk));
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
fn machine_id(root: &Path) -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .into_iter()
        .filter_map(|p| read_trimmed(&under(root, p)))
        .find(|id| id != "uninitialized" && !is_placeholder(id))
}

/// The CPU trait from the first processor block of `/proc/cpuinfo`:
/// `vendor|model name|family|model|stepping` on x86; on other architectures the
/// implementer / architecture / variant / part / revision fields.
fn cpu(root: &Path) -> Option<String> {
    const X86: [&str; 5] = ["vendor_id", "model name", "cpu family", "model", "stepping"];
    const ARM: [&str; 5] = [
        "CPU implementer",
        "CPU architecture",
        "CPU variant",
        "CPU part",
        "CPU revision",
    ];
    let file = std::fs::File::open(under(root, "/proc/cpuinfo")).ok()?;
    let mut reader = BufReader::new(file.take(MAX_FILE));
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
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

/// MAC addresses of the interfaces in `/sys/class/net` that have a `device` link (a real or
/// paravirtual NIC: not `lo`, veth, bridges, ifb, tun, `docker0`), lowercased, skipping
/// all-zero and broadcast addresses.
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
        let hex: Vec<char> = mac.chars().filter(|&c| c != ':').collect();
        if !well_formed || hex.iter().all(|&c| c == '0') || hex.iter().all(|&c| c == 'f') {
            continue;
        }
        macs.push(mac);
    }
    macs
}

/// The root mount from `/proc/self/mountinfo`: (major:minor, source). The last line whose
/// mount point is `/` wins (later mounts hide earlier ones).
fn root_mount(root: &Path) -> Option<(String, String)> {
    let bytes = super::read::read_bytes(&under(root, "/proc/self/mountinfo"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut found = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(&majmin), Some(&"/")) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let source = fields.get(sep + 2).map_or(String::new(), |s| unescape(s));
        found = Some((majmin.to_owned(), source));
    }
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut rest = field.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'\\'
            && let [a, b, c, after @ ..] = tail
            && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let n = u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0');
            out.push(u8::try_from(n).unwrap_or(b'?'));
            rest = after;
        } else {
            out.push(first);
            rest = tail;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel name (`vda1`, `nvme0n1p2`, `dm-0`) of the root block device, from
/// `/sys/dev/block/<major:minor>` or else the mount source.
fn root_device_name(root: &Path, majmin: &str, source: &str) -> Option<String> {
    if is_block_number(majmin) {
        let link = under(root, "/sys/dev/block").join(majmin);
        if let Some(name) = std::fs::read_link(&link).ok().and_then(|t| base_name(&t)) {
            return Some(name);
        }
    }
    let dev = source.strip_prefix("/dev/")?;
    if dev.is_empty() || dev == "root" {
        return None;
    }
    // `/dev/mapper/x` and friends are links to the kernel name.
    if let Some(name) = std::fs::read_link(under(root, source))
        .ok()
        .and_then(|t| base_name(&t))
    {
        return Some(name);
    }
    base_name(Path::new(dev))
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
fn parent_device(root: &Path, dev: &str) -> Option<String> {
    let class = under(root, "/sys/class/block").join(dev);
    if !class.join("partition").exists() {
        return None;
    }
    // sysfs: /sys/class/block/vda1 -> ../../devices/.../block/vda/vda1
    if let Ok(target) = std::fs::read_link(&class)
        && let Some(parent) = target.parent().and_then(base_name)
        && parent != "block"
        && !parent.is_empty()
    {
        return Some(parent);
    }
    // Fall back to the naming rules: nvme0n1p1 / mmcblk0p1 → strip "pN"; sda1 → strip digits.
    let trimmed = dev.trim_end_matches(|c: char| c.is_ascii_digit());
    let stripped = match trimmed.strip_suffix('p') {
        Some(base) if base.ends_with(|c: char| c.is_ascii_digit()) => base,
        _ => trimmed,
    };
    (!stripped.is_empty() && stripped != dev).then(|| stripped.to_owned())
}

/// The serial number of block device `dev` (or of its parent disk, or of the one device
/// beneath a device-mapper / md device), if the kernel exposes one.
fn disk_serial(root: &Path, dev: &str, depth: u32) -> Option<String> {
    let mut names = vec![dev.to_owned()];
    if let Some(parent) = parent_device(root, dev) {
        names.push(parent);
    }
    for name in &names {
        for path in [
            under(root, "/sys/class/block")
                .join(name)
                .join("device/serial"),
            under(root, "/sys/block").join(name).join("serial"),
        ] {
            if let Some(serial) = read_trimmed(&path).filter(|s| !is_placeholder(s)) {
                return Some(serial);
            }
        }
    }
    if depth < 4 {
        // dm / md: follow the first slave.
        let slaves = dir_names(&under(root, "/sys/class/block").join(dev).join("slaves"));
        if let Some(slave) = slaves.first() {
            return disk_serial(root, slave, depth + 1);
        }
    }
    None
}

/// The file-system UUID whose `/dev/disk/by-uuid` link points at `dev`.
fn fs_uuid(root: &Path, dev: &str) -> Option<String> {
    let dir = under(root, "/dev/disk/by-uuid");
    dir_names(&dir).into_iter().find(|uuid| {
        std::fs::read_link(dir.join(uuid))
            .ok()
            .and_then(|t| base_name(&t))
            .is_some_and(|target| target == dev)
    })
}

/// The root disk trait: `serial:<s>`, else `uuid:<fs uuid>`, else `dev:<major:minor>` with
/// ` size:<sectors>` when known. `None` for a root that is not a block device (overlay,
/// tmpfs: a container's root says nothing about the machine).
fn root_disk(root: &Path) -> Option<String> {
    let (majmin, source) = root_mount(root)?;
    let dev = root_device_name(root, &majmin, &source);
    if let Some(dev) = &dev {
        if let Some(serial) = disk_serial(root, dev, 0) {
            return Some(format!("serial:{serial}"));
        }
        if let Some(uuid) = fs_uuid(root, dev) {
            return Some(format!("uuid:{uuid}"));
        }
    }
    let sys = match &dev {
        Some(dev) => under(root, "/sys/class/block").join(dev),
        None => under(root, "/sys/dev/block").join(&majmin),
    };
    let number = read_trimmed(&sys.join("dev"))
        .into_iter()
        .chain(Some(majmin))
        .find(|n| is_block_number(n))?;
    Some(match read_trimmed(&sys.join("size")) {
        Some(size) => format!("dev:{number} size:{size}"),
        None => format!("dev:{number}"),
    })
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
        assert_eq!(parent_device(r, "nvme0n1p2").as_deref(), Some("nvme0n1"));
        assert_eq!(parent_device(r, "nvme0n1"), None); // not a partition
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
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/dev/my\040disk"), "/dev/my disk");
        assert_eq!(unescape(r"trailing\04"), r"trailing\04");
        assert_eq!(unescape(r"\777"), "?");
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
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7]);
        for k in TraitKind::ALL {
            assert_eq!(TraitKind::from_code(k.code()), Some(k));
        }
        assert_eq!(TraitKind::from_code(0), None);
        assert_eq!(TraitKind::from_code(8), None);
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
    fn collect_on_this_machine_is_sorted_and_stable() {
        let a = Fingerprint::collect();
        let b = Fingerprint::collect();
        assert_eq!(a, b);
        assert_eq!(Fingerprint::from_traits(a.traits.clone()), a);
        // Whatever this machine is, it has a kernel with /proc/cpuinfo on Linux.
        if cfg!(target_os = "linux") && Path::new("/proc/cpuinfo").exists() {
            assert_eq!(a.of_kind(TraitKind::Cpu).count(), 1);
        }
    }
}
