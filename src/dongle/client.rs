//! The runtime's side of a dongle: finding dongles on every transport, and a connection
//! (framing channel id + secure channel) that sends container requests.

use std::path::PathBuf;
use std::time::Duration;

use super::framing::{self, ReportDevice, cmd};
use crate::channel::{Channel, ClientHandshake, HostHello, Trust};
use crate::container::ContainerCertificate;
use crate::container::protocol::{self, Request, Response};
use crate::{Error, Result};

/// How a dongle is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DongleMode {
    /// HID: hidapi, or the virtual dongle's report socket.
    Hid,
    /// Mass storage: a marker file on its volume.
    Msd,
    /// Raw USB bulk endpoints.
    Usb,
}

impl std::fmt::Display for DongleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DongleMode::Hid => "HID",
            DongleMode::Msd => "MSD",
            DongleMode::Usb => "USB",
        })
    }
}

/// Where a dongle was found.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A virtual dongle's HID report socket.
    Socket(PathBuf),
    /// A hidapi device path.
    Hid(String),
    /// A mass-storage volume's mount point.
    Msd(PathBuf),
    /// A raw USB device (bus, address).
    Usb(u8, u8),
}

impl Endpoint {
    /// The mode of the dongle behind it.
    pub fn mode(&self) -> DongleMode {
        match self {
            Endpoint::Socket(_) | Endpoint::Hid(_) => DongleMode::Hid,
            Endpoint::Msd(_) => DongleMode::Msd,
            Endpoint::Usb(..) => DongleMode::Usb,
        }
    }

    /// Opens the transport.
    pub fn open(&self) -> Result<Box<dyn ReportDevice>> {
        Ok(match self {
            Endpoint::Socket(p) => Box::new(super::socket::SocketDevice::open(p)?),
            Endpoint::Hid(p) => Box::new(super::hid::HidDevice::open_path(p)?),
            Endpoint::Msd(p) => {
                let vols = super::msd::find_volumes();
                let v = vols
                    .into_iter()
                    .find(|v| v.mount_point == *p)
                    .ok_or_else(|| {
                        Error::io(p, std::io::Error::from(std::io::ErrorKind::NotFound))
                    })?;
                Box::new(super::msd::MsdDevice::open(&v)?)
            }
            Endpoint::Usb(bus, addr) => Box::new(super::usb::UsbDevice::open(*bus, *addr)?),
        })
    }
}

/// Every dongle attached to this machine, on every transport (HID first, then MSD, USB).
/// A transport that cannot enumerate (no hidraw, no USB in the kernel) contributes nothing.
pub fn discover() -> Vec<Endpoint> {
    let mut v: Vec<Endpoint> = super::socket::enumerate(&super::socket::dongle_dir())
        .into_iter()
        .map(Endpoint::Socket)
        .collect();
    if let Ok(hid) = super::hid::enumerate() {
        v.extend(hid.into_iter().map(|d| Endpoint::Hid(d.path)));
    }
    v.extend(
        super::msd::find_volumes()
            .into_iter()
            .map(|m| Endpoint::Msd(m.mount_point)),
    );
    if let Ok(usb) = super::usb::enumerate() {
        v.extend(usb.into_iter().map(|d| Endpoint::Usb(d.bus, d.address)));
    }
    v
}

/// An open, authenticated connection to a dongle.
pub struct Connection {
    dev: Box<dyn ReportDevice>,
    cid: u32,
    channel: Channel,
    timeout: Duration,
    /// Where it was found.
    pub endpoint: Endpoint,
    /// The dongle serial.
    pub serial: String,
    /// The dongle's vendor.
    pub vendor_id: u32,
    /// The certificate it presented, verified (None only with `Trust::FirstUse`).
    pub certificate: Option<ContainerCertificate>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("serial", &self.serial)
            .field("endpoint", &self.endpoint)
            .field("cid", &self.cid)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens `endpoint`, allocates a framing channel, and runs the Noise handshake as the
    /// host with `host_secret`, checking the dongle by `trust`.
    pub fn connect(
        endpoint: &Endpoint,
        host_secret: &[u8; 32],
        hello: HostHello,
        trust: Trust<'_>,
        timeout: Duration,
    ) -> Result<Connection> {
        let mut dev = endpoint.open()?;
        let cid = framing::allocate_channel(dev.as_mut(), timeout)?;
        let mut hs = ClientHandshake::new(host_secret, hello)?;
        let m1 = hs.message1()?;
        let r = framing::transact(dev.as_mut(), cid, cmd::HANDSHAKE, &m1, timeout)?;
        expect_cmd(&r, cmd::HANDSHAKE)?;
        let m3 = hs.message3(&r.payload, trust)?;
        let r = framing::transact(dev.as_mut(), cid, cmd::HANDSHAKE, &m3, timeout)?;
        expect_cmd(&r, cmd::HANDSHAKE)?;
        let (channel, device, certificate) = hs.finish()?;
        Ok(Connection {
            dev,
            cid,
            channel,
            timeout,
            endpoint: endpoint.clone(),
            serial: device.serial,
            vendor_id: device.vendor_id,
            certificate,
        })
    }

    /// The dongle's mode.
    pub fn mode(&self) -> DongleMode {
        self.endpoint.mode()
    }

    /// Sends `req` and returns the dongle's answer; an error answer becomes the same error
    /// here.
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        let frame = self.channel.seal(&protocol::encode_request(req)?)?;
        let r = framing::transact(self.dev.as_mut(), self.cid, cmd::MSG, &frame, self.timeout)?;
        expect_cmd(&r, cmd::MSG)?;
        let plain = self.channel.open(&r.payload)?;
        match protocol::decode_response(&plain)? {
            Response::Error { status, message } => Err(protocol::response_error(status, message)),
            other => Ok(other),
        }
    }
}

/// Collects every license of a container, page by page, through `call`.
pub fn list_all_licenses(
    mut call: impl FnMut(&Request) -> Result<Response>,
) -> Result<Vec<Vec<u8>>> {
    let mut all = Vec::new();
    loop {
        match call(&Request::ListLicenses {
            offset: all.len() as u32,
        })? {
            Response::Licenses { licenses, total } => {
                let got = licenses.len();
                all.extend(licenses);
                if all.len() >= total as usize {
                    return Ok(all);
                }
                if got == 0 {
                    return Err(Error::malformed(
                        "dongle answer",
                        "an empty page before the last license",
                    ));
                }
            }
            other => {
                return Err(Error::malformed(
                    "dongle answer",
                    format!("unexpected answer {other:?}"),
                ));
            }
        }
    }
}

fn expect_cmd(m: &framing::Message, want: u8) -> Result<()> {
    if m.cmd == want {
        return Ok(());
    }
    if m.cmd == cmd::ERROR {
        return Err(Error::Io {
            path: PathBuf::from("dongle"),
            error: std::io::Error::other(format!(
                "the dongle answered with framing error {}",
                m.payload.first().copied().unwrap_or(0)
            )),
        });
    }
    Err(Error::malformed(
        "dongle answer",
        format!("command {:#04x} where {want:#04x} was expected", m.cmd),
    ))
}
