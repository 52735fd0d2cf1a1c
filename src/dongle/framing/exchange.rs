//! The host's side of the framing: one request, one answer on a channel; allocating a
//! channel with INIT on the broadcast CID.

use std::time::{Duration, Instant};

use super::{
    BROADCAST_CID, FRAMING_VERSION, Message, Reassembler, ReportDevice, cmd, err, fragment,
    report_cid,
};
use crate::{Error, Result};

/// The error a received [`cmd::ERROR`] message turns into on the client side.
fn dongle_error(msg: &Message) -> Error {
    match msg.payload.first() {
        Some(&code) => Error::malformed(
            "dongle answer",
            format!(
                "the dongle answered ERROR {code:#04x} ({}) on CID {:#010x}",
                err::name(code),
                msg.cid
            ),
        ),
        None => Error::malformed(
            "dongle answer",
            format!(
                "the dongle answered an empty ERROR on CID {:#010x}",
                msg.cid
            ),
        ),
    }
}

/// Sends a message and waits for the first complete message on `cid` that `accept` takes.
/// Reports of other CIDs and padding are dropped; an ERROR message ends the exchange with an
/// error unless `ignore_errors` (on the broadcast CID, an ERROR may answer someone else).
fn exchange(
    dev: &mut dyn ReportDevice,
    cid: u32,
    command: u8,
    payload: &[u8],
    timeout: Duration,
    accept: &dyn Fn(&Message) -> bool,
    ignore_errors: bool,
) -> Result<Message> {
    let deadline = Instant::now() + timeout;
    for report in fragment(cid, command, payload)? {
        dev.write_report(&report)?;
    }
    let mut reassembler = Reassembler::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let Some(report) = dev.read_report(deadline - now)? else {
            continue;
        };
        if report_cid(&report) != cid {
            continue;
        }
        let had_partial = reassembler.has_partial(cid);
        match reassembler.push(&report, Instant::now()) {
            None => {}
            Some(Ok(msg)) if msg.cmd == cmd::ERROR => {
                if !ignore_errors {
                    return Err(dongle_error(&msg));
                }
                tracing::debug!("dongle framing: ignoring {}", dongle_error(&msg));
            }
            Some(Ok(msg)) if accept(&msg) => return Ok(msg),
            // An answer to someone else on the broadcast CID.
            Some(Ok(_)) => {}
            // A fragment of our answer was lost: it cannot complete any more.
            Some(Err(e)) if had_partial => {
                return Err(Error::malformed(
                    "dongle answer",
                    format!("answer broken off: {e}"),
                ));
            }
            // A stray continuation (say, the tail of an answer an earlier exchange gave up
            // on): wait for the next initialization packet.
            Some(Err(e)) => tracing::debug!("dongle framing: ignoring {e}"),
        }
    }
    Err(Error::Timeout(format!(
        "no answer from the dongle on CID {cid:#010x} within {} ms",
        timeout.as_millis()
    )))
}

/// Sends a message on `cid` and returns the dongle's answer on it. Reports of other CIDs
/// and padding are dropped. An ERROR answer becomes [`Error::Malformed`] naming the code;
/// no complete answer within `timeout` is [`Error::Timeout`].
pub fn transact(
    dev: &mut dyn ReportDevice,
    cid: u32,
    cmd: u8,
    payload: &[u8],
    timeout: Duration,
) -> Result<Message> {
    exchange(dev, cid, cmd, payload, timeout, &|_| true, false)
}

/// Allocates a channel: INIT on the broadcast CID with a random nonce; returns the CID of
/// the answer that carries the same nonce (answers to other processes' INITs are skipped).
pub fn allocate_channel(dev: &mut dyn ReportDevice, timeout: Duration) -> Result<u32> {
    let nonce = crate::util::random::<8>();
    let accept =
        |m: &Message| m.cmd == cmd::INIT && m.payload.len() >= 12 && m.payload[..8] == nonce;
    let answer = exchange(
        dev,
        BROADCAST_CID,
        cmd::INIT,
        &nonce,
        timeout,
        &accept,
        true,
    )?;
    let cid = u32::from_be_bytes([
        answer.payload[8],
        answer.payload[9],
        answer.payload[10],
        answer.payload[11],
    ]);
    if cid == 0 || cid == BROADCAST_CID {
        return Err(Error::malformed(
            "dongle answer",
            format!("INIT allocated the reserved CID {cid:#010x}"),
        ));
    }
    if let Some(&version) = answer.payload.get(12)
        && version != FRAMING_VERSION
    {
        return Err(Error::Unsupported(format!(
            "dongle framing version {version} (this build speaks {FRAMING_VERSION})"
        )));
    }
    Ok(cid)
}
