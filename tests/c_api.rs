//! The C API called as a C app would (through the exported functions): the happy path,
//! every kind of bad argument, handles, buffers, verdicts, activation and threads.
//!
//! All tests share one TESSERA_HOME (the C API reads it from the environment, which is
//! process-wide) and use different product codes so their seats do not meet.

use std::ptr::{null, null_mut};
use std::sync::{Arc, OnceLock};

use tessera::ffi::status::{ALL, tessera_status};
use tessera::ffi::*;
use tessera::license::CountingUnit;
use tessera::publisher::{LicenseSpec, PublisherKey};

mod common;
use common::{activate, env_in, spec};

use tessera_status::*;

const VENDOR: u32 = 0xC0FFEE;

struct Fixture {
    _home: tempfile::TempDir,
    key: PublisherKey,
    home: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let home = tempfile::tempdir().unwrap();
        // SAFETY: set once, before any test thread reads the environment through the runtime.
        unsafe { std::env::set_var("TESSERA_HOME", home.path()) };
        let key = PublisherKey::generate(VENDOR, "C API tests");
        let env = env_in(home.path());
        let mut exclusive = spec(5, 3, CountingUnit::Handle);
        exclusive.exclusive_allowed = true;
        let mut expired = spec(6, 1, CountingUnit::Handle);
        expired.expiry = Some(tessera::util::now() - 10);
        activate(
            &env,
            &key,
            &[
                spec(1, 100, CountingUnit::Handle),
                spec(2, 1, CountingUnit::Handle),
                spec(3, 100, CountingUnit::Handle),
                spec(4, 2, CountingUnit::Process),
                exclusive,
                expired,
                LicenseSpec {
                    features: 0b0101,
                    ..spec(7, 10, CountingUnit::Handle)
                },
            ],
        );
        Fixture {
            home: home.path().to_path_buf(),
            _home: home,
            key,
        }
    })
}

fn options(key: &[u8; 32]) -> tessera_open_options {
    let mut o = std::mem::MaybeUninit::<tessera_open_options>::uninit();
    assert_eq!(
        tessera_open_options_init(o.as_mut_ptr(), size_of::<tessera_open_options>()),
        TESSERA_OK
    );
    // SAFETY: initialized by tessera_open_options_init.
    let mut o = unsafe { o.assume_init() };
    o.vendor_id = VENDOR;
    o.publisher_key = key.as_ptr();
    o.publisher_key_len = key.len();
    o
}

fn open() -> tessera_session {
    let f = fixture();
    let key = f.key.public_key().to_bytes();
    let o = options(&key);
    let mut s = 0;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_OK, "{}", last_error());
    assert_ne!(s, 0);
    s
}

