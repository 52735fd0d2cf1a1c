//! The secure channel between the runtime and a dongle: Noise XX; see `docs/DONGLES.md`.
