//! Messages over 64-byte reports with channel ids (CTAPHID-like); see `docs/DONGLES.md`.

use std::time::{Duration, Instant};

use crate::Result;

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
