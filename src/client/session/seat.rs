//! A held seat: what it is, and encryption and decryption with its product's key, in the
//! container or in the app. Dropping it releases the seat.

use std::sync::Arc;

use super::dongle::DongleLicense;
use super::network::{NetworkSeat, ServerSeat};
use super::software::Loaded;
use super::{Session, SourceKind, poisoned};
use crate::cipher::{self, Header, Mode};
use crate::client::dongles::Dongle;
use crate::client::seats::{SeatGuard, SeatPool};
use crate::container::ContainerKind;
use crate::dongle::client::DongleMode;
use crate::license::{CountingUnit, License};
use crate::net::lease::NetSeats;
use crate::{Error, Result};

/// What a seat is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatInfo {
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// Licensed feature bits.
    pub features: u32,
    /// License quantity.
    pub quantity: u32,
    /// Seats of the license in use now, on this machine (this one included).
    pub in_use: u32,
    /// Expiry, or `None` when perpetual.
    pub expiry: Option<u64>,
    /// Where the license is.
    pub source: SourceKind,
    /// What one seat covers.
    pub counting_unit: CountingUnit,
    /// The serial of the container holding the license.
    pub container_serial: String,
    /// The container kind.
    pub container_kind: ContainerKind,
    /// Whether this seat is held exclusively.
    pub exclusive: bool,
    /// How the dongle is attached, for a dongle license.
    pub dongle_mode: Option<DongleMode>,
    /// The license server's name, for a network seat, and the server a borrowed seat came
    /// from.
    pub server: Option<String>,
    /// When a borrowed seat ends (it is then also `expiry`); `None` for any other seat.
    pub borrowed_until: Option<u64>,
}

/// Where a seat's license is.
pub(super) enum Backing {
    /// A software container and the license's index in it.
    Software(Arc<Loaded>, usize),
    /// A dongle.
    Dongle(Arc<Dongle>),
    /// A seat borrowed from a license server, held in a software container of this machine.
    Borrowed {
        /// The container.
        container: Arc<Loaded>,
        /// The seat id the server counts it under.
        seat_id: [u8; 16],
        /// When it ends.
        until: u64,
        /// The server it came from.
        server: String,
    },
    /// A seat on a license server.
    Network {
        /// The session's server seats.
        net: Arc<NetSeats>,
        /// The seat id.
        seat_id: [u8; 16],
        /// The serial of the server's container.
        container_serial: String,
        /// Its kind (a server hosts both).
        container_kind: ContainerKind,
    },
}

