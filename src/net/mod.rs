//! The network: the wire protocol between runtimes and `tessera-server`
//! (see `docs/SERVER.md`), and the client side.

pub mod proto;
