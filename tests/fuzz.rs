//! Mutation fuzzing of every parser the runtime exposes to outside bytes: signed envelopes
//! (licenses, requests, activations), ciphertext, software container files, publisher key
//! files, the engine's activation install and license servers' usage logs. Deterministic (a fixed-seed xorshift), so a
//! failure reproduces; the properties: nothing panics, and no mutated signed or
//! authenticated input is ever accepted.
//!
//! These run on stable in every `make test`. The coverage-guided fuzzing of the same decoders
//! (and the others outside bytes reach) is in `fuzz/`, run with `make fuzz` on nightly (see
//! `docs/FUZZING.md`); `tests/fuzz_corpus.rs` replays its seeds and regressions on stable.

use std::sync::Arc;

use tessera::cipher::{self, Header, Mode};
use tessera::client::{Environment, request_activation};
use tessera::container::{Engine, SoftwareContainer};
use tessera::host::HostIdentity;
use tessera::license::{Envelope, Kind, SignedLicense};
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

mod common;
use common::spec;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation of `data`: flipped bits, changed/inserted/deleted bytes, truncation,
/// extension, or overwritten length fields. Never returns `data` unchanged.
fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    loop {
        let mut d = data.to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(7) {
                0 if !d.is_empty() => {
                    let i = rng.below(d.len());
                    d[i] ^= 1 << rng.below(8);
                }
                1 if !d.is_empty() => {
                    let i = rng.below(d.len());
                    d[i] = rng.next() as u8;
                }
                2 => {
                    let i = rng.below(d.len() + 1);
                    d.insert(i, rng.next() as u8);
                }
                3 if !d.is_empty() => {
                    let i = rng.below(d.len());
                    d.remove(i);
                }
                4 => d.truncate(rng.below(d.len() + 1)),
                5 => d.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                _ if d.len() >= 10 => {
                    let i = rng.below(d.len() - 4);
                    d[i..i + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                }
                _ => {}
            }
        }
        if d != data {
            return d;
        }
    }
}

const ROUNDS: usize = 3000;

#[test]
fn signed_documents_never_accept_a_mutation() {
    let home = tempfile::tempdir().unwrap();
    let env = Environment {
        home: home.path().to_path_buf(),
        host: HostIdentity::simulated("fuzz"),
        clock: Arc::new(SystemClock),
    };
    let key = PublisherKey::generate(9, "fuzz");
    let (_, req) = request_activation(&env, 9).unwrap();
    let act = key
        .activate(
            &req,
            &[spec(1, 2, tessera::license::CountingUnit::Handle)],
            tessera::util::now(),
        )
        .unwrap();
    let parsed: tessera::container::Activation = Envelope::parse(Kind::Activation, &act)
        .unwrap()
        .decode()
        .unwrap();
    let lic = parsed.licenses[0].clone();
    let pk = key.public_key();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, &lic);
        assert!(
            SignedLicense::verify(&m, &pk).is_err(),
            "mutated license accepted"
        );
        let _ = SignedLicense::parse_unverified(&m);
        let m = mutate(&mut rng, &req);
        if let Ok(r) = key.read_request(&m) {
            // A request is self-signed: a mutation can only pass as another valid request if
            // it re-signed, which it cannot.
            panic!("mutated request accepted: {}", r.serial);
        }
        let m = mutate(&mut rng, &act);
        let mut engine = Engine::create(tessera::container::ContainerKind::Software, 9, 0);
        assert!(engine.install_activation(&m, Some(&pk), 0).is_err());
        for kind in [
            Kind::License,
            Kind::ActivationRequest,
            Kind::Activation,
            Kind::Certificate,
        ] {
            if let Ok(e) = Envelope::parse(kind, &m) {
                let _ = e.decode::<tessera::container::Activation>();
                let _ = tessera::license::License::decode(&e);
            }
        }
    }
}

#[test]
fn ciphertext_never_decrypts_after_a_mutation() {
    let secret = [3u8; 32];
    let mut rng = Rng(0xc1_97e4);
    for mode in [Mode::Direct, Mode::Derived] {
        let ct =
            cipher::encrypt(&secret, &Header::new(mode, 1, 2), b"some plaintext bytes").unwrap();
        for _ in 0..ROUNDS {
            let m = mutate(&mut rng, &ct);
            assert!(cipher::decrypt(&secret, &m).is_err());
        }
    }
}

