//! Putting messages back together from reports, per CID: padding, resync, timeouts and the
//! cap on partial messages.

use std::collections::HashMap;
use std::time::Instant;

use super::{
    CONT_DATA, FrameError, INIT_DATA, MAX_MESSAGE, MAX_PARTIALS, MESSAGE_TIMEOUT, Message, Report,
    err, report_cid,
};

/// A message being reassembled.
#[derive(Debug)]
struct Partial {
    cmd: u8,
    total: usize,
    data: Vec<u8>,
    next_seq: u8,
    last: Instant,
}

/// Reassembles messages from reports, per CID; see `docs/DONGLES.md` for the rules
/// (padding, resync, timeouts). Holds at most [`MAX_PARTIALS`] partial messages.
#[derive(Debug, Default)]
pub struct Reassembler {
    partials: HashMap<u32, Partial>,
    /// Partials dropped for a timeout by `push`, not yet reported by `expire`.
    timed_out: Vec<FrameError>,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a partial message is pending on `cid`.
    pub fn has_partial(&self, cid: u32) -> bool {
        self.partials.contains_key(&cid)
    }

    /// Partial messages pending.
    pub fn pending(&self) -> usize {
        self.partials.len()
    }

    /// Feeds one report received at `now`. Returns `None` when the report completes
    /// nothing (padding, or a message still incomplete), a complete message, or a framing
    /// error to answer on the report's CID.
    pub fn push(&mut self, report: &Report, now: Instant) -> Option<Result<Message, FrameError>> {
        let cid = report_cid(report);
        if cid == 0 {
            return None;
        }
        // A partial of this CID whose gap is too long: a continuation of it is an error; an
        // initialization packet replaces it anyway.
        let own_stale = self
            .partials
            .get(&cid)
            .is_some_and(|p| now.saturating_duration_since(p.last) > MESSAGE_TIMEOUT);
        if own_stale {
            self.partials.remove(&cid);
        }
        self.sweep(now);

        if report[4] & 0x80 != 0 {
            return self.push_init(cid, report, now);
        }
        let seq = report[4];
        if own_stale {
            return Some(Err(FrameError {
                cid,
                code: err::MSG_TIMEOUT,
            }));
        }
        let Some(partial) = self.partials.get_mut(&cid) else {
            return Some(Err(FrameError {
                cid,
                code: err::INVALID_SEQ,
            }));
        };
        if seq != partial.next_seq {
            self.partials.remove(&cid);
            return Some(Err(FrameError {
                cid,
                code: err::INVALID_SEQ,
            }));
        }
        let take = (partial.total - partial.data.len()).min(CONT_DATA);
        partial.data.extend_from_slice(&report[5..5 + take]);
        partial.next_seq += 1;
        partial.last = now;
        if partial.data.len() < partial.total {
            return None;
        }
        let partial = self.partials.remove(&cid)?;
        Some(Ok(Message {
            cid,
            cmd: partial.cmd,
            payload: partial.data,
        }))
    }

    fn push_init(
        &mut self,
        cid: u32,
        report: &Report,
        now: Instant,
    ) -> Option<Result<Message, FrameError>> {
        // A new initialization packet starts afresh (resync).
        self.partials.remove(&cid);
        let cmd = report[4];
        let total = usize::from(u16::from_be_bytes([report[5], report[6]]));
        if total > MAX_MESSAGE {
            return Some(Err(FrameError {
                cid,
                code: err::INVALID_LEN,
            }));
        }
        if total <= INIT_DATA {
            return Some(Ok(Message {
                cid,
                cmd,
                payload: report[7..7 + total].to_vec(),
            }));
        }
        if self.partials.len() >= MAX_PARTIALS {
            return Some(Err(FrameError {
                cid,
                code: err::CHANNEL_BUSY,
            }));
        }
        let mut data = Vec::with_capacity(total);
        data.extend_from_slice(&report[7..]);
        self.partials.insert(
            cid,
            Partial {
                cmd,
                total,
                data,
                next_seq: 0,
                last: now,
            },
        );
        None
    }

    /// Moves partials older than the timeout to `timed_out`.
    fn sweep(&mut self, now: Instant) {
        let stale: Vec<u32> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) > MESSAGE_TIMEOUT)
            .map(|(cid, _)| *cid)
            .collect();
        for cid in stale {
            self.partials.remove(&cid);
            if self.timed_out.len() >= MAX_PARTIALS {
                self.timed_out.remove(0);
            }
            self.timed_out.push(FrameError {
                cid,
                code: err::MSG_TIMEOUT,
            });
        }
    }

    /// Drops the partials whose last report is older than [`MESSAGE_TIMEOUT`] at `now` and
    /// returns a [`err::MSG_TIMEOUT`] error for each (including those `push` already
    /// dropped since the last call).
    pub fn expire(&mut self, now: Instant) -> Vec<FrameError> {
        self.sweep(now);
        std::mem::take(&mut self.timed_out)
    }
}
