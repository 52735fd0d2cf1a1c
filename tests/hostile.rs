//! The license server under faults and hostile clients (issue 14), performed for real with
//! server processes, raw sockets and SIGKILL; each test asserts what must hold.

mod common;

#[path = "hostile/admin_port.rs"]
mod admin_port;
#[path = "hostile/discovery.rs"]
mod discovery;
#[path = "hostile/lease_kill.rs"]
mod lease_kill;
#[path = "hostile/silent_clients.rs"]
mod silent_clients;
#[path = "hostile/soak.rs"]
mod soak;
