//! `tessera-load setup`: a publisher key and a software container activated for this
//! machine, for the server under test to host.

use std::path::Path;

use anyhow::{Context, Result};
use tessera::client::{Environment, install_activation, request_activation};
use tessera::license::{CountingUnit, VmPolicy};
use tessera::publisher::{LicenseSpec, PublisherKey};

use crate::SetupArgs;

pub(crate) fn setup(a: &SetupArgs) -> Result<()> {
    let key = PublisherKey::generate(a.vendor, "tessera-load");
    key.save(&a.key_out)
        .with_context(|| format!("writing {}", a.key_out.display()))?;
    let serial = activate(&a.home, &key, a.product, a.quantity)?;
    println!(
        "activated {serial} in {}: vendor {:#x} product {} quantity {} (unit handle); key in {}",
        a.home.display(),
        a.vendor,
        a.product,
        a.quantity,
        a.key_out.display()
    );
    Ok(())
}

/// Activates a software container for this machine in `home` with `quantity` seats of
/// `product` (counted per acquire) signed by `key`; returns the container's serial.
pub(crate) fn activate(
    home: &Path,
    key: &PublisherKey,
    product: u32,
    quantity: u32,
) -> Result<String> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let env = Environment {
        home: home.to_path_buf(),
        ..Environment::detect()
    };
    let spec = LicenseSpec {
        product_code: product,
        product_name: format!("Load test product {product}"),
        features: 0xFF,
        quantity,
        counting_unit: CountingUnit::Handle,
        exclusive_allowed: false,
        borrow_days: 0,
        expiry: None,
        vm_policy: VmPolicy::Allow,
    };
    let (serial, req) = request_activation(&env, key.vendor_id)?;
    let act = key.activate(&req, &[spec], tessera::util::now())?;
    install_activation(&env, &act, Some(&key.public_key()))?;
    Ok(serial)
}
