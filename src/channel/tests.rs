//! Tests of the channel: handshakes under each trust rule, recorded exchanges replayed, and
//! hostile input.

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};

use super::*;
use crate::host::MachineKind;
use crate::license::envelope::{Kind, sign};
use crate::license::{ContainerCertificate, ContainerKind};

const VENDOR: u32 = 4242;
const SERIAL: &str = "TD-0001";
const NOW: u64 = 1_800_000_000;

fn publisher(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn x25519(seed: u8) -> ([u8; 32], [u8; 32]) {
    let secret = StaticSecret::from([seed; 32]);
    let public = PublicKey::from(&secret);
    (secret.to_bytes(), public.to_bytes())
}

fn device_key() -> ([u8; 32], [u8; 32]) {
    x25519(7)
}

fn host_key() -> ([u8; 32], [u8; 32]) {
    x25519(9)
}

fn certificate(noise_key: [u8; 32]) -> ContainerCertificate {
    ContainerCertificate {
        vendor_id: VENDOR,
        serial: SERIAL.into(),
        kind: ContainerKind::Dongle,
        sign_key: [1; 32],
        seal_key: [2; 32],
        noise_key,
        issued_at: NOW - 1000,
        expiry: None,
    }
}

fn signed(cert: &ContainerCertificate, by: &SigningKey) -> Vec<u8> {
    sign(Kind::Certificate, cert, by).unwrap()
}

fn good_hello() -> DeviceHello {
    let cert = certificate(device_key().1);
    DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(1))))
}

fn host_hello() -> HostHello {
    HostHello::new(MachineKind::Physical, "workstation")
}

/// Everything a recorder on the wire saw of one handshake, and both ends' results.
#[derive(Debug)]
struct Session {
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    msg3: Vec<u8>,
    client: Channel,
    device: Channel,
    device_hello: DeviceHello,
    certificate: Option<ContainerCertificate>,
    host_identity: [u8; 32],
    host: HostHello,
}

/// Runs a handshake of `hello` under `trust`; returns the client's error if it refuses.
fn handshake(hello: DeviceHello, trust: Trust<'_>) -> Result<Session> {
    let mut client = ClientHandshake::new(&host_key().0, host_hello())?;
    let mut device = DeviceHandshake::new(&device_key().0, hello)?;
    let msg1 = client.message1()?;
    let msg2 = device.message2(&msg1)?;
    let msg3 = client.message3(&msg2, trust)?;
    let (client, device_hello, certificate) = client.finish()?;
    let (device, host_identity, host) = device.finish(&msg3)?;
    Ok(Session {
        msg1,
        msg2,
        msg3,
        client,
        device,
        device_hello,
        certificate,
        host_identity,
        host,
    })
}

fn publisher_trust(key: &ed25519_dalek::VerifyingKey) -> Trust<'_> {
    Trust::Publisher {
        key,
        vendor_id: VENDOR,
        now: NOW,
    }
}

fn session() -> Session {
    let key = publisher(1).verifying_key();
    handshake(good_hello(), publisher_trust(&key)).unwrap()
}

/// A handshake whose device presents `hello`, checked against publisher 1.
fn refused(hello: DeviceHello) -> Error {
    let key = publisher(1).verifying_key();
    handshake(hello, publisher_trust(&key)).unwrap_err()
}

#[test]
fn full_handshake_then_messages_both_ways() {
    let mut s = session();
    assert_eq!(s.device_hello, good_hello());
    assert_eq!(s.certificate, Some(certificate(device_key().1)));
    assert_eq!(s.host_identity, host_key().1);
    assert_eq!(s.host, host_hello());
    assert_eq!(s.client.remote_static(), device_key().1);
    assert_eq!(s.device.remote_static(), host_key().1);
    assert_eq!(s.client.handshake_hash(), s.device.handshake_hash());

    for (i, len) in [0usize, 1, 100, MAX_PLAINTEXT].into_iter().enumerate() {
        let request: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let frame = s.client.seal(&request).unwrap();
        assert_eq!(frame.len(), len + FRAME_OVERHEAD);
        assert!(frame.len() <= MAX_FRAME);
        assert_eq!(
            frame[..8],
            (i as u64).to_le_bytes(),
            "counters count from 0"
        );
        if len >= 16 {
            assert!(
                !frame.windows(16).any(|w| w == &request[..16]),
                "plaintext on the wire"
            );
        }
        assert_eq!(s.device.open(&frame).unwrap(), request);

        let response: Vec<u8> = request.iter().rev().copied().collect();
        let frame = s.device.seal(&response).unwrap();
        assert_eq!(s.client.open(&frame).unwrap(), response);
    }
}

