//! Borrowing: a seat of a network license taken to this machine for some days
//! ([`Session::borrow`]), kept in this machine's software container of the publisher (so it
//! is bound to this machine like any software container, and its clock mark holds), served
//! by the software source with no server at all, and given back early
//! ([`Session::return_borrowed`]).

use super::network::unexpected_net;
use super::{Session, poisoned};
use crate::client::activation::own_container;
use crate::container::SoftwareContainer;
use crate::license::MAX_BORROW_DAYS;
use crate::license::borrow::return_message;
use crate::net::proto::{NetRequest, NetResponse};
use crate::{Error, Result};

/// A seat borrowed into this machine's container, as [`Session::borrowed`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BorrowedEntry {
    /// The seat id the license server counts it under.
    pub seat_id: [u8; 16],
    /// The product.
    pub product_code: u32,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// The license server it came from.
    pub server: String,
    /// The borrowing container's serial.
    pub container_serial: String,
}

impl Session {
    /// Borrows a seat of `product_code` with at least the `features` bits from the session's
    /// license server for `days` days (1 to the license's `borrow_days`). The server lends it
    /// to this machine's software container of the publisher (made if there is none), which
    /// checks the grant against the session's publisher key, opens the product secret and
    /// keeps it; from then on `acquire` serves it from the container, with no server, until
    /// it ends. A connection failure is retried once with the same seat id (the server
    /// answers a retry with the same seat). Returns when the seat ends and its seat id.
    pub fn borrow(&self, product_code: u32, features: u32, days: u32) -> Result<(u64, [u8; 16])> {
        self.check_owner()?;
        if days == 0 || days > u32::from(MAX_BORROW_DAYS) {
            return Err(Error::InvalidArgument(format!(
                "a seat is borrowed for 1 to {MAX_BORROW_DAYS} days (at most what the license \
                 allows), not {days}"
            )));
        }
        let i = &self.inner;
        let net = self.net_seats()?.ok_or_else(|| {
            Error::NoLicense(
                "no license server is configured or answers: a seat is borrowed from one".into(),
            )
        })?;
        let env = &i.env;
        let fingerprint = env.host.trusted_fingerprint()?;
        let mut c = own_container(env, i.opts.vendor_id)?;
        let now = env.clock.now();
        let borrower = c.engine.activation_request(
            fingerprint,
            env.host.machine.clone(),
            &env.host.hostname,
            now,
        )?;
        let seat_id: [u8; 16] = crate::util::random();
        let req = NetRequest::Borrow {
            seat_id,
            vendor_id: i.opts.vendor_id,
            product_code,
            features,
            days,
            borrower,
        };
        let (grant, certificate) = match net.call(&req)? {
            NetResponse::Borrowed { grant, certificate } => (grant, certificate),
            other => return Err(unexpected_net(&other)),
        };
        let server = net
            .server_address()
            .or_else(|| net.server_name())
            .unwrap_or_default();
        let publisher = i.opts.publisher_key;
        let installed = c.update(&env.host, |e| {
            let (g, lic) = e.install_borrowed(&grant, &certificate, &publisher, &server, now)?;
            if g.seat_id != seat_id {
                return Err(Error::malformed(
                    "borrowed seat",
                    "the server lent another seat than the one asked for",
                ));
            }
            if lic.product_code != product_code || features & !lic.features != 0 {
                return Err(Error::malformed(
                    "borrowed seat",
                    format!(
                        "the server lent product {} features {:#x}, not product \
                         {product_code} with features {features:#x}",
                        lic.product_code, lic.features
                    ),
                ));
            }
            Ok(g.until)
        });
        match installed {
            Ok(until) => {
                self.reload()?;
                Ok((until, seat_id))
            }
            Err(e) => {
                // Not kept here: give it back, so the server does not count it for days.
                let signature = c.engine.sign(&return_message(&seat_id)).to_vec();
                let _ = net.call(&NetRequest::Return { seat_id, signature });
                Err(e)
            }
        }
    }

