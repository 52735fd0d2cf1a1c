//! HID dongles through hidapi (its pure-Rust hidraw backend): finding Tessera dongles by
//! VID:PID and exchanging 64-byte reports with them. See `docs/DONGLES.md`.

use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::framing::{REPORT_LEN, Report, ReportDevice};
use crate::{Error, Result};

/// The USB vendor id of Tessera dongles (pid.codes).
pub const USB_VENDOR_ID: u16 = 0x1209;
/// The USB product id of Tessera dongles.
pub const USB_PRODUCT_ID: u16 = 0x7E55;

/// A Tessera dongle hidapi found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HidDongleInfo {
    /// The hidapi device path (`/dev/hidrawN` on Linux); [`HidDevice::open_path`] opens it.
    pub path: String,
    /// The USB serial number string, if the device has one.
    pub serial: Option<String>,
    /// The USB product string, if the device has one.
    pub product: Option<String>,
}

/// A hidapi error as the crate's error, naming what was being done.
fn hid_error(what: &str, e: hidapi::HidError) -> Error {
    let source = match e {
        hidapi::HidError::IoError { error } => error,
        other => std::io::Error::other(other.to_string()),
    };
    Error::io(PathBuf::from(what), source)
}

/// The Tessera dongles (VID:PID 1209:7E55) attached over HID. A machine without hidraw
/// devices has none; a failure of hidapi itself is an [`Error::Io`].
pub fn enumerate() -> Result<Vec<HidDongleInfo>> {
    let api = hidapi::HidApi::new().map_err(|e| hid_error("hidapi", e))?;
    let mut found: Vec<HidDongleInfo> = api
        .device_list()
        .filter(|d| d.vendor_id() == USB_VENDOR_ID && d.product_id() == USB_PRODUCT_ID)
        .map(|d| HidDongleInfo {
            path: d.path().to_string_lossy().into_owned(),
            serial: d.serial_number().map(str::to_owned),
            product: d.product_string().map(str::to_owned),
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    // A device with several HID interfaces is listed once per interface.
    found.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

/// An open HID dongle.
pub struct HidDevice {
    device: hidapi::HidDevice,
    path: String,
}

impl std::fmt::Debug for HidDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HidDevice")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl HidDevice {
    /// Opens the HID device at a hidapi path (from [`enumerate`]).
    pub fn open_path(path: &str) -> Result<HidDevice> {
        let c_path = CString::new(path)
            .map_err(|_| Error::InvalidArgument(format!("HID path {path:?} holds a NUL")))?;
        let api = hidapi::HidApi::new().map_err(|e| hid_error("hidapi", e))?;
        let device = api.open_path(&c_path).map_err(|e| hid_error(path, e))?;
        Ok(HidDevice {
            device,
            path: path.to_owned(),
        })
    }

    /// Opens a dongle [`enumerate`] found.
    pub fn open(info: &HidDongleInfo) -> Result<HidDevice> {
        Self::open_path(&info.path)
    }

    /// The hidapi path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl ReportDevice for HidDevice {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        // Report id 0 (the device has one unnumbered report), then the report.
        let mut buf = [0u8; REPORT_LEN + 1];
        buf[1..].copy_from_slice(report);
        let n = self
            .device
            .write(&buf)
            .map_err(|e| hid_error(&self.path, e))?;
        if n < REPORT_LEN {
            return Err(Error::io(
                PathBuf::from(&self.path),
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("wrote {n} of {} bytes of a report", buf.len()),
                ),
            ));
        }
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; REPORT_LEN + 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let n = self
                .device
                .read_timeout(&mut buf, ms)
                .map_err(|e| hid_error(&self.path, e))?;
            // Unnumbered input reports come without a report id.
            if n == REPORT_LEN {
                let mut report = [0u8; REPORT_LEN];
                report.copy_from_slice(&buf[..REPORT_LEN]);
                return Ok(Some(report));
            }
            if n != 0 {
                tracing::debug!("hid {}: dropping an input report of {n} bytes", self.path);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerate_finds_no_dongle_here() {
        // This machine has no Tessera dongle; hidapi either lists none or, with no hidraw
        // support at all, fails with a clean error.
        match enumerate() {
            Ok(found) => assert!(found.is_empty(), "{found:?}"),
            Err(e) => assert!(matches!(e, Error::Io { .. }), "{e}"),
        }
    }

    #[test]
    fn opening_a_missing_device_is_an_error() {
        assert!(HidDevice::open_path("/dev/hidraw-tessera-none").is_err());
        assert!(matches!(
            HidDevice::open_path("a\0b"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
