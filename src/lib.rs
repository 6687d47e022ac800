//! rlm-sandbox: run untrusted Python under runsc (gVisor) or runc, without a
//! Docker daemon. See DESIGN.md for the data flow.

pub mod capture;
