//! 2. Two homes, twice the seats: copies of `TESSERA_HOME`, a deleted seat folder, two
//!    servers hosting one container.
