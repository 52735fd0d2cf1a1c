//! The command-line tools run as processes: `tessera-vendor` (keys, activation, inspection,
//! file encryption) and `tessera` (info, activation, list), each with `TESSERA_HOME` in a
//! temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tessera::client::seats::Registry;
use tessera::container::{Activation, SoftwareContainer};
use tessera::host::HostIdentity;
use tessera::license::{Envelope, Kind, License};

mod common;

const VENDOR: &str = "4242";

/// A working directory with its own `TESSERA_HOME`.
struct Sandbox {
    dir: tempfile::TempDir,
    home: PathBuf,
}

/// What a run gave back.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a clean failure: exit code 1, a message with the tool's prefix, no panic.
    fn fails(self, tool: &str) -> Run {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit code 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with(&format!("{tool}: error: ")),
            "stderr: {}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "stderr: {}", self.stderr);
        assert!(
            !self.stderr.contains("RUST_BACKTRACE"),
            "stderr: {}",
            self.stderr
        );
        self
    }
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        Sandbox { dir, home }
    }

    /// A second home in the same directory (another TESSERA_HOME on this machine).
    fn with_home(&self, name: &str) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir_in(self.dir.path()).unwrap(),
            home: self.dir.path().join(name),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, exe: &str, args: &[&str]) -> Run {
        let out = Command::new(exe)
            .args(args)
            .current_dir(self.dir.path())
            .env("TESSERA_HOME", &self.home)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        Run::from(out)
    }

    fn vendor(&self, args: &[&str]) -> Run {
        self.run(env!("CARGO_BIN_EXE_tessera-vendor"), args)
    }

    fn tessera(&self, args: &[&str]) -> Run {
        self.run(env!("CARGO_BIN_EXE_tessera"), args)
    }

    /// `keygen` into `publisher.key` / `publisher.pub`.
    fn keygen(&self) -> (PathBuf, PathBuf) {
        let key = self.path("publisher.key");
        self.vendor(&[
            "keygen",
            "--vendor-id",
            VENDOR,
            "--name",
            "Acme",
            "--out",
            key.to_str().unwrap(),
        ])
        .ok();
        (key, self.path("publisher.pub"))
    }

    /// Request, activate with `extra` license flags, install. Returns the container serial
    /// and the activation file.
    fn activate(&self, key: &Path, product: &str, extra: &[&str], tag: &str) -> (String, PathBuf) {
        let req = self.path(&format!("req-{tag}.bin"));
        let act = self.path(&format!("act-{tag}.bin"));
        let r = self
            .tessera(&[
                "activate",
                "request",
                "--vendor-id",
                VENDOR,
                "--out",
                req.to_str().unwrap(),
            ])
            .ok();
        let serial = field(&r.stdout, "container:");
        assert!(serial.starts_with("SW-"), "{}", r.stdout);
        let mut args = vec![
            "activate",
            "--key",
            key.to_str().unwrap(),
            "--request",
            req.to_str().unwrap(),
            "--out",
            act.to_str().unwrap(),
            "--product",
            product,
        ];
        args.extend_from_slice(extra);
        let r = self.vendor(&args).ok();
        assert!(r.stdout.contains(&serial), "{}", r.stdout);
        let r = self
            .tessera(&["activate", "install", act.to_str().unwrap()])
            .ok();
        assert_eq!(field(&r.stdout, "container:"), serial);
        (serial, act)
    }
}

/// The value after `label` on the first line that starts with it.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"))
        .trim()
        .to_string()
}

