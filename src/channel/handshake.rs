//! The Noise XX handshake: [`ClientHandshake`] (the runtime, initiator) and
//! [`DeviceHandshake`] (the dongle, responder), and how the runtime trusts the device.
//!
//! Each side is a small state machine; any error leaves it failed, so a handshake that went
//! wrong once can never be finished.

use ed25519_dalek::VerifyingKey;
use snow::HandshakeState;
use x25519_dalek::{PublicKey, StaticSecret};

use super::{
    Channel, DeviceHello, HostHello, MAX_HANDSHAKE, NOISE_PARAMS, decode_hello, encode_hello,
};
use crate::license::envelope::{Envelope, Kind};
use crate::license::{ContainerCertificate, ContainerKind};
use crate::{Error, Result};

const HANDSHAKE: &str = "channel handshake";
const DEVICE_HELLO: &str = "device hello";
const HOST_HELLO: &str = "host hello";
/// Length of an X25519 public key.
const KEY: usize = 32;

/// How the runtime trusts the device.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// Normal: the certificate must verify against this publisher key and vendor, be of kind
    /// Dongle, not be expired at `now`, and name the Noise static key the device proved.
    Publisher {
        /// The publisher key the app opened its session with.
        key: &'a VerifyingKey,
        /// The publisher's vendor id.
        vendor_id: u32,
        /// Now, seconds since the Unix epoch.
        now: u64,
    },
    /// The publisher's tool programming a (possibly blank) dongle: accept any device, report
    /// what it said. No certificate is verified (its bytes stay in the [`DeviceHello`]).
    FirstUse,
}

/// Builds a Noise handshake state for `NOISE_PARAMS` with `secret` as the static key.
/// `ephemeral` fixes the ephemeral key: only tests do that, to replay a handshake exactly.
pub(crate) fn noise(
    secret: &[u8; 32],
    initiator: bool,
    ephemeral: Option<&[u8; 32]>,
) -> Result<HandshakeState> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|e| Error::Internal(format!("Noise parameters {NOISE_PARAMS}: {e}")))?;
    let mut builder = snow::Builder::new(params)
        .local_private_key(secret)
        .map_err(|e| Error::Internal(format!("Noise static key: {e}")))?;
    if let Some(e) = ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(e);
    }
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.map_err(|e| Error::Internal(format!("building the Noise handshake: {e}")))
}

/// Writes the next handshake message with `payload`.
pub(crate) fn write(noise: &mut HandshakeState, step: &str, payload: &[u8]) -> Result<Vec<u8>> {
    let mut message = vec![0u8; MAX_HANDSHAKE];
    let n = noise
        .write_message(payload, &mut message)
        .map_err(|e| match e {
            snow::Error::Input => Error::InvalidArgument(format!(
                "{HANDSHAKE} {step}: a payload of {} bytes does not fit {MAX_HANDSHAKE} bytes",
                payload.len()
            )),
            e => Error::Internal(format!("{HANDSHAKE} {step}: {e}")),
        })?;
    message.truncate(n);
    Ok(message)
}

/// Reads the next handshake message, returns its payload.
pub(crate) fn read(noise: &mut HandshakeState, step: &str, message: &[u8]) -> Result<Vec<u8>> {
    if message.len() > MAX_HANDSHAKE {
        return Err(Error::malformed(
            HANDSHAKE,
            format!(
                "{step} of {} bytes is larger than {MAX_HANDSHAKE}",
                message.len()
            ),
        ));
    }
    let mut payload = vec![0u8; message.len()];
    let n = noise
        .read_message(message, &mut payload)
        .map_err(|e| match e {
            snow::Error::Input => Error::malformed(
                HANDSHAKE,
                format!("{step} is truncated ({} bytes)", message.len()),
            ),
            snow::Error::Decrypt => Error::Tampered(format!(
                "{HANDSHAKE} {step} failed authentication (modified, replayed or not for this \
                 handshake)"
            )),
            e => Error::malformed(HANDSHAKE, format!("{step}: {e}")),
        })?;
    payload.truncate(n);
    Ok(payload)
}

