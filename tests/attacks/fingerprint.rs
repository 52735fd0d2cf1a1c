//! 5. Machine binding faked with bind mounts over the fingerprint's sources.
//!
//! A software container of "machine A" is made with this machine's traits except A's machine
//! id, MAC addresses, root disk (and, for the sysfs attack, A's DMI serials): on this machine
//! it does not open. The attacker then lays A's values over the trait files in a private
//! mount namespace (`unshare --mount`, and as an unprivileged user in a user namespace,
//! `unshare -Urm`) and runs the real runtime there (`tessera list`, which opens every
//! container of the home through `Environment::detect`). The runtime must refuse and name the
//! over-mounted path; the unfaked machine must still open a container activated for it.
//!
//! The mounts live only in the child's private mount namespace: they vanish with it, also
//! when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use tessera::client::{Environment, install_activation, request_activation};
use tessera::host::{Fingerprint, HostIdentity, Trait, TraitKind};
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::OffsetClock;

use crate::common::{bin, spec};

const VENDOR: u32 = 79;
const A_MACHINE_ID: &str = "a0a0a0a0b1b1b1b1c2c2c2c2d3d3d3d3";
const A_DISK: &str = "serial:MACHINE-A-DISK";
const A_DMI: [(TraitKind, &str, &str); 3] = [
    (
        TraitKind::ProductUuid,
        "product_uuid",
        "4C4C4544-0041-4110-8041-B4C04F41AAAA",
    ),
    (
        TraitKind::BoardSerial,
        "board_serial",
        "/A0BOARD/CNA0000001/",
    ),
    (TraitKind::ProductSerial, "product_serial", "A0SERIAL"),
];

/// The physical NICs of this machine, as sysfs lists them (the ones the fingerprint reads).
fn physical_nics() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| Path::new("/sys/class/net").join(n).join("device").exists())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A's MAC address for the `i`-th NIC.
fn a_mac(i: usize) -> String {
    format!("02:aa:bb:cc:dd:{:02x}", i + 1)
}

/// Machine A: this machine's fingerprint with A's machine id, MACs and root disk, plus A's
/// DMI serials when `dmi`.
fn machine_a(dmi: bool) -> Fingerprint {
    let real = Fingerprint::collect();
    assert!(!real.is_empty(), "this machine has no fingerprint traits");
    let mut traits: Vec<Trait> = real
        .traits
        .into_iter()
        .filter(|t| {
            let dmi_kind = matches!(
                t.kind,
                TraitKind::ProductUuid | TraitKind::BoardSerial | TraitKind::ProductSerial
            );
            let replaced = matches!(t.kind, TraitKind::MachineId | TraitKind::Mac);
            !(replaced || dmi && dmi_kind)
        })
        .map(|t| {
            if t.kind == TraitKind::RootDisk && !dmi {
                Trait::new(TraitKind::RootDisk, A_DISK)
            } else {
                t
            }
        })
        .collect();
    traits.push(Trait::new(TraitKind::MachineId, A_MACHINE_ID));
    for i in 0..physical_nics().len() {
        traits.push(Trait::new(TraitKind::Mac, a_mac(i)));
    }
    if dmi {
        for (kind, _, value) in A_DMI {
            traits.push(Trait::new(kind, value));
        }
    }
    Fingerprint::from_traits(traits)
}

