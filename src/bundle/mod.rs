//! The OCI bundle: config.json (spec.rs) and the seccomp profile (seccomp.rs).

pub mod seccomp;
pub mod spec;