/// Rejects a low-order X25519 public key: Diffie-Hellman with it gives a known result, so a
/// peer could complete a handshake without holding any secret.
pub(crate) fn check_contributory(key: &[u8], whose: &str) -> Result<()> {
    let bytes: [u8; KEY] = key
        .get(..KEY)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::malformed(HANDSHAKE, format!("{whose} is truncated")))?;
    // Any clamped scalar is a multiple of the cofactor: the product is zero exactly for the
    // points of small order.
    let probe = StaticSecret::from([0x55u8; 32]);
    if probe
        .diffie_hellman(&PublicKey::from(bytes))
        .was_contributory()
    {
        Ok(())
    } else {
        Err(Error::Tampered(format!("{whose} is a low-order point")))
    }
}

/// The peer's static key, once the handshake has revealed it.
pub(crate) fn remote_static(noise: &HandshakeState) -> Result<[u8; 32]> {
    let key: [u8; 32] = noise
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::Internal(format!("{HANDSHAKE}: no remote static key")))?;
    check_contributory(&key, "the peer's static key")?;
    Ok(key)
}

/// Turns a finished handshake into a [`Channel`] with the dongle frame limit.
fn into_channel(noise: HandshakeState) -> Result<Channel> {
    into_channel_with(noise, super::MAX_FRAME)
}

/// Turns a finished handshake into a [`Channel`] whose frames may be up to `max_frame`.
pub(crate) fn into_channel_with(noise: HandshakeState, max_frame: usize) -> Result<Channel> {
    let remote = remote_static(&noise)?;
    let hash: [u8; 32] = noise
        .get_handshake_hash()
        .try_into()
        .map_err(|_| Error::Internal(format!("{HANDSHAKE}: handshake hash length")))?;
    let transport = noise
        .into_stateless_transport_mode()
        .map_err(|e| Error::Internal(format!("{HANDSHAKE}: entering transport mode: {e}")))?;
    Ok(Channel::with_max_frame(transport, remote, hash, max_frame))
}

fn out_of_order(what: &str) -> Error {
    Error::Internal(format!("{HANDSHAKE}: {what}"))
}

/// Checks what the device said against `trust`; returns its verified certificate.
fn check_device(
    hello: &DeviceHello,
    proved: &[u8; 32],
    trust: Trust<'_>,
) -> Result<Option<ContainerCertificate>> {
    let (key, vendor_id, now) = match trust {
        Trust::FirstUse => return Ok(None),
        Trust::Publisher {
            key,
            vendor_id,
            now,
        } => (key, vendor_id, now),
    };
    // The hello is only the device's word, but it can only make us refuse, never accept.
    if hello.vendor_id != vendor_id {
        return Err(Error::WrongVendor {
            expected: vendor_id,
            found: hello.vendor_id,
        });
    }
    let bytes = hello.certificate.as_deref().ok_or_else(|| {
        Error::BadSignature(format!(
            "dongle {} has no certificate: it is blank, and only the publisher's tool talks to \
             a blank dongle",
            hello.serial
        ))
    })?;
    let cert: ContainerCertificate = Envelope::open(Kind::Certificate, bytes, key)?;
    if cert.vendor_id != vendor_id {
        return Err(Error::WrongVendor {
            expected: vendor_id,
            found: cert.vendor_id,
        });
    }
    if cert.kind != ContainerKind::Dongle {
        return Err(Error::BindingMismatch(format!(
            "the certificate of {} is for a {}, not a dongle",
            cert.serial, cert.kind
        )));
    }
    if let Some(expiry) = cert.expiry
        && now >= expiry
    {
        return Err(Error::Expired { expiry });
    }
    if cert.noise_key != *proved {
        return Err(Error::BindingMismatch(format!(
            "the certificate of dongle {} names channel key {}, but the device proved {}",
            cert.serial,
            hex::encode(cert.noise_key),
            hex::encode(proved)
        )));
    }
    if cert.serial != hello.serial {
        return Err(Error::BindingMismatch(format!(
            "the device says it is dongle {}, its certificate is for {}",
            hello.serial, cert.serial
        )));
    }
    Ok(Some(cert))
}

