//! The client side of the runtime: [`Session`] and [`Seat`], the choice of license source,
//! activation, and local seat counting across processes ([`seats`]).

mod activation;
pub mod dongles;
pub mod hostkey;
pub mod seats;
mod session;

pub use activation::{install_activation, request_activation};
pub use session::*;
