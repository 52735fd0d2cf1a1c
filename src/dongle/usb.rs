//! Raw USB dongles through rusb (vendored libusb): a vendor-class interface (class 0xFF)
//! with one bulk IN and one bulk OUT endpoint, carrying one 64-byte report per transfer.
//! See `docs/DONGLES.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusb::UsbContext;

use super::framing::{REPORT_LEN, Report, ReportDevice};
use super::hid::{USB_PRODUCT_ID, USB_VENDOR_ID};
use crate::{Error, Result};

/// The interface class of the dongle's raw interface (vendor specific).
pub const VENDOR_CLASS: u8 = 0xFF;
/// How long a bulk write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout for reading string descriptors while enumerating.
const STRING_TIMEOUT: Duration = Duration::from_millis(200);

/// A Tessera dongle's raw USB interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbDongleInfo {
    /// The bus number.
    pub bus: u8,
    /// The device address on the bus.
    pub address: u8,
    /// The vendor-class interface number.
    pub interface: u8,
    /// Its alternate setting.
    pub setting: u8,
    /// Its bulk IN endpoint address.
    pub endpoint_in: u8,
    /// Its bulk OUT endpoint address.
    pub endpoint_out: u8,
    /// The serial number string, if the device could be opened to read it.
    pub serial: Option<String>,
    /// The product string, if the device could be opened to read it.
    pub product: Option<String>,
}

/// What a USB scan found, and why it found nothing when USB is unavailable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsbScan {
    /// The dongles found.
    pub dongles: Vec<UsbDongleInfo>,
    /// Why USB could not be scanned at all (no `/dev/bus/usb`, libusb failed to start), if
    /// so; `dongles` is then empty.
    pub unavailable: Option<String>,
}

/// A rusb error as the crate's error, naming what was being done.
fn usb_error(what: &str, e: rusb::Error) -> Error {
    match e {
        rusb::Error::Timeout => Error::Timeout(format!("{what}: USB transfer timed out")),
        other => Error::io(
            PathBuf::from(what),
            std::io::Error::other(other.to_string()),
        ),
    }
}

/// The vendor-class interface with bulk IN and OUT endpoints of a device, if it has one.
fn raw_interface(device: &rusb::Device<rusb::Context>) -> Option<(u8, u8, u8, u8)> {
    let config = device
        .active_config_descriptor()
        .or_else(|_| device.config_descriptor(0))
        .ok()?;
    for interface in config.interfaces() {
        for alt in interface.descriptors() {
            if alt.class_code() != VENDOR_CLASS {
                continue;
            }
            let bulk = |dir| {
                alt.endpoint_descriptors()
                    .find(|ep| {
                        ep.transfer_type() == rusb::TransferType::Bulk && ep.direction() == dir
                    })
                    .map(|ep| ep.address())
            };
            if let (Some(ep_in), Some(ep_out)) =
                (bulk(rusb::Direction::In), bulk(rusb::Direction::Out))
            {
                return Some((alt.interface_number(), alt.setting_number(), ep_in, ep_out));
            }
        }
    }
    None
}

/// The devices libusb lists, or why it cannot list any.
fn devices() -> std::result::Result<(rusb::Context, rusb::DeviceList<rusb::Context>), String> {
    let context = rusb::Context::new().map_err(|e| format!("libusb cannot start: {e}"))?;
    let list = context
        .devices()
        .map_err(|e| format!("libusb cannot list devices: {e}"))?;
    Ok((context, list))
}

/// Scans USB for Tessera dongles (VID:PID 1209:7E55) with a raw vendor interface. A
/// machine where libusb cannot start or list devices (no USB in the kernel, no
/// `/dev/bus/usb`) yields an empty scan with the reason in [`UsbScan::unavailable`].
pub fn scan() -> Result<UsbScan> {
    let (_context, list) = match devices() {
        Ok(d) => d,
        Err(reason) => {
            tracing::debug!("usb: {reason}");
            return Ok(UsbScan {
                dongles: Vec::new(),
                unavailable: Some(reason),
            });
        }
    };
    let mut dongles = Vec::new();
    for device in list.iter() {
        let Ok(desc) = device.device_descriptor() else {
            continue;
        };
        if desc.vendor_id() != USB_VENDOR_ID || desc.product_id() != USB_PRODUCT_ID {
            continue;
        }
        let Some((interface, setting, endpoint_in, endpoint_out)) = raw_interface(&device) else {
            continue;
        };
        // Strings need the device open, which may be refused (permissions): then none.
        let (serial, product) = match device.open() {
            Ok(handle) => (
                handle
                    .read_serial_number_string_ascii(&desc)
                    .ok()
                    .or_else(|| read_string(&handle, desc.serial_number_string_index())),
                handle
                    .read_product_string_ascii(&desc)
                    .ok()
                    .or_else(|| read_string(&handle, desc.product_string_index())),
            ),
            Err(_) => (None, None),
        };
        dongles.push(UsbDongleInfo {
            bus: device.bus_number(),
            address: device.address(),
            interface,
            setting,
            endpoint_in,
            endpoint_out,
            serial,
            product,
        });
    }
    dongles.sort_by_key(|d| (d.bus, d.address));
    Ok(UsbScan {
        dongles,
        unavailable: None,
    })
}

