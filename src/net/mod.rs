//! The network: the wire protocol between runtimes and `tessera-server`
//! (see `docs/SERVER.md`), and the client side.

pub mod conn;
pub mod discovery;
pub mod lease;
pub mod proto;
pub mod seat_keys;
