//! 5. UDP discovery as a reflection amplifier; 6. small things (a network NO_SEAT's
//!    quantity, release while the server is unreachable, a client stuck in connect timeouts).
