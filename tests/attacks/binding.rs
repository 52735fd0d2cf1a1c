//! 1. A license bound to another container is used: a publisher-signed license taken from
//!    container A (a neighbour, a bigger license) is put into container B, or granted by a
//!    server that only holds a delegation from B. Every use checks the binding.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera::Error;
use tessera::cipher::{Header, Mode};
use tessera::client::{Environment, Session, SessionOptions, request_activation, sources};
use tessera::container::engine::{RequestContext, StoredLicense};
use tessera::container::protocol::{Request, Response, response_error};
use tessera::container::software::list_for_vendor;
use tessera::container::{ContainerKind, Engine, SoftwareContainer};
use tessera::host::{HostIdentity, MachineKind};
use tessera::license::CountingUnit;
use tessera::net::conn::{ServerConn, server_handshake};
use tessera::net::proto::{
    self, ClientHello, DelegationBundle, HostInfo, NetRequest, NetResponse, SeatGrant, ServerHello,
};
use tessera::publisher::{LicenseSpec, PublisherKey};
use tessera::util::OffsetClock;

use crate::common::spec;

const VENDOR: u32 = 77;

fn env(home: &Path, host: &str) -> Environment {
    Environment {
        home: home.to_path_buf(),
        host: HostIdentity::simulated(host),
        clock: Arc::new(OffsetClock { offset: 0 }),
    }
}

fn activate(env: &Environment, key: &PublisherKey, specs: &[LicenseSpec]) {
    let (_, req) = request_activation(env, VENDOR).unwrap();
    let act = key.activate(&req, specs, tessera::util::now()).unwrap();
    tessera::client::install_activation(env, &act, Some(&key.public_key())).unwrap();
}

/// The one software container of `env`'s home, opened with its machine's fingerprint.
fn container(env: &Environment) -> SoftwareContainer {
    let paths = list_for_vendor(&env.home, VENDOR);
    assert_eq!(paths.len(), 1, "{paths:?}");
    SoftwareContainer::load(&paths[0], &env.host.fingerprint).unwrap()
}

/// The stored license (signed bytes and product secret) of `product_code` in `c`.
fn stored(c: &SoftwareContainer, product_code: u32) -> StoredLicense {
    let i = c
        .engine
        .licenses()
        .iter()
        .position(|l| l.product_code == product_code)
        .unwrap();
    c.engine.state().licenses[i].clone()
}

/// Container A with a 50-seat license of product 1 on machine A, container B with a
/// 1-seat trial of product 2 on machine B; both of one publisher.
fn two_containers(key: &PublisherKey, a: &Path, b: &Path) -> (Environment, Environment) {
    let a = env(a, "machine A");
    let b = env(b, "machine B");
    activate(&a, key, &[spec(1, 50, CountingUnit::Handle)]);
    activate(&b, key, &[spec(2, 1, CountingUnit::Station)]);
    (a, b)
}

fn is_binding_mismatch(r: &tessera::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::BindingMismatch(_)))
}

