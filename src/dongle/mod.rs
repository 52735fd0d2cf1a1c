//! Dongles: the framing of messages over 64-byte reports and the transports that carry
//! them (HID through hidapi or the virtual dongle's report socket, mass storage through a
//! marker file, raw USB through rusb). See `docs/DONGLES.md`.

pub mod client;
pub mod device;
pub mod framing;
pub mod hid;
pub mod msd;
#[cfg(feature = "virtual-dongle")]
pub mod msd_volume;
pub mod program;
pub mod socket;
pub mod usb;