#[test]
fn channel_is_send() {
    fn send<T: Send>() {}
    send::<Channel>();
    send::<ClientHandshake>();
    send::<DeviceHandshake>();
}

#[test]
fn certificate_of_another_publisher_is_a_bad_signature() {
    let cert = certificate(device_key().1);
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(2))));
    assert!(matches!(refused(hello), Error::BadSignature(_)));
}

#[test]
fn certificate_naming_another_noise_key_is_a_binding_mismatch() {
    // A genuine certificate, presented by a device holding a different static key.
    let cert = certificate(x25519(8).1);
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(1))));
    let e = refused(hello);
    assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
    assert!(e.to_string().contains("channel key"), "{e}");
}

#[test]
fn wrong_vendor_is_named() {
    // The device says it is of another vendor.
    let mut cert = certificate(device_key().1);
    cert.vendor_id = 99;
    let hello = DeviceHello::new(SERIAL, 99, Some(signed(&cert, &publisher(1))));
    assert!(matches!(
        refused(hello),
        Error::WrongVendor {
            expected: VENDOR,
            found: 99
        }
    ));
    // The device claims our vendor, its certificate (by our key) says otherwise.
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(1))));
    assert!(matches!(
        refused(hello),
        Error::WrongVendor {
            expected: VENDOR,
            found: 99
        }
    ));
}

#[test]
fn expired_certificate_is_refused_and_a_valid_one_accepted() {
    let mut cert = certificate(device_key().1);
    cert.expiry = Some(NOW);
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(1))));
    assert!(matches!(refused(hello), Error::Expired { expiry: NOW }));

    cert.expiry = Some(NOW + 1);
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(1))));
    let key = publisher(1).verifying_key();
    let s = handshake(hello, publisher_trust(&key)).unwrap();
    assert_eq!(s.certificate.unwrap().expiry, Some(NOW + 1));
}

#[test]
fn software_container_certificate_is_a_binding_mismatch() {
    let mut cert = certificate(device_key().1);
    cert.kind = ContainerKind::Software;
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(signed(&cert, &publisher(1))));
    let e = refused(hello);
    assert!(matches!(e, Error::BindingMismatch(_)), "{e}");
    assert!(e.to_string().contains("not a dongle"), "{e}");
}

#[test]
fn device_claiming_another_serial_than_its_certificate_is_refused() {
    let cert = certificate(device_key().1);
    let hello = DeviceHello::new("TD-9999", VENDOR, Some(signed(&cert, &publisher(1))));
    assert!(matches!(refused(hello), Error::BindingMismatch(_)));
}

#[test]
fn certificate_that_is_another_kind_of_document_is_refused() {
    let cert = certificate(device_key().1);
    let license = sign(Kind::License, &cert, &publisher(1)).unwrap();
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(license));
    assert!(matches!(refused(hello), Error::Malformed { .. }));
}

#[test]
fn blank_dongle_needs_first_use_trust() {
    let blank = DeviceHello::new(SERIAL, 0, None);
    let e = refused(DeviceHello::new(SERIAL, VENDOR, None));
    assert!(matches!(e, Error::BadSignature(_)), "{e}");
    assert!(e.to_string().contains("no certificate"), "{e}");
    assert!(matches!(refused(blank.clone()), Error::WrongVendor { .. }));

    let mut s = handshake(blank.clone(), Trust::FirstUse).unwrap();
    assert_eq!(s.device_hello, blank);
    assert_eq!(s.certificate, None);
    assert_eq!(s.client.remote_static(), device_key().1);
    let frame = s.client.seal(b"program").unwrap();
    assert_eq!(s.device.open(&frame).unwrap(), b"program");

    // First use reports a programmed dongle's certificate without judging it.
    let s = handshake(good_hello(), Trust::FirstUse).unwrap();
    assert_eq!(s.device_hello, good_hello());
    assert_eq!(s.certificate, None);
}