#[test]
fn a_license_of_another_software_container_added_to_the_state_is_refused() {
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = PublisherKey::generate(VENDOR, "t");
    let (a, b) = two_containers(&key, ha.path(), hb.path());
    let stolen = stored(&container(&a), 1);
    // The owner of machine B can open B's file (it is sealed to B's own traits): append A's
    // license, signed bytes and product secret, and write the file back properly sealed.
    let mut cb = container(&b);
    cb.update(&b.host.fingerprint, |e| {
        let mut st = e.state().clone();
        st.licenses.push(stolen);
        *e = Engine::from_state(st)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        container(&b).engine.licenses().len(),
        2,
        "the license was added"
    );
    let mut opts = SessionOptions::new(VENDOR, key.public_key());
    opts.sources = sources::SOFTWARE;
    let s = Session::open_in(opts, b.clone()).unwrap();
    let r = s.acquire(1, 0, false);
    assert!(
        is_binding_mismatch(&r),
        "A's license is honoured in B: {r:?}"
    );
    // B's own license still works.
    assert!(s.acquire(2, 0, false).is_ok());
}

/// A container engine (a dongle's firmware or a software container) programmed through the
/// container protocol with `specs`.
fn programmed(key: &PublisherKey, specs: &[LicenseSpec], ctx: &RequestContext) -> Engine {
    let mut e = Engine::create(ContainerKind::Dongle, VENDOR, ctx.now);
    let (Response::ActivationRequest(req), _) = e.handle(Request::ActivationRequest, ctx) else {
        panic!("no activation request");
    };
    let act = key.activate(&req, specs, ctx.now).unwrap();
    let (r, _) = e.handle(Request::Program { activation: act }, ctx);
    assert!(matches!(r, Response::Programmed { .. }), "{r:?}");
    e
}

#[test]
fn a_license_of_another_dongle_in_the_engine_state_is_refused_on_every_key_operation() {
    let key = PublisherKey::generate(VENDOR, "t");
    let ctx = RequestContext {
        now: tessera::util::now(),
        now_ms: 0,
        host: Some([5; 32]),
        machine: MachineKind::Physical,
    };
    let a = programmed(&key, &[spec(1, 50, CountingUnit::Handle)], &ctx);
    let mut b = programmed(&key, &[spec(2, 1, CountingUnit::Station)], &ctx);
    let i = a
        .licenses()
        .iter()
        .position(|l| l.product_code == 1)
        .unwrap();
    let id = a.licenses()[i].license_id;
    // A virtual dongle's state (its flash) holding A's license.
    let mut st = b.state().clone();
    st.licenses.push(a.state().licenses[i].clone());
    b = Engine::from_state(st).unwrap();
    let header = Header::new(Mode::Derived, VENDOR, 1).encode().to_vec();
    for req in [
        Request::DeriveKey {
            license_id: id,
            header,
        },
        Request::Encrypt {
            license_id: id,
            plaintext: b"secret".to_vec(),
        },
        Request::SeatTicket {
            license_id: id,
            challenge: [1; 32],
        },
        Request::SeatKey {
            license_id: id,
            key_id: [2; 12],
        },
    ] {
        let (r, _) = b.handle(req.clone(), &ctx);
        let Response::Error { status, message } = r else {
            panic!("{req:?} answered with A's license: {r:?}");
        };
        let e = response_error(status, message);
        assert!(matches!(e, Error::BindingMismatch(_)), "{req:?}: {e}");
    }
    // Adding it by programming B with A's activation is refused too (it always was).
}

/// A fake license server: it holds container B and proves B's delegation, but grants seats
/// of `license` (taken from container A) naming `container_serial`.
fn fake_server(
    hello: ServerHello,
    secret: [u8; 32],
    license: Vec<u8>,
    container_serial: String,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let (hello, license, serial) =
                (hello.clone(), license.clone(), container_serial.clone());
            std::thread::spawn(move || {
                let Ok((mut ch, _, _)) = server_handshake(&mut s, &secret, &hello) else {
                    return;
                };
                while let Ok(frame) = proto::read_frame(&mut s) {
                    let Ok(req) = ch.open_message::<NetRequest>(&frame, "request") else {
                        return;
                    };
                    let resp = match req {
                        NetRequest::Acquire { seat_id, .. } => NetResponse::Granted(SeatGrant {
                            seat_id,
                            license: license.clone(),
                            container_serial: serial.clone(),
                            lease_ms: 60_000,
                            renew_ms: 20_000,
                            in_use: 1,
                        }),
                        NetRequest::Renew { .. } => NetResponse::Renewed {
                            lost: Vec::new(),
                            lease_ms: 60_000,
                        },
                        NetRequest::Release { .. } => NetResponse::Released,
                        _ => proto::error_response(&Error::Unsupported("fake".into())),
                    };
                    let Ok(out) = ch.seal_message(&resp) else {
                        return;
                    };
                    if proto::write_frame(&mut s, &out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_server_granting_a_license_of_a_container_that_did_not_delegate_to_it_is_refused() {
    let (ha, hb, hc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let key = PublisherKey::generate(VENDOR, "t");
    let (a, b) = two_containers(&key, ha.path(), hb.path());
    let ca = container(&a);
    let cb = container(&b);
    let stolen = stored(&ca, 1).bytes.clone();
    // The server really holds B: B delegates to its key.
    let secret: [u8; 32] = tessera::util::random();
    let server_key =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    let now = tessera::util::now();
    let (delegation, certificate) = cb.engine.delegate(server_key, now, now + 3600).unwrap();
    let hello = ServerHello {
        version: proto::PROTOCOL_VERSION,
        name: "fake".into(),
        delegations: vec![DelegationBundle {
            certificate,
            delegation,
        }],
    };
    let client = env(hc.path(), "client");
    // The grant names B (which delegated) or A (which the license is bound to): both refused.
    for serial in [cb.engine.serial(), ca.engine.serial()] {
        let addr = fake_server(hello.clone(), secret, stolen.clone(), serial.to_string());
        let mut opts = SessionOptions::new(VENDOR, key.public_key());
        opts.sources = sources::NETWORK;
        opts.servers = vec![addr];
        opts.timeout = Duration::from_secs(5);
        let s = Session::open_in(opts, client.clone()).unwrap();
        let r = s.acquire(1, 0, false);
        assert!(
            is_binding_mismatch(&r),
            "a grant naming {serial} of A's license is honoured: {r:?}"
        );
    }
}

#[test]
fn a_real_server_does_not_serve_a_license_of_another_container_added_to_the_one_it_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "t");
    // Container A elsewhere, with a 50-seat license of product 1.
    let a = env(&dir.path().join("a"), "machine A");
    activate(&a, &key, &[spec(1, 50, CountingUnit::Handle)]);
    let stolen = stored(&container(&a), 1);
    // The server's own container B (on this machine, so the server opens it), with a 1-seat
    // license of product 2; its owner appends A's license and seals the file back.
    let b = crate::common::env_in(&dir.path().join("server-home"));
    activate(&b, &key, &[spec(2, 1, CountingUnit::Handle)]);
    let mut cb = container(&b);
    cb.update(&b.host.fingerprint, |e| {
        let mut st = e.state().clone();
        st.licenses.push(stolen);
        *e = Engine::from_state(st)?;
        Ok(())
    })
    .unwrap();
    let server = crate::common::server::ServerProc::start(&dir.path().join("state"), &b.home, 0);
    let client = env(&dir.path().join("client"), "client");
    let mut opts = SessionOptions::new(VENDOR, key.public_key());
    opts.sources = sources::NETWORK;
    opts.servers = vec![server.addr.clone()];
    opts.timeout = Duration::from_secs(5);
    let s = Session::open_in(opts, client).unwrap();
    let r = s.acquire(1, 0, false);
    assert!(
        matches!(r, Err(Error::BindingMismatch(_) | Error::NoLicense(_))),
        "the server served A's license from B: {r:?}"
    );
    // B's own license is served.
    let seat = s.acquire(2, 0, false).expect("B's own license");
    let mut ct = vec![0u8; 64];
    assert!(seat.encrypt(Mode::Direct, b"data", &mut ct).is_ok());
    // The server refuses on its own, whatever the client would check: a raw connection
    // asks for product 1 and must get an error, not a grant.
    let hello = ClientHello {
        version: proto::PROTOCOL_VERSION,
        host: HostInfo {
            machine: MachineKind::Physical,
            hostname: "raw".into(),
            station: [9; 32],
            session: "raw".into(),
            pid: 1,
            pid_namespace: 1,
        },
    };
    let mut conn = ServerConn::connect(
        &server.addr,
        &tessera::util::random(),
        &hello,
        &key.public_key(),
        VENDOR,
        Duration::from_secs(5),
    )
    .unwrap();
    let r = conn.call(&NetRequest::Acquire {
        seat_id: tessera::util::random(),
        vendor_id: VENDOR,
        product_code: 1,
        features: 0,
        exclusive: false,
    });
    assert!(
        matches!(r, Err(Error::BindingMismatch(_))),
        "the server granted A's license from B: {r:?}"
    );
}