/// A string descriptor in the first language the device offers.
fn read_string(handle: &rusb::DeviceHandle<rusb::Context>, index: Option<u8>) -> Option<String> {
    let index = index?;
    let language = *handle.read_languages(STRING_TIMEOUT).ok()?.first()?;
    handle
        .read_string_descriptor(language, index, STRING_TIMEOUT)
        .ok()
}

/// The Tessera dongles attached over raw USB; empty where USB is unavailable (see
/// [`scan`] for the reason).
pub fn enumerate() -> Result<Vec<UsbDongleInfo>> {
    scan().map(|s| s.dongles)
}

/// An open raw USB dongle with its vendor interface claimed.
pub struct UsbDevice {
    handle: rusb::DeviceHandle<rusb::Context>,
    info: UsbDongleInfo,
    name: String,
}

impl std::fmt::Debug for UsbDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbDevice")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl UsbDevice {
    /// Opens the dongle at `bus`/`address` and claims its vendor interface.
    pub fn open(bus: u8, address: u8) -> Result<UsbDevice> {
        let name = format!("usb:{bus:03}:{address:03}");
        let (_context, list) = devices().map_err(|reason| {
            Error::io(
                PathBuf::from(&name),
                std::io::Error::new(std::io::ErrorKind::Unsupported, reason),
            )
        })?;
        let not_found = || {
            Error::io(
                PathBuf::from(&name),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no Tessera dongle with a raw interface there",
                ),
            )
        };
        let device = list
            .iter()
            .find(|d| d.bus_number() == bus && d.address() == address)
            .ok_or_else(not_found)?;
        let desc = device
            .device_descriptor()
            .map_err(|e| usb_error(&name, e))?;
        if desc.vendor_id() != USB_VENDOR_ID || desc.product_id() != USB_PRODUCT_ID {
            return Err(not_found());
        }
        let (interface, setting, endpoint_in, endpoint_out) =
            raw_interface(&device).ok_or_else(not_found)?;
        let handle = device.open().map_err(|e| usb_error(&name, e))?;
        // A vendor interface has no kernel driver as a rule; where it has, detach it.
        match handle.set_auto_detach_kernel_driver(true) {
            Ok(()) | Err(rusb::Error::NotSupported) => {}
            Err(e) => return Err(usb_error(&name, e)),
        }
        handle
            .claim_interface(interface)
            .map_err(|e| usb_error(&name, e))?;
        if setting != 0 {
            handle
                .set_alternate_setting(interface, setting)
                .map_err(|e| usb_error(&name, e))?;
        }
        Ok(UsbDevice {
            handle,
            info: UsbDongleInfo {
                bus,
                address,
                interface,
                setting,
                endpoint_in,
                endpoint_out,
                serial: None,
                product: None,
            },
            name,
        })
    }

    /// What was opened.
    pub fn info(&self) -> &UsbDongleInfo {
        &self.info
    }
}

impl Drop for UsbDevice {
    fn drop(&mut self) {
        let _ = self.handle.release_interface(self.info.interface);
    }
}

impl ReportDevice for UsbDevice {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        let n = self
            .handle
            .write_bulk(self.info.endpoint_out, report, WRITE_TIMEOUT)
            .map_err(|e| usb_error(&self.name, e))?;
        if n != REPORT_LEN {
            return Err(Error::io(
                PathBuf::from(&self.name),
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("wrote {n} of {REPORT_LEN} bytes of a report"),
                ),
            ));
        }
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<Report>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; REPORT_LEN];
        loop {
            // libusb reads a zero timeout as "forever": wait at least a millisecond.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            match self.handle.read_bulk(self.info.endpoint_in, &mut buf, left) {
                Ok(REPORT_LEN) => return Ok(Some(buf)),
                Ok(n) => tracing::debug!("{}: dropping a transfer of {n} bytes", self.name),
                Err(rusb::Error::Timeout) => {}
                Err(rusb::Error::Overflow) => {
                    tracing::debug!("{}: dropping an oversized transfer", self.name)
                }
                Err(e) => return Err(usb_error(&self.name, e)),
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
    fn scan_finds_no_dongle_here() {
        // No Tessera dongle is attached to this machine; where libusb cannot even start
        // (no /dev/bus/usb), the scan is empty and says why.
        let scan = scan().expect("a USB scan does not fail");
        assert!(scan.dongles.is_empty(), "{scan:?}");
        if let Some(reason) = &scan.unavailable {
            assert!(reason.starts_with("libusb"), "{reason}");
        }
        assert!(enumerate().unwrap().is_empty());
    }

    #[test]
    fn opening_a_missing_device_is_an_error() {
        // Bus 0 does not exist; address 0 is never assigned.
        let e = UsbDevice::open(0, 0).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }
}