#[test]
fn unknown_hello_versions_are_named() {
    let mut hello = good_hello();
    hello.version = 2;
    assert!(matches!(
        refused(hello),
        Error::UnknownVersion {
            found: 2,
            supported: CHANNEL_VERSION,
            ..
        }
    ));

    let mut host = host_hello();
    host.version = 7;
    let key = publisher(1).verifying_key();
    let mut client = ClientHandshake::new(&host_key().0, host).unwrap();
    let mut device = DeviceHandshake::new(&device_key().0, good_hello()).unwrap();
    let msg2 = device.message2(&client.message1().unwrap()).unwrap();
    let msg3 = client.message3(&msg2, publisher_trust(&key)).unwrap();
    assert!(matches!(
        device.finish(&msg3),
        Err(Error::UnknownVersion { found: 7, .. })
    ));
}

/// Records every frame of a few request/response rounds.
fn recorded_rounds(s: &mut Session, rounds: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for i in 0..rounds {
        let request = s.client.seal(format!("request {i}").as_bytes()).unwrap();
        assert_eq!(
            s.device.open(&request).unwrap(),
            format!("request {i}").as_bytes()
        );
        let response = s.device.seal(format!("response {i}").as_bytes()).unwrap();
        assert_eq!(
            s.client.open(&response).unwrap(),
            format!("response {i}").as_bytes()
        );
        requests.push(request);
        responses.push(response);
    }
    (requests, responses)
}

fn assert_replay(r: Result<Vec<u8>>) {
    match r {
        Err(Error::Tampered(m)) => assert!(m.contains("replay"), "{m}"),
        other => panic!("replay not rejected as such: {other:?}"),
    }
}

#[test]
fn replayed_request_is_rejected_by_the_device() {
    let mut s = session();
    let (requests, _) = recorded_rounds(&mut s, 3);
    for request in &requests {
        assert_replay(s.device.open(request));
    }
    // The channel still works afterwards.
    let next = s.client.seal(b"next").unwrap();
    assert_eq!(s.device.open(&next).unwrap(), b"next");
    assert_replay(s.device.open(&next));
}

#[test]
fn replayed_response_is_rejected_by_the_client() {
    let mut s = session();
    let (_, responses) = recorded_rounds(&mut s, 3);
    for response in &responses {
        assert_replay(s.client.open(response));
    }
    let next = s.device.seal(b"next").unwrap();
    assert_eq!(s.client.open(&next).unwrap(), b"next");
}

#[test]
fn frames_reflected_to_their_sender_are_rejected() {
    let mut s = session();
    let request = s.client.seal(b"to the device").unwrap();
    assert!(matches!(s.client.open(&request), Err(Error::Tampered(_))));
    let response = s.device.seal(b"to the client").unwrap();
    assert!(matches!(s.device.open(&response), Err(Error::Tampered(_))));
}

#[test]
fn frames_of_one_session_are_rejected_by_another() {
    let mut a = session();
    let (requests, responses) = recorded_rounds(&mut a, 3);
    // Same keys on both ends, new handshake: new ephemeral keys, new channel keys.
    let mut b = session();
    assert_ne!(a.client.handshake_hash(), b.client.handshake_hash());
    for (request, response) in requests.iter().zip(&responses) {
        assert!(matches!(b.device.open(request), Err(Error::Tampered(_))));
        assert!(matches!(b.client.open(response), Err(Error::Tampered(_))));
    }
    // Rejected frames did not move B's counters: B's own frame 0 still opens.
    let (b_requests, b_responses) = recorded_rounds(&mut b, 1);
    assert_eq!(b_requests[0][..8], 0u64.to_le_bytes());
    assert!(matches!(
        a.device.open(&b_requests[0]),
        Err(Error::Tampered(_))
    ));
    assert!(matches!(
        a.client.open(&b_responses[0]),
        Err(Error::Tampered(_))
    ));
}

