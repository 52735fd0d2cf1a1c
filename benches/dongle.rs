//! Dongle benchmarks: the secure channel over both virtual-dongle transports (the HID report
//! socket and the FUSE mass-storage volume), served in this very process.
//!
//! - `handshake/{hid,msd}`: a full `Connection::connect` (open the transport, INIT, Noise XX,
//!   certificate check), and the close of the connection;
//! - `roundtrip/{hid,msd}`: one command (`Request::Clock`) through the channel;
//! - `bare/{hid,msd}`: a framing PING of as many bytes as the larger of that command's
//!   request and response frames, on its own channel id of the same transport. The dongle's
//!   framing layer answers PING itself, so this is the bare transport round trip;
//! - `direct_encrypt/{hid,msd}/{64,4096}`: `Request::Encrypt` through the channel.
//!
//! Run: `cargo bench --bench dongle` (needs `/dev/fuse` and the right to mount). Results and
//! how to read them: `docs/BENCHMARKS.md`, section "Dongles".
//!
//! Every answer is checked (kind, serial, sizes), so a broken path panics instead of
//! producing numbers. All runtime connections use one host key: exclusive mode would lock
//! out a dongle used by two hosts within its window.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tessera::channel::{FRAME_OVERHEAD, HostHello, Trust};
use tessera::container::protocol::{self, Request, Response};
use tessera::container::{ContainerKind, Engine};
use tessera::dongle::client::{Connection, Endpoint};
use tessera::dongle::device::DongleDevice;
use tessera::dongle::framing::{self, ReportDevice, ReportSink, cmd};
use tessera::dongle::msd::{MsdDevice, MsdVolume};
use tessera::dongle::msd_volume::{self, MountGuard};
use tessera::dongle::socket::{self, SocketDevice};
use tessera::dongle::{client::DongleMode, program};
use tessera::host::MachineKind;
use tessera::license::{CountingUnit, SignedLicense, VmPolicy};
use tessera::publisher::{LicenseSpec, PublisherKey};

const VENDOR_ID: u32 = 0x1234;
const PRODUCT_CODE: u32 = 1;
/// Plaintext sizes of `direct_encrypt`.
const SIZES: [usize; 2] = [64, 4096];
/// Timeout of every exchange; nothing here comes near it.
const TIMEOUT: Duration = Duration::from_secs(5);
const TRANSPORTS: [DongleMode; 2] = [DongleMode::Hid, DongleMode::Msd];

fn name(mode: DongleMode) -> &'static str {
    match mode {
        DongleMode::Hid => "hid",
        DongleMode::Msd => "msd",
        DongleMode::Usb => "usb",
    }
}

/// A programmed dongle served in this process on a report socket and a FUSE volume at once.
struct Fixture {
    socket: PathBuf,
    volume: MsdVolume,
    serial: String,
    key: PublisherKey,
    host_secret: [u8; 32],
    now: u64,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<tessera::Result<()>>>,
    mount: Option<MountGuard>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = tessera::util::now();
        let engine = Engine::create(ContainerKind::Dongle, 0, now);
        let serial = engine.serial().to_string();
        let sink: Arc<Mutex<dyn ReportSink>> =
            Arc::new(Mutex::new(DongleDevice::new(engine, None)));

