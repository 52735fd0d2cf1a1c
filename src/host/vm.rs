//! Virtual-machine detection: the CPUID hypervisor bit and vendor leaf, and the DMI strings
//! hypervisors put in the guest's SMBIOS tables.
//!
//! Reading ([`read_cpuid`], [`read_dmi`]) and deciding ([`detect_machine`]) are separate so
//! the decision can be tested with canned readings of every hypervisor.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::read::{printable, read_trimmed, under};

/// A hypervisor that runs this machine as a guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hypervisor {
    /// Linux KVM (also most clouds: EC2 Nitro, Google Compute Engine, OpenStack, ...).
    Kvm,
    /// QEMU without KVM (TCG emulation), or QEMU named only by DMI.
    Qemu,
    /// VMware ESXi / Workstation / Fusion.
    VMware,
    /// Microsoft Hyper-V (and Azure).
    HyperV,
    /// Xen (HVM or PV).
    Xen,
    /// Oracle VirtualBox.
    VirtualBox,
    /// Parallels Desktop.
    Parallels,
    /// FreeBSD bhyve.
    Bhyve,
    /// Project ACRN.
    Acrn,
    /// QNX hypervisor.
    Qnx,
    /// Apple's Virtualization framework.
    AppleVz,
    /// Another hypervisor, named by its CPUID vendor string or DMI vendor (printable, at most
    /// 64 characters), or `"unknown"`.
    Other(String),
}

impl std::fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hypervisor::Kvm => "KVM",
            Hypervisor::Qemu => "QEMU",
            Hypervisor::VMware => "VMware",
            Hypervisor::HyperV => "Hyper-V",
            Hypervisor::Xen => "Xen",
            Hypervisor::VirtualBox => "VirtualBox",
            Hypervisor::Parallels => "Parallels",
            Hypervisor::Bhyve => "bhyve",
            Hypervisor::Acrn => "ACRN",
            Hypervisor::Qnx => "QNX",
            Hypervisor::AppleVz => "Apple Virtualization",
            Hypervisor::Other(name) => name,
        })
    }
}

/// Whether the machine is bare metal or a guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineKind {
    /// No sign of a hypervisor.
    Physical,
    /// A guest of this hypervisor.
    Virtual(Hypervisor),
}

impl MachineKind {
    /// Whether this is a virtual machine.
    pub fn is_virtual(&self) -> bool {
        matches!(self, MachineKind::Virtual(_))
    }
}

impl std::fmt::Display for MachineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineKind::Physical => f.write_str("physical machine"),
            MachineKind::Virtual(h) => write!(f, "virtual machine ({h})"),
        }
    }
}

/// What CPUID says about a hypervisor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidReading {
    /// Leaf 1, ECX bit 31: "running under a hypervisor".
    pub hypervisor_bit: bool,
    /// Leaf 0x4000_0000 EBX, ECX, EDX as a 12-character string, trailing NULs trimmed (lossy
    /// UTF-8). Only read, and only meaningful, when `hypervisor_bit` is set.
    pub vendor_leaf: Option<String>,
}

/// The DMI (SMBIOS) strings that name a hypervisor, from `/sys/class/dmi/id/`. Missing,
/// unreadable or empty files are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmiReading {
    /// `sys_vendor`, e.g. "QEMU", "VMware, Inc.", "Dell Inc.".
    pub sys_vendor: Option<String>,
    /// `product_name`, e.g. "Virtual Machine", "VirtualBox", "PowerEdge R740".
    pub product_name: Option<String>,
    /// `bios_vendor`, e.g. "SeaBIOS", "Xen".
    pub bios_vendor: Option<String>,
    /// `board_vendor`.
    pub board_vendor: Option<String>,
    /// `product_version`, e.g. "pc-q35-8.2", "ThinkPad X1 Carbon Gen 9".
    pub product_version: Option<String>,
}

