//! The dongle itself: the container engine behind the secure channel and the framing, fed
//! report by report by a transport server (the virtual dongle's report socket or FUSE
//! volume; on hardware, the firmware's USB stack). Also the dongle's state file.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::framing::{DeviceFraming, Message, Report, ReportSink, cmd, err};
use crate::channel::{Channel, DeviceHandshake, DeviceHello};
use crate::container::engine::RequestContext;
use crate::container::hosts::SharePolicy;
use crate::container::protocol::{self, Response};
use crate::container::{ContainerKind, Engine, EngineState};
use crate::host::MachineKind;
use crate::util::write_atomic;
use crate::{Error, Result};

const MAGIC: [u8; 4] = *b"TSDG";
const FILE_VERSION: u16 = 1;
/// Channels a dongle keeps open at once; the oldest is dropped beyond this.
pub const MAX_CHANNELS: usize = 64;

/// Makes a new blank dongle state (device keys and serial) and writes it to `path`.
pub fn create_state(path: &Path, vendor_id: u32) -> Result<Engine> {
    if path.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists",
            path.display()
        )));
    }
    let e = Engine::create(ContainerKind::Dongle, vendor_id, crate::util::now());
    save_state(path, &e)?;
    Ok(e)
}

/// Writes the dongle state atomically (a kill -9 leaves the old state or the new one).
pub fn save_state(path: &Path, engine: &Engine) -> Result<()> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    postcard::to_io(engine.state(), &mut out)
        .map_err(|e| Error::Internal(format!("encoding dongle state: {e}")))?;
    let d = Sha256::digest(&out);
    out.extend_from_slice(&d);
    write_atomic(path, &out, 0o600)
}

/// Reads a dongle state file; an edited or truncated file is `Tampered`.
pub fn load_state(path: &Path) -> Result<Engine> {
    let b = fs::read(path).map_err(|e| Error::io(path, e))?;
    if b.len() < 6 + 32 || b[..4] != MAGIC {
        return Err(Error::Tampered(format!(
            "{} is not a dongle state file",
            path.display()
        )));
    }
    let (content, digest) = b.split_at(b.len() - 32);
    if Sha256::digest(content).as_slice() != digest {
        return Err(Error::Tampered(format!(
            "{} fails its integrity check",
            path.display()
        )));
    }
    let v = u16::from_le_bytes([b[4], b[5]]);
    if v != FILE_VERSION {
        return Err(Error::UnknownVersion {
            what: "dongle state",
            found: v,
            supported: FILE_VERSION,
        });
    }
    let state = EngineState::decode(&content[6..])
        .map_err(|e| Error::Tampered(format!("{}: {e}", path.display())))?;
    Engine::from_state(state)
}

enum Slot {
    Handshake(Box<DeviceHandshake>),
    Open {
        channel: Box<Channel>,
        host: [u8; 32],
        machine: MachineKind,
    },
}

struct Core {
    engine: Engine,
    state_path: Option<PathBuf>,
    channels: HashMap<u32, (u64, Slot)>,
    epoch: Instant,
    opened: u64,
}

/// A dongle: engine, channels, framing.
pub struct DongleDevice {
    framing: DeviceFraming,
    core: Core,
}

impl std::fmt::Debug for DongleDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DongleDevice")
            .field("serial", &self.core.engine.serial())
            .field("channels", &self.core.channels.len())
            .finish_non_exhaustive()
    }
}

fn error_reply(cid: u32, code: u8) -> Option<Message> {
    Some(Message {
        cid,
        cmd: cmd::ERROR,
        payload: vec![code],
    })
}

impl Core {
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn hello(&self) -> DeviceHello {
        DeviceHello {
            version: crate::channel::CHANNEL_VERSION,
            serial: self.engine.serial().to_string(),
            vendor_id: self.engine.state().vendor_id,
            certificate: self.engine.certificate().map(<[u8]>::to_vec),
        }
    }