#[test]
fn container_and_key_files_reject_mutations_without_panicking() {
    let home = tempfile::tempdir().unwrap();
    let host = HostIdentity::simulated("fuzz");
    let c = SoftwareContainer::create(home.path(), 9, &host.fingerprint, 0).unwrap();
    let good = std::fs::read(c.path()).unwrap();
    let path = home.path().join("mutant.tsc");
    let mut rng = Rng(0xf11e);
    for _ in 0..300 {
        let m = mutate(&mut rng, &good);
        std::fs::write(&path, &m).unwrap();
        assert!(SoftwareContainer::load(&path, &host.fingerprint).is_err());
    }
    let kf = PublisherKey::generate(1, "k").to_bytes().unwrap();
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, &kf);
        let _ = PublisherKey::from_bytes(&m);
    }
    assert!(SoftwareContainer::load(c.path(), &host.fingerprint).is_ok());
}

/// A license server's usage log (`license::usage`): no mutation panics the reader, and no
/// mutation of what a checkpoint covers is accepted. A mutant that verifies may only differ
/// after its last checkpoint (the unverified tail, which the report counts).
#[test]
fn usage_logs_never_accept_a_mutation_of_what_a_checkpoint_covers() {
    use tessera::container::ContainerKind;
    use tessera::host::{Fingerprint, MachineKind};
    use tessera::license::usage::{self, Chain, Event, LogHeader, SeatEvent};

    let key = PublisherKey::generate(9, "fuzz");
    let now = tessera::util::now();
    let mut engine = Engine::create(ContainerKind::Software, 9, now);
    let req = engine
        .activation_request(&Fingerprint::default(), MachineKind::Physical, "f", now)
        .unwrap();
    let act = key
        .activate(
            &req,
            &[spec(1, 2, tessera::license::CountingUnit::Handle)],
            now,
        )
        .unwrap();
    engine
        .install_activation(&act, Some(&key.public_key()), now)
        .unwrap();
    let header = LogHeader {
        vendor_id: 9,
        server_key: [4; 32],
    };
    let mut chain = Chain::new(header);
    let mut log = header.to_bytes().to_vec();
    let mut scratch = Vec::new();
    let seat = |n: u8| SeatEvent {
        vendor_id: 9,
        product_code: 1,
        license_id: [1; 16],
        seat_id: [n; 16],
        unit_key: format!("handle:{n}"),
        client: None,
    };
    let t = now * 1000;
    for (i, e) in [
        Event::Grant(seat(1)),
        Event::Deny {
            seat: seat(2),
            status: 101,
        },
        Event::Release(seat(1)),
    ]
    .into_iter()
    .enumerate()
    {
        chain
            .append(t + i as u64, e, &mut log, &mut scratch)
            .unwrap();
    }
    let (st, cert) = engine.sign_usage(chain.checkpoint_digest(), now).unwrap();
    let cp = chain.checkpoint(st, cert);
    chain.append(t + 5, cp, &mut log, &mut scratch).unwrap();
    let covered = log.len();
    chain
        .append(t + 6, Event::Grant(seat(3)), &mut log, &mut scratch)
        .unwrap();
    let pk = key.public_key();
    let good = usage::verify(&log[..], &pk).unwrap();
    assert_eq!((good.verified, good.unverified_tail), (3, 1));

    let mut rng = Rng(0x05a9_e109);
    let mut refused = 0;
    for _ in 0..1000 {
        let m = mutate(&mut rng, &log);
        let _ = usage::scan(&m[..], |_, _| Ok(()));
        match usage::verify(&m[..], &pk) {
            Err(_) => refused += 1,
            Ok(r) => {
                // Where the mutant's last checkpoint ends: everything before is what it
                // claims is verified, and must be the original's bytes.
                let mut end = usage::HEADER_LEN;
                usage::scan(&m[..], |_, s| {
                    if s.record.seq < r.verified + u64::from(r.checkpoints > 0) {
                        end = (s.offset + s.len) as usize;
                    }
                    Ok(())
                })
                .unwrap();
                assert!(
                    end <= covered && m[..end] == log[..end],
                    "a mutation of the verified part was accepted: {r:?}"
                );
            }
        }
    }
    // Mutants of the tail alone pass (and were checked above); everything else is refused.
    assert!(
        (900..1000).contains(&refused),
        "{refused} of 1000 mutants refused"
    );
}