enum ClientStep {
    Start,
    SentMessage1,
    SentMessage3(Box<Verified>),
    Failed,
}

/// What message 2 said, once checked.
struct Verified {
    device: DeviceHello,
    certificate: Option<ContainerCertificate>,
}

/// The runtime's side of the handshake (Noise initiator): [`message1`](Self::message1),
/// [`message3`](Self::message3), [`finish`](Self::finish), in that order.
pub struct ClientHandshake {
    noise: HandshakeState,
    hello: Vec<u8>,
    step: ClientStep,
}

impl ClientHandshake {
    /// Starts a handshake with the host's static secret; `hello` is sent in message 3 as
    /// given (build it with [`HostHello::new`]).
    pub fn new(host_static_secret: &[u8; 32], hello: HostHello) -> Result<Self> {
        Self::build(host_static_secret, hello, None)
    }

    /// A handshake with a fixed ephemeral key, to replay one exactly.
    #[cfg(test)]
    pub(super) fn with_ephemeral(
        host_static_secret: &[u8; 32],
        hello: HostHello,
        ephemeral: &[u8; 32],
    ) -> Result<Self> {
        Self::build(host_static_secret, hello, Some(ephemeral))
    }

    fn build(secret: &[u8; 32], hello: HostHello, ephemeral: Option<&[u8; 32]>) -> Result<Self> {
        Ok(ClientHandshake {
            noise: noise(secret, true, ephemeral)?,
            hello: encode_hello(HOST_HELLO, &hello)?,
            step: ClientStep::Start,
        })
    }

    /// Message 1: an ephemeral key, empty payload.
    pub fn message1(&mut self) -> Result<Vec<u8>> {
        if !matches!(self.step, ClientStep::Start) {
            return Err(out_of_order("message 1 was already written"));
        }
        self.step = ClientStep::Failed;
        let message = write(&mut self.noise, "message 1", &[])?;
        self.step = ClientStep::SentMessage1;
        Ok(message)
    }

    /// Reads message 2, checks the [`DeviceHello`] and its certificate per `trust`, returns
    /// message 3 to send.
    pub fn message3(&mut self, message2: &[u8], trust: Trust<'_>) -> Result<Vec<u8>> {
        if !matches!(self.step, ClientStep::SentMessage1) {
            return Err(out_of_order(
                "message 2 is read once, after message 1 and only if it went well",
            ));
        }
        self.step = ClientStep::Failed;
        check_contributory(message2, "the device's ephemeral key")?;
        let payload = read(&mut self.noise, "message 2", message2)?;
        let proved = remote_static(&self.noise)?;
        let device: DeviceHello = decode_hello(DEVICE_HELLO, &payload)?;
        let certificate = check_device(&device, &proved, trust)?;
        let message = write(&mut self.noise, "message 3", &self.hello)?;
        self.step = ClientStep::SentMessage3(Box::new(Verified {
            device,
            certificate,
        }));
        Ok(message)
    }

    /// After message 3 is sent: the channel, the device's hello, and the device's verified
    /// certificate (decoded; `None` under [`Trust::FirstUse`]).
    pub fn finish(self) -> Result<(Channel, DeviceHello, Option<ContainerCertificate>)> {
        let ClientStep::SentMessage3(verified) = self.step else {
            return Err(out_of_order("finish before a successful message 3"));
        };
        let Verified {
            device,
            certificate,
        } = *verified;
        Ok((into_channel(self.noise)?, device, certificate))
    }
}

/// Where a responder is.
enum ResponderStep {
    Start,
    SentMessage2,
    Failed,
}

/// The responder's side of Noise XX, sans I/O, as the dongle (to a host) and the license
/// server (to a client) both run it: message 1 in (an ephemeral key, no payload), message 2
/// out (the responder's hello), message 3 in (the initiator's hello). Any error leaves it
/// failed. The hellos stay bytes here; each side encodes and decodes its own.
pub(crate) struct Responder {
    noise: HandshakeState,
    hello: Vec<u8>,
    step: ResponderStep,
    /// The handshake's name in errors.
    what: &'static str,
    /// Whose ephemeral key message 1 carries, in errors.
    initiator: &'static str,
    /// The largest frame of the channel it ends in.
    max_frame: usize,
}

