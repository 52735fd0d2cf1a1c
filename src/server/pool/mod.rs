//! The license-server pool (issue 17): several servers sharing one seat table in etcd.
//! [`members`]: who may form a pool (member registrations and the majority rule).

pub mod members;