#[test]
fn out_of_order_frames_reject_the_older() {
    let mut s = session();
    let frame1 = s.client.seal(b"one").unwrap();
    let frame2 = s.client.seal(b"two").unwrap();
    assert_eq!(s.device.open(&frame2).unwrap(), b"two");
    assert_replay(s.device.open(&frame1));
    assert_replay(s.device.open(&frame2));

    let frame1 = s.device.seal(b"one").unwrap();
    let frame2 = s.device.seal(b"two").unwrap();
    assert_eq!(s.client.open(&frame2).unwrap(), b"two");
    assert_replay(s.client.open(&frame1));
}

#[test]
fn recorded_handshake_replayed_to_a_fresh_device_fails_at_message_3() {
    let old = session();
    let mut device = DeviceHandshake::new(&device_key().0, good_hello()).unwrap();
    // Message 1 is only an ephemeral key: the device answers with a fresh one of its own...
    let msg2 = device.message2(&old.msg1).unwrap();
    assert_ne!(msg2, old.msg2);
    // ...so the recorded message 3, made for the old ephemeral key, cannot be read.
    let e = device.finish(&old.msg3).unwrap_err();
    assert!(matches!(e, Error::Tampered(_)), "{e}");

    // A recorded message 2 does not fool a fresh client either.
    let key = publisher(1).verifying_key();
    let mut client = ClientHandshake::new(&host_key().0, host_hello()).unwrap();
    client.message1().unwrap();
    let e = client
        .message3(&old.msg2, publisher_trust(&key))
        .unwrap_err();
    assert!(matches!(e, Error::Tampered(_)), "{e}");
}

#[test]
fn every_bit_flip_in_a_frame_is_rejected() {
    let mut s = session();
    let frame = s.client.seal(b"a request with some bytes").unwrap();
    for i in 0..frame.len() * 8 {
        let mut bad = frame.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            matches!(s.device.open(&bad), Err(Error::Tampered(_))),
            "bit {i} flipped went unnoticed"
        );
    }
    // None of the forgeries advanced the counter.
    assert_eq!(s.device.open(&frame).unwrap(), b"a request with some bytes");
}

#[test]
fn truncated_and_oversized_frames_are_rejected() {
    let mut s = session();
    let frame = s.client.seal(b"hello").unwrap();
    for n in 0..frame.len() {
        assert!(s.device.open(&frame[..n]).is_err(), "truncated to {n}");
    }
    for n in 0..FRAME_OVERHEAD {
        assert!(matches!(
            s.device.open(&frame[..n.min(frame.len())]),
            Err(Error::Malformed { .. })
        ));
    }
    let mut long = frame.clone();
    long.push(0);
    assert!(matches!(s.device.open(&long), Err(Error::Tampered(_))));
    assert!(matches!(
        s.device.open(&vec![0u8; MAX_FRAME + 1]),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        s.client.seal(&vec![0u8; MAX_PLAINTEXT + 1]),
        Err(Error::InvalidArgument(_))
    ));
    // The largest frame goes through.
    let big = s.client.seal(&vec![0xA5; MAX_PLAINTEXT]).unwrap();
    assert_eq!(big.len(), MAX_FRAME);
    assert_eq!(s.device.open(&big).unwrap(), vec![0xA5; MAX_PLAINTEXT]);
    assert_replay(s.device.open(&frame));
}

#[test]
fn reserved_counter_is_rejected() {
    let mut s = session();
    let mut frame = s.client.seal(b"x").unwrap();
    frame[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(s.device.open(&frame), Err(Error::Tampered(_))));
}

