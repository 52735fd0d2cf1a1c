//! Containers: where licenses live and where product secrets are used.
//!
//! [`engine`] is the pure state machine every container runs; [`protocol`] the requests it
//! answers; [`software`] the software container, the engine's state in a file bound to this
//! machine's traits by a [`machine_binding::MachineBinding`] (which binds the host key
//! too). The documents that carry licenses into a container (request,
//! certificate, activation) and the delegation it signs for a license server are signed
//! documents of the trust chain and live in [`crate::license`]; they are re-exported here.

pub mod engine;
pub mod hosts;
pub mod machine_binding;
pub mod protocol;
pub mod software;

pub use crate::license::{Activation, ActivationRequest, ContainerCertificate, ContainerKind};
pub use engine::{Engine, EngineState, UseQuery};
pub use software::SoftwareContainer;