fn activation_of(path: &Path) -> Activation {
    Envelope::parse(Kind::Activation, &fs::read(path).unwrap())
        .unwrap()
        .decode()
        .unwrap()
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let sb = Sandbox::new();
    let (key, public) = sb.keygen();
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode {mode:o}");
    let before = fs::read(&key).unwrap();
    let pub_before = fs::read_to_string(&public).unwrap();
    assert!(
        pub_before.starts_with("tessera-publisher 4242 "),
        "{pub_before}"
    );

    let again = sb
        .vendor(&[
            "keygen",
            "--vendor-id",
            "1",
            "--name",
            "Other",
            "--out",
            key.to_str().unwrap(),
        ])
        .fails("tessera-vendor");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(fs::read(&key).unwrap(), before, "the key was not touched");

    let forced = sb
        .vendor(&[
            "keygen",
            "--vendor-id",
            "1",
            "--name",
            "Other",
            "--out",
            key.to_str().unwrap(),
            "--force",
        ])
        .ok();
    assert!(
        forced
            .stdout
            .contains("static const uint8_t PUBLISHER_KEY[32] = {"),
        "{}",
        forced.stdout
    );
    assert_ne!(fs::read(&key).unwrap(), before);
    assert!(
        fs::read_to_string(&public)
            .unwrap()
            .starts_with("tessera-publisher 1 ")
    );

    // A bare file name (no directory part) in the current directory works too.
    let demo = sb.vendor(&["keygen", "--demo", "--out", "demo.key"]).ok();
    assert!(demo.stderr.contains("INSECURE"), "{}", demo.stderr);
    assert!(sb.path("demo.key").exists() && sb.path("demo.pub").exists());
    let mode = fs::metadata(sb.path("demo.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn full_flow_lists_the_product_and_a_second_activation_keeps_the_first() {
    let sb = Sandbox::new();
    let (key, public) = sb.keygen();
    let (serial, act1) = sb.activate(
        &key,
        "7",
        &[
            "--name",
            "Frobnicator",
            "--quantity",
            "3",
            "--unit",
            "process",
        ],
        "1",
    );

    let list = sb.tessera(&["list"]).ok();
    assert_eq!(field(&list.stdout, "serial:"), serial);
    // Vendor ids print in hex (4242 = 0x1092).
    assert_eq!(field(&list.stdout, "vendor:"), "0x1092");
    assert!(
        list.stdout
            .contains("Frobnicator (vendor 0x1092, product 7)"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("3 per process"), "{}", list.stdout);
    assert!(
        list.stdout.contains("in use:      0 of 3"),
        "{}",
        list.stdout
    );

    // A seat held by this process shows in the list.
    let lic1 = License::decode(
        &Envelope::parse(Kind::License, &activation_of(&act1).licenses[0]).unwrap(),
    )
    .unwrap();
    // Local seats are counted machine-wide, by the container's serial.
    let pool = Registry::machine()
        .pool(&serial, &lic1.id_hex(), 3, Duration::from_secs(2))
        .unwrap();
    let seat = pool.acquire("handle:test", false).unwrap();
    let list = sb.tessera(&["list"]).ok();
    assert!(
        list.stdout.contains("in use:      1 of 3"),
        "{}",
        list.stdout
    );
    drop(seat);

    // A second activation of another product, installed with the publisher key file: the
    // same container, both licenses.
    let req2 = sb.path("req-2.bin");
    let r = sb
        .tessera(&[
            "activate",
            "request",
            "--vendor-id",
            VENDOR,
            "--out",
            req2.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        field(&r.stdout, "container:"),
        serial,
        "the container is reused"
    );
    let act2 = sb.path("act-2.bin");
    // An expiry three years from today, written as a date: the test runs on any day.
    let in_three_years = tessera::util::format_time(tessera::util::now() + 3 * 365 * 86_400);
    let expires = &in_three_years[..10];
    let issue = |expires: &str, extra: &[&str]| {
        let mut args = vec![
            "issue",
            "--key",
            key.to_str().unwrap(),
            "--request",
            req2.to_str().unwrap(),
            "--out",
            act2.to_str().unwrap(),
            "--product",
            "0x10",
            "--expires",
        ];
        args.push(expires);
        args.extend_from_slice(extra);
        sb.vendor(&args)
    };
    // A day the month does not have is refused, not rolled into the next month.
    let r = issue(&format!("{}-02-31", &expires[..4]), &[]).fails("tessera-vendor");
    assert!(r.stderr.contains("is not a date"), "{}", r.stderr);
    assert!(!act2.exists());
    issue(expires, &["--deny-vm"]).ok();
    let r = sb
        .tessera(&[
            "activate",
            "install",
            act2.to_str().unwrap(),
            "--publisher-key",
            public.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(field(&r.stdout, "licenses:"), "1 added, 0 replaced");

    let list = sb.tessera(&["list", "--vendor-id", VENDOR]).ok();
    assert_eq!(field(&list.stdout, "licenses:"), "2");
    assert!(
        list.stdout.contains("(vendor 0x1092, product 7)"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout
            .contains("Product 16 (vendor 0x1092, product 16)"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(&format!("{expires} 00:00:00 UTC")),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("VMs:         denied"),
        "{}",
        list.stdout
    );

    // Installing the same activation again replaces, not adds.
    let r = sb
        .tessera(&["activate", "install", act2.to_str().unwrap()])
        .ok();
    assert_eq!(field(&r.stdout, "licenses:"), "0 added, 1 replaced");

    // Another vendor's filter shows nothing, and exits 3 (nothing matched).
    let other = sb.tessera(&["list", "--vendor-id", "1"]);
    assert_eq!(other.code, Some(3), "{}", other.stderr);
    assert!(
        other
            .stdout
            .contains("no software containers of vendor 0x1"),
        "{}",
        other.stdout
    );
}

#[test]
fn a_default_request_file_lands_in_the_current_directory() {
    let sb = Sandbox::new();
    let r = sb
        .tessera(&["activate", "request", "--vendor-id", VENDOR])
        .ok();
    assert_eq!(field(&r.stdout, "request:"), "tessera-4242-request.bin");
    assert!(sb.path("tessera-4242-request.bin").is_file());
}

#[test]
fn inspect_names_every_kind_and_checks_signatures() {
    let sb = Sandbox::new();
    let (key, public) = sb.keygen();
    let (serial, act) = sb.activate(&key, "3", &[], "1");
    let doc = activation_of(&act);
    fs::write(sb.path("license.bin"), &doc.licenses[0]).unwrap();
    fs::write(sb.path("cert.bin"), &doc.certificate).unwrap();
    fs::write(sb.path("plain.txt"), b"hello").unwrap();
    sb.vendor(&[
        "encrypt-file",
        "--key",
        key.to_str().unwrap(),
        "--product",
        "3",
        "plain.txt",
        "ct.bin",
    ])
    .ok();
    let container = tessera::container::software::list(&sb.home)
        .pop()
        .expect("a container file");

    let cases: Vec<(PathBuf, &str)> = vec![
        (sb.path("license.bin"), "license"),
        (sb.path("req-1.bin"), "activation request"),
        (act.clone(), "activation"),
        (sb.path("cert.bin"), "container certificate"),
        (container.clone(), "software container"),
        (sb.path("ct.bin"), "ciphertext"),
        (key.clone(), "publisher key (PRIVATE: keep it secret)"),
        (public.clone(), "publisher public key"),
    ];
    for (path, kind) in &cases {
        let r = sb
            .vendor(&[
                "inspect",
                path.to_str().unwrap(),
                "--publisher-key",
                public.to_str().unwrap(),
            ])
            .ok();
        let first = r.stdout.lines().next().unwrap_or_default();
        assert_eq!(first, format!("{}: {kind}", path.display()), "{}", r.stdout);
        assert!(!r.stdout.contains("INVALID"), "{}", r.stdout);
    }

    let r = sb.vendor(&["inspect", act.to_str().unwrap()]).ok();
    assert!(r.stdout.contains(&serial), "{}", r.stdout);
    assert!(
        r.stdout.contains("sealed product secrets: 1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("(vendor 0x1092, product 3)"),
        "{}",
        r.stdout
    );
    let r = sb
        .vendor(&[
            "inspect",
            act.to_str().unwrap(),
            "--publisher-key",
            public.to_str().unwrap(),
        ])
        .ok();
    assert!(r.stdout.contains("signature:   valid"), "{}", r.stdout);
    let r = sb.vendor(&["inspect", container.to_str().unwrap()]).ok();
    assert!(r.stdout.contains("opens on this machine"), "{}", r.stdout);
    assert!(r.stdout.contains(&serial), "{}", r.stdout);
    assert!(r.stdout.contains("clock high-water"), "{}", r.stdout);
    let r = sb.vendor(&["inspect", "ct.bin"]).ok();
    assert_eq!(field(&r.stdout, "mode:"), "derived");
    assert_eq!(field(&r.stdout, "product:"), "3");

    // Another publisher's key: every signature is INVALID, and the exit code says so.
    let other = sb.path("other.key");
    sb.vendor(&[
        "keygen",
        "--vendor-id",
        VENDOR,
        "--name",
        "Impostor",
        "--out",
        other.to_str().unwrap(),
    ])
    .ok();
    for path in [act.as_path(), &sb.path("license.bin"), &sb.path("cert.bin")] {
        let r = sb
            .vendor(&[
                "inspect",
                path.to_str().unwrap(),
                "--publisher-key",
                sb.path("other.pub").to_str().unwrap(),
            ])
            .fails("tessera-vendor");
        assert!(r.stdout.contains("signature:   INVALID"), "{}", r.stdout);
        assert!(!r.stdout.contains("signature:   valid"), "{}", r.stdout);
    }
}

#[test]
fn encrypt_and_decrypt_round_trip_and_a_flipped_byte_is_tampered() {
    let sb = Sandbox::new();
    let (key, _) = sb.keygen();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
    fs::write(sb.path("in.dat"), &data).unwrap();
    for (mode, flag) in [("derived", None), ("direct", Some("--direct"))] {
        let mut args = vec![
            "encrypt-file",
            "--key",
            key.to_str().unwrap(),
            "--product",
            "9",
            "in.dat",
            "ct.bin",
        ];
        if let Some(f) = flag {
            args.insert(1, f);
        }
        sb.vendor(&args).ok();
        let ct = fs::read(sb.path("ct.bin")).unwrap();
        assert_eq!(ct.len(), data.len() + tessera::cipher::OVERHEAD);
        assert_ne!(
            &ct[40..40 + data.len()],
            &data[..],
            "the body is not plaintext"
        );
        let r = sb.vendor(&["inspect", "ct.bin"]).ok();
        assert_eq!(field(&r.stdout, "mode:"), mode);
        sb.vendor(&[
            "decrypt-file",
            "--key",
            key.to_str().unwrap(),
            "ct.bin",
            "out.dat",
        ])
        .ok();
        assert_eq!(fs::read(sb.path("out.dat")).unwrap(), data);
        fs::remove_file(sb.path("out.dat")).unwrap();

        for at in [0usize, 5, 20, 100, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 0x01;
            fs::write(sb.path("bad.bin"), &bad).unwrap();
            let r = sb
                .vendor(&[
                    "decrypt-file",
                    "--key",
                    key.to_str().unwrap(),
                    "bad.bin",
                    "out.dat",
                ])
                .fails("tessera-vendor");
            assert!(r.stderr.contains("tampered"), "byte {at}: {}", r.stderr);
            assert!(!sb.path("out.dat").exists(), "nothing written on failure");
        }
    }

    // Another publisher's key cannot decrypt.
    let other = sb.path("other.key");
    sb.vendor(&[
        "keygen",
        "--vendor-id",
        "77",
        "--name",
        "B",
        "--out",
        other.to_str().unwrap(),
    ])
    .ok();
    let r = sb
        .vendor(&[
            "decrypt-file",
            "--key",
            other.to_str().unwrap(),
            "ct.bin",
            "out.dat",
        ])
        .fails("tessera-vendor");
    assert!(r.stderr.contains("vendor 0x1092"), "{}", r.stderr);
}

#[test]
fn bad_inputs_fail_cleanly() {
    let sb = Sandbox::new();
    let (key, _) = sb.keygen();
    let (_, act) = sb.activate(&key, "1", &[], "1");
    let act_bytes = fs::read(&act).unwrap();
    let req_bytes = fs::read(sb.path("req-1.bin")).unwrap();
    let ct_ok = {
        fs::write(sb.path("p"), b"x").unwrap();
        sb.vendor(&[
            "encrypt-file",
            "--key",
            "publisher.key",
            "--product",
            "1",
            "p",
            "ct",
        ])
        .ok();
        fs::read(sb.path("ct")).unwrap()
    };
    let container = tessera::container::software::list(&sb.home).pop().unwrap();
    let container_bytes = fs::read(&container).unwrap();
    let key_bytes = fs::read(&key).unwrap();

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", (0..300u32).map(|i| (i * 7 + 3) as u8).collect()),
        ("act-truncated", act_bytes[..act_bytes.len() / 2].to_vec()),
        ("act-header-only", act_bytes[..7].to_vec()),
        ("req-truncated", req_bytes[..req_bytes.len() - 1].to_vec()),
        ("ct-truncated", ct_ok[..20].to_vec()),
        (
            "container-truncated",
            container_bytes[..container_bytes.len() - 9].to_vec(),
        ),
        ("key-truncated", key_bytes[..10].to_vec()),
        ("magic-only", b"TSAc".to_vec()),
    ];
    for (name, bytes) in &bad {
        let p = sb.path(name);
        fs::write(&p, bytes).unwrap();
        let p = p.to_str().unwrap();
        sb.vendor(&["inspect", p]).fails("tessera-vendor");
        sb.tessera(&["activate", "install", p]).fails("tessera");
        sb.vendor(&[
            "activate",
            "--key",
            "publisher.key",
            "--request",
            p,
            "--out",
            "x.bin",
            "--product",
            "1",
        ])
        .fails("tessera-vendor");
        sb.vendor(&["decrypt-file", "--key", "publisher.key", p, "y.bin"])
            .fails("tessera-vendor");
        sb.vendor(&[
            "activate",
            "--key",
            p,
            "--request",
            "req-1.bin",
            "--out",
            "x.bin",
            "--product",
            "1",
        ])
        .fails("tessera-vendor");
        assert!(
            !sb.path("x.bin").exists() && !sb.path("y.bin").exists(),
            "{name}"
        );
    }

    // Wrong kinds say what they are.
    let r = sb
        .tessera(&["activate", "install", "req-1.bin"])
        .fails("tessera");
    assert!(
        r.stderr.contains("this is an activation request")
            || r.stderr.contains("this is a activation request"),
        "{}",
        r.stderr
    );
    let r = sb
        .vendor(&[
            "activate",
            "--key",
            "publisher.key",
            "--request",
            act.to_str().unwrap(),
            "--out",
            "x.bin",
            "--product",
            "1",
        ])
        .fails("tessera-vendor");
    assert!(
        r.stderr.contains("not an activation request")
            || r.stderr.contains("not a activation request"),
        "{}",
        r.stderr
    );
    let r = sb
        .vendor(&["inspect", "missing.bin"])
        .fails("tessera-vendor");
    assert!(r.stderr.contains("missing.bin"), "{}", r.stderr);
    let r = sb.vendor(&["inspect", "garbage"]).fails("tessera-vendor");
    assert!(r.stderr.contains("not a Tessera file"), "{}", r.stderr);
    let r = sb
        .vendor(&[
            "activate",
            "--key",
            "publisher.key",
            "--request",
            "req-1.bin",
            "--out",
            "x.bin",
            "--product",
            "1",
            "--expires",
            "someday",
        ])
        .fails("tessera-vendor");
    assert!(r.stderr.contains("someday"), "{}", r.stderr);

    // Usage errors are clap's: exit code 2.
    let r = sb.vendor(&["activate", "--key", "publisher.key"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let r = sb.vendor(&[
        "activate",
        "--key",
        "k",
        "--request",
        "r",
        "--out",
        "o",
        "--product",
        "1",
        "--unit",
        "seat",
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let r = sb.vendor(&[
        "activate",
        "--key",
        "k",
        "--request",
        "r",
        "--out",
        "o",
        "--product",
        "1",
        "--quantity",
        "0",
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);

    // Nothing above disturbed the installed license.
    let list = sb.tessera(&["list"]).ok();
    assert_eq!(field(&list.stdout, "licenses:"), "1");
}

#[test]
fn an_activation_for_another_home_is_refused_and_changes_nothing() {
    let a = Sandbox::new();
    let (key, _) = a.keygen();
    let (serial_a, _) = a.activate(&key, "1", &["--name", "First"], "a");
    let container = tessera::container::software::list(&a.home).pop().unwrap();
    let before = fs::read(&container).unwrap();

    let b = a.with_home("home-b");
    let (serial_b, act_b) = b.activate(&key, "2", &["--name", "Second"], "b");
    assert_ne!(serial_a, serial_b);

    let r = a
        .tessera(&["activate", "install", act_b.to_str().unwrap()])
        .fails("tessera");
    assert!(r.stderr.contains(&serial_b), "{}", r.stderr);
    assert!(r.stderr.contains("binding mismatch"), "{}", r.stderr);
    assert_eq!(
        fs::read(&container).unwrap(),
        before,
        "container file untouched"
    );

    let list = a.tessera(&["list"]).ok();
    assert_eq!(field(&list.stdout, "serial:"), serial_a);
    assert_eq!(field(&list.stdout, "licenses:"), "1");
    assert!(
        list.stdout.contains("First (vendor 0x1092, product 1)"),
        "{}",
        list.stdout
    );
    assert!(!list.stdout.contains("Second"), "{}", list.stdout);
}

/// `tessera-vendor activate-pool`: one activation per member request, each carrying the
/// same pool license (one id, one quantity) naming every member; each member installs its
/// own, and a member's activation does not install in another container. Bad pool names and
/// a member named twice fail cleanly.
#[test]
fn activate_pool_writes_one_activation_per_member_with_the_same_license() {
    let a = Sandbox::new();
    let (key, public) = a.keygen();
    let b = a.with_home("member-b");
    let request = |sb: &Sandbox, name: &str| {
        let req = sb.path(name);
        let r = sb
            .tessera(&[
                "activate",
                "request",
                "--vendor-id",
                VENDOR,
                "--out",
                req.to_str().unwrap(),
            ])
            .ok();
        (field(&r.stdout, "container:"), req)
    };
    let (serial_a, req_a) = request(&a, "req-a.bin");
    let (serial_b, req_b) = request(&b, "req-b.bin");
    let out = a.path("pool");
    let pool = |name: &str, reqs: &[&Path]| {
        let mut args = vec![
            "activate-pool",
            "--key",
            key.to_str().unwrap(),
            "--pool",
            name,
            "--out-dir",
            out.to_str().unwrap(),
            "--product",
            "7",
            "--quantity",
            "5",
        ];
        for r in reqs {
            args.extend(["--request", r.to_str().unwrap()]);
        }
        a.vendor(&args)
    };
    let r = pool("site-a", &[&req_a, &req_b]).ok();
    assert!(
        r.stdout
            .contains("pool site-a of 2 member(s): seats are granted while at least 2"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("5 per station"), "{}", r.stdout);
    let act_a = out.join(format!("{serial_a}.act"));
    let act_b = out.join(format!("{serial_b}.act"));
    let (doc_a, doc_b) = (activation_of(&act_a), activation_of(&act_b));
    assert_eq!(doc_a.licenses, doc_b.licenses, "the same signed license");
    assert_ne!(doc_a.serial, doc_b.serial);

    let r = a
        .vendor(&[
            "inspect",
            act_b.to_str().unwrap(),
            "--publisher-key",
            public.to_str().unwrap(),
        ])
        .ok();
    assert!(
        r.stdout.contains("bound to:    pool site-a of 2 member(s)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&serial_a) && r.stdout.contains(&serial_b));

    // Each member installs its own; member a cannot install member b's.
    let r = a
        .tessera(&["activate", "install", act_b.to_str().unwrap()])
        .fails("tessera");
    assert!(r.stderr.contains("binding mismatch"), "{}", r.stderr);
    a.tessera(&["activate", "install", act_a.to_str().unwrap()])
        .ok();
    b.tessera(&["activate", "install", act_b.to_str().unwrap()])
        .ok();
    for sb in [&a, &b] {
        let list = sb.tessera(&["list"]).ok();
        assert_eq!(field(&list.stdout, "licenses:"), "1", "{}", list.stdout);
    }

    let r = pool("a/b", &[&req_a]).fails("tessera-vendor");
    assert!(r.stderr.contains("pool name `a/b`"), "{}", r.stderr);
    let r = pool("site-a", &[&req_a, &req_a]).fails("tessera-vendor");
    assert!(r.stderr.contains("twice"), "{}", r.stderr);
}

#[test]
fn a_container_of_another_machine_is_listed_as_such() {
    let sb = Sandbox::new();
    let other = HostIdentity::simulated("someone-else");
    let c = SoftwareContainer::create(&sb.home, 4242, &other.fingerprint, tessera::util::now())
        .unwrap();
    let list = sb.tessera(&["list"]).ok();
    assert!(
        list.stdout.contains(&c.path().display().to_string()),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("bound to another machine"),
        "{}",
        list.stdout
    );
    let r = sb.vendor(&["inspect", c.path().to_str().unwrap()]).ok();
    assert!(r.stdout.contains("does not open here"), "{}", r.stdout);
    assert!(
        r.stdout.contains("bound to another machine"),
        "{}",
        r.stdout
    );
}

#[test]
fn info_shows_the_machine_home_and_version() {
    let sb = Sandbox::new();
    let r = sb.tessera(&["info"]).ok();
    assert!(r.stdout.contains("machine:"), "{}", r.stdout);
    assert!(r.stdout.contains("fingerprint:"), "{}", r.stdout);
    assert_eq!(field(&r.stdout, "home:"), sb.home.display().to_string());
    assert_eq!(field(&r.stdout, "version:"), tessera::VERSION);
}

#[test]
fn borrow_list_and_return_a_seat_from_a_server() {
    let sb = Sandbox::new();
    let (key, public) = sb.keygen();
    // The server's container, activated in a home of its own on this machine.
    let server_home = sb.with_home("server-home");
    server_home.activate(
        &key,
        "7",
        &[
            "--name",
            "Frobnicator",
            "--quantity",
            "1",
            "--unit",
            "station",
            "--borrow-days",
            "3",
        ],
        "srv",
    );
    let server = common::server::ServerProc::start(&sb.path("server-state"), &server_home.home, 0);
    let pubkey = public.to_str().unwrap();
    let addr = server.addr.as_str();

    // Beyond what the license allows: refused, nothing kept.
    let r = sb
        .tessera(&[
            "borrow",
            "--product",
            "7",
            "--days",
            "4",
            "--publisher-key",
            pubkey,
            "--servers",
            addr,
        ])
        .fails("tessera");
    assert!(r.stderr.contains("1 to 3 days"), "{}", r.stderr);

    let before = tessera::util::format_time(tessera::util::now() + 3 * 86_400);
    let r = sb
        .tessera(&[
            "borrow",
            "--product",
            "7",
            "--days",
            "3",
            "--publisher-key",
            pubkey,
            "--servers",
            addr,
        ])
        .ok();
    let after = tessera::util::format_time(tessera::util::now() + 3 * 86_400);
    assert!(
        field(&r.stdout, "borrowed:").contains("product 7 of vendor 0x1092"),
        "{}",
        r.stdout
    );
    assert_eq!(field(&r.stdout, "from:"), addr);
    let until = field(&r.stdout, "until:");
    // Three days from now (to the second, within the run of the command).
    assert!(
        before <= until && until <= after,
        "{before} <= {until} <= {after}"
    );

    // The list shows it: product, until, the server it came from.
    let list = sb.tessera(&["list"]).ok();
    assert!(list.stdout.contains("borrowed:     1"), "{}", list.stdout);
    assert!(
        list.stdout.contains("of product 7 (Frobnicator)"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(&format!("from:        {addr}")),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains(&format!("until:       {until}")),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("in use:      0 of 1"),
        "{}",
        list.stdout
    );

    // The only seat is lent: a second borrow (another home of this machine) is refused.
    let other = sb.with_home("other-home");
    let r = other
        .tessera(&[
            "borrow",
            "--product",
            "7",
            "--days",
            "1",
            "--publisher-key",
            pubkey,
            "--servers",
            addr,
        ])
        .fails("tessera");
    assert!(r.stderr.contains("seat"), "{}", r.stderr);

    // Returned with the key pinned at the borrow (no key file): gone from the list, and the
    // other home can borrow it now.
    let r = sb
        .tessera(&[
            "return",
            "--product",
            "7",
            "--vendor-id",
            VENDOR,
            "--servers",
            addr,
        ])
        .ok();
    assert!(r.stdout.contains("returned:"), "{}", r.stdout);
    let list = sb.tessera(&["list"]).ok();
    assert!(!list.stdout.contains("borrowed seat"), "{}", list.stdout);
    other
        .tessera(&[
            "borrow",
            "--product",
            "7",
            "--days",
            "1",
            "--publisher-key",
            pubkey,
            "--servers",
            addr,
        ])
        .ok();
    // Nothing left to give back here; and no way to name the publisher is a clear error.
    let r = sb
        .tessera(&[
            "return",
            "--product",
            "7",
            "--publisher-key",
            pubkey,
            "--servers",
            addr,
        ])
        .fails("tessera");
    assert!(r.stderr.contains("no seat"), "{}", r.stderr);
    let fresh = sb.with_home("fresh-home");
    let r = fresh
        .tessera(&["return", "--product", "7"])
        .fails("tessera");
    assert!(r.stderr.contains("--publisher-key"), "{}", r.stderr);
}

/// Issue 18, point 8: a date the calendar does not have is refused, with the reason.
#[test]
fn an_expiry_the_calendar_does_not_have_is_refused() {
    let sb = Sandbox::new();
    let (key, _) = sb.keygen();
    sb.tessera(&[
        "activate",
        "request",
        "--vendor-id",
        VENDOR,
        "--out",
        "req.bin",
    ])
    .ok();
    let issue = |expires: &str| {
        sb.vendor(&[
            "activate",
            "--key",
            key.to_str().unwrap(),
            "--request",
            "req.bin",
            "--out",
            "act.bin",
            "--product",
            "1",
            "--expires",
            expires,
        ])
    };
    let r = issue("2027-02-31").fails("tessera-vendor");
    assert!(
        r.stderr
            .contains("--expires 2027-02-31 is not a date: February 2027 has 28 days"),
        "{}",
        r.stderr
    );
    let r = issue("2028-02-30").fails("tessera-vendor");
    assert!(
        r.stderr.contains("February 2028 has 29 days"),
        "{}",
        r.stderr
    );
    let r = issue("2027-13-01").fails("tessera-vendor");
    assert!(r.stderr.contains("there is no month 13"), "{}", r.stderr);
    let r = issue("31.12.2099").fails("tessera-vendor");
    assert!(r.stderr.contains("give it as YYYY-MM-DD"), "{}", r.stderr);
    assert!(!sb.path("act.bin").exists(), "a refused date wrote a file");
    // A real date far ahead is taken as written (midnight UTC), whatever day the test runs.
    let r = issue("2999-02-28").ok();
    assert!(
        r.stdout.contains("expires:     2999-02-28 00:00:00 UTC"),
        "{}",
        r.stdout
    );
}

/// Issue 18, point 10: vendor id 0 is no publisher's, wherever a vendor id is read.
#[test]
fn vendor_id_0_is_refused_everywhere() {
    let sb = Sandbox::new();
    for zero in ["0", "0x0", "00"] {
        let r = sb.tessera(&["activate", "request", "--vendor-id", zero]);
        assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("vendor id 0 is no publisher's"),
            "{}",
            r.stderr
        );
        let r = sb.vendor(&["keygen", "--vendor-id", zero, "--name", "x", "--out", "k"]);
        assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("vendor id 0"), "{}", r.stderr);
        let r = sb.tessera(&["list", "--vendor-id", zero]);
        assert_eq!(r.code, Some(2), "{}", r.stderr);
    }
    assert!(!sb.home.exists(), "a refused vendor id made a home");
    assert!(!sb.path("k").exists());
    // A public key file naming vendor 0: refused when read.
    let (_, public) = sb.keygen();
    let text = fs::read_to_string(&public).unwrap();
    let hexkey = text.split_whitespace().last().unwrap().to_string();
    fs::write(
        sb.path("zero.pub"),
        format!("tessera-publisher 0 {hexkey}\n"),
    )
    .unwrap();
    let r = sb.vendor(&["inspect", "zero.pub"]).fails("tessera-vendor");
    assert!(r.stderr.contains("vendor id 0"), "{}", r.stderr);
    let r = sb
        .tessera(&[
            "borrow",
            "--product",
            "1",
            "--days",
            "1",
            "--publisher-key",
            "zero.pub",
        ])
        .fails("tessera");
    assert!(r.stderr.contains("vendor id 0"), "{}", r.stderr);
    // Hex and decimal name the same publisher.
    let r = sb
        .tessera(&[
            "activate",
            "request",
            "--vendor-id",
            "0x1092",
            "--out",
            "a.bin",
        ])
        .ok();
    let serial = field(&r.stdout, "container:");
    let r = sb
        .tessera(&[
            "activate",
            "request",
            "--vendor-id",
            "4242",
            "--out",
            "b.bin",
        ])
        .ok();
    assert_eq!(field(&r.stdout, "container:"), serial);
}

/// A pipe whose reader is already gone.
fn closed_pipe() -> std::io::PipeWriter {
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    w
}

/// Issue 18, point 9: a tool whose reader goes away (`tessera list | head -3`) ends quietly,
/// killed by SIGPIPE as `cat` would be (a shell sees 141), never a panic (exit 101).
#[test]
fn every_tool_ends_quietly_on_a_closed_pipe() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new();
    let (key, _) = sb.keygen();
    sb.activate(&key, "1", &[], "1");
    let dongle = sb.path("dongle.state");
    Command::new(common::bin("tessera-dongle"))
        .args(["create", "--state", dongle.to_str().unwrap()])
        .output()
        .unwrap();
    let dongle = dongle.to_str().unwrap();
    let key = key.to_str().unwrap();
    let load = env!("CARGO_BIN_EXE_tessera-load");
    let runs: Vec<(String, Vec<&str>)> = vec![
        (common::bin("tessera").display().to_string(), vec!["list"]),
        (common::bin("tessera").display().to_string(), vec!["info"]),
        (common::bin("tessera").display().to_string(), vec!["--help"]),
        (
            common::bin("tessera-vendor").display().to_string(),
            vec!["inspect", key],
        ),
        (
            common::bin("tessera-dongle").display().to_string(),
            vec!["info", "--state", dongle],
        ),
        (
            common::bin("tessera-server").display().to_string(),
            vec!["--help"],
        ),
        (load.to_string(), vec!["--help"]),
    ];
    for (exe, args) in &runs {
        let out = Command::new(exe)
            .args(args)
            .current_dir(sb.dir.path())
            .env("TESSERA_HOME", &sb.home)
            .stdout(closed_pipe())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{exe} {args:?}: {stderr}"
        );
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.code() == Some(0),
            "{exe} {args:?} ended with {:?}: {stderr}",
            out.status
        );
        assert_ne!(out.status.code(), Some(101), "{exe} {args:?}");
    }
    // A data command dies of the signal itself (its first line already fails).
    let out = Command::new(common::bin("tessera"))
        .arg("info")
        .env("TESSERA_HOME", &sb.home)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A real `| head -1`: the reader takes one line and goes; the writer ends quietly.
    let mut child = Command::new(common::bin("tessera-vendor"))
        .args(["inspect", key])
        .current_dir(sb.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("publisher key"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(101));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // The server is a daemon: a closed standard output does not stop it serving.
    let free = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (listen, admin) = (free(0), free(1));
    let mut server = common::server::KillOnDrop(
        Command::new(common::bin("tessera-server"))
            .args(["--no-discovery", "--no-dongles", "--listen", &listen])
            .args(["--admin-listen", &admin, "--state-dir"])
            .arg(sb.path("server-state"))
            .arg("--home")
            .arg(&sb.home)
            .stdout(closed_pipe())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = (0..200).find_map(|_| {
        let r = sb.tessera(&["admin", "--server", &format!("http://{admin}"), "status"]);
        if r.code == Some(0) {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(50));
        None
    });
    let status = status.expect("the server with a closed stdout never answered");
    assert!(status.stdout.contains(&listen), "{}", status.stdout);
    let st = common::server::sigterm(&mut server.0);
    assert!(st.success(), "{st:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

/// An address of this machine that is not loopback (the admin API sees a peer coming from it
/// as another machine): the first global IPv4 address, or one added to `lo` for the test.
struct OtherAddress {
    ip: String,
    added: bool,
}

impl OtherAddress {
    fn find() -> OtherAddress {
        let out = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .expect("iproute2 (ip) is installed by scripts/install-deps.sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let found = text.split_whitespace().skip_while(|w| *w != "inet").nth(1);
        if let Some(cidr) = found {
            let ip = cidr.split('/').next().unwrap().to_string();
            return OtherAddress { ip, added: false };
        }
        // No global address (a bare build machine): one from the benchmarking range on `lo`.
        let ip = "198.18.0.77".to_string();
        let st = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .status()
            .unwrap();
        assert!(
            st.success(),
            "cannot add {ip} to lo (the tests run as root)"
        );
        OtherAddress { ip, added: true }
    }
}

impl Drop for OtherAddress {
    fn drop(&mut self) {
        if self.added {
            let _ = Command::new("ip")
                .args(["addr", "del", &format!("{}/32", self.ip), "dev", "lo"])
                .status();
        }
    }
}

/// Issue 18, point 7: on a default server (no admin token), `tessera admin revoke` and
/// `reload` work from the server's machine for root and the server's user (through the
/// local admin token the server writes for them), are refused with a clear message for
/// another user, and a server reached from another address still needs its token. The same
/// for the admin page: `tessera admin page` gives root a link whose `#token=` makes
/// changes, and refuses another user.
#[test]
fn admin_changes_on_the_servers_machine_need_root_or_the_servers_user() {
    use tessera::client::{Environment, Session, SessionOptions, sources};
    use tessera::license::CountingUnit;
    use tessera::publisher::PublisherKey;

    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(0xAD, "admin cli");
    let home = dir.path().join("server-home");
    common::activate(
        &common::env_in(&home),
        &key,
        &[common::spec(1, 2, CountingUnit::Handle)],
    );
    let state = dir.path().join("server-state");
    let server = common::server::ServerProc::start(&state, &home, 0);
    let url = format!("http://{}", server.admin);

    // A seat held by a client.
    let mut o = SessionOptions::new(0xAD, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.addr.clone()];
    o.timeout = Duration::from_secs(2);
    let env = Environment {
        home: dir.path().join("client"),
        host: HostIdentity::simulated("client-a"),
        ..Environment::detect()
    };
    let session = Session::open_in(o, env).unwrap();
    let _seat = session.acquire(1, 0, false).unwrap();

    // `nobody` runs its own link to the tool (the build tree may not be open to it).
    let bin = tempfile::tempdir().unwrap();
    fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tool = bin.path().join("tessera");
    if fs::hard_link(common::bin("tessera"), &tool).is_err() {
        fs::copy(common::bin("tessera"), &tool).unwrap();
    }
    let admin = |args: &[&str], nobody: bool| {
        let mut c = Command::new(&tool);
        c.arg("admin").args(args).env_remove("TESSERA_ADMIN_TOKEN");
        if nobody {
            common::as_nobody(&mut c).current_dir("/");
        }
        Run::from(c.output().unwrap())
    };
    let seats = admin(&["--server", &url, "--json", "seats"], false).ok();
    let seats: serde_json::Value = serde_json::from_str(&seats.stdout).unwrap();
    let id = seats["seats"][0]["seat_id"].as_str().unwrap().to_string();

    // Reading needs nothing on this machine, for anyone.
    admin(&["--server", &url, "status"], true).ok();
    // Changes: refused for another user, with what to do.
    for args in [vec!["reload"], vec!["revoke", id.as_str()]] {
        let mut a = vec!["--server", url.as_str()];
        a.extend(args);
        let r = admin(&a, true).fails("tessera");
        let file = state.join("local-admin.token");
        assert!(
            r.stderr.contains(&file.display().to_string())
                && r.stderr.contains("only root and the server's user")
                && r.stderr.contains("--token"),
            "{}",
            r.stderr
        );
    }
    let meta = fs::metadata(state.join("local-admin.token")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let still = admin(&["--server", &url, "--json", "seats"], false).ok();
    assert!(still.stdout.contains(&id), "{}", still.stdout);

    // Root (the server's user here) may.
    let r = admin(&["--server", &url, "reload"], false).ok();
    assert!(!r.stdout.is_empty());
    let r = admin(&["--server", &url, "revoke", &id], false).ok();
    assert!(
        r.stdout.contains(&format!("revoked seat {id}")),
        "{}",
        r.stdout
    );
    let after = admin(&["--server", &url, "seats"], false).ok();
    assert!(after.stdout.contains("no seat is held"), "{}", after.stdout);

    // The page's link: refused for another user, with the same message.
    let seat2 = session.acquire(1, 0, false).unwrap();
    let seats = admin(&["--server", &url, "--json", "seats"], false).ok();
    let seats: serde_json::Value = serde_json::from_str(&seats.stdout).unwrap();
    let id2 = seats["seats"][0]["seat_id"].as_str().unwrap().to_string();
    let r = admin(&["--server", &url, "page"], true).fails("tessera");
    assert!(
        r.stderr
            .contains(&state.join("local-admin.token").display().to_string())
            && r.stderr.contains("only root and the server's user"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    // For root: the page's address with the local token in its fragment, which works as the
    // bearer token of a revoke.
    let link = admin(&["--server", &url, "page"], false).ok();
    let link = link.stdout.trim().to_string();
    let prefix = format!("{url}/#token=");
    assert!(link.starts_with(&prefix), "{link}");
    let json = admin(&["--server", &url, "--json", "page"], false).ok();
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["url"], link.as_str());
    let fragment_token = &link[prefix.len()..];
    let revoke = format!("/api/v1/seats/{id2}/revoke");
    let r = common::http::request(&server.admin, "POST", &revoke, &[], b"");
    assert_eq!(r.status, 403, "the page alone changes nothing: {r:?}");
    let bearer = format!("Bearer {fragment_token}");
    let r = common::http::request(
        &server.admin,
        "POST",
        &revoke,
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["revoked"], id2.as_str());
    drop(seat2);

    // A token presented that is neither the server's token nor its local one: refused.
    let r = admin(
        &["--server", &url, "--token", &"ab".repeat(32), "reload"],
        false,
    )
    .fails("tessera");
    assert!(r.stderr.contains("401"), "{}", r.stderr);

    // A server with a token, open to the network: from another address without the token,
    // refused (the local token of the other server does not open it either); with it, done.
    let other = OtherAddress::find();
    fs::write(dir.path().join("token"), "cli-admin-token-0123456789\n").unwrap();
    let state2 = dir.path().join("server-state-2");
    let listen = format!("{}:0", other.ip);
    let server2 = common::server::ServerProc::start_with(
        &state2,
        &home,
        0,
        &[
            "--admin-listen",
            &listen,
            "--admin-token-file",
            dir.path().join("token").to_str().unwrap(),
        ],
    );
    let url2 = format!("http://{}", server2.admin);
    assert!(url2.contains(&other.ip), "{url2}");
    let r = admin(&["--server", &url2, "reload"], false).fails("tessera");
    assert!(
        r.stderr.contains("this server has an admin token"),
        "{}",
        r.stderr
    );
    // Its page's link is the plain address: the page asks for the admin token.
    let r = admin(&["--server", &url2, "page"], false).ok();
    assert_eq!(r.stdout.trim(), format!("{url2}/"));
    assert!(r.stderr.contains("asks for it"), "{}", r.stderr);
    let local = fs::read_to_string(state2.join("local-admin.token")).unwrap();
    let local = local.split_whitespace().last().unwrap().to_string();
    let r = admin(&["--server", &url2, "--token", &local, "reload"], false).fails("tessera");
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    admin(
        &[
            "--server",
            &url2,
            "--token",
            "cli-admin-token-0123456789",
            "reload",
        ],
        false,
    )
    .ok();
}

/// Issue 18, point 11 (the server's command line): `--help` shows the defaults; a home that
/// does not exist is refused; a port in use is said plainly, once, with no other warning;
/// the log has colour only on a terminal, and never with NO_COLOR.
#[test]
fn the_server_shows_its_defaults_and_says_plainly_why_it_cannot_start() {
    let sb = Sandbox::new();
    let help = Command::new(common::bin("tessera-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for want in [
        "[default: [::]:22630]",
        "[default: 127.0.0.1:22631]",
        "[default: 90000]",
        "[default: 30000]",
        "[default: /var/lib/tessera-server]",
        "[default: text]",
        "[default: 60]",
    ] {
        assert!(help.contains(want), "no {want} in:\n{help}");
    }
    let home_line = help.lines().skip_while(|l| !l.contains("--home")).nth(1);
    assert!(
        home_line.is_some_and(|l| l.contains("[default: ")),
        "{help}"
    );

    let server = |home: &Path, listen: &str| {
        let mut c = Command::new(common::bin("tessera-server"));
        c.args(["--no-discovery", "--no-dongles", "--listen", listen])
            // Few connections: no warning about this machine's open-file limit.
            .args(["--max-connections", "100"])
            .args(["--admin-listen", "127.0.0.1:0", "--state-dir"])
            .arg(sb.path("state"))
            .arg("--home")
            .arg(home)
            .env("TESSERA_LOG", "info")
            .env_remove("NO_COLOR");
        c
    };
    let r = Run::from(
        server(&sb.path("no-such-home"), "127.0.0.1:0")
            .output()
            .unwrap(),
    )
    .fails("tessera-server");
    assert!(
        r.stderr.contains(&format!(
            "the home {} does not exist",
            sb.path("no-such-home").display()
        )),
        "{}",
        r.stderr
    );

    // A port in use, with a hosted container (its usage log is open when the bind fails).
    let (key, _) = sb.keygen();
    sb.activate(&key, "1", &[], "1");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let r = Run::from(server(&sb.home, &addr.to_string()).output().unwrap());
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let port = addr.port();
    assert!(
        r.stderr.contains(&format!("port {port} is in use")),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("WARN"),
        "a spurious warning: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("server is gone"), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("Address already in use").count(),
        1,
        "the cause said more than once: {}",
        r.stderr
    );
    // Written to a pipe (a file, the journal): no escape codes.
    assert!(r.stderr.contains("INFO"), "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}'),
        "colour in a log file: {}",
        r.stderr
    );

    // On a terminal (script(1) gives it one): colour, unless NO_COLOR says otherwise.
    let on_terminal = |no_color: bool| {
        let cmd = server(&sb.home, &addr.to_string());
        let mut line: Vec<String> = vec![cmd.get_program().to_string_lossy().into_owned()];
        line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
            .env("TESSERA_LOG", "info")
            .env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let tty = on_terminal(false);
    assert!(tty.contains("INFO"), "{tty}");
    assert!(tty.contains('\u{1b}'), "no colour on a terminal: {tty}");
    let plain = on_terminal(true);
    assert!(plain.contains("INFO"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain}"
    );
    drop(taken);
}

/// Parses a tool's `--json` output.
fn json_of(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.stdout))
}

/// Issue 18, point 11 (the end user's and publisher's tools): `list` says why it shows
/// nothing, and a filter that matched nothing exits 3; vendor ids print in hex; `--json` on
/// every command that prints data; an I/O error is said once.
#[test]
fn list_says_why_it_is_empty_and_every_command_speaks_json() {
    let sb = Sandbox::new();
    let home = sb.home.display().to_string();
    // No home at all: nothing, and which nothing.
    let r = sb.tessera(&["list"]).ok();
    assert!(
        r.stdout
            .contains(&format!("no software containers: {home} does not exist")),
        "{}",
        r.stdout
    );
    let r = sb.tessera(&["list", "--vendor-id", "99"]);
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let help = sb.tessera(&["--help"]).ok();
    assert!(
        help.stdout.contains("3 nothing matched a filter"),
        "{}",
        help.stdout
    );

    // JSON of keygen, request, activate, install.
    let r = sb
        .vendor(&[
            "keygen",
            "--vendor-id",
            "0x1092",
            "--name",
            "Acme",
            "--out",
            "publisher.key",
            "--json",
        ])
        .ok();
    let j = json_of(&r);
    assert_eq!(j["vendor_id"], 4242);
    assert_eq!(j["public_key"].as_str().unwrap().len(), 64);
    let r = sb
        .tessera(&[
            "--json",
            "activate",
            "request",
            "--vendor-id",
            VENDOR,
            "--out",
            "req.bin",
        ])
        .ok();
    let j = json_of(&r);
    let serial = j["container"].as_str().unwrap().to_string();
    assert!(serial.starts_with("SW-"), "{j}");
    assert_eq!(j["vendor_id"], 4242);
    let r = sb
        .vendor(&[
            "activate",
            "--key",
            "publisher.key",
            "--request",
            "req.bin",
            "--out",
            "act.bin",
            "--product",
            "5",
            "--name",
            "Widget",
            "--quantity",
            "3",
            "--json",
        ])
        .ok();
    let j = json_of(&r);
    assert_eq!(j["container"], serial.as_str());
    assert_eq!(j["licenses"][0]["product_code"], 5);
    assert_eq!(j["licenses"][0]["quantity"], 3);
    assert_eq!(j["licenses"][0]["expiry"], serde_json::Value::Null);
    let j = json_of(
        &sb.tessera(&["activate", "install", "act.bin", "--json"])
            .ok(),
    );
    assert_eq!(
        (j["container"].as_str(), j["added"].as_u64()),
        (Some(serial.as_str()), Some(1))
    );

    // list: text in hex, JSON with numbers; a filter of another vendor says what it saw.
    let r = sb.tessera(&["list"]).ok();
    assert_eq!(field(&r.stdout, "vendor:"), "0x1092");
    assert!(
        r.stdout.contains("Widget (vendor 0x1092, product 5)"),
        "{}",
        r.stdout
    );
    let r = sb.tessera(&["list", "--vendor-id", "99"]);
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "no software containers of vendor 0x63 in {home} (1 of another vendor)"
        )),
        "{}",
        r.stdout
    );
    sb.tessera(&["list", "--vendor-id", "4242"]).ok();
    let j = json_of(&sb.tessera(&["list", "--json"]).ok());
    assert_eq!(j["home"], home.as_str());
    assert_eq!(j["home_exists"], true);
    let c = &j["containers"][0];
    assert_eq!(c["serial"], serial.as_str());
    assert_eq!(c["vendor_id"], 4242);
    assert_eq!(c["licenses"][0]["product_name"], "Widget");
    assert_eq!(c["licenses"][0]["in_use"], 0);
    let j = json_of(&sb.tessera(&["info", "--json"]).ok());
    assert_eq!(j["home"], home.as_str());
    assert_eq!(j["version"], tessera::VERSION);
    assert_eq!(j["containers"][0]["serial"], serial.as_str());

    // inspect --json: every kind says what it is, with its facts and signature checks.
    fs::write(sb.path("plain"), b"secret data").unwrap();
    let j = json_of(
        &sb.vendor(&[
            "encrypt-file",
            "--key",
            "publisher.key",
            "--product",
            "5",
            "plain",
            "ct",
            "--json",
        ])
        .ok(),
    );
    assert_eq!(
        (j["product_code"].as_u64(), j["plaintext_bytes"].as_u64()),
        (Some(5), Some(11))
    );
    let j = json_of(
        &sb.vendor(&[
            "decrypt-file",
            "--key",
            "publisher.key",
            "ct",
            "back",
            "--json",
        ])
        .ok(),
    );
    assert_eq!(j["plaintext_bytes"], 11);
    let container = tessera::container::software::list(&sb.home).pop().unwrap();
    let container = container.to_str().unwrap();
    for (file, kind, key, value) in [
        (
            "act.bin",
            "activation",
            "container",
            serde_json::json!(serial),
        ),
        (
            "req.bin",
            "activation request",
            "vendor_id",
            serde_json::json!(4242),
        ),
        ("ct", "ciphertext", "product_code", serde_json::json!(5)),
        (
            "publisher.key",
            "publisher key",
            "name",
            serde_json::json!("Acme"),
        ),
        (
            "publisher.pub",
            "publisher public key",
            "vendor_id",
            serde_json::json!(4242),
        ),
        (
            container,
            "software container",
            "opens_here",
            serde_json::json!(true),
        ),
    ] {
        let j = json_of(
            &sb.vendor(&[
                "inspect",
                file,
                "--publisher-key",
                "publisher.pub",
                "--json",
            ])
            .ok(),
        );
        assert_eq!(j["kind"], kind, "{j}");
        assert_eq!(j[key], value, "{file}: {j}");
        assert_eq!(j["signatures_valid"], true, "{j}");
    }
    let j = json_of(&sb.vendor(&["inspect", "act.bin", "--json"]).ok());
    assert_eq!(j["licenses"][0]["product_name"], "Widget");

    // The virtual dongle's info too.
    let state = sb.path("dongle.state");
    let made = Command::new(common::bin("tessera-dongle"))
        .args(["create", "--state", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success());
    let info = Command::new(common::bin("tessera-dongle"))
        .args(["info", "--state", state.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let j = json_of(&Run::from(info).ok());
    assert!(j["serial"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
    assert_eq!(
        (j["vendor_id"].as_u64(), j["certified"].as_bool()),
        (Some(0), Some(false))
    );

    // An I/O error is said once, not once per wrapping.
    let r = sb
        .vendor(&[
            "activate",
            "--key",
            "no-such.key",
            "--request",
            "req.bin",
            "--out",
            "x",
            "--product",
            "1",
        ])
        .fails("tessera-vendor");
    assert_eq!(r.stderr.matches("os error 2").count(), 1, "{}", r.stderr);
    let r = sb
        .tessera(&["activate", "install", "no-such.act"])
        .fails("tessera");
    assert_eq!(r.stderr.matches("os error 2").count(), 1, "{}", r.stderr);
}
