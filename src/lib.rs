//! rlm-sandbox: run untrusted Python under runsc (gVisor) or runc, without a
//! Docker daemon. See DESIGN.md for the data flow:
//! config → bundle → runtime → supervise (capture, cgroup) → egress → result.

pub mod bundle;
pub mod capture;
pub mod cgroup;
pub mod check;
pub mod code;
pub mod config;
pub mod egress;
pub mod gc;
pub mod image;
pub mod k8s;
pub mod local;
pub mod pool;
pub mod procs;
pub mod result;
pub mod rootfs;
pub mod runtime;
pub mod selftest;
pub mod serve;
pub mod session;
pub mod supervise;