impl Responder {
    /// A responder that answers with `hello` (already encoded).
    pub(crate) fn new(
        noise: HandshakeState,
        hello: Vec<u8>,
        what: &'static str,
        initiator: &'static str,
        max_frame: usize,
    ) -> Responder {
        Responder {
            noise,
            hello,
            step: ResponderStep::Start,
            what,
            initiator,
            max_frame,
        }
    }

    fn out_of_order(&self, why: &str) -> Error {
        Error::Internal(format!("{}: {why}", self.what))
    }

    /// Reads message 1 (it must carry no payload), returns message 2.
    pub(crate) fn message2(&mut self, message1: &[u8]) -> Result<Vec<u8>> {
        if !matches!(self.step, ResponderStep::Start) {
            return Err(self.out_of_order("message 1 is read once"));
        }
        self.step = ResponderStep::Failed;
        check_contributory(message1, self.initiator)?;
        let payload = read(&mut self.noise, "message 1", message1)?;
        if !payload.is_empty() {
            return Err(Error::malformed(
                self.what,
                format!(
                    "message 1 carries {} payload bytes, none expected",
                    payload.len()
                ),
            ));
        }
        let message = write(&mut self.noise, "message 2", &self.hello)?;
        self.step = ResponderStep::SentMessage2;
        Ok(message)
    }

    /// Reads message 3; returns the channel, the initiator's Noise static public key (its
    /// identity) and the hello message 3 carried, still encoded.
    pub(crate) fn finish(mut self, message3: &[u8]) -> Result<(Channel, [u8; 32], Vec<u8>)> {
        if !matches!(self.step, ResponderStep::SentMessage2) {
            return Err(self.out_of_order("message 3 before a successful message 1"));
        }
        let payload = read(&mut self.noise, "message 3", message3)?;
        let channel = into_channel_with(self.noise, self.max_frame)?;
        let identity = channel.remote_static();
        Ok((channel, identity, payload))
    }
}

/// The device's side of the handshake (Noise responder), sans I/O:
/// [`message2`](Self::message2), then [`finish`](Self::finish). Any error leaves it failed.
pub struct DeviceHandshake(Responder);

impl DeviceHandshake {
    /// Starts a handshake with the device's static secret; `hello` is sent in message 2 as
    /// given (build it with [`DeviceHello::new`]).
    pub fn new(device_static_secret: &[u8; 32], hello: DeviceHello) -> Result<Self> {
        Self::build(device_static_secret, hello, None)
    }

    /// A handshake with a fixed ephemeral key, to replay one exactly.
    #[cfg(test)]
    pub(super) fn with_ephemeral(
        device_static_secret: &[u8; 32],
        hello: DeviceHello,
        ephemeral: &[u8; 32],
    ) -> Result<Self> {
        Self::build(device_static_secret, hello, Some(ephemeral))
    }

    fn build(secret: &[u8; 32], hello: DeviceHello, ephemeral: Option<&[u8; 32]>) -> Result<Self> {
        Ok(DeviceHandshake(Responder::new(
            noise(secret, false, ephemeral)?,
            encode_hello(DEVICE_HELLO, &hello)?,
            HANDSHAKE,
            "the host's ephemeral key",
            super::MAX_FRAME,
        )))
    }

    /// Reads message 1, returns message 2.
    pub fn message2(&mut self, message1: &[u8]) -> Result<Vec<u8>> {
        self.0.message2(message1)
    }

    /// Reads message 3; returns the channel, the host's Noise static public key (its
    /// identity), and its [`HostHello`].
    pub fn finish(self, message3: &[u8]) -> Result<(Channel, [u8; 32], HostHello)> {
        let (channel, identity, payload) = self.0.finish(message3)?;
        let host: HostHello = decode_hello(HOST_HELLO, &payload)?;
        Ok((channel, identity, host))
    }
}
