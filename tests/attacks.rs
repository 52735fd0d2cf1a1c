//! Attacks on the runtime, performed for real through its public APIs and ordinary tools
//! (copies of files, bind mounts, `unshare`, `fork`), each asserting that it fails (issue 13).
//! One module per attack family; `SECURITY.md` lists them with the defence each one tests.

mod common;

#[path = "attacks/binding.rs"]
mod binding;
#[path = "attacks/fingerprint.rs"]
mod fingerprint;
#[path = "attacks/fork.rs"]
mod fork;
#[path = "attacks/home_copies.rs"]
mod home_copies;
#[path = "attacks/identity.rs"]
mod identity;
#[path = "attacks/pid_namespaces.rs"]
mod pid_namespaces;
#[path = "attacks/tpm.rs"]
mod tpm;