fn garbage(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A fresh device, fed `msg1`, and if that goes well, `msg3`.
fn device_reads(msg1: &[u8], msg3: Option<&[u8]>) -> Result<()> {
    let mut device = DeviceHandshake::new(&device_key().0, good_hello())?;
    device.message2(msg1)?;
    if let Some(m) = msg3 {
        device.finish(m)?;
    }
    Ok(())
}

#[test]
fn garbage_and_truncated_message_1_is_an_error() {
    let s = session();
    assert!(device_reads(&s.msg1, None).is_ok());
    assert!(matches!(
        device_reads(&[], None),
        Err(Error::Malformed { .. })
    ));
    for n in 0..s.msg1.len() {
        assert!(
            device_reads(&s.msg1[..n], None).is_err(),
            "truncated to {n}"
        );
    }
    // A payload in message 1 is refused.
    let mut long = s.msg1.clone();
    long.extend_from_slice(b"extra");
    assert!(matches!(
        device_reads(&long, None),
        Err(Error::Malformed { .. })
    ));
    // A low-order ephemeral key is refused.
    assert!(matches!(
        device_reads(&[0u8; 32], None),
        Err(Error::Tampered(_))
    ));
    let mut one = [0u8; 32];
    one[0] = 1;
    assert!(matches!(device_reads(&one, None), Err(Error::Tampered(_))));
    assert!(device_reads(&vec![0x42; MAX_HANDSHAKE + 1], None).is_err());
}

/// Fixed ephemeral keys, so that every handshake built by [`Replay`] is the same one and a
/// modified message can be fed to a fresh state that expects exactly the genuine one.
const HOST_EPHEMERAL: [u8; 32] = [0x31; 32];
const DEVICE_EPHEMERAL: [u8; 32] = [0x47; 32];

struct Replay {
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    msg3: Vec<u8>,
}

impl Replay {
    fn client() -> ClientHandshake {
        ClientHandshake::with_ephemeral(&host_key().0, host_hello(), &HOST_EPHEMERAL).unwrap()
    }

    fn device() -> DeviceHandshake {
        DeviceHandshake::with_ephemeral(&device_key().0, good_hello(), &DEVICE_EPHEMERAL).unwrap()
    }

    fn new() -> Replay {
        let key = publisher(1).verifying_key();
        let mut client = Replay::client();
        let mut device = Replay::device();
        let msg1 = client.message1().unwrap();
        let msg2 = device.message2(&msg1).unwrap();
        let msg3 = client.message3(&msg2, publisher_trust(&key)).unwrap();
        Replay { msg1, msg2, msg3 }
    }

    /// A fresh client, after message 1, reading `msg2`.
    fn client_reads(&self, msg2: &[u8]) -> Result<Vec<u8>> {
        let key = publisher(1).verifying_key();
        let mut client = Replay::client();
        assert_eq!(client.message1().unwrap(), self.msg1);
        client.message3(msg2, publisher_trust(&key))
    }

    /// A fresh device, after message 2, reading `msg3`.
    fn device_reads(&self, msg3: &[u8]) -> Result<(Channel, [u8; 32], HostHello)> {
        let mut device = Replay::device();
        assert_eq!(device.message2(&self.msg1).unwrap(), self.msg2);
        device.finish(msg3)
    }
}

#[test]
fn garbage_truncated_and_flipped_message_2_is_an_error() {
    let r = Replay::new();
    // The harness accepts the genuine message, so each failure below is the modification's.
    assert_eq!(r.client_reads(&r.msg2).unwrap(), r.msg3);
    for n in 0..r.msg2.len() {
        assert!(r.client_reads(&r.msg2[..n]).is_err(), "truncated to {n}");
    }
    for i in 0..r.msg2.len() * 8 {
        let mut bad = r.msg2.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            r.client_reads(&bad).is_err(),
            "bit {i} flipped went unnoticed"
        );
    }
    let mut long = r.msg2.clone();
    long.push(0);
    assert!(matches!(r.client_reads(&long), Err(Error::Tampered(_))));
    for len in [
        0,
        1,
        31,
        32,
        33,
        64,
        96,
        200,
        1000,
        MAX_HANDSHAKE,
        MAX_HANDSHAKE + 1,
    ] {
        assert!(r.client_reads(&garbage(len)).is_err(), "garbage of {len}");
    }
    // A low-order ephemeral key from the device is refused.
    let mut low = r.msg2.clone();
    low[..32].fill(0);
    assert!(matches!(r.client_reads(&low), Err(Error::Tampered(_))));
}

