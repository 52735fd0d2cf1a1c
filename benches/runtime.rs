//! Runtime benchmarks through the C ABI: session open/close, seat acquire/release, and
//! `tessera_encrypt` / `tessera_decrypt` in derived and direct mode against a raw
//! XChaCha20-Poly1305 baseline; and a network seat's encryption (local, under its seat key)
//! against a decryption that needs a round trip to its license server (a `tessera-server` on
//! loopback).
//!
//! Run: `cargo bench --bench runtime`. Results and how to read them: `docs/BENCHMARKS.md`.
//!
//! The fixture (a fresh `TESSERA_HOME`, a generated publisher, an activated software container)
//! is built with the Rust API; everything measured goes through the exported `tessera_*`
//! functions only, and every call must return `TESSERA_OK` or the bench panics, so a broken
//! runtime cannot produce numbers.

use std::ffi::CStr;
use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use criterion::{BenchmarkId, Criterion, Throughput};
use tessera::cipher::{self, Header, Mode};
use tessera::client::Environment;
use tessera::ffi::{
    TESSERA_CIPHERTEXT_OVERHEAD, TESSERA_CRYPT_DERIVED, TESSERA_CRYPT_DIRECT,
    TESSERA_SOURCE_NETWORK, TESSERA_SOURCE_SOFTWARE, tessera_acquire, tessera_close,
    tessera_decrypt, tessera_encrypt, tessera_last_error, tessera_open, tessera_open_options,
    tessera_open_options_init, tessera_release, tessera_seat, tessera_session, tessera_status,
};
use tessera::license::{CountingUnit, VmPolicy};
use tessera::publisher::{LicenseSpec, PublisherKey};

const VENDOR_ID: u32 = 0x1234;
const PRODUCT_CODE: u32 = 1;
/// Plaintext sizes for the crypt groups: tiny, a page, 1 MiB.
const SIZES: [usize; 3] = [64, 4096, 1 << 20];
/// The 40-byte associated data of the raw baseline, the size of a Tessera header (which
/// `tessera_encrypt` authenticates as its AAD), so both sides hash the same amount.
const RAW_AAD: [u8; 40] = [0xA5; 40];

/// Panics unless `st` is `TESSERA_OK`, with the library's detail message.
fn ok(st: tessera_status, what: &str) {
    if st != tessera_status::TESSERA_OK {
        // SAFETY: tessera_last_error never returns NULL and the string lives until the next
        // call on this thread; we copy it at once.
        let detail = unsafe { CStr::from_ptr(tessera_last_error()) }.to_string_lossy();
        panic!("{what} returned {st:?}: {detail}");
    }
}

/// A temporary `TESSERA_HOME` holding an activated software container of `VENDOR_ID` with a
/// 1000-seat per-handle license of `PRODUCT_CODE`, and the publisher key apps compile in.
struct Fixture {
    _home: tempfile::TempDir,
    publisher_key: [u8; 32],
    key: PublisherKey,
}

impl Fixture {
    fn new() -> Fixture {
        let home = tempfile::tempdir().expect("temp dir");
        // SAFETY: the bench is still single-threaded here (criterion has not started and no
        // runtime call has been made), so nothing reads the environment concurrently.
        unsafe { std::env::set_var("TESSERA_HOME", home.path()) };
        let env = Environment {
            home: home.path().into(),
            ..Environment::detect()
        };
        let key = PublisherKey::generate(VENDOR_ID, "bench");
        activate(&env, &key);
        Fixture {
            _home: home,
            publisher_key: key.public_key().to_bytes(),
            key,
        }
    }

    /// Options for a session on the software container. Borrows `self.publisher_key`.
    fn options(&self) -> tessera_open_options {
        let mut o = std::mem::MaybeUninit::<tessera_open_options>::uninit();
        ok(
            tessera_open_options_init(o.as_mut_ptr(), size_of::<tessera_open_options>()),
            "tessera_open_options_init",
        );
        // SAFETY: tessera_open_options_init returned OK, so it wrote every field.
        let mut o = unsafe { o.assume_init() };
        o.vendor_id = VENDOR_ID;
        o.publisher_key = self.publisher_key.as_ptr();
        o.publisher_key_len = self.publisher_key.len();
        o.sources = TESSERA_SOURCE_SOFTWARE;
        o
    }

    fn open(&self) -> tessera_session {
        let o = self.options();
        let mut s: tessera_session = 0;
        ok(tessera_open(&o, &mut s), "tessera_open");
        s
    }
}

