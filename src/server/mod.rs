//! The license server (`tessera-server`): its configuration, the daemon, the containers it
//! hosts, the seat table that counts seats by unit and keeps
//! their leases ([`seats`]), its durable, group-committed store ([`store`]) and its
//! hash-chained usage logs ([`usage`]). See `docs/SERVER.md`.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod history;
pub mod hosted;
pub mod seats;
pub mod stats;
pub mod store;
pub mod usage;
