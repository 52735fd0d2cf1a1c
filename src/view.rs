//! What the command-line tools print, as data: the records behind their `--json` output
//! (serialised with serde_json by the tools), built from the library's own types. Times are
//! Unix seconds beside their UTC text; ids are numbers (vendor ids print in hex, `0x1092`,
//! only in the text output).

use serde::Serialize;

use crate::license::License;
use crate::util::format_time;

/// A license as the tools show it.
#[derive(Clone, Debug, Serialize)]
pub struct LicenseView {
    /// The license id (32 hex digits).
    pub license_id: String,
    /// The publisher.
    pub vendor_id: u32,
    /// The product code.
    pub product_code: u32,
    /// The product name.
    pub product_name: String,
    /// Feature bits.
    pub features: u32,
    /// Seats.
    pub quantity: u32,
    /// What one seat covers (`station`, `session`, `process`, `handle`).
    pub counting_unit: String,
    /// Whether an app may take it exclusively.
    pub exclusive_allowed: bool,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// When it ends (Unix seconds); `null`: perpetual.
    pub expiry: Option<u64>,
    /// `expiry` as `YYYY-MM-DD HH:MM:SS UTC`; `null`: perpetual.
    pub expires: Option<String>,
    /// Whether virtual machines may use it.
    pub vm_policy: String,
    /// Days a seat may be borrowed (0: not borrowable).
    pub borrow_days: u16,
    /// The container (or pool) it is bound to.
    pub bound_to: String,
    /// The license as the text output shows it (not in the JSON).
    #[serde(skip)]
    pub text: String,
}

impl From<&License> for LicenseView {
    fn from(l: &License) -> LicenseView {
        LicenseView {
            license_id: l.id_hex(),
            vendor_id: l.vendor_id,
            product_code: l.product_code,
            product_name: l.product_name.clone(),
            features: l.features,
            quantity: l.quantity,
            counting_unit: l.counting_unit.to_string(),
            exclusive_allowed: l.exclusive_allowed,
            issued_at: l.issued_at,
            expiry: l.expiry,
            expires: l.expiry.map(format_time),
            vm_policy: l.vm_policy.to_string(),
            borrow_days: l.borrow_days,
            bound_to: l.binding.to_string(),
            text: l.to_string(),
        }
    }
}

/// A license and its seats in use on this machine.
#[derive(Clone, Debug, Serialize)]
pub struct LicenseInUse {
    /// The license.
    #[serde(flatten)]
    pub license: LicenseView,
    /// Seats in use on this machine; `null` when they could not be counted.
    pub in_use: Option<u64>,
    /// Why they could not be counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_error: Option<String>,
}

/// A seat borrowed from a license server, kept in a container of this machine.
#[derive(Clone, Debug, Serialize)]
pub struct BorrowedView {
    /// The seat id (32 hex digits).
    pub seat_id: String,
    /// The product.
    pub product_code: u32,
    /// The product name.
    pub product_name: String,
    /// The server it was borrowed from.
    pub server: String,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// Whether it has ended.
    pub ended: bool,
    /// Whether it is in use on this machine now (0 or 1); `null`: unknown.
    pub in_use: Option<u64>,
}

/// A software container under a home.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerView {
    /// Its file.
    pub file: String,
    /// Why it does not open on this machine (another machine's, damaged); `null`: it opens.
    pub error: Option<String>,
    /// Its serial.
    pub serial: Option<String>,
    /// Its publisher.
    pub vendor_id: Option<u32>,
    /// What it is bound to (`fingerprint`, `fingerprint + TPM`).
    pub binding: Option<String>,
    /// The TPM NV counter anchoring it: index and value.
    pub tpm_counter: Option<(u32, u64)>,
    /// The latest time it has seen (Unix seconds).
    pub clock_high_water: Option<u64>,
    /// Its licenses.
    pub licenses: Vec<LicenseInUse>,
    /// Seats it holds borrowed from license servers.
    pub borrowed: Vec<BorrowedView>,
}

/// A dongle attached to this machine, as it describes itself.
#[derive(Clone, Debug, Serialize)]
pub struct DongleView {
    /// Where it was found.
    pub endpoint: String,
    /// Why it could not be read; `null`: it answered.
    pub error: Option<String>,
    /// Its serial.
    pub serial: Option<String>,
    /// Its mode (`hid`, `msd`, `usb`).
    pub mode: Option<String>,
    /// Its publisher; 0: blank.
    pub vendor_id: Option<u32>,
    /// Whether more than one host uses it (then it is locked out).
    pub shared: Option<bool>,
    /// The latest time it has seen (Unix seconds).
    pub clock_high_water: Option<u64>,
    /// Its licenses (as it describes them: not verified here).
    pub licenses: Vec<LicenseView>,
}

/// `tessera list`: the dongles and the software containers of a home.
#[derive(Clone, Debug, Serialize)]
pub struct ListView {
    /// The home looked in.
    pub home: String,
    /// Whether it exists.
    pub home_exists: bool,
    /// The vendor filter, if any.
    pub vendor_id: Option<u32>,
    /// Dongles (of the vendor, with a filter).
    pub dongles: Vec<DongleView>,
    /// Software containers (of the vendor, with a filter).
    pub containers: Vec<ContainerView>,
    /// Software containers of other vendors in the home (with a filter).
    pub others: usize,
}
