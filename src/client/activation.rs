//! The runtime's two steps of offline activation: write a request for this machine's
//! software container of a publisher (making the container if there is none), and install
//! the publisher's answer into it.

use ed25519_dalek::VerifyingKey;

use super::Environment;
use crate::container::engine::InstallReport;
use crate::container::software::list_for_vendor;
use crate::container::{Activation, ContainerKind, SoftwareContainer};
use crate::license::{Envelope, Kind};
use crate::{Error, Result};

/// Writes an activation request for `vendor_id`'s software container on this machine. The
/// first container of that publisher that opens here is reused (so more licenses can be
/// added to it); when there is none, a new one is made.
pub fn request_activation(env: &Environment, vendor_id: u32) -> Result<(String, Vec<u8>)> {
    let fingerprint = env.host.trusted_fingerprint()?;
    let c = own_container(env, vendor_id)?;
    let now = env.clock.now();
    let req = c.engine.activation_request(
        fingerprint,
        env.host.machine.clone(),
        &env.host.hostname,
        now,
    )?;
    Ok((c.engine.serial().to_string(), req))
}

/// This machine's software container of `vendor_id`: the first of that publisher that opens
/// here, else a new one. Activations and borrowed seats go into it.
pub(crate) fn own_container(env: &Environment, vendor_id: u32) -> Result<SoftwareContainer> {
    crate::publisher::check_vendor_id(vendor_id)?;
    env.host.trusted_fingerprint()?;
    let existing = list_for_vendor(&env.home, vendor_id)
        .into_iter()
        .find_map(|p| SoftwareContainer::load(&p, &env.host).ok());
    match existing {
        Some(c) => Ok(c),
        None => SoftwareContainer::create(&env.home, vendor_id, &env.host, env.clock.now()),
    }
}

/// The size of the request [`request_activation`] would write now, found without changing
/// anything on the machine: the existing container's request, or one of an unsaved
/// container made only in memory (its keys differ, its size does not).
pub fn activation_request_size(env: &Environment, vendor_id: u32) -> Result<usize> {
    crate::publisher::check_vendor_id(vendor_id)?;
    let fingerprint = env.host.trusted_fingerprint()?;
    let now = env.clock.now();
    let existing = list_for_vendor(&env.home, vendor_id)
        .into_iter()
        .find_map(|p| SoftwareContainer::load(&p, &env.host).ok());
    let engine = match &existing {
        Some(c) => &c.engine,
        None => &crate::container::Engine::create(ContainerKind::Software, vendor_id, now),
    };
    let req = engine.activation_request(
        fingerprint,
        env.host.machine.clone(),
        &env.host.hostname,
        now,
    )?;
    Ok(req.len())
}

/// Installs an activation into the software container it names. `publisher` is the key the
/// caller trusts (see [`crate::container::Engine::install_activation`]). Returns the
/// container serial and what changed. A failed install leaves the container as it was.
pub fn install_activation(
    env: &Environment,
    bytes: &[u8],
    publisher: Option<&VerifyingKey>,
) -> Result<(String, InstallReport)> {
    let act: Activation = Envelope::parse(Kind::Activation, bytes)?.decode()?;
    let mut last_err = None;
    for p in list_for_vendor(&env.home, act.vendor_id) {
        match SoftwareContainer::load(&p, &env.host) {
            Ok(mut c) if c.engine.serial() == act.serial => {
                let now = env.clock.now();
                let report =
                    c.update(&env.host, |e| e.install_activation(bytes, publisher, now))?;
                return Ok((act.serial, report));
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        Error::BindingMismatch(format!(
            "no software container {} of vendor {:#x} on this machine (was the request made here?)",
            act.serial, act.vendor_id
        ))
    }))
}
