//! Dongles end to end: the virtual dongle (`tessera-dongle`) as a separate process, in HID
//! mode over its report socket and in mass-storage mode over a FUSE volume; programming by
//! the publisher's tool; every runtime call on a dongle license; exclusive-mode lockout with
//! two host identities; unplug and replug; restart; kill -9 while programming.
//!
//! The tests share the process-wide dongle directory and the machine's mount table, so they
//! run one at a time (a global lock).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tessera::Error;
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, SourceKind, sources};
use tessera::dongle::client::DongleMode;
use tessera::host::{HostIdentity, Hypervisor, MachineKind};
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

mod common;
use common::spec;

const VENDOR: u32 = 0xD0;

fn serial_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running virtual dongle; stopped (and its volume unmounted) on drop.
struct VirtualDongle {
    child: Option<Child>,
    state: PathBuf,
    socket: Option<PathBuf>,
    mount: Option<PathBuf>,
    window_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Hid,
    Msd,
}

impl VirtualDongle {
    fn create(dir: &Path) -> PathBuf {
        let state = dir.join("dongle.state");
        let out = Command::new(common::bin("tessera-dongle"))
            .args(["create", "--state"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        state
    }

    fn start(state: &Path, dir: &Path, t: Transport, window_ms: u64) -> VirtualDongle {
        let mut d = VirtualDongle {
            child: None,
            state: state.to_path_buf(),
            socket: (t == Transport::Hid).then(|| dir.join("dongles").join("d.hid")),
            mount: (t == Transport::Msd).then(|| dir.join("volume")),
            window_ms,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(common::bin("tessera-dongle"));
        cmd.args(["serve", "--state"])
            .arg(&self.state)
            .args([
                "--share-window-ms",
                &self.window_ms.to_string(),
                "--cooldown-ms",
                "60000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(s) = &self.socket {
            std::fs::create_dir_all(s.parent().unwrap()).unwrap();
            cmd.arg("--socket").arg(s);
        }
        if let Some(m) = &self.mount {
            std::fs::create_dir_all(m).unwrap();
            cmd.arg("--msd").arg(m);
        }
        self.child = Some(cmd.spawn().unwrap());
        let ready = |d: &VirtualDongle| match (&d.socket, &d.mount) {
            (Some(s), _) => s.exists(),
            (_, Some(m)) => m.join("TESSERA.ID").exists(),
            _ => false,
        };
        let start = Instant::now();
        while !ready(self) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "virtual dongle did not come up"
            );
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("virtual dongle exited: {st}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unplug: SIGTERM and wait (the volume is unmounted, the socket removed).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unmount();
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unmount();
    }

    fn unmount(&self) {
        if let Some(m) = &self.mount {
            let _ = Command::new("fusermount3")
                .args(["-u", "-q"])
                .arg(m)
                .stderr(Stdio::null())
                .status();
        }
        if let Some(s) = &self.socket {
            let _ = std::fs::remove_file(s);
        }
    }
}

impl Drop for VirtualDongle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_dongle_dir(dir: &Path) {
    // SAFETY: the dongle tests run one at a time under serial_lock.
    unsafe { std::env::set_var("TESSERA_DONGLE_DIR", dir.join("dongles")) };
}

fn env(home: &Path, name: &str) -> Environment {
    Environment {
        home: home.to_path_buf(),
        host: HostIdentity::simulated(name),
        clock: Arc::new(SystemClock),
    }
}

fn session(env: &Environment, key: &PublisherKey) -> Session {
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::DONGLE;
    o.timeout = Duration::from_secs(2);
    Session::open_in(o, env.clone()).unwrap()
}

/// A virtual HID dongle (10 s window) in a fresh directory that this process's dongle
/// discovery looks in, programmed by a new publisher with `specs`. Take `serial_lock` first.
struct Rig {
    dongle: VirtualDongle,
    key: PublisherKey,
    serial: String,
    state: PathBuf,
    dir: tempfile::TempDir,
}

fn hid_rig(specs: &[tessera::publisher::LicenseSpec]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    set_dongle_dir(dir.path());
    let state = VirtualDongle::create(dir.path());
    let dongle = VirtualDongle::start(&state, dir.path(), Transport::Hid, 10_000);
    let key = PublisherKey::generate(VENDOR, "dongle tests");
    let serial = program(&key, specs);
    Rig {
        dongle,
        key,
        serial,
        state,
        dir,
    }
}

fn program(key: &PublisherKey, specs: &[tessera::publisher::LicenseSpec]) -> String {
    let mut c =
        tessera::dongle::program::find(None, Duration::from_secs(5)).expect("one dongle attached");
    let done = tessera::dongle::program::program(key, &mut c, specs).expect("programming");
    done.serial
}

fn every_call_works_on_a_dongle_license(t: Transport) {
    let _l = serial_lock();
    let dir = tempfile::tempdir().unwrap();
    set_dongle_dir(dir.path());
    let state = VirtualDongle::create(dir.path());
    let _d = VirtualDongle::start(&state, dir.path(), t, 10_000);
    let key = PublisherKey::generate(VENDOR, "dongle tests");
    let serial = program(&key, &[spec(1, 2, CountingUnit::Process)]);
    assert!(serial.starts_with("DG-"));

    let e = env(&dir.path().join("home"), "host A");
    let s = session(&e, &key);
    let seat = s.acquire(1, 0x1, false).expect("seat from the dongle");
    let info = seat.info().unwrap();
    assert_eq!(info.source, SourceKind::Dongle);
    assert_eq!(info.container_serial, serial);
    assert_eq!(
        info.dongle_mode,
        Some(if t == Transport::Hid {
            DongleMode::Hid
        } else {
            DongleMode::Msd
        })
    );
    assert_eq!(info.in_use, 1);
    for mode in [Mode::Derived, Mode::Direct] {
        for len in [0usize, 10, 3000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ct = vec![0u8; len + 56];
            let n = seat.encrypt(mode, &data, &mut ct).unwrap();
            let mut pt = vec![0u8; len];
            assert_eq!(seat.decrypt(&ct[..n], &mut pt).unwrap(), len);
            assert_eq!(pt, data);
            // Portable: the publisher's tool decrypts what the dongle encrypted.
            assert_eq!(
                tessera::cipher::decrypt(&key.product_secret(1), &ct[..n]).unwrap(),
                data
            );
            let mut bad = ct[..n].to_vec();
            bad[n / 2] ^= 1;
            assert!(seat.decrypt(&bad, &mut pt).is_err());
        }
    }
    assert!(matches!(s.acquire(2, 0, false), Err(Error::NoLicense(_))));
    assert!(matches!(
        s.acquire(1, 0x100, false),
        Err(Error::FeatureMissing { .. })
    ));
    // Another publisher's app finds nothing it trusts on this dongle.
    let stranger = PublisherKey::generate(VENDOR, "stranger");
    let s2 = session(&e, &stranger);
    assert!(s2.acquire(1, 0, false).is_err());
    // Another publisher (another vendor id): the dongle is not its business, so the answer
    // is "no license", as with no dongle at all, and its list is empty.
    let other = PublisherKey::generate(VENDOR + 1, "another publisher");
    let mut o = SessionOptions::new(VENDOR + 1, other.public_key());
    o.sources = sources::DONGLE;
    let s3 = Session::open_in(o, e.clone()).unwrap();
    assert!(
        matches!(s3.acquire(1, 0, false), Err(Error::NoLicense(_))),
        "{:?}",
        s3.acquire(1, 0, false).err()
    );
    assert!(s3.licenses().unwrap().is_empty());
    // The license list of the dongle's own publisher, with the seat held.
    let listed = s.licenses().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].container_serial, serial);
    assert_eq!((listed[0].license.quantity, listed[0].in_use), (2, 1));
    assert_eq!(listed[0].source, SourceKind::Dongle);
    drop(seat);
}

#[test]
fn every_call_works_on_a_dongle_license_in_hid_mode() {
    every_call_works_on_a_dongle_license(Transport::Hid);
}

#[test]
fn every_call_works_on_a_dongle_license_in_msd_mode() {
    every_call_works_on_a_dongle_license(Transport::Msd);
}

fn a_dongle_used_by_two_hosts_is_locked_out(t: Transport) {
    let _l = serial_lock();
    let dir = tempfile::tempdir().unwrap();
    set_dongle_dir(dir.path());
    let state = VirtualDongle::create(dir.path());
    let window = 1500;
    let _d = VirtualDongle::start(&state, dir.path(), t, window);
    let key = PublisherKey::generate(VENDOR, "dongle tests");
    program(&key, &[spec(1, 5, CountingUnit::Handle)]);
    std::thread::sleep(Duration::from_millis(window + 200)); // the programmer's host ages out

    // Two runtimes with different host identities (their own homes, so their own host keys).
    let a = env(&dir.path().join("home-a"), "host A");
    let b = env(&dir.path().join("home-b"), "host B");
    let sa = session(&a, &key);
    let seat_a = sa.acquire(1, 0, false).expect("A alone is served");
    let mut buf = vec![0u8; 100];
    assert!(seat_a.encrypt(Mode::Derived, b"hello", &mut buf).is_ok());
    let sb = session(&b, &key);
    let eb = sb.acquire(1, 0, false).unwrap_err();
    assert!(matches!(eb, Error::DongleShared(_)), "B: {eb}");
    let ea = seat_a
        .encrypt(Mode::Derived, b"hello", &mut buf)
        .unwrap_err();
    assert!(
        matches!(ea, Error::DongleShared(_)),
        "A is refused too: {ea}"
    );
    assert_eq!(
        tessera::ffi::status::from_error(&ea),
        tessera::ffi::tessera_status::TESSERA_E_DONGLE_SHARED
    );
    drop(sb);
    // B is gone: once A has been alone for a whole window, it is served again.
    std::thread::sleep(Duration::from_millis(window * 2 + 300));
    assert!(seat_a.encrypt(Mode::Derived, b"hello", &mut buf).is_ok());
    // A VM guest keeps off a shared dongle.
    let mut vm = env(&dir.path().join("home-vm"), "guest");
    vm.host.machine = MachineKind::Virtual(Hypervisor::Kvm);
    let svm = session(&vm, &key);
    let e = svm.acquire(1, 0, false).unwrap_err();
    assert!(matches!(e, Error::DongleShared(_)), "{e}");
}

#[test]
fn a_dongle_used_by_two_hosts_is_locked_out_in_hid_mode() {
    a_dongle_used_by_two_hosts_is_locked_out(Transport::Hid);
}

#[test]
fn a_dongle_used_by_two_hosts_is_locked_out_in_msd_mode() {
    a_dongle_used_by_two_hosts_is_locked_out(Transport::Msd);
}

fn unplug_and_replug_mid_session(t: Transport) {
    let _l = serial_lock();
    let dir = tempfile::tempdir().unwrap();
    set_dongle_dir(dir.path());
    let state = VirtualDongle::create(dir.path());
    let mut d = VirtualDongle::start(&state, dir.path(), t, 10_000);
    let key = PublisherKey::generate(VENDOR, "dongle tests");
    program(&key, &[spec(1, 1, CountingUnit::Process)]);
    let e = env(&dir.path().join("home"), "host A");
    let s = session(&e, &key);
    let seat = s.acquire(1, 0, false).unwrap();
    let mut buf = vec![0u8; 200];
    assert!(seat.encrypt(Mode::Direct, b"before", &mut buf).is_ok());
    d.stop();
    let start = Instant::now();
    let err = seat
        .encrypt(Mode::Direct, b"unplugged", &mut buf)
        .unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::Timeout(_)),
        "a clear status while unplugged: {err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "nothing hangs past its timeout"
    );
    d.spawn();
    // Restarted: the licenses are still there, and the next call reconnects.
    let n = seat
        .encrypt(Mode::Direct, b"after replug", &mut buf)
        .expect("reconnected");
    let mut pt = vec![0u8; 200];
    let m = seat.decrypt(&buf[..n], &mut pt).unwrap();
    assert_eq!(&pt[..m], b"after replug");
    assert_eq!(seat.info().unwrap().in_use, 1, "no seat leaked");
}