fn last_error() -> String {
    // SAFETY: tessera_last_error never returns NULL.
    unsafe { std::ffi::CStr::from_ptr(tessera_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn acquire(s: tessera_session, product: u32) -> tessera_seat {
    let mut seat = 0;
    assert_eq!(
        tessera_acquire(s, product, 0, 0, &mut seat),
        TESSERA_OK,
        "{}",
        last_error()
    );
    seat
}

fn encrypt(seat: tessera_seat, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; data.len() + TESSERA_CIPHERTEXT_OVERHEAD];
    let mut n = 0;
    assert_eq!(
        tessera_encrypt(
            seat,
            flags,
            data.as_ptr(),
            data.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut n
        ),
        TESSERA_OK,
        "{}",
        last_error()
    );
    out.truncate(n);
    out
}

fn decrypt(seat: tessera_seat, ct: &[u8]) -> Result<Vec<u8>, tessera_status> {
    let mut out = vec![0u8; ct.len()];
    let mut n = 0;
    match tessera_decrypt(
        seat,
        0,
        ct.as_ptr(),
        ct.len(),
        out.as_mut_ptr(),
        out.len(),
        &mut n,
    ) {
        TESSERA_OK => {
            out.truncate(n);
            Ok(out)
        }
        e => Err(e),
    }
}

#[test]
fn happy_path_open_acquire_info_encrypt_decrypt_release_close() {
    let s = open();
    let seat = acquire(s, 1);
    let mut info: tessera_seat_details = unsafe { std::mem::zeroed() };
    info.struct_size = size_of::<tessera_seat_details>() as u32;
    assert_eq!(tessera_seat_info(seat, &mut info), TESSERA_OK);
    assert_eq!(
        (
            info.vendor_id,
            info.product_code,
            info.features,
            info.quantity
        ),
        (VENDOR, 1, 0xFF, 100)
    );
    assert!(info.seats_in_use >= 1);
    assert_eq!(info.source, TESSERA_SOURCE_SOFTWARE);
    assert_eq!(info.counting_unit, TESSERA_UNIT_HANDLE);
    assert_eq!(info.container_kind, TESSERA_CONTAINER_SOFTWARE);
    assert_eq!(info.expiry, 0);
    let serial = unsafe { std::ffi::CStr::from_ptr(info.container_serial.as_ptr()) };
    assert!(serial.to_str().unwrap().starts_with("SW-"));

    for flags in [TESSERA_CRYPT_DERIVED, TESSERA_CRYPT_DIRECT] {
        for len in [0usize, 1, 64, 4096, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ct = encrypt(seat, flags, &data);
            assert_eq!(ct.len(), len + TESSERA_CIPHERTEXT_OVERHEAD);
            assert_eq!(decrypt(seat, &ct).unwrap(), data);
            // The publisher's tool opens it too.
            let secret = fixture().key.product_secret(1);
            assert_eq!(tessera::cipher::decrypt(&secret, &ct).unwrap(), data);
        }
    }
    assert_eq!(tessera_release(seat), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn null_pointers_and_bad_options_are_invalid_arguments() {
    let f = fixture();
    let key = f.key.public_key().to_bytes();
    let mut s = 0;
    let mut seat = 0;
    let mut n = 0usize;
    assert_eq!(
        tessera_open_options_init(null_mut(), size_of::<tessera_open_options>()),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(tessera_open(null(), &mut s), TESSERA_E_INVALID_ARGUMENT);
    assert_eq!(
        tessera_open(&options(&key), null_mut()),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert!(!last_error().is_empty());

    let mut o = options(&key);
    o.struct_size = 4;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_E_INVALID_ARGUMENT);
    let mut o = options(&key);
    o.vendor_id = 0;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_E_INVALID_ARGUMENT);
    let mut o = options(&key);
    o.publisher_key_len = 31;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_E_INVALID_ARGUMENT);
    let mut o = options(&key);
    o.publisher_key = null();
    assert_eq!(tessera_open(&o, &mut s), TESSERA_E_INVALID_ARGUMENT);
    let mut o = options(&key);
    o.sources = 0x80;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_E_INVALID_ARGUMENT);
    assert_eq!(s, 0, "out-parameter untouched on failure");

    // A struct from a newer header: zero tail accepted, a set unknown field refused.
    #[repr(C)]
    struct Newer {
        base: tessera_open_options,
        extra: u64,
    }
    let mut newer = Newer {
        base: options(&key),
        extra: 0,
    };
    newer.base.struct_size = size_of::<Newer>() as u32;
    assert_eq!(tessera_open(&newer.base, &mut s), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
    newer.extra = 1;
    assert_eq!(tessera_open(&newer.base, &mut s), TESSERA_E_UNSUPPORTED);

    let s = open();
    assert_eq!(
        tessera_acquire(s, 1, 0, 0, null_mut()),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_acquire(s, 1, 0, 0x10, &mut seat),
        TESSERA_E_INVALID_ARGUMENT
    );
    let seat = acquire(s, 1);
    assert_eq!(
        tessera_seat_info(seat, null_mut()),
        TESSERA_E_INVALID_ARGUMENT
    );
    let mut info: tessera_seat_details = unsafe { std::mem::zeroed() };
    assert_eq!(
        tessera_seat_info(seat, &mut info),
        TESSERA_E_INVALID_ARGUMENT,
        "struct_size 0"
    );
    let data = [1u8; 8];
    let mut out = [0u8; 128];
    assert_eq!(
        tessera_encrypt(seat, 0, data.as_ptr(), 8, out.as_mut_ptr(), 128, null_mut()),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_encrypt(seat, 0, null(), 8, out.as_mut_ptr(), 128, &mut n),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_encrypt(seat, 0, data.as_ptr(), 8, null_mut(), 128, &mut n),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_encrypt(seat, 7, data.as_ptr(), 8, out.as_mut_ptr(), 128, &mut n),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_decrypt(seat, 1, out.as_ptr(), 128, out.as_mut_ptr(), 128, &mut n),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_activation_request(s, null_mut(), 0, null_mut()),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(
        tessera_activation_install(s, null(), 5),
        TESSERA_E_INVALID_ARGUMENT
    );
    assert_eq!(tessera_release(seat), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn stale_forged_released_and_foreign_handles_are_invalid_handles() {
    let s = open();
    let seat = acquire(s, 1);
    let mut other = 0;
    let mut n = 0;
    let mut out = [0u8; 64];
    for bogus in [0u64, 1, u64::MAX, seat ^ 0x1_0000_0000, seat + 1000] {
        assert_eq!(
            tessera_release(bogus),
            TESSERA_E_INVALID_HANDLE,
            "{bogus:#x}"
        );
        assert_eq!(tessera_close(bogus), TESSERA_E_INVALID_HANDLE);
        assert_eq!(
            tessera_acquire(bogus, 1, 0, 0, &mut other),
            TESSERA_E_INVALID_HANDLE
        );
    }
    // A seat handle is not a session handle and the other way round.
    assert_eq!(tessera_close(seat), TESSERA_E_INVALID_HANDLE);
    assert_eq!(
        tessera_encrypt(s, 0, null(), 0, out.as_mut_ptr(), 64, &mut n),
        TESSERA_E_INVALID_HANDLE
    );
    assert_eq!(tessera_release(seat), TESSERA_OK);
    assert_eq!(
        tessera_release(seat),
        TESSERA_E_INVALID_HANDLE,
        "second release is harmless"
    );
    assert_eq!(
        tessera_encrypt(seat, 0, null(), 0, out.as_mut_ptr(), 64, &mut n),
        TESSERA_E_INVALID_HANDLE
    );

    // Closing a session releases its seats: their handles die, their slots free up.
    let s2 = open();
    let a = acquire(s2, 2);
    let mut b = 0;
    assert_eq!(tessera_acquire(s, 2, 0, 0, &mut b), TESSERA_E_NO_SEAT);
    assert_eq!(tessera_close(s2), TESSERA_OK);
    assert_eq!(tessera_release(a), TESSERA_E_INVALID_HANDLE);
    assert_eq!(tessera_close(s2), TESSERA_E_INVALID_HANDLE);
    assert_eq!(tessera_acquire(s, 2, 0, 0, &mut b), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn buffers_size_queries_and_bad_ciphertext() {
    let s = open();
    let seat = acquire(s, 3);
    let data = vec![9u8; 1000];
    let mut n = 0usize;
    assert_eq!(
        tessera_encrypt(seat, 0, data.as_ptr(), data.len(), null_mut(), 0, &mut n),
        TESSERA_E_BUFFER_TOO_SMALL
    );
    assert_eq!(n, 1000 + TESSERA_CIPHERTEXT_OVERHEAD);
    let mut small = vec![0u8; 10];
    n = 0;
    assert_eq!(
        tessera_encrypt(
            seat,
            1,
            data.as_ptr(),
            data.len(),
            small.as_mut_ptr(),
            small.len(),
            &mut n
        ),
        TESSERA_E_BUFFER_TOO_SMALL
    );
    assert_eq!(n, 1056);
    let ct = encrypt(seat, 0, &data);
    n = 0;
    assert_eq!(
        tessera_decrypt(seat, 0, ct.as_ptr(), ct.len(), null_mut(), 0, &mut n),
        TESSERA_E_BUFFER_TOO_SMALL
    );
    assert_eq!(n, 1000);

    // Every flipped bit, in both modes, is refused: TAMPERED, or a header naming another
    // format version, publisher or product.
    for flags in [0, 1] {
        let ct = encrypt(seat, flags, b"short secret");
        for i in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let e = decrypt(seat, &bad).unwrap_err();
            assert!(
                e == TESSERA_E_TAMPERED
                    || e == TESSERA_E_UNKNOWN_VERSION
                    || e == TESSERA_E_WRONG_VENDOR
                    || e == TESSERA_E_NO_LICENSE,
                "bit {i}: {e:?}"
            );
        }
    }
    // Truncated and garbage ciphertext.
    for cut in [0, 1, 10, 40, 55, ct.len() - 1] {
        assert_eq!(
            decrypt(seat, &ct[..cut]),
            Err(TESSERA_E_TAMPERED),
            "cut {cut}"
        );
    }
    assert_eq!(decrypt(seat, &[0x55; 300]), Err(TESSERA_E_TAMPERED));
    // Ciphertext of another product is not this seat's to open.
    let other = acquire(s, 1);
    let ct1 = encrypt(other, 0, b"for product 1");
    assert_eq!(decrypt(seat, &ct1), Err(TESSERA_E_NO_LICENSE));
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn licensing_verdicts_have_their_own_statuses() {
    let s = open();
    let mut seat = 0;
    assert_eq!(
        tessera_acquire(s, 999, 0, 0, &mut seat),
        TESSERA_E_NO_LICENSE
    );
    assert!(last_error().contains("999"), "{}", last_error());
    assert_eq!(
        tessera_acquire(s, 7, 0b0010, 0, &mut seat),
        TESSERA_E_FEATURE_MISSING
    );
    assert_eq!(tessera_acquire(s, 7, 0b0100, 0, &mut seat), TESSERA_OK);
    assert_eq!(tessera_acquire(s, 6, 0, 0, &mut seat), TESSERA_E_EXPIRED);
    // Exclusive: refused where the license does not allow it...
    assert_eq!(
        tessera_acquire(s, 1, 0, TESSERA_ACQUIRE_EXCLUSIVE, &mut seat),
        TESSERA_E_EXCLUSIVE_DENIED
    );
    // ...and where it does, it blocks every other seat until released.
    let mut x = 0;
    assert_eq!(
        tessera_acquire(s, 5, 0, TESSERA_ACQUIRE_EXCLUSIVE, &mut x),
        TESSERA_OK
    );
    let mut info: tessera_seat_details = unsafe { std::mem::zeroed() };
    info.struct_size = size_of::<tessera_seat_details>() as u32;
    assert_eq!(tessera_seat_info(x, &mut info), TESSERA_OK);
    assert_eq!(info.flags, TESSERA_ACQUIRE_EXCLUSIVE);
    assert_eq!(
        tessera_acquire(s, 5, 0, 0, &mut seat),
        TESSERA_E_EXCLUSIVE_DENIED
    );
    assert_eq!(tessera_release(x), TESSERA_OK);
    let y = acquire(s, 5);
    assert_eq!(
        tessera_acquire(s, 5, 0, TESSERA_ACQUIRE_EXCLUSIVE, &mut x),
        TESSERA_E_EXCLUSIVE_DENIED,
        "exclusive needs an idle license"
    );
    assert_eq!(tessera_release(y), TESSERA_OK);
    // Process unit: one process holds one seat however often it acquires.
    let p1 = acquire(s, 4);
    let p2 = acquire(s, 4);
    assert_eq!(tessera_seat_info(p2, &mut info), TESSERA_OK);
    assert_eq!(
        (info.seats_in_use, info.counting_unit),
        (1, TESSERA_UNIT_PROCESS)
    );
    assert_eq!(tessera_release(p1), TESSERA_OK);
    assert_eq!(tessera_release(p2), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn a_session_with_another_publishers_key_finds_no_license() {
    let f = fixture();
    let stranger = PublisherKey::generate(VENDOR, "impostor")
        .public_key()
        .to_bytes();
    let o = options(&stranger);
    let mut s = 0;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_OK);
    let mut seat = 0;
    assert_eq!(tessera_acquire(s, 1, 0, 0, &mut seat), TESSERA_E_NO_LICENSE);
    assert_eq!(tessera_close(s), TESSERA_OK);
    // And with the right key but only the dongle source allowed, none either.
    let key = f.key.public_key().to_bytes();
    let mut o = options(&key);
    o.sources = TESSERA_SOURCE_DONGLE;
    assert_eq!(tessera_open(&o, &mut s), TESSERA_OK);
    assert_eq!(tessera_acquire(s, 1, 0, 0, &mut seat), TESSERA_E_NO_LICENSE);
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn activation_through_the_c_api_adds_licenses_and_survives_bad_input() {
    let f = fixture();
    let s = open();
    let mut n = 0usize;
    assert_eq!(
        tessera_activation_request(s, null_mut(), 0, &mut n),
        TESSERA_E_BUFFER_TOO_SMALL
    );
    let mut req = vec![0u8; n];
    assert_eq!(
        tessera_activation_request(s, req.as_mut_ptr(), req.len(), &mut n),
        TESSERA_OK
    );
    req.truncate(n);
    let act = f
        .key
        .activate(
            &req,
            &[spec(40, 1, CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    // Garbage, truncated and bit-flipped activations: clear statuses, container untouched.
    assert_eq!(
        tessera_activation_install(s, b"garbage".as_ptr(), 7),
        TESSERA_E_MALFORMED
    );
    assert_eq!(
        tessera_activation_install(s, act.as_ptr(), act.len() / 2),
        TESSERA_E_MALFORMED
    );
    let mut flipped = act.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        tessera_activation_install(s, flipped.as_ptr(), flipped.len()),
        TESSERA_E_BAD_SIGNATURE
    );
    let mut future = act.clone();
    future[4] = 2;
    assert_eq!(
        tessera_activation_install(s, future.as_ptr(), future.len()),
        TESSERA_E_UNKNOWN_VERSION
    );
    // Signed by another publisher claiming the same vendor id.
    let impostor = PublisherKey::generate(VENDOR, "impostor");
    let fake = impostor
        .activate(
            &req,
            &[spec(41, 1, CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    assert_eq!(
        tessera_activation_install(s, fake.as_ptr(), fake.len()),
        TESSERA_E_BAD_SIGNATURE
    );
    // The right key, but a session opened for another vendor id: WRONG_VENDOR, not installed.
    let key = f.key.public_key().to_bytes();
    let mut other = options(&key);
    other.vendor_id = VENDOR + 1;
    let mut s2 = 0;
    assert_eq!(tessera_open(&other, &mut s2), TESSERA_OK);
    assert_eq!(
        tessera_activation_install(s2, act.as_ptr(), act.len()),
        TESSERA_E_WRONG_VENDOR
    );
    assert_eq!(tessera_close(s2), TESSERA_OK);
    let mut seat = 0;
    assert_eq!(
        tessera_acquire(s, 1, 0, 0, &mut seat),
        TESSERA_OK,
        "old licenses still work"
    );
    assert_eq!(
        tessera_acquire(s, 40, 0, 0, &mut seat),
        TESSERA_E_NO_LICENSE
    );
    assert_eq!(
        tessera_activation_install(s, act.as_ptr(), act.len()),
        TESSERA_OK
    );
    assert_eq!(
        tessera_acquire(s, 40, 0, 0, &mut seat),
        TESSERA_OK,
        "new license works"
    );
    assert_eq!(
        tessera_acquire(s, 3, 0, 0, &mut seat),
        TESSERA_OK,
        "old ones kept"
    );
    // An activation for a container on another machine does not install here.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_env = tessera::client::Environment {
        home: elsewhere.path().to_path_buf(),
        host: tessera::host::HostIdentity::simulated("other machine"),
        clock: Arc::new(tessera::util::SystemClock),
    };
    let (_, other_req) = tessera::client::request_activation(&other_env, VENDOR).unwrap();
    let other_act = f
        .key
        .activate(
            &other_req,
            &[spec(42, 1, CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    assert_eq!(
        tessera_activation_install(s, other_act.as_ptr(), other_act.len()),
        TESSERA_E_BINDING_MISMATCH
    );
    assert_eq!(tessera_close(s), TESSERA_OK);
    assert!(f.home.join("containers").exists());
}

#[test]
fn every_status_has_a_distinct_string() {
    let mut seen = std::collections::HashSet::new();
    for st in ALL {
        // SAFETY: tessera_status_str never returns NULL.
        let s = unsafe { std::ffi::CStr::from_ptr(tessera_status_str(st as i32)) }
            .to_str()
            .unwrap();
        assert!(!s.is_empty() && s != "unknown status", "{st:?}");
        assert!(seen.insert(s), "{s} used twice");
    }
    for bogus in [-1, 50, 99, 1234, i32::MAX] {
        let s = unsafe { std::ffi::CStr::from_ptr(tessera_status_str(bogus)) };
        assert_eq!(s.to_str().unwrap(), "unknown status");
    }
    assert_eq!(tessera_abi_version(), TESSERA_ABI_VERSION);
    let v = unsafe { std::ffi::CStr::from_ptr(tessera_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn many_threads_share_sessions_and_seats() {
    let s = open();
    let shared = acquire(s, 3);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..50 {
                    let data = vec![(t * 50 + i) as u8; 100 + i];
                    let ct = encrypt(shared, (i % 2) as u32, &data);
                    assert_eq!(decrypt(shared, &ct).unwrap(), data);
                    let mut mine = 0;
                    assert_eq!(tessera_acquire(s, 3, 0, 0, &mut mine), TESSERA_OK);
                    assert_eq!(tessera_release(mine), TESSERA_OK);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(tessera_release(shared), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn test_runs_do_not_broadcast_discovery_probes() {
    // .cargo/config.toml (and the Makefile) turn discovery off for test runs: a session
    // that finds no local license must not send broadcasts onto the real network.
    assert!(!tessera::net::discovery::discovery_enabled());
}

#[test]
fn a_seat_acquired_while_its_session_closes_never_outlives_it() {
    // tessera_acquire on one thread, tessera_close on another: whichever wins, no seat handle
    // may stay valid after both returned (it would hold a seat of a closed session).
    for round in 0..200u64 {
        let s = open();
        let acquirer = std::thread::spawn(move || {
            let mut seat = 0;
            let st = tessera_acquire(s, 1, 0, 0, &mut seat);
            (st, seat)
        });
        std::thread::sleep(std::time::Duration::from_micros(round % 7 * 30));
        assert_eq!(tessera_close(s), TESSERA_OK);
        let (st, seat) = acquirer.join().unwrap();
        if st == TESSERA_OK {
            assert_eq!(
                tessera_release(seat),
                TESSERA_E_INVALID_HANDLE,
                "round {round}: the seat outlived its closed session"
            );
        } else {
            assert_eq!(st, TESSERA_E_INVALID_HANDLE, "round {round}");
        }
    }
}

#[test]
fn a_released_seat_is_an_invalid_handle_before_anything_else_is_checked() {
    let s = open();
    let seat = acquire(s, 3);
    let ct = encrypt(seat, TESSERA_CRYPT_DERIVED, b"hello");
    assert_eq!(tessera_release(seat), TESSERA_OK);
    let mut n = 0usize;
    // A size query and garbage input on a released seat: the handle is what is wrong.
    assert_eq!(
        tessera_encrypt(seat, 0, b"x".as_ptr(), 1, null_mut(), 0, &mut n),
        TESSERA_E_INVALID_HANDLE
    );
    assert_eq!(
        tessera_decrypt(seat, 0, b"junk".as_ptr(), 4, null_mut(), 0, &mut n),
        TESSERA_E_INVALID_HANDLE
    );
    assert_eq!(decrypt(seat, &ct), Err(TESSERA_E_INVALID_HANDLE));
    assert_eq!(tessera_close(s), TESSERA_OK);
}

#[test]
fn a_ciphertext_of_another_publisher_is_the_wrong_vendor() {
    let s = open();
    let seat = acquire(s, 3);
    let mut ct = encrypt(seat, TESSERA_CRYPT_DERIVED, b"hello");
    let header = tessera::cipher::Header::parse(&ct).unwrap();
    assert_eq!(header.vendor_id, VENDOR);
    // The vendor id sits in the clear header (bytes 8..12, little endian).
    assert_eq!(ct[8..12], VENDOR.to_le_bytes());
    ct[8..12].copy_from_slice(&0x7E55u32.to_le_bytes());
    assert_eq!(decrypt(seat, &ct), Err(TESSERA_E_WRONG_VENDOR));
    assert_eq!(tessera_release(seat), TESSERA_OK);
    assert_eq!(tessera_close(s), TESSERA_OK);
}
