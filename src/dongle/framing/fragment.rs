//! Splitting a message into reports: the layout of initialization and continuation packets.

use super::{CONT_DATA, INIT_DATA, MAX_MESSAGE, REPORT_LEN, Report};
use crate::{Error, Result};

/// The CID of a report.
pub fn report_cid(report: &Report) -> u32 {
    u32::from_be_bytes([report[0], report[1], report[2], report[3]])
}

/// Splits a message into reports: one initialization packet, then continuation packets
/// with sequence numbers from 0. Unused bytes are zero.
pub fn fragment(cid: u32, cmd: u8, payload: &[u8]) -> Result<Vec<Report>> {
    if cid == 0 {
        return Err(Error::InvalidArgument(
            "CID 0 is reserved for padding".into(),
        ));
    }
    if cmd & 0x80 == 0 {
        return Err(Error::InvalidArgument(format!(
            "command {cmd:#04x} lacks bit 7"
        )));
    }
    if payload.len() > MAX_MESSAGE {
        return Err(Error::InvalidArgument(format!(
            "message of {} bytes exceeds the framing limit of {MAX_MESSAGE}",
            payload.len()
        )));
    }
    let first = payload.len().min(INIT_DATA);
    let mut reports = Vec::with_capacity(1 + (payload.len() - first).div_ceil(CONT_DATA));
    let mut init = [0u8; REPORT_LEN];
    init[..4].copy_from_slice(&cid.to_be_bytes());
    init[4] = cmd;
    // Fits: MAX_MESSAGE < 65536.
    init[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    init[7..7 + first].copy_from_slice(&payload[..first]);
    reports.push(init);
    for (seq, chunk) in payload[first..].chunks(CONT_DATA).enumerate() {
        let mut cont = [0u8; REPORT_LEN];
        cont[..4].copy_from_slice(&cid.to_be_bytes());
        // At most 128 chunks: seq fits in 0x00..=0x7F.
        cont[4] = seq as u8;
        cont[5..5 + chunk.len()].copy_from_slice(chunk);
        reports.push(cont);
    }
    Ok(reports)
}