    /// Gives a seat of `product_code` borrowed into this machine's container back to the
    /// license server before it ends (the one with the earliest end, when there are
    /// several). The return is signed with the container's key and goes to the server the
    /// seat came from (when it cannot be reached, to the session's servers). The seat leaves
    /// the container when a server confirms the return, or when the server it came from
    /// says it no longer holds it (it ended, or was returned before). When no server can be
    /// reached the seat is kept and the error returned. `NoLicense` when no seat of the
    /// product is borrowed here.
    pub fn return_borrowed(&self, product_code: u32) -> Result<()> {
        self.check_owner()?;
        let i = &self.inner;
        let env = &i.env;
        let Some(b) = self
            .borrowed()?
            .into_iter()
            .filter(|b| b.product_code == product_code)
            .min_by_key(|b| b.until)
        else {
            return Err(Error::NoLicense(format!(
                "no seat of vendor {:#x} product {product_code} is borrowed on this machine",
                i.opts.vendor_id
            )));
        };
        let containers = i.containers.read().map_err(|_| poisoned())?.clone();
        let Some(loaded) = containers.iter().find(|c| c.serial == b.container_serial) else {
            return Err(Error::Internal("the borrowing container is gone".into()));
        };
        let req = NetRequest::Return {
            seat_id: b.seat_id,
            signature: loaded
                .container
                .read()
                .map_err(|_| poisoned())?
                .engine
                .sign(&return_message(&b.seat_id))
                .to_vec(),
        };
        // The server the seat came from first: only its word that the seat is gone
        // (LEASE_LOST) lets the seat go here. When it cannot be reached, the session's
        // servers (it may have moved); one of those that does not know the seat leaves it
        // here, with the error.
        let lender = (!b.server.is_empty())
            .then(|| self.connect_to(vec![b.server.clone()]))
            .transpose()?;
        let first = match &lender {
            Some(net) => net.call(&req),
            None => Err(Error::NoLicense(
                "the borrowed seat does not name its server".into(),
            )),
        };
        let answer = match first {
            Ok(r) => Ok(r),
            Err(Error::LeaseLost(_)) => Ok(NetResponse::Returned),
            Err(e @ (Error::Io { .. } | Error::Timeout(_) | Error::NoLicense(_))) => {
                match self.net_seats()? {
                    Some(net) => net.call(&req),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(NetResponse::Returned) => {}
            Ok(other) => return Err(unexpected_net(&other)),
            Err(e) => return Err(e),
        }
        // A fresh copy of the container takes the change: a loaded one is never changed
        // under the indexes the session keeps of it (the reload makes new ones).
        let path = loaded
            .container
            .read()
            .map_err(|_| poisoned())?
            .path()
            .to_path_buf();
        SoftwareContainer::load(&path, &env.host)?
            .update(&env.host, |e| Ok(e.remove_borrowed(&b.seat_id)))?;
        self.reload()
    }

    /// The seats borrowed into this machine's software containers of the session's publisher
    /// whose grants verify against its publisher key, ended ones included until the next
    /// save drops them.
    pub fn borrowed(&self) -> Result<Vec<BorrowedEntry>> {
        self.check_owner()?;
        let mut out = Vec::new();
        for c in self.inner.containers.read().map_err(|_| poisoned())?.iter() {
            let sc = c.container.read().map_err(|_| poisoned())?;
            for &idx in &c.borrowed {
                let (b, lic) = (
                    &sc.engine.borrowed()[idx],
                    &sc.engine.borrowed_licenses()[idx],
                );
                out.push(BorrowedEntry {
                    seat_id: b.seat_id,
                    product_code: lic.product_code,
                    until: b.until,
                    server: b.server.clone(),
                    container_serial: c.serial.clone(),
                });
            }
        }
        Ok(out)
    }
}