    fn make_room(&mut self) {
        while self.channels.len() >= MAX_CHANNELS {
            let Some(oldest) = self
                .channels
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(c, _)| *c)
            else {
                return;
            };
            self.channels.remove(&oldest);
        }
    }

    fn on_message(&mut self, m: Message, now: Instant) -> Option<Message> {
        match m.cmd {
            cmd::HANDSHAKE => self.on_handshake(m),
            cmd::MSG => self.on_frame(m, now),
            _ => error_reply(m.cid, err::INVALID_CMD),
        }
    }

    fn on_handshake(&mut self, m: Message) -> Option<Message> {
        match self.channels.remove(&m.cid) {
            Some((_, Slot::Handshake(hs))) if !m.payload.is_empty() => {
                match hs.finish(&m.payload) {
                    Ok((channel, host, hello)) => {
                        self.opened += 1;
                        self.channels.insert(
                            m.cid,
                            (
                                self.opened,
                                Slot::Open {
                                    channel: Box::new(channel),
                                    host,
                                    machine: hello.machine,
                                },
                            ),
                        );
                        Some(Message {
                            cid: m.cid,
                            cmd: cmd::HANDSHAKE,
                            payload: Vec::new(),
                        })
                    }
                    Err(_) => error_reply(m.cid, err::INVALID_PAR),
                }
            }
            _ => {
                let mut hs = match DeviceHandshake::new(self.engine.noise_secret(), self.hello()) {
                    Ok(h) => h,
                    Err(_) => return error_reply(m.cid, err::OTHER),
                };
                match hs.message2(&m.payload) {
                    Ok(m2) => {
                        self.make_room();
                        self.opened += 1;
                        self.channels
                            .insert(m.cid, (self.opened, Slot::Handshake(Box::new(hs))));
                        Some(Message {
                            cid: m.cid,
                            cmd: cmd::HANDSHAKE,
                            payload: m2,
                        })
                    }
                    Err(_) => error_reply(m.cid, err::INVALID_PAR),
                }
            }
        }
    }

    fn on_frame(&mut self, m: Message, now: Instant) -> Option<Message> {
        let ms = self.ms(now);
        let Some((
            _,
            Slot::Open {
                channel,
                host,
                machine,
            },
        )) = self.channels.get_mut(&m.cid)
        else {
            return error_reply(m.cid, err::INVALID_CHANNEL);
        };
        let Ok(plain) = channel.open(&m.payload) else {
            // A replayed, forged or damaged frame: refused without an answer the sender could use.
            return error_reply(m.cid, err::INVALID_PAR);
        };
        let ctx = RequestContext {
            now: crate::util::now(),
            now_ms: ms,
            host: Some(*host),
            machine: machine.clone(),
        };
        let (response, changed) = match protocol::decode_request(&plain) {
            Ok(req) => self.engine.handle(req, &ctx),
            Err(e) => (protocol::error_response(&e), false),
        };
        let response = if changed && let Some(p) = &self.state_path {
            match save_state(p, &self.engine) {
                Ok(()) => response,
                Err(e) => protocol::error_response(&e),
            }
        } else {
            response
        };
        let Ok(bytes) = protocol::encode_response(&response) else {
            return error_reply(m.cid, err::OTHER);
        };
        let Some((_, Slot::Open { channel, .. })) = self.channels.get_mut(&m.cid) else {
            return error_reply(m.cid, err::INVALID_CHANNEL);
        };
        match channel.seal(&bytes) {
            Ok(frame) => Some(Message {
                cid: m.cid,
                cmd: cmd::MSG,
                payload: frame,
            }),
            Err(_) => error_reply(m.cid, err::OTHER),
        }
    }
}

impl DongleDevice {
    /// A dongle running `engine`, persisting its state to `state_path` when it changes.
    pub fn new(engine: Engine, state_path: Option<PathBuf>) -> DongleDevice {
        DongleDevice {
            framing: DeviceFraming::new(),
            core: Core {
                engine,
                state_path,
                channels: HashMap::new(),
                epoch: Instant::now(),
                opened: 0,
            },
        }
    }

    /// Loads the dongle whose state is in `path`.
    pub fn open(path: &Path) -> Result<DongleDevice> {
        Ok(Self::new(load_state(path)?, Some(path.to_path_buf())))
    }

    /// Sets the exclusive-mode window and cooldown.
    pub fn set_share_policy(&mut self, policy: SharePolicy) {
        self.core.engine.set_share_policy(policy);
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.core.engine
    }

    /// Answers a request outside any channel (for tests of the engine through the device).
    pub fn answer_local(&mut self, req: protocol::Request) -> Response {
        let ctx = RequestContext {
            now: crate::util::now(),
            now_ms: self.core.ms(Instant::now()),
            host: None,
            machine: MachineKind::Physical,
        };
        self.core.engine.handle(req, &ctx).0
    }
}

impl ReportSink for DongleDevice {
    fn handle_report(&mut self, report: &Report, now: Instant) -> Vec<Report> {
        let core = &mut self.core;
        self.framing
            .handle(report, now, &mut |m| core.on_message(m, now))
    }
}
