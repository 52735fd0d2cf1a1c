//! Containers: where licenses live and where product secrets are used.
//!
//! [`engine`] is the pure state machine every container runs; [`activation`] the documents
//! that carry licenses into a container (request, certificate, activation); [`software`]
//! the software container, the engine's state in a file bound to this machine's traits.

pub mod activation;
pub mod engine;
pub mod hosts;
pub mod protocol;
pub mod software;

pub use activation::{Activation, ActivationRequest, ContainerCertificate};
pub use engine::{ContainerKind, Engine, EngineState, UseQuery};
pub use software::SoftwareContainer;