/// A home holding one activated software container bound to `fingerprint`.
fn activated_home(key: &PublisherKey, fingerprint: Fingerprint) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let env = Environment {
        home: home.path().to_path_buf(),
        host: HostIdentity {
            fingerprint,
            ..HostIdentity::simulated("machine A")
        },
        clock: Arc::new(OffsetClock { offset: 0 }),
    };
    let (_, req) = request_activation(&env, VENDOR).unwrap();
    let act = key
        .activate(
            &req,
            &[spec(1, 5, CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    install_activation(&env, &act, Some(&key.public_key())).unwrap();
    home
}

/// A home with a container activated for this machine through the real runtime
/// (`tessera activate request` / `install`, both reading the real fingerprint).
fn home_of_this_machine(key: &PublisherKey) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let tessera = |args: &[&str]| {
        let out = Command::new(bin("tessera"))
            .args(args)
            .env("TESSERA_HOME", home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "tessera {args:?}: {}", text(&out));
    };
    let req = home.path().join("request.bin");
    tessera(&[
        "activate",
        "request",
        "--vendor-id",
        &VENDOR.to_string(),
        "--out",
        req.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&req).unwrap();
    let act = key
        .activate(
            &bytes,
            &[spec(1, 5, CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    let act_path = home.path().join("activation.bin");
    std::fs::write(&act_path, act).unwrap();
    tessera(&["activate", "install", act_path.to_str().unwrap()]);
    home
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes A's trait files into `dir` and returns the shell lines that bind-mount them over
/// this machine's: `/etc/machine-id` and each physical NIC's `address`.
fn fake_files(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let id = dir.join("machine-id");
    std::fs::write(&id, format!("{A_MACHINE_ID}\n")).unwrap();
    lines.push(format!("mount --bind '{}' /etc/machine-id", id.display()));
    for (i, nic) in physical_nics().iter().enumerate() {
        let f = dir.join(format!("address-{nic}"));
        std::fs::write(&f, format!("{}\n", a_mac(i))).unwrap();
        lines.push(format!(
            "mount --bind '{}' /sys/class/net/{nic}/address",
            f.display()
        ));
    }
    lines
}

/// Runs `script` then `tessera list` with `home` in a private mount namespace: as root
/// (`unshare --mount`), or as `nobody` in a new user and mount namespace (`unshare -Urm`).
fn list_in_namespace(home: &Path, setup: &[String], unprivileged: bool) -> Output {
    let script = format!(
        "set -e\n{}\nexec '{}' list --vendor-id {VENDOR}\n",
        setup.join("\n"),
        bin("tessera").display()
    );
    let mut cmd = if unprivileged {
        let mut c = Command::new("unshare");
        crate::common::as_nobody(&mut c).args(["-Urm", "--"]);
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--"]);
        c
    };
    cmd.args(["sh", "-c", &script])
        .env("TESSERA_HOME", home)
        .env_remove("RUST_BACKTRACE");
    cmd.output().unwrap()
}

/// Whether `tessera list` opened the container (it prints its serial).
fn opened(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout).contains("serial:       SW-")
}

fn assert_refused_naming(out: &Output, path: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(out));
    assert!(
        !opened(out),
        "the faked machine opened the container\n{}",
        text(out)
    );
    let refusal = stdout
        .lines()
        .find(|l| l.contains("does not open here"))
        .unwrap_or_else(|| panic!("no refusal\n{}", text(out)));
    assert!(
        refusal.contains("over-mounted") && refusal.contains(path),
        "the refusal does not name the over-mounted {path}: {refusal}"
    );
}

#[test]
fn machine_id_and_macs_bind_mounted_from_another_machine_do_not_open_its_container() {
    let key = PublisherKey::generate(VENDOR, "t");
    let a = activated_home(&key, machine_a(false));
    let fakes = tempfile::tempdir().unwrap();
    let setup = fake_files(fakes.path());

    // This machine is not machine A.
    let out = list_in_namespace(a.path(), &[], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!opened(&out), "A's container opens unfaked\n{}", text(&out));

    // Machine A's id and MACs laid over this machine's files.
    let out = list_in_namespace(a.path(), &setup, false);
    assert_refused_naming(&out, "/etc/machine-id");

    // The unfaked machine opens the container activated for it; with the fakes in place it
    // refuses that one too (fail closed), naming the path.
    let mine = home_of_this_machine(&key);
    let out = list_in_namespace(mine.path(), &[], false);
    assert!(opened(&out), "this machine's container\n{}", text(&out));
    let out = list_in_namespace(mine.path(), &setup, false);
    assert_refused_naming(&out, "/etc/machine-id");
}

#[test]
fn an_unprivileged_user_faking_traits_in_a_user_namespace_does_not_open_the_container() {
    let key = PublisherKey::generate(VENDOR, "t");
    let a = activated_home(&key, machine_a(false));
    let fakes = tempfile::tempdir().unwrap();
    let setup = fake_files(fakes.path());
    // `nobody` owns the home and can read the fakes.
    for dir in [a.path(), fakes.path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    chown_tree(a.path(), 65534);

    let out = list_in_namespace(a.path(), &[], true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!opened(&out), "A's container opens unfaked\n{}", text(&out));

    let out = list_in_namespace(a.path(), &setup, true);
    assert_refused_naming(&out, "/etc/machine-id");
}

#[test]
fn a_tmpfs_over_sys_class_with_fake_dmi_and_nic_entries_does_not_open_the_container() {
    let key = PublisherKey::generate(VENDOR, "t");
    let a = activated_home(&key, machine_a(true));
    // A fake /sys/class: A's DMI serials and NICs with A's addresses and a device link.
    let fakes = tempfile::tempdir().unwrap();
    let class = fakes.path().join("class");
    let dmi = class.join("dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    for (_, file, value) in A_DMI {
        std::fs::write(dmi.join(file), format!("{value}\n")).unwrap();
    }
    for (i, nic) in physical_nics().iter().enumerate() {
        let d = class.join("net").join(nic);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("address"), format!("{}\n", a_mac(i))).unwrap();
        std::os::unix::fs::symlink("../../../devices/fake", d.join("device")).unwrap();
    }
    let id = fakes.path().join("machine-id");
    std::fs::write(&id, format!("{A_MACHINE_ID}\n")).unwrap();
    let setup = vec![
        format!("mount --bind '{}' /etc/machine-id", id.display()),
        "mount -t tmpfs tessera-fake /sys/class".to_owned(),
        format!("cp -a '{}/.' /sys/class/", class.display()),
    ];

    let out = list_in_namespace(a.path(), &[], false);
    assert!(!opened(&out), "A's container opens unfaked\n{}", text(&out));

    let out = list_in_namespace(a.path(), &setup, false);
    assert_refused_naming(&out, "/etc/machine-id");

    // Without the machine-id mount the refusal names the sysfs over-mount.
    let out = list_in_namespace(a.path(), &setup[1..], false);
    assert_refused_naming(&out, "/sys/class");
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            let p: PathBuf = e.unwrap().path();
            chown_tree(&p, uid);
        }
    }
}

#[test]
fn a_fake_mountinfo_laid_over_proc_self_mountinfo_does_not_hide_the_bind_mounts() {
    // The attacker hides the bind mount of A's machine id behind a clean copy of
    // mountinfo, mounted over the shell's /proc/<pid>/mountinfo, then execs the runtime in
    // the same process, so that its /proc/self/mountinfo is the copy.
    let key = PublisherKey::generate(VENDOR, "t");
    let a = activated_home(&key, machine_a(false));
    let fakes = tempfile::tempdir().unwrap();
    let clean = fakes.path().join("mountinfo");
    std::fs::write(&clean, std::fs::read("/proc/self/mountinfo").unwrap()).unwrap();
    let mut setup = fake_files(fakes.path());
    setup.push(format!(
        "mount --bind '{}' /proc/$$/mountinfo",
        clean.display()
    ));
    let out = list_in_namespace(a.path(), &setup, false);
    assert_refused_naming(&out, "/proc/self/mountinfo");
}

#[test]
fn one_changed_part_of_this_machine_opens_its_container_and_two_do_not() {
    // The tolerance holds on this machine's own traits, read the mount-proof way: at least
    // five of them (machine id, CPU, MAC, root disk, memory on the test VM).
    let real = Fingerprint::collect_checked().expect("nothing over-mounted here");
    assert!(
        real.len() >= 5,
        "only {} traits on this machine: {:?}",
        real.len(),
        real.traits.iter().map(|t| t.kind).collect::<Vec<_>>()
    );
    let home = tempfile::tempdir().unwrap();
    let c = tessera::container::SoftwareContainer::create(home.path(), VENDOR, &real, 1).unwrap();
    let path = c.path().to_path_buf();
    let changed = |n: usize| {
        let mut fp = real.clone();
        for t in fp.traits.iter_mut().take(n) {
            t.value.push_str("-changed");
        }
        fp
    };
    assert!(tessera::container::SoftwareContainer::load(&path, &real).is_ok());
    for i in 0..real.len() {
        // Each single part, changed alone.
        let mut fp = real.clone();
        fp.traits[i].value.push_str("-changed");
        assert!(
            tessera::container::SoftwareContainer::load(&path, &fp).is_ok(),
            "{} changed",
            real.traits[i].kind
        );
    }
    let r = tessera::container::SoftwareContainer::load(&path, &changed(2));
    assert!(
        matches!(r, Err(tessera::Error::BindingMismatch(_))),
        "{r:?}"
    );
}
