//! Messages over 64-byte reports with channel ids (CTAPHID-like); see `docs/DONGLES.md`.
//!
//! The wire unit is a [`Report`]; a [`Message`] travels as one or more of them. The parts:
//! [`fragment`] splits a message into reports, [`Reassembler`] puts messages back together
//! (per CID, with resync and timeouts), [`transact`] and [`allocate_channel`] are the host's
//! side of one exchange, and [`DeviceFraming`] is the dongle's side that every dongle
//! implementation shares.

use std::time::{Duration, Instant};

use crate::Result;

mod device;
mod exchange;
mod fragment;
mod reassemble;

pub use device::DeviceFraming;
pub use exchange::{allocate_channel, transact};
pub use fragment::{fragment, report_cid};
pub use reassemble::Reassembler;

/// Bytes in one report.
pub const REPORT_LEN: usize = 64;
/// One report.
pub type Report = [u8; REPORT_LEN];

/// A pipe of reports to a dongle (client side): hidapi, the report socket, the MSD file.
pub trait ReportDevice: Send {
    /// Sends one report.
    fn write_report(&mut self, report: &Report) -> Result<()>;
    /// Receives one report, or `None` when none arrives within `timeout`.
    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>>;
}

/// The dongle side: what a transport server feeds the reports it receives into.
pub trait ReportSink: Send {
    /// Processes one report from a client at time `now`; returns the reports to send back
    /// (to every client, as a HID device does).
    fn handle_report(&mut self, report: &Report, now: Instant) -> Vec<Report>;
}

/// The broadcast CID: INIT requests and their answers travel on it.
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;
/// Payload bytes in an initialization packet.
pub const INIT_DATA: usize = REPORT_LEN - 7;
/// Payload bytes in a continuation packet.
pub const CONT_DATA: usize = REPORT_LEN - 5;
/// Continuation packets per message (sequence numbers `0x00..=0x7F`).
pub const MAX_CONTINUATIONS: usize = 128;
/// The largest message: one initialization packet and 128 continuation packets.
pub const MAX_MESSAGE: usize = INIT_DATA + MAX_CONTINUATIONS * CONT_DATA;
/// The longest gap between two reports of one message before its partial is dropped.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_millis(500);
/// The framing version an INIT answer carries.
pub const FRAMING_VERSION: u8 = 1;
/// Partial messages (CIDs) a [`Reassembler`] holds at once; beyond it a new multi-report
/// message is answered with [`err::CHANNEL_BUSY`].
pub const MAX_PARTIALS: usize = 64;

/// Commands (the CMD byte of an initialization packet; bit 7 is always set).
pub mod cmd {
    /// Echoed back.
    pub const PING: u8 = 0x81;
    /// Allocates a CID (on the broadcast CID, with an 8-byte nonce).
    pub const INIT: u8 = 0x86;
    /// A Noise handshake message.
    pub const HANDSHAKE: u8 = 0x90;
    /// One channel frame.
    pub const MSG: u8 = 0x91;
    /// A framing error; the payload is one of the [`super::err`] codes.
    pub const ERROR: u8 = 0xBF;
}

/// Error codes carried by an [`cmd::ERROR`] message.
pub mod err {
    /// The command is not known.
    pub const INVALID_CMD: u8 = 0x01;
    /// A parameter is invalid.
    pub const INVALID_PAR: u8 = 0x02;
    /// The length (BCNT) is invalid.
    pub const INVALID_LEN: u8 = 0x03;
    /// A continuation without an initialization packet, or a wrong sequence number.
    pub const INVALID_SEQ: u8 = 0x04;
    /// The gap between two reports of a message exceeded [`super::MESSAGE_TIMEOUT`].
    pub const MSG_TIMEOUT: u8 = 0x05;
    /// The receiver cannot take another message now.
    pub const CHANNEL_BUSY: u8 = 0x06;
    /// The CID is not valid for this command.
    pub const INVALID_CHANNEL: u8 = 0x0B;
    /// Anything else.
    pub const OTHER: u8 = 0x7F;

    /// A short name of an error code, for messages.
    pub fn name(code: u8) -> &'static str {
        match code {
            INVALID_CMD => "invalid command",
            INVALID_PAR => "invalid parameter",
            INVALID_LEN => "invalid length",
            INVALID_SEQ => "invalid sequence",
            MSG_TIMEOUT => "message timeout",
            CHANNEL_BUSY => "channel busy",
            INVALID_CHANNEL => "invalid channel",
            OTHER => "other error",
            _ => "unknown error code",
        }
    }
}

/// A complete message: what one or more reports of one CID carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The channel id.
    pub cid: u32,
    /// The command (bit 7 set).
    pub cmd: u8,
    /// The payload, at most [`MAX_MESSAGE`] bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message.
    pub fn new(cid: u32, cmd: u8, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            cid,
            cmd,
            payload: payload.into(),
        }
    }

    /// An [`cmd::ERROR`] message with one of the [`err`] codes.
    pub fn error(cid: u32, code: u8) -> Self {
        Message::new(cid, cmd::ERROR, vec![code])
    }
}

/// A framing error to answer with an [`cmd::ERROR`] message on `cid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// The CID the offending report came on.
    pub cid: u32,
    /// One of the [`err`] codes.
    pub code: u8,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "framing error {:#04x} ({}) on CID {:#010x}",
            self.code,
            err::name(self.code),
            self.cid
        )
    }
}

#[cfg(test)]
mod tests;