#[test]
fn unplug_and_replug_mid_session_in_hid_mode() {
    unplug_and_replug_mid_session(Transport::Hid);
}

#[test]
fn unplug_and_replug_mid_session_in_msd_mode() {
    unplug_and_replug_mid_session(Transport::Msd);
}

#[test]
fn kill_9_while_programming_leaves_old_or_new_licenses() {
    let _l = serial_lock();
    let Rig {
        dongle: mut d,
        key,
        state,
        dir,
        ..
    } = hid_rig(&[spec(1, 1, CountingUnit::Handle)]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for round in 0..6u64 {
        // Program more licenses in a loop while the dongle is killed under it.
        let k = PublisherKey::from_bytes(&key.to_bytes().unwrap()).unwrap();
        let stop2 = stop.clone();
        let programmer = std::thread::spawn(move || {
            let mut product = 100 + round as u32 * 1000;
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(mut c) = tessera::dongle::program::find(None, Duration::from_millis(500))
                {
                    let _ = tessera::dongle::program::program(
                        &k,
                        &mut c,
                        &[spec(product, 1, CountingUnit::Handle)],
                    );
                    product += 1;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200 + round * 53));
        d.kill9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        programmer.join().unwrap();
        stop.store(false, std::sync::atomic::Ordering::SeqCst);
        let engine = tessera::dongle::device::load_state(&state).expect("the state file is whole");
        assert!(
            engine.licenses().iter().any(|l| l.product_code == 1),
            "round {round}: the first license survives"
        );
        d.spawn();
    }
    let e = env(&dir.path().join("home"), "host A");
    if let Err(err) = session(&e, &key).acquire(1, 0, false) {
        panic!("after the kills the dongle serves its first license: {err}");
    }
}

#[test]
fn the_c_quickstart_runs_on_a_dongle_license() {
    let _l = serial_lock();
    let dir = tempfile::tempdir().unwrap();
    set_dongle_dir(dir.path());
    let state = VirtualDongle::create(dir.path());
    let _d = VirtualDongle::start(&state, dir.path(), Transport::Msd, 10_000);
    let demo = PublisherKey::demo();
    let mut s = spec(
        tessera::publisher::DEMO_PRODUCT_CODE,
        2,
        CountingUnit::Process,
    );
    s.features = 0xFF;
    program(&demo, &[s]);
    // Build the quickstart against the cdylib and run it with an empty TESSERA_HOME: the
    // only license is in the dongle.
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(common::cdylib(), lib.join("libtessera.so")).unwrap();
    std::os::unix::fs::symlink("libtessera.so", lib.join("libtessera.so.0")).unwrap();
    let exe = dir.path().join("quickstart");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(common::root().join("include"))
        .arg(common::root().join("examples/c/quickstart.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-ltessera")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe)
        .env("TESSERA_HOME", dir.path().join("empty-home"))
        .env("TESSERA_DONGLE_DIR", dir.path().join("dongles"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("dongle, mass-storage mode"), "{text}");
    assert!(text.contains("quickstart: all steps succeeded"), "{text}");
}

#[test]
fn recorded_frames_replayed_to_a_real_dongle_and_back_are_rejected() {
    use tessera::channel::{ClientHandshake, HostHello, Trust};
    use tessera::container::protocol::{self, Request};
    use tessera::dongle::framing::{self, cmd};
    use tessera::dongle::socket::SocketDevice;

    let _l = serial_lock();
    let Rig {
        dongle: d,
        key,
        dir: _dir,
        ..
    } = hid_rig(&[spec(1, 1, CountingUnit::Handle)]);

    let t = Duration::from_secs(2);
    let mut dev = SocketDevice::open(d.socket.as_ref().unwrap()).unwrap();
    let cid = framing::allocate_channel(&mut dev, t).unwrap();
    let mut hs = ClientHandshake::new(
        &[7u8; 32],
        HostHello::new(MachineKind::Physical, "replayer"),
    )
    .unwrap();
    let m1 = hs.message1().unwrap();
    let m2 = framing::transact(&mut dev, cid, cmd::HANDSHAKE, &m1, t).unwrap();
    let trust = Trust::Publisher {
        key: &key.public_key(),
        vendor_id: VENDOR,
        now: tessera::util::now(),
    };
    let m3 = hs.message3(&m2.payload, trust).unwrap();
    framing::transact(&mut dev, cid, cmd::HANDSHAKE, &m3, t).unwrap();
    let (mut channel, _, _) = hs.finish().unwrap();

    // A real exchange, recorded.
    let request = channel
        .seal(&protocol::encode_request(&Request::Identify).unwrap())
        .unwrap();
    let answer = framing::transact(&mut dev, cid, cmd::MSG, &request, t).unwrap();
    assert_eq!(answer.cmd, cmd::MSG);
    assert!(channel.open(&answer.payload).is_ok());
    // The request replayed to the dongle: refused.
    let replay = framing::transact(&mut dev, cid, cmd::MSG, &request, t);
    assert!(
        !matches!(&replay, Ok(m) if m.cmd == cmd::MSG),
        "the dongle answered a replayed request: {replay:?}"
    );
    // The answer replayed to the runtime: refused.
    assert!(channel.open(&answer.payload).is_err());
    // A replayed handshake: message 3 of the old handshake does not open a new channel.
    let mut dev2 = SocketDevice::open(d.socket.as_ref().unwrap()).unwrap();
    let cid2 = framing::allocate_channel(&mut dev2, t).unwrap();
    framing::transact(&mut dev2, cid2, cmd::HANDSHAKE, &m1, t).unwrap();
    let r = framing::transact(&mut dev2, cid2, cmd::HANDSHAKE, &m3, t);
    assert!(
        !matches!(&r, Ok(m) if m.cmd == cmd::HANDSHAKE),
        "a replayed handshake opened a channel: {r:?}"
    );
    // The channel still works for fresh frames.
    let fresh = channel
        .seal(&protocol::encode_request(&Request::Identify).unwrap())
        .unwrap();
    let ok = framing::transact(&mut dev, cid, cmd::MSG, &fresh, t).unwrap();
    assert!(channel.open(&ok.payload).is_ok());
}

/// A dongle that answers INIT but then goes silent in the middle of a message.
struct Mute {
    framing: tessera::dongle::framing::DeviceFraming,
}

impl tessera::dongle::framing::ReportSink for Mute {
    fn handle_report(
        &mut self,
        report: &tessera::dongle::framing::Report,
        now: Instant,
    ) -> Vec<tessera::dongle::framing::Report> {
        let mut out = self.framing.handle(report, now, &mut |m| Some(m));
        if out.len() > 1 {
            out.truncate(1); // the first fragment of an answer, then nothing
        }
        out
    }
}

#[test]
fn a_dongle_that_stops_answering_mid_message_times_out_cleanly() {
    use tessera::dongle::framing::{self, cmd};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.hid");
    let sink: Arc<Mutex<dyn tessera::dongle::framing::ReportSink>> = Arc::new(Mutex::new(Mute {
        framing: framing::DeviceFraming::new(),
    }));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (p, s, st) = (path.clone(), sink.clone(), stop.clone());
        std::thread::spawn(move || tessera::dongle::socket::serve(&p, s, st))
    };
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut dev = tessera::dongle::socket::SocketDevice::open(&path).unwrap();
    let t = Duration::from_millis(400);
    let cid = framing::allocate_channel(&mut dev, t).unwrap();
    let start = Instant::now();
    let r = framing::transact(&mut dev, cid, cmd::PING, &[0xAB; 300], t);
    assert!(r.is_err(), "half an answer is not an answer");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "no hang beyond the timeout"
    );
    // The whole runtime path (handshake) fails the same way, within its timeout.
    let start = Instant::now();
    let key = PublisherKey::generate(VENDOR, "k");
    let e = tessera::dongle::client::Connection::connect(
        &tessera::dongle::client::Endpoint::Socket(path.clone()),
        &[3u8; 32],
        tessera::channel::HostHello::new(MachineKind::Physical, "h"),
        tessera::channel::Trust::Publisher {
            key: &key.public_key(),
            vendor_id: VENDOR,
            now: tessera::util::now(),
        },
        t,
    );
    assert!(e.is_err());
    assert!(start.elapsed() < Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap().unwrap();
}

#[test]
fn a_license_server_hosts_the_dongle_attached_to_it() {
    use std::io::BufRead;
    let _l = serial_lock();
    let Rig {
        dongle: _d,
        key,
        serial,
        dir,
        ..
    } = hid_rig(&[tessera::publisher::LicenseSpec {
        borrow_days: 2,
        ..spec(1, 2, CountingUnit::Handle)
    }]);
    // A server hosting dongles only: its home is empty (a missing one is refused).
    std::fs::create_dir_all(dir.path().join("server-home")).unwrap();
    // The server finds the dongle through the same discovery the client uses.
    let mut server = Command::new(env!("CARGO_BIN_EXE_tessera-server"))
        .args([
            "--name",
            "dongle-server",
            "--no-discovery",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("server-state"))
        .arg("--home")
        .arg(dir.path().join("server-home"))
        .env("TESSERA_DONGLE_DIR", dir.path().join("dongles"))
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut server = common::server::KillOnDrop(server);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("server address")
        .to_string();
    // A client elsewhere (its own home, no dongle source) gets a seat of the dongle's license.
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![addr.clone()];
    let s = Session::open_in(o, env(&dir.path().join("client-home"), "remote host")).unwrap();
    let seat = s
        .acquire(1, 0, false)
        .expect("a seat from the server's dongle");
    let info = seat.info().unwrap();
    assert_eq!(info.source, SourceKind::Network);
    assert_eq!(info.container_serial, serial);
    assert_eq!(
        info.container_kind,
        tessera::container::ContainerKind::Dongle
    );
    assert_eq!(info.server.as_deref(), Some("dongle-server"));
    for mode in [Mode::Derived, Mode::Direct] {
        let mut ct = vec![0u8; 100];
        let n = seat
            .encrypt(mode, b"through the server's dongle", &mut ct)
            .unwrap();
        assert_eq!(
            tessera::cipher::decrypt(&key.product_secret(1), &ct[..n]).unwrap(),
            b"through the server's dongle"
        );
        // Format 2: the dongle's engine derived the seat's seat key, through the server.
        let h = tessera::cipher::Header::parse(&ct[..n]).unwrap();
        assert_eq!((h.version, h.mode), (2, mode));
        let mut pt = [0u8; 100];
        let m = seat.decrypt(&ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"through the server's dongle");
    }
    drop(seat);
    // The dongle lends a seat (the engine behind its channel signs the grant) and takes it back.
    borrow_and_return(&addr, &key, &serial);
    // At SIGTERM the server checkpoints its usage log, signed by the dongle over its channel.
    common::server::sigterm(&mut server.0);
    let log = dir
        .path()
        .join("server-state/usage")
        .join(format!("{VENDOR}.log"));
    let r = tessera::license::usage::verify(std::fs::File::open(&log).unwrap(), &key.public_key())
        .unwrap();
    assert_eq!(r.signers, vec![serial], "the dongle signed the checkpoint");
    assert!(r.checkpoints >= 1 && r.unverified_tail == 0, "{r:?}");
    let m = r.months.values().next().unwrap();
    assert_eq!((m.grants, m.releases), (1, 1));
    assert_eq!((m.borrows, m.returns), (1, 1));
}

/// Borrows a seat of product 1 from the server at `addr` for a container of its own, checks
/// the grant against the publisher and the lending dongle `serial`, and gives it back.
fn borrow_and_return(addr: &str, key: &PublisherKey, serial: &str) {
    use common::borrow;
    let laptop = borrow::laptop(VENDOR, "laptop");
    let mut conn = borrow::connect(addr, &key.public_key(), VENDOR, "laptop");
    let seat_id = [0xB0; 16];
    let (grant, certificate) = borrow::borrow(&mut conn, VENDOR, seat_id, 1, 2, &laptop).unwrap();
    let (g, _) = tessera::license::BorrowGrant::verify(
        &grant,
        &certificate,
        &key.public_key(),
        VENDOR,
        laptop.engine.serial(),
        &laptop.key(),
    )
    .unwrap();
    assert_eq!(g.lender_serial, serial);
    borrow::give_back(&mut conn, seat_id, laptop.return_signature(&seat_id)).unwrap();
}

#[test]
fn a_license_server_renews_its_dongles_delegation_through_the_channel() {
    use tessera::net::proto::verify_server;
    use tessera::server::config::ServerConfig;
    use tessera::server::daemon::Server;
    let _l = serial_lock();
    let Rig {
        dongle: _d,
        key,
        serial,
        dir,
        ..
    } = hid_rig(&[spec(1, 2, CountingUnit::Handle)]);
    let server = Server::open(ServerConfig {
        state_dir: dir.path().join("server-state"),
        home: dir.path().join("server-home"),
        discovery: false,
        admin: false,
        delegation_days: 2,
        ..ServerConfig::default()
    })
    .unwrap();
    let hosting = server.hosting();
    assert_eq!(hosting.hosted.containers.len(), 1);
    assert_eq!(hosting.hosted.containers[0].serial, serial);
    let server_key = server.public_key();
    let now = tessera::util::now();
    let three_days = now + 3 * 86_400;
    // The dongle delegated for two days: a client three days on refuses the server.
    assert!(verify_server(&hosting.hello, &key.public_key(), VENDOR, &server_key, now).is_ok());
    assert!(matches!(
        verify_server(
            &hosting.hello,
            &key.public_key(),
            VENDOR,
            &server_key,
            three_days
        ),
        Err(Error::Tampered(_))
    ));
    assert!(
        !server.renew_delegations(),
        "a fresh delegation is not renewed"
    );
    // A day and an hour on, past half its validity: the dongle signs a new one for two days
    // from then, and the server's hello carries it.
    assert!(server.renew_delegations_at(now + 86_400 + 3_600));
    let hosting = server.hosting();
    assert_eq!(
        hosting.hosted.containers[0].delegation_expiry(),
        now + 3 * 86_400 + 3_600
    );
    assert_eq!(
        verify_server(
            &hosting.hello,
            &key.public_key(),
            VENDOR,
            &server_key,
            three_days
        )
        .unwrap(),
        vec![serial]
    );
    // A dongle that is gone: the renewal fails, the old delegation stays, the server serves on.
    drop(_d);
    assert!(!server.renew_delegations_at(now + 2 * 86_400 + 7_200));
    assert_eq!(
        server.hosting().hosted.containers[0].delegation_expiry(),
        now + 3 * 86_400 + 3_600
    );
}
