//! The dongle's side of the framing, shared by every dongle implementation.

use std::time::Instant;

use super::{BROADCAST_CID, FRAMING_VERSION, Message, Reassembler, Report, cmd, err, fragment};

/// The dongle side of the framing, shared by every dongle implementation: reassembles
/// requests, allocates CIDs (INIT on the broadcast CID), echoes PING, answers framing errors
/// with ERROR, and hands every other complete message to the caller.
#[derive(Debug)]
pub struct DeviceFraming {
    reassembler: Reassembler,
    next_cid: u32,
    capabilities: u8,
}

impl Default for DeviceFraming {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceFraming {
    /// A device whose CIDs start at a random point (so that a restarted dongle does not hand
    /// out the CIDs of before).
    pub fn new() -> Self {
        DeviceFraming {
            reassembler: Reassembler::new(),
            next_cid: u32::from_be_bytes(crate::util::random::<4>()),
            capabilities: 0,
        }
    }

    /// Sets the capabilities byte INIT answers carry.
    pub fn with_capabilities(mut self, capabilities: u8) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn allocate(&mut self) -> u32 {
        loop {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if cid != 0 && cid != BROADCAST_CID {
                return cid;
            }
        }
    }

    /// Processes one report received at `now` and returns the reports to send back.
    /// `on_message` gets every complete message other than INIT, PING and ERROR and returns
    /// the answer to send, if any (on the CID it names).
    pub fn handle(
        &mut self,
        report: &Report,
        now: Instant,
        on_message: &mut dyn FnMut(Message) -> Option<Message>,
    ) -> Vec<Report> {
        let mut out = Vec::new();
        for e in self.reassembler.expire(now) {
            push_message(&mut out, &Message::error(e.cid, e.code));
        }
        let msg = match self.reassembler.push(report, now) {
            None => return out,
            Some(Err(e)) => {
                push_message(&mut out, &Message::error(e.cid, e.code));
                return out;
            }
            Some(Ok(msg)) => msg,
        };
        let answer = match msg.cmd {
            cmd::INIT => {
                if msg.payload.len() != 8 {
                    Some(Message::error(msg.cid, err::INVALID_LEN))
                } else {
                    // On the broadcast CID a new channel; on an allocated one, the same
                    // CID again (the client resyncs it).
                    let cid = if msg.cid == BROADCAST_CID {
                        self.allocate()
                    } else {
                        msg.cid
                    };
                    let mut payload = msg.payload.clone();
                    payload.extend_from_slice(&cid.to_be_bytes());
                    payload.push(FRAMING_VERSION);
                    payload.push(self.capabilities);
                    Some(Message::new(msg.cid, cmd::INIT, payload))
                }
            }
            _ if msg.cid == BROADCAST_CID => Some(Message::error(msg.cid, err::INVALID_CHANNEL)),
            cmd::PING => Some(msg),
            // Never answer an error with an error.
            cmd::ERROR => None,
            _ => {
                let cid = msg.cid;
                on_message(msg).map(|answer| {
                    if answer.cid == 0 {
                        Message::error(cid, err::OTHER)
                    } else {
                        answer
                    }
                })
            }
        };
        if let Some(answer) = answer {
            push_message(&mut out, &answer);
        }
        out
    }
}

/// Appends the reports of `msg`; one that cannot be framed becomes ERROR OTHER on its CID.
fn push_message(out: &mut Vec<Report>, msg: &Message) {
    match fragment(msg.cid, msg.cmd, &msg.payload) {
        Ok(reports) => out.extend(reports),
        Err(e) => {
            tracing::debug!("dongle framing: cannot send answer: {e}");
            if let Ok(reports) = fragment(msg.cid, cmd::ERROR, &[err::OTHER]) {
                out.extend(reports);
            }
        }
    }
}