        // HID: the report socket, served on a thread.
        let socket = dir.path().join(format!("{serial}.hid"));
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (path, sink, stop) = (socket.clone(), sink.clone(), stop.clone());
            std::thread::spawn(move || socket::serve(&path, sink, stop))
        };
        let deadline = Instant::now() + TIMEOUT;
        while socket::enumerate(dir.path()).is_empty() {
            assert!(
                !server.is_finished(),
                "the report socket server stopped: {:?}",
                server.join()
            );
            assert!(
                Instant::now() < deadline,
                "the report socket did not come up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        // MSD: the FUSE volume.
        let mount_dir = dir.path().join("volume");
        std::fs::create_dir(&mount_dir).expect("mount dir");
        let mount = msd_volume::mount(&mount_dir, &serial, sink).expect("mount the FUSE volume");
        let volume = MsdVolume {
            mount_point: mount.mount_point().to_path_buf(),
            serial: serial.clone(),
        };

        // Program it as the publisher's tool does (this connection is no host).
        let key = PublisherKey::generate(VENDOR_ID, "bench");
        let mut conn = program::connect_for_programming(&Endpoint::Socket(socket.clone()), TIMEOUT)
            .expect("connect for programming");
        let done = program::program(
            &key,
            &mut conn,
            &[LicenseSpec {
                product_code: PRODUCT_CODE,
                quantity: 10,
                counting_unit: CountingUnit::Handle,
                features: u32::MAX,
                expiry: None,
                vm_policy: VmPolicy::Allow,
                exclusive_allowed: false,
                borrow_days: 0,
                product_name: "Bench".into(),
            }],
        )
        .expect("program the dongle");
        assert_eq!((done.serial.as_str(), done.added), (serial.as_str(), 1));
        drop(conn);

        Fixture {
            socket,
            volume,
            serial,
            key,
            host_secret: tessera::util::random::<32>(),
            now,
            stop,
            server: Some(server),
            mount: Some(mount),
            _dir: dir,
        }
    }

    fn endpoint(&self, mode: DongleMode) -> Endpoint {
        match mode {
            DongleMode::Hid => Endpoint::Socket(self.socket.clone()),
            DongleMode::Msd => Endpoint::Msd(self.volume.mount_point.clone()),
            DongleMode::Usb => unreachable!("no USB dongle in this bench"),
        }
    }

    /// A runtime connection (the one host key of the bench, publisher trust).
    fn connect(&self, endpoint: &Endpoint) -> Connection {
        let public = self.key.public_key();
        let conn = Connection::connect(
            endpoint,
            &self.host_secret,
            HostHello::new(MachineKind::Physical, "bench"),
            Trust::Publisher {
                key: &public,
                vendor_id: VENDOR_ID,
                now: self.now,
            },
            TIMEOUT,
        )
        .expect("connect to the dongle");
        assert_eq!(conn.serial, self.serial);
        assert_eq!(conn.vendor_id, VENDOR_ID);
        assert!(conn.certificate.is_some(), "no verified certificate");
        conn
    }

    /// The bare transport, with no channel on it.
    fn open_bare(&self, mode: DongleMode) -> Box<dyn ReportDevice> {
        match mode {
            DongleMode::Hid => Box::new(SocketDevice::open(&self.socket).expect("open socket")),
            DongleMode::Msd => Box::new(MsdDevice::open(&self.volume).expect("open volume")),
            DongleMode::Usb => unreachable!("no USB dongle in this bench"),
        }
    }

    fn license_id(&self, conn: &mut Connection) -> [u8; 16] {
        let Response::Licenses { licenses, .. } = conn
            .call(&Request::ListLicenses { offset: 0 })
            .expect("list")
        else {
            panic!("ListLicenses: unexpected answer");
        };
        assert_eq!(licenses.len(), 1);
        let license = SignedLicense::parse_unverified(&licenses[0]).expect("parse license");
        assert_eq!(license.product_code, PRODUCT_CODE);
        license.license_id
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.mount.take());
        self.stop.store(true, Ordering::Relaxed);
        if let Some(server) = self.server.take() {
            server
                .join()
                .expect("report socket thread")
                .expect("report socket server");
        }
    }
}

/// Panics unless `r` is the answer to `Request::Clock { now }` of an unshared dongle.
fn check_clock(r: tessera::Result<Response>, now: u64) {
    match r {
        Ok(Response::Clock {
            high_water,
            rollback: false,
        }) if high_water >= now => {}
        other => panic!("Clock: unexpected answer {other:?}"),
    }
}

fn check_data(r: tessera::Result<Response>, want_len: usize) {
    match r {
        Ok(Response::Data(d)) if d.len() == want_len => {
            black_box(d);
        }
        other => panic!("Encrypt: unexpected answer {other:?}"),
    }
}

/// Request and response frame sizes (what the MSG payloads are: counter, ciphertext, tag) of
/// `req`, from one real call.
fn frame_sizes(conn: &mut Connection, req: &Request) -> (usize, usize) {
    let resp = conn.call(req).expect("call");
    let request = protocol::encode_request(req).expect("encode").len() + FRAME_OVERHEAD;
    let response = protocol::encode_response(&resp).expect("encode").len() + FRAME_OVERHEAD;
    (request, response)
}