/// Activates the bench license of `key` in `env`.
fn activate(env: &Environment, key: &PublisherKey) {
    let (_, req) = tessera::client::request_activation(env, VENDOR_ID).expect("activation request");
    let act = key
        .activate(
            &req,
            &[LicenseSpec {
                product_code: PRODUCT_CODE,
                product_name: "Bench".into(),
                features: u32::MAX,
                quantity: 1_000,
                counting_unit: CountingUnit::Handle,
                exclusive_allowed: false,
                borrow_days: 0,
                expiry: None,
                vm_policy: VmPolicy::Allow,
            }],
            tessera::util::now(),
        )
        .expect("activation");
    tessera::client::install_activation(env, &act, None).expect("install activation");
}

/// A `tessera-server` on loopback hosting the bench license in a home of its own; killed
/// when dropped.
struct Server {
    child: std::process::Child,
    addr: std::ffi::CString,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(key: &PublisherKey) -> Server {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        activate(
            &Environment {
                home: home.clone(),
                ..Environment::detect()
            },
            key,
        );
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-server"))
            .args([
                "--name",
                "bench",
                "--no-discovery",
                "--no-dongles",
                "--no-admin",
            ])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--lease-ms",
                "30000",
                "--renew-ms",
                "10000",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--home")
            .arg(&home)
            .env("TESSERA_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tessera-server");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("server line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_string();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Server {
            child,
            addr: std::ffi::CString::new(addr).expect("address"),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network seat: encryption in both modes (local, under its seat key; no round trip), and
/// the decryption of a format-1 ciphertext it never opened (one `DeriveKey` round trip to the
/// server each), 64 bytes.
fn bench_network(c: &mut Criterion, fx: &Fixture) {
    let server = Server::start(&fx.key);
    let mut o = fx.options();
    o.sources = TESSERA_SOURCE_NETWORK;
    o.servers = server.addr.as_ptr();
    let mut session: tessera_session = 0;
    ok(tessera_open(&o, &mut session), "tessera_open (network)");
    let seat = acquire(session);
    let input = plaintext(64);
    let mut out = vec![0u8; 64 + TESSERA_CIPHERTEXT_OVERHEAD];
    let mut g = c.benchmark_group("network");
    g.throughput(Throughput::Bytes(64));
    for (name, flags) in [
        ("encrypt-derived", TESSERA_CRYPT_DERIVED),
        ("encrypt-direct", TESSERA_CRYPT_DIRECT),
    ] {
        g.bench_with_input(BenchmarkId::new(name, 64), &input, |b, input| {
            b.iter(|| encrypt(black_box(seat), flags, black_box(input), &mut out))
        });
    }
    let mut ct = vec![0u8; 64 + TESSERA_CIPHERTEXT_OVERHEAD];
    encrypt(seat, TESSERA_CRYPT_DERIVED, &input, &mut ct);
    let mut back = vec![0u8; 64];
    g.bench_with_input(BenchmarkId::new("decrypt-own", 64), &ct, |b, ct| {
        b.iter(|| decrypt(black_box(seat), black_box(ct), &mut back))
    });
    let secret = fx.key.product_secret(PRODUCT_CODE);
    g.bench_function(BenchmarkId::new("decrypt-first-open-round-trip", 64), |b| {
        b.iter_batched(
            || {
                let h = Header::new(Mode::Derived, VENDOR_ID, PRODUCT_CODE);
                cipher::encrypt(&secret, &h, &input).expect("encrypt")
            },
            |ct| decrypt(seat, &ct, &mut back),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    ok(tessera_release(seat), "tessera_release");
    ok(tessera_close(session), "tessera_close");
    drop(server);
}

fn acquire(session: tessera_session) -> tessera_seat {
    let mut seat: tessera_seat = 0;
    ok(
        tessera_acquire(session, PRODUCT_CODE, 1, 0, &mut seat),
        "tessera_acquire",
    );
    seat
}

fn encrypt(seat: tessera_seat, flags: u32, input: &[u8], out: &mut [u8]) {
    let mut n = 0usize;
    ok(
        tessera_encrypt(
            seat,
            flags,
            input.as_ptr(),
            input.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut n,
        ),
        "tessera_encrypt",
    );
    assert_eq!(n, input.len() + TESSERA_CIPHERTEXT_OVERHEAD);
}

fn decrypt(seat: tessera_seat, input: &[u8], out: &mut [u8]) {
    let mut n = 0usize;
    ok(
        tessera_decrypt(
            seat,
            0,
            input.as_ptr(),
            input.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut n,
        ),
        "tessera_decrypt",
    );
    assert_eq!(n + TESSERA_CIPHERTEXT_OVERHEAD, input.len());
}

fn bench_open_close(c: &mut Criterion, fx: &Fixture) {
    let o = fx.options();
    let mut g = c.benchmark_group("open_close");
    g.bench_function("software", |b| {
        b.iter(|| {
            let mut s: tessera_session = 0;
            ok(tessera_open(black_box(&o), &mut s), "tessera_open");
            ok(tessera_close(black_box(s)), "tessera_close");
        })
    });
    g.finish();
}

fn bench_acquire_release(c: &mut Criterion, session: tessera_session) {
    let mut g = c.benchmark_group("acquire_release");
    g.bench_function("handle", |b| {
        b.iter(|| {
            let seat = acquire(black_box(session));
            ok(tessera_release(black_box(seat)), "tessera_release");
        })
    });
    g.finish();
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn bench_encrypt(c: &mut Criterion, seat: tessera_seat) {
    let aead = XChaCha20Poly1305::new(&[0x42u8; 32].into());
    let nonce = XNonce::from([0x24u8; 24]);
    let mut g = c.benchmark_group("encrypt");
    for len in SIZES {
        let input = plaintext(len);
        g.throughput(Throughput::Bytes(len as u64));

        // Baseline: copy the plaintext into a preallocated buffer and encrypt it there (what
        // tessera_encrypt does into the caller's buffer), fixed key and nonce.
        let mut buf = vec![0u8; len];
        g.bench_with_input(BenchmarkId::new("raw", len), &input, |b, input| {
            b.iter(|| {
                buf.copy_from_slice(black_box(input));
                let tag = aead
                    .encrypt_in_place_detached(&nonce, &RAW_AAD, &mut buf)
                    .expect("raw encrypt");
                black_box(tag);
            })
        });

        let mut out = vec![0u8; len + TESSERA_CIPHERTEXT_OVERHEAD];
        for (name, flags) in [
            ("derived", TESSERA_CRYPT_DERIVED),
            ("direct", TESSERA_CRYPT_DIRECT),
        ] {
            g.bench_with_input(BenchmarkId::new(name, len), &input, |b, input| {
                b.iter(|| encrypt(black_box(seat), flags, black_box(input), &mut out))
            });
        }
    }
    g.finish();
}

fn bench_decrypt(c: &mut Criterion, seat: tessera_seat) {
    let aead = XChaCha20Poly1305::new(&[0x42u8; 32].into());
    let nonce = XNonce::from([0x24u8; 24]);
    let mut g = c.benchmark_group("decrypt");
    for len in SIZES {
        let input = plaintext(len);
        g.throughput(Throughput::Bytes(len as u64));

        // Baseline: copy the ciphertext into a preallocated buffer and decrypt it there.
        let mut ct = input.clone();
        let tag: Tag = aead
            .encrypt_in_place_detached(&nonce, &RAW_AAD, &mut ct)
            .expect("raw encrypt");
        let mut buf = vec![0u8; len];
        g.bench_with_input(BenchmarkId::new("raw", len), &ct, |b, ct| {
            b.iter(|| {
                buf.copy_from_slice(black_box(ct));
                aead.decrypt_in_place_detached(&nonce, &RAW_AAD, &mut buf, &tag)
                    .expect("raw decrypt");
            })
        });

        let mut out = vec![0u8; len];
        for (name, flags) in [
            ("derived", TESSERA_CRYPT_DERIVED),
            ("direct", TESSERA_CRYPT_DIRECT),
        ] {
            let mut ct = vec![0u8; len + TESSERA_CIPHERTEXT_OVERHEAD];
            encrypt(seat, flags, &input, &mut ct);
            decrypt(seat, &ct, &mut out);
            assert_eq!(out, input, "{name} round trip");
            g.bench_with_input(BenchmarkId::new(name, len), &ct, |b, ct| {
                b.iter(|| decrypt(black_box(seat), black_box(ct), &mut out))
            });
        }
    }
    g.finish();
}

fn main() {
    let fx = Fixture::new();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();

    bench_open_close(&mut c, &fx);

    let session = fx.open();
    bench_acquire_release(&mut c, session);

    let seat = acquire(session);
    bench_encrypt(&mut c, seat);
    bench_decrypt(&mut c, seat);
    ok(tessera_release(seat), "tessera_release");
    ok(tessera_close(session), "tessera_close");

    bench_network(&mut c, &fx);

    c.final_summary();
}