#[test]
fn garbage_truncated_and_flipped_message_3_is_an_error() {
    let r = Replay::new();
    let (_, identity, host) = r.device_reads(&r.msg3).unwrap();
    assert_eq!((identity, host), (host_key().1, host_hello()));
    for n in 0..r.msg3.len() {
        assert!(r.device_reads(&r.msg3[..n]).is_err(), "truncated to {n}");
    }
    for i in 0..r.msg3.len() * 8 {
        let mut bad = r.msg3.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            r.device_reads(&bad).is_err(),
            "bit {i} flipped went unnoticed"
        );
    }
    for len in [0, 1, 48, 64, 100, 1000, MAX_HANDSHAKE, MAX_HANDSHAKE + 1] {
        assert!(r.device_reads(&garbage(len)).is_err(), "garbage of {len}");
    }
}

#[test]
fn a_failed_handshake_stays_failed() {
    let key = publisher(1).verifying_key();
    let r = Replay::new();
    let mut client = Replay::client();
    client.message1().unwrap();
    let mut bad = r.msg2.clone();
    bad[40] ^= 1;
    assert!(client.message3(&bad, publisher_trust(&key)).is_err());
    // Even the genuine message is refused now.
    assert!(client.message3(&r.msg2, publisher_trust(&key)).is_err());
    assert!(client.finish().is_err());

    // A refused certificate fails the handshake too.
    let other = publisher(2).verifying_key();
    let mut client = Replay::client();
    client.message1().unwrap();
    assert!(matches!(
        client.message3(&r.msg2, publisher_trust(&other)),
        Err(Error::BadSignature(_))
    ));
    assert!(client.message3(&r.msg2, publisher_trust(&key)).is_err());
    assert!(client.finish().is_err());

    let mut device = Replay::device();
    let mut bad = r.msg1.clone();
    bad.push(1);
    assert!(device.message2(&bad).is_err());
    assert!(device.message2(&r.msg1).is_err());
    assert!(device.finish(&r.msg3).is_err());
}

#[test]
fn calls_out_of_order_are_errors() {
    let key = publisher(1).verifying_key();
    let mut client = ClientHandshake::new(&host_key().0, host_hello()).unwrap();
    assert!(client.message3(&[0u8; 96], publisher_trust(&key)).is_err());
    let msg1 = client.message1().unwrap();
    assert!(client.message1().is_err());

    let device = DeviceHandshake::new(&device_key().0, good_hello()).unwrap();
    assert!(device.finish(&msg1).is_err());

    let client = ClientHandshake::new(&host_key().0, host_hello()).unwrap();
    assert!(client.finish().is_err());

    let mut device = DeviceHandshake::new(&device_key().0, good_hello()).unwrap();
    device.message2(&msg1).unwrap();
    assert!(device.message2(&msg1).is_err());
}

#[test]
fn oversized_hello_is_an_error_not_a_panic() {
    let hello = DeviceHello::new(SERIAL, VENDOR, Some(vec![0; MAX_HANDSHAKE]));
    let mut client = ClientHandshake::new(&host_key().0, host_hello()).unwrap();
    let mut device = DeviceHandshake::new(&device_key().0, hello).unwrap();
    let msg1 = client.message1().unwrap();
    assert!(matches!(
        device.message2(&msg1),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn hello_decoding_checks_version_and_trailing_bytes() {
    let bytes = encode_hello("device hello", &good_hello()).unwrap();
    assert_eq!(
        decode_hello::<DeviceHello>("device hello", &bytes).unwrap(),
        good_hello()
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        decode_hello::<DeviceHello>("device hello", &trailing),
        Err(Error::Malformed { .. })
    ));
    for n in 0..bytes.len() {
        assert!(decode_hello::<DeviceHello>("device hello", &bytes[..n]).is_err());
    }
}