fn reports(bytes: usize) -> usize {
    1 + bytes
        .saturating_sub(framing::INIT_DATA)
        .div_ceil(framing::CONT_DATA)
}

fn bench_handshake(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("handshake");
    for mode in TRANSPORTS {
        let endpoint = fx.endpoint(mode);
        g.bench_function(name(mode), |b| b.iter(|| fx.connect(black_box(&endpoint))));
    }
    g.finish();
}

fn bench_roundtrip(c: &mut Criterion, fx: &Fixture, clock: &Request) {
    let mut g = c.benchmark_group("roundtrip");
    for mode in TRANSPORTS {
        // One client at a time on the socket: the server sends every report to every client.
        let mut conn = fx.connect(&fx.endpoint(mode));
        check_clock(conn.call(clock), fx.now);
        g.bench_function(name(mode), |b| {
            b.iter(|| check_clock(conn.call(black_box(clock)), fx.now))
        });
    }
    g.finish();
}

fn bench_bare(c: &mut Criterion, fx: &Fixture, ping_len: usize) {
    let payload: Vec<u8> = (0..ping_len).map(|i| (i * 13 + 5) as u8).collect();
    let mut g = c.benchmark_group("bare");
    for mode in TRANSPORTS {
        let mut dev = fx.open_bare(mode);
        let cid = framing::allocate_channel(dev.as_mut(), TIMEOUT).expect("allocate channel");
        g.bench_function(name(mode), |b| {
            b.iter(|| {
                let answer =
                    framing::transact(dev.as_mut(), cid, cmd::PING, black_box(&payload), TIMEOUT)
                        .expect("PING");
                assert_eq!(answer.cmd, cmd::PING);
                assert_eq!(answer.payload, payload);
            })
        });
    }
    g.finish();
}

fn bench_direct_encrypt(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("direct_encrypt");
    for mode in TRANSPORTS {
        let mut conn = fx.connect(&fx.endpoint(mode));
        let license_id = fx.license_id(&mut conn);
        for len in SIZES {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            // Once, outside the timing: the ciphertext decrypts back to the plaintext.
            let Ok(Response::Data(ct)) = conn.call(&Request::Encrypt {
                license_id,
                plaintext: plaintext.clone(),
            }) else {
                panic!("Encrypt failed");
            };
            assert_eq!(ct.len(), tessera::cipher::ciphertext_len(len));
            let back = conn.call(&Request::Decrypt {
                license_id,
                ciphertext: ct,
            });
            assert!(matches!(back, Ok(Response::Data(p)) if p == plaintext));

            let req = Request::Encrypt {
                license_id,
                plaintext,
            };
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_with_input(BenchmarkId::new(name(mode), len), &req, |b, req| {
                b.iter(|| {
                    check_data(
                        conn.call(black_box(req)),
                        tessera::cipher::ciphertext_len(len),
                    )
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let fx = Fixture::new();
    let clock = Request::Clock { now: fx.now };

    // Frame sizes, from the HID channel (they do not depend on the transport).
    let ping_len = {
        let mut conn = fx.connect(&fx.endpoint(DongleMode::Hid));
        for (what, req) in [("Clock", &clock), ("Identify", &Request::Identify)] {
            let (rq, rs) = frame_sizes(&mut conn, req);
            eprintln!(
                "{what}: request frame {rq} bytes ({} reports), response frame {rs} bytes ({} reports)",
                reports(rq),
                reports(rs)
            );
        }
        let (rq, rs) = frame_sizes(&mut conn, &clock);
        let ping_len = rq.max(rs);
        eprintln!(
            "bare: PING of {ping_len} bytes ({} report(s) each way)",
            reports(ping_len)
        );
        ping_len
    };

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();

    bench_handshake(&mut c, &fx);
    bench_roundtrip(&mut c, &fx, &clock);
    bench_bare(&mut c, &fx, ping_len);
    bench_direct_encrypt(&mut c, &fx);

    c.final_summary();
    drop(fx);
}