/// Reads the CPUID hypervisor bit (leaf 1, ECX bit 31) and, when it is set, the hypervisor
/// vendor leaf 0x4000_0000. On a CPU other than x86 / x86-64, the default (nothing).
pub fn read_cpuid() -> CpuidReading {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        #[cfg(target_arch = "x86")]
        use core::arch::x86::__cpuid;
        #[cfg(target_arch = "x86_64")]
        use core::arch::x86_64::__cpuid;

        // SAFETY: CPUID exists on every CPU these targets run on and has no side effects.
        // (`__cpuid` is a safe function in newer Rust and `unsafe` in older releases.)
        #[allow(unused_unsafe)]
        let leaf1 = unsafe { __cpuid(1) };
        let hypervisor_bit = leaf1.ecx & (1 << 31) != 0;
        if !hypervisor_bit {
            return CpuidReading::default();
        }
        // SAFETY: as above; leaf 0x4000_0000 is defined when the hypervisor bit is set.
        #[allow(unused_unsafe)]
        let leaf = unsafe { __cpuid(0x4000_0000) };
        let mut bytes = Vec::with_capacity(12);
        for reg in [leaf.ebx, leaf.ecx, leaf.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
        let vendor = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_owned();
        CpuidReading {
            hypervisor_bit,
            vendor_leaf: Some(vendor),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
    {
        CpuidReading::default()
    }
}

/// Reads the DMI strings from `root/sys/class/dmi/id/` (pass `/` for this machine).
pub fn read_dmi(root: &Path) -> DmiReading {
    let dir = under(root, "/sys/class/dmi/id");
    let field = |name: &str| read_trimmed(&dir.join(name));
    DmiReading {
        sys_vendor: field("sys_vendor"),
        product_name: field("product_name"),
        bios_vendor: field("bios_vendor"),
        board_vendor: field("board_vendor"),
        product_version: field("product_version"),
    }
}

/// The hypervisor named by a CPUID vendor leaf. `None` for an empty leaf.
pub fn hypervisor_from_vendor_leaf(vendor: &str) -> Option<Hypervisor> {
    let v = vendor.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    Some(match v {
        "" => return None,
        "KVMKVMKVM" | "Linux KVM Hv" => Hypervisor::Kvm,
        "TCGTCGTCGTCG" => Hypervisor::Qemu,
        "VMwareVMware" => Hypervisor::VMware,
        "Microsoft Hv" => Hypervisor::HyperV,
        "XenVMMXenVMM" => Hypervisor::Xen,
        "VBoxVBoxVBox" => Hypervisor::VirtualBox,
        "lrpepyh  vr" | "prl hyperv" => Hypervisor::Parallels,
        "bhyve bhyve" => Hypervisor::Bhyve,
        "ACRNACRNACRN" => Hypervisor::Acrn,
        "QNXQVMBSQG" => Hypervisor::Qnx,
        _ if v.starts_with("Apple VZ") => Hypervisor::AppleVz,
        _ => Hypervisor::Other(printable(v, 64)),
    })
}

/// The hypervisor named by DMI strings, if any. Bare-metal vendors (Dell, Lenovo, HP,
/// Supermicro, Microsoft Surface, EC2 `*.metal` instances) give `None`.
pub fn hypervisor_from_dmi(dmi: &DmiReading) -> Option<Hypervisor> {
    let lower = |f: &Option<String>| f.as_deref().unwrap_or("").to_ascii_lowercase();
    let sys = lower(&dmi.sys_vendor);
    let product = lower(&dmi.product_name);
    let bios = lower(&dmi.bios_vendor);
    let board = lower(&dmi.board_vendor);
    let version = lower(&dmi.product_version);
    let all = [&sys, &product, &bios, &board, &version];
    let vendors = [&sys, &bios, &board];
    // Whole-word match, so that e.g. "Xenon Systems" is not Xen.
    let has_word = |fields: &[&String], word: &str| {
        fields.iter().any(|f| {
            f.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == word)
        })
    };
    let contains = |fields: &[&String], text: &str| fields.iter().any(|f| f.contains(text));

    if contains(&all, "vmware") {
        Some(Hypervisor::VMware)
    } else if contains(&all, "virtualbox") || contains(&vendors, "innotek") {
        Some(Hypervisor::VirtualBox)
    } else if contains(&all, "parallels") {
        Some(Hypervisor::Parallels)
    } else if sys.starts_with("microsoft") && product == "virtual machine" {
        Some(Hypervisor::HyperV)
    } else if has_word(&vendors, "xen")
        || product.contains("hvm domu")
        || has_word(&[&product], "xen")
    {
        Some(Hypervisor::Xen)
    } else if contains(&all, "bhyve") {
        Some(Hypervisor::Bhyve)
    } else if has_word(&all, "acrn") {
        Some(Hypervisor::Acrn)
    } else if product.contains("apple virtualization") {
        Some(Hypervisor::AppleVz)
    } else if has_word(&all, "kvm")
        || product == "openstack nova"
        || sys.starts_with("openstack")
        || product.contains("google compute engine")
        || product.starts_with("rhev hypervisor")
        || product == "ovirt node"
        || (product == "ahv" && sys.contains("nutanix"))
        || product == "alibaba cloud ecs"
        || (product == "droplet" && sys.contains("digitalocean"))
        || (sys == "amazon ec2" && !product.contains("metal"))
    {
        Some(Hypervisor::Kvm)
    } else if has_word(&all, "qemu") {
        Some(Hypervisor::Qemu)
    } else if has_word(&all, "qnx") {
        Some(Hypervisor::Qnx)
    } else if has_word(&all, "bochs") {
        Some(Hypervisor::Other("Bochs".into()))
    } else if contains(&[&sys, &product], "cloud hypervisor") {
        Some(Hypervisor::Other("Cloud Hypervisor".into()))
    } else {
        None
    }
}

/// Decides whether the machine is physical or virtual, and under which hypervisor.
///
/// - Hypervisor bit set: the vendor leaf names the hypervisor. "Microsoft Hv" and unknown
///   leaves defer to DMI when DMI names a hypervisor, because KVM, QEMU and VirtualBox can
///   present Hyper-V's leaf (Hyper-V enlightenments). With no DMI evidence the answer stays
///   `Virtual(HyperV)`, **including on a Hyper-V root partition** (a host with Hyper-V/VBS
///   enabled also runs on the hypervisor and sets the bit): we report what CPUID says rather
///   than guess that a machine is bare metal. With an empty leaf and no DMI evidence:
///   `Virtual(Other("unknown"))`.
/// - Hypervisor bit clear (hidden by the hypervisor, or bare metal): DMI decides; the vendor
///   leaf is ignored, since leaf 0x4000_0000 is not defined without the bit.
pub fn detect_machine(cpuid: &CpuidReading, dmi: &DmiReading) -> MachineKind {
    let from_dmi = hypervisor_from_dmi(dmi);
    if !cpuid.hypervisor_bit {
        return match from_dmi {
            Some(h) => MachineKind::Virtual(h),
            None => MachineKind::Physical,
        };
    }
    let from_leaf = cpuid
        .vendor_leaf
        .as_deref()
        .and_then(hypervisor_from_vendor_leaf);
    MachineKind::Virtual(match from_leaf {
        Some(leaf @ (Hypervisor::HyperV | Hypervisor::Other(_))) => from_dmi.unwrap_or(leaf),
        Some(leaf) => leaf,
        None => from_dmi.unwrap_or_else(|| Hypervisor::Other("unknown".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpuid(vendor: &str) -> CpuidReading {
        CpuidReading {
            hypervisor_bit: true,
            vendor_leaf: Some(vendor.to_owned()),
        }
    }

    fn dmi(sys: &str, product: &str, bios: &str) -> DmiReading {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        DmiReading {
            sys_vendor: some(sys),
            product_name: some(product),
            bios_vendor: some(bios),
            board_vendor: some(sys),
            product_version: None,
        }
    }

    fn virt(h: Hypervisor) -> MachineKind {
        MachineKind::Virtual(h)
    }

    #[test]
    fn kvm() {
        let d = dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", "SeaBIOS");
        assert_eq!(
            detect_machine(&cpuid("KVMKVMKVM"), &d),
            virt(Hypervisor::Kvm)
        );
        // No DMI at all (like a microVM): still KVM.
        assert_eq!(
            detect_machine(&cpuid("KVMKVMKVM"), &DmiReading::default()),
            virt(Hypervisor::Kvm)
        );
        // KVM with Hyper-V enlightenments presents "Microsoft Hv"; DMI says QEMU.
        assert_eq!(
            detect_machine(&cpuid("Microsoft Hv"), &d),
            virt(Hypervisor::Qemu)
        );
    }

    #[test]
    fn qemu_tcg() {
        let d = dmi("QEMU", "Standard PC (i440FX + PIIX, 1996)", "SeaBIOS");
        assert_eq!(
            detect_machine(&cpuid("TCGTCGTCGTCG"), &d),
            virt(Hypervisor::Qemu)
        );
    }

    #[test]
    fn vmware() {
        let d = dmi(
            "VMware, Inc.",
            "VMware Virtual Platform",
            "Phoenix Technologies LTD",
        );
        assert_eq!(
            detect_machine(&cpuid("VMwareVMware"), &d),
            virt(Hypervisor::VMware)
        );
    }

    #[test]
    fn vmware_with_hidden_hypervisor_bit() {
        let d = dmi("VMware, Inc.", "VMware7,1", "VMware, Inc.");
        assert_eq!(
            detect_machine(&CpuidReading::default(), &d),
            virt(Hypervisor::VMware)
        );
    }

    #[test]
    fn hyper_v() {
        let d = dmi(
            "Microsoft Corporation",
            "Virtual Machine",
            "Microsoft Corporation",
        );
        assert_eq!(
            detect_machine(&cpuid("Microsoft Hv"), &d),
            virt(Hypervisor::HyperV)
        );
        // Hidden bit: DMI alone.
        assert_eq!(
            detect_machine(&CpuidReading::default(), &d),
            virt(Hypervisor::HyperV)
        );
        // Root partition of a Hyper-V host: documented choice, still Hyper-V.
        let host = dmi("Dell Inc.", "Precision 5570", "Dell Inc.");
        assert_eq!(
            detect_machine(&cpuid("Microsoft Hv"), &host),
            virt(Hypervisor::HyperV)
        );
        // A Surface (Microsoft hardware, not a VM) with no hypervisor is physical.
        let surface = dmi(
            "Microsoft Corporation",
            "Surface Laptop 5",
            "Microsoft Corporation",
        );
        assert_eq!(
            detect_machine(&CpuidReading::default(), &surface),
            MachineKind::Physical
        );
    }

    #[test]
    fn xen() {
        let d = dmi("Xen", "HVM domU", "Xen");
        assert_eq!(
            detect_machine(&cpuid("XenVMMXenVMM"), &d),
            virt(Hypervisor::Xen)
        );
        assert_eq!(
            detect_machine(&CpuidReading::default(), &d),
            virt(Hypervisor::Xen)
        );
        // "Xenon" is a hardware vendor, not Xen.
        let xenon = dmi("Xenon Systems", "Nitro A1", "American Megatrends Inc.");
        assert_eq!(
            detect_machine(&CpuidReading::default(), &xenon),
            MachineKind::Physical
        );
    }

    #[test]
    fn virtualbox() {
        let d = dmi("innotek GmbH", "VirtualBox", "innotek GmbH");
        assert_eq!(
            detect_machine(&cpuid("VBoxVBoxVBox"), &d),
            virt(Hypervisor::VirtualBox)
        );
        // VirtualBox's Hyper-V paravirtualization interface: DMI wins over "Microsoft Hv".
        assert_eq!(
            detect_machine(&cpuid("Microsoft Hv"), &d),
            virt(Hypervisor::VirtualBox)
        );
        let hidden = dmi("Oracle Corporation", "VirtualBox", "innotek GmbH");
        assert_eq!(
            detect_machine(&CpuidReading::default(), &hidden),
            virt(Hypervisor::VirtualBox)
        );
    }

    #[test]
    fn parallels() {
        let d = dmi(
            "Parallels Software International Inc.",
            "Parallels Virtual Platform",
            "",
        );
        assert_eq!(
            detect_machine(&cpuid(" lrpepyh  vr"), &d),
            virt(Hypervisor::Parallels)
        );
        assert_eq!(
            detect_machine(&cpuid("prl hyperv  "), &DmiReading::default()),
            virt(Hypervisor::Parallels)
        );
        assert_eq!(
            detect_machine(&CpuidReading::default(), &d),
            virt(Hypervisor::Parallels)
        );
    }

    #[test]
    fn bhyve() {
        let d = dmi("FreeBSD", "BHYVE", "BHYVE");
        assert_eq!(
            detect_machine(&cpuid("bhyve bhyve "), &d),
            virt(Hypervisor::Bhyve)
        );
        assert_eq!(
            detect_machine(&CpuidReading::default(), &d),
            virt(Hypervisor::Bhyve)
        );
    }

    #[test]
    fn other_vendor_leaves() {
        let none = DmiReading::default();
        assert_eq!(
            detect_machine(&cpuid("ACRNACRNACRN"), &none),
            virt(Hypervisor::Acrn)
        );
        assert_eq!(
            detect_machine(&cpuid("QNXQVMBSQG"), &none),
            virt(Hypervisor::Qnx)
        );
        assert_eq!(
            detect_machine(&cpuid("Apple VZ"), &none),
            virt(Hypervisor::AppleVz)
        );
        assert_eq!(
            detect_machine(&cpuid("Jailhouse"), &none),
            virt(Hypervisor::Other("Jailhouse".into()))
        );
        // Control characters from a hostile leaf are masked.
        assert_eq!(
            detect_machine(&cpuid("ab\u{1b}c"), &none),
            virt(Hypervisor::Other("ab?c".into()))
        );
        // Bit set, empty leaf, no DMI.
        assert_eq!(
            detect_machine(&cpuid(""), &none),
            virt(Hypervisor::Other("unknown".into()))
        );
        let bit_only = CpuidReading {
            hypervisor_bit: true,
            vendor_leaf: None,
        };
        assert_eq!(
            detect_machine(&bit_only, &dmi("QEMU", "Standard PC", "")),
            virt(Hypervisor::Qemu)
        );
    }

    #[test]
    fn cloud_dmi_with_hidden_bit() {
        let hidden = CpuidReading::default();
        let ec2 = dmi("Amazon EC2", "m5.large", "Amazon EC2");
        assert_eq!(detect_machine(&hidden, &ec2), virt(Hypervisor::Kvm));
        let metal = dmi("Amazon EC2", "i3.metal", "Amazon EC2");
        assert_eq!(detect_machine(&hidden, &metal), MachineKind::Physical);
        let gce = dmi("Google", "Google Compute Engine", "Google");
        assert_eq!(detect_machine(&hidden, &gce), virt(Hypervisor::Kvm));
        let nova = dmi("OpenStack Foundation", "OpenStack Nova", "SeaBIOS");
        assert_eq!(detect_machine(&hidden, &nova), virt(Hypervisor::Kvm));
        let kvm = dmi("Red Hat", "KVM", "SeaBIOS");
        assert_eq!(detect_machine(&hidden, &kvm), virt(Hypervisor::Kvm));
        let qemu = dmi(
            "QEMU",
            "Standard PC (Q35 + ICH9, 2009)",
            "EFI Development Kit II / OVMF",
        );
        assert_eq!(detect_machine(&hidden, &qemu), virt(Hypervisor::Qemu));
    }

    #[test]
    fn bare_metal_is_physical() {
        let hidden = CpuidReading::default();
        let dell = DmiReading {
            sys_vendor: Some("Dell Inc.".into()),
            product_name: Some("PowerEdge R740".into()),
            bios_vendor: Some("Dell Inc.".into()),
            board_vendor: Some("Dell Inc.".into()),
            product_version: None,
        };
        assert_eq!(detect_machine(&hidden, &dell), MachineKind::Physical);
        let lenovo = DmiReading {
            sys_vendor: Some("LENOVO".into()),
            product_name: Some("20XW0026US".into()),
            bios_vendor: Some("LENOVO".into()),
            board_vendor: Some("LENOVO".into()),
            product_version: Some("ThinkPad X1 Carbon Gen 9".into()),
        };
        assert_eq!(detect_machine(&hidden, &lenovo), MachineKind::Physical);
        let supermicro = dmi("Supermicro", "Super Server", "American Megatrends Inc.");
        assert_eq!(detect_machine(&hidden, &supermicro), MachineKind::Physical);
        assert_eq!(
            detect_machine(&hidden, &DmiReading::default()),
            MachineKind::Physical
        );
        // A stray vendor leaf without the bit is ignored.
        let stray = CpuidReading {
            hypervisor_bit: false,
            vendor_leaf: Some("KVMKVMKVM".into()),
        };
        assert_eq!(detect_machine(&stray, &dell), MachineKind::Physical);
    }

    #[test]
    fn read_dmi_reads_a_fake_root() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&id).unwrap();
        std::fs::write(id.join("sys_vendor"), "VMware, Inc.\n").unwrap();
        std::fs::write(id.join("product_name"), "\n").unwrap();
        std::fs::write(id.join("bios_vendor"), b"\xffBIOS\n").unwrap();
        let d = read_dmi(dir.path());
        assert_eq!(
            d,
            DmiReading {
                sys_vendor: Some("VMware, Inc.".into()),
                product_name: None,
                bios_vendor: Some("\u{fffd}BIOS".into()),
                board_vendor: None,
                product_version: None,
            }
        );
        assert_eq!(read_dmi(&dir.path().join("missing")), DmiReading::default());
    }

    #[test]
    fn this_machine_is_virtual_exactly_when_cpuid_or_dmi_says_so() {
        let c = read_cpuid();
        let d = read_dmi(Path::new("/"));
        let kind = detect_machine(&c, &d);
        if c.hypervisor_bit {
            assert!(kind.is_virtual(), "{c:?} {d:?} -> {kind:?}");
            assert!(c.vendor_leaf.is_some());
        } else {
            assert_eq!(kind.is_virtual(), hypervisor_from_dmi(&d).is_some());
            assert_eq!(c.vendor_leaf, None);
        }
        // Stable.
        assert_eq!(read_cpuid(), c);
    }

    #[test]
    fn display_words() {
        assert_eq!(MachineKind::Physical.to_string(), "physical machine");
        assert_eq!(virt(Hypervisor::Kvm).to_string(), "virtual machine (KVM)");
        assert_eq!(Hypervisor::HyperV.to_string(), "Hyper-V");
        assert_eq!(Hypervisor::VMware.to_string(), "VMware");
        assert_eq!(
            Hypervisor::Other("Jailhouse".into()).to_string(),
            "Jailhouse"
        );
    }
}