/// A held seat. Dropping it releases the seat.
pub struct Seat {
    pub(super) session: Session,
    pub(super) backing: Backing,
    pub(super) license: License,
    /// The local seat slot (dongle and software-container licenses).
    pub(super) local: Option<(Arc<SeatPool>, SeatGuard)>,
    pub(super) source: SourceKind,
    pub(super) exclusive: bool,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("product_code", &self.license.product_code)
            .field("container", &self.container_serial())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A container reached over a link (a dongle, or a server's container): where a seat's
/// keys come from when the container is not in this process.
pub(super) trait RemoteContainer {
    fn derive_key(&self, header: &Header) -> Result<cipher::Key>;
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>>;
}

pub(super) fn copy_out(data: Vec<u8>, out: &mut [u8]) -> Result<usize> {
    if data.len() > out.len() {
        return Err(Error::BufferTooSmall { needed: data.len() });
    }
    out[..data.len()].copy_from_slice(&data);
    Ok(data.len())
}

impl Seat {
    /// The license behind the seat.
    pub fn license(&self) -> &License {
        &self.license
    }

    /// What the seat is.
    pub fn info(&self) -> Result<SeatInfo> {
        self.session.check_owner()?;
        let (in_use, server) = match (&self.local, &self.backing) {
            (Some((pool, guard)), _) => {
                pool.check(guard)?;
                (pool.in_use()?, None)
            }
            (None, Backing::Network { net, seat_id, .. }) => {
                (NetworkSeat::new(net, *seat_id).in_use()?, net.server_name())
            }
            (None, _) => (0, None),
        };
        let (server, borrowed_until) = match &self.backing {
            Backing::Borrowed { until, server, .. } => (Some(server.clone()), Some(*until)),
            _ => (server, None),
        };
        Ok(SeatInfo {
            vendor_id: self.license.vendor_id,
            product_code: self.license.product_code,
            features: self.license.features,
            quantity: self.license.quantity,
            in_use,
            expiry: match borrowed_until {
                Some(u) => Some(self.license.expiry.map_or(u, |e| e.min(u))),
                None => self.license.expiry,
            },
            source: self.source,
            counting_unit: self.license.counting_unit,
            container_serial: self.container_serial(),
            container_kind: match &self.backing {
                Backing::Software(c, _) => c.kind,
                Backing::Borrowed { container, .. } => container.kind,
                Backing::Dongle(_) => ContainerKind::Dongle,
                Backing::Network { container_kind, .. } => *container_kind,
            },
            dongle_mode: match &self.backing {
                Backing::Dongle(d) => Some(d.mode),
                _ => None,
            },
            exclusive: self.exclusive,
            server,
            borrowed_until,
        })
    }

    /// The checks of every use: the seat is used in the process that took it, the license has not expired, and a local seat is still in
    /// the seat registry (claimed again when its slot file was deleted or replaced, lost when
    /// no slot is free).
    fn check(&self) -> Result<()> {
        self.session.check_owner()?;
        if let Some((pool, guard)) = &self.local {
            pool.check(guard)?;
        }
        let env = &self.session.inner.env;
        let now = env.clock.now();
        if let Some(expiry) = self.license.expiry
            && now >= expiry
        {
            return Err(Error::Expired { expiry });
        }
        if let Backing::Borrowed {
            container, seat_id, ..
        } = &self.backing
        {
            // The container's verdict each time: the seat's end, the clock mark; and the
            // session's current copy of the container must still hold it (not returned).
            let current = self
                .session
                .inner
                .containers
                .read()
                .map_err(|_| poisoned())?
                .iter()
                .find(|c| c.serial == container.serial)
                .cloned();
            if let Some(cur) = current {
                let c = cur.container.read().map_err(|_| poisoned())?;
                borrowed_index(&c.engine, seat_id)?;
            }
            let c = container.container.read().map_err(|_| poisoned())?;
            let i = borrowed_index(&c.engine, seat_id)?;
            c.engine.check_borrowed(
                i,
                &crate::container::UseQuery {
                    features: 0,
                    now,
                    machine: env.host.machine.clone(),
                },
            )?;
        }
        Ok(())
    }

    fn remote(&self) -> Option<Box<dyn RemoteContainer + '_>> {
        match &self.backing {
            Backing::Software(..) | Backing::Borrowed { .. } => None,
            Backing::Dongle(d) => Some(Box::new(DongleLicense(d, self.license.license_id))),
            Backing::Network { net, seat_id, .. } => Some(Box::new(ServerSeat(net, *seat_id))),
        }
    }

    /// Encrypts `plaintext` into `out` in `mode`; returns the bytes written. `out` must hold
    /// [`cipher::ciphertext_len`] bytes. A network seat writes format 2 under its own seat
    /// key, in the app, with no round trip to its server (both modes).
    pub fn encrypt(&self, mode: Mode, plaintext: &[u8], out: &mut [u8]) -> Result<usize> {
        let need = cipher::ciphertext_len(plaintext.len());
        if out.len() < need {
            return Err(Error::BufferTooSmall { needed: need });
        }
        self.check()?;
        if let Backing::Network { net, seat_id, .. } = &self.backing {
            let product = (self.license.vendor_id, self.license.product_code);
            return NetworkSeat::new(net, *seat_id).encrypt(product, mode, plaintext, out);
        }
        let header = Header::new(mode, self.license.vendor_id, self.license.product_code);
        if let Some(r) = self.remote() {
            return match mode {
                Mode::Derived => {
                    let key = r.derive_key(&header)?;
                    cipher::seal_with_key(&key, &header, plaintext, out)
                }
                Mode::Direct => copy_out(r.encrypt(plaintext)?, out),
            };
        }
        if let Backing::Borrowed {
            container, seat_id, ..
        } = &self.backing
        {
            let c = container.container.read().map_err(|_| poisoned())?;
            let i = borrowed_index(&c.engine, seat_id)?;
            return match mode {
                Mode::Direct => c.engine.borrowed_encrypt_direct(i, plaintext, out),
                Mode::Derived => {
                    let key = c.engine.borrowed_message_key(i, &header)?;
                    drop(c);
                    cipher::seal_with_key(&key, &header, plaintext, out)
                }
            };
        }
        let Backing::Software(c, index) = &self.backing else {
            return Err(Error::Internal("seat without a container".into()));
        };
        let c = c.container.read().map_err(|_| poisoned())?;
        match mode {
            Mode::Direct => c.engine.encrypt_direct(*index, plaintext, out),
            Mode::Derived => {
                let key = c.engine.message_key(*index, &header)?;
                drop(c);
                cipher::seal_with_key(&key, &header, plaintext, out)
            }
        }
    }

    /// Decrypts `ct` into `out`; returns the plaintext length. Direct-mode ciphertext is
    /// decrypted in the container, derived-mode ciphertext in the app; a network seat
    /// decrypts both in the app with the keys it keeps, asking its server only for a key it
    /// does not keep yet.
    pub fn decrypt(&self, ct: &[u8], out: &mut [u8]) -> Result<usize> {
        let header = Header::parse(ct)?;
        let need = cipher::plaintext_len(ct.len());
        if out.len() < need {
            return Err(Error::BufferTooSmall { needed: need });
        }
        self.check()?;
        if header.vendor_id != self.license.vendor_id {
            return Err(Error::WrongVendor {
                expected: self.license.vendor_id,
                found: header.vendor_id,
            });
        }
        if header.product_code != self.license.product_code {
            return Err(Error::NoLicense(format!(
                "ciphertext is for vendor {:#x} product {}, the seat holds vendor {:#x} product {}",
                header.vendor_id,
                header.product_code,
                self.license.vendor_id,
                self.license.product_code
            )));
        }
        if let Backing::Network { net, seat_id, .. } = &self.backing {
            return NetworkSeat::new(net, *seat_id).decrypt(&header, ct, out);
        }
        if let Some(r) = self.remote() {
            return match header.mode {
                Mode::Derived => {
                    let key = r.derive_key(&header)?;
                    cipher::open_with_key(&key, &header, ct, out)
                }
                Mode::Direct => copy_out(r.decrypt(ct)?, out),
            };
        }
        if let Backing::Borrowed {
            container, seat_id, ..
        } = &self.backing
        {
            let c = container.container.read().map_err(|_| poisoned())?;
            let i = borrowed_index(&c.engine, seat_id)?;
            return match header.mode {
                Mode::Direct => c.engine.borrowed_decrypt_direct(i, ct, out),
                Mode::Derived => {
                    let key = c.engine.borrowed_message_key(i, &header)?;
                    drop(c);
                    cipher::open_with_key(&key, &header, ct, out)
                }
            };
        }
        let Backing::Software(c, index) = &self.backing else {
            return Err(Error::Internal("seat without a container".into()));
        };
        let c = c.container.read().map_err(|_| poisoned())?;
        match header.mode {
            Mode::Direct => c.engine.decrypt_direct(*index, ct, out),
            Mode::Derived => {
                let key = c.engine.message_key(*index, &header)?;
                drop(c);
                cipher::open_with_key(&key, &header, ct, out)
            }
        }
    }

    fn container_serial(&self) -> String {
        match &self.backing {
            Backing::Software(c, _) => c.serial.clone(),
            Backing::Borrowed { container, .. } => container.serial.clone(),
            Backing::Dongle(d) => d.serial.clone(),
            Backing::Network {
                container_serial, ..
            } => container_serial.clone(),
        }
    }

    /// The seat id a license server knows this seat by (chosen by this runtime, kept across
    /// reconnects); `None` for a seat of a dongle or a software container.
    pub fn server_seat_id(&self) -> Option<[u8; 16]> {
        match &self.backing {
            Backing::Network { seat_id, .. } => Some(*seat_id),
            _ => None,
        }
    }

    /// When the seat ends, for a seat borrowed from a license server; `None` otherwise.
    pub fn borrowed_until(&self) -> Option<u64> {
        match &self.backing {
            Backing::Borrowed { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// Releases the seat (same as dropping it).
    pub fn release(self) {}
}

/// The index of borrowed seat `seat_id` in `engine`; `LeaseLost` once it is gone (returned).
fn borrowed_index(engine: &crate::container::Engine, seat_id: &[u8; 16]) -> Result<usize> {
    engine.borrowed_index(seat_id).ok_or_else(|| {
        Error::LeaseLost(format!(
            "borrowed seat {} is no longer in its container (returned)",
            hex::encode(seat_id)
        ))
    })
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Backing::Network { net, seat_id, .. } = &self.backing
            && self.session.owned_here()
        {
            // Best effort: a server out of reach frees the seat when its lease runs out.
            // Never from a forked child: the connection is the parent's.
            let _ = net.release(*seat_id);
        }
    }
}
