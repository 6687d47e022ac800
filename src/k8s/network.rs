//! The network policy of a rendered SandboxTemplate.
//!
//! agent-sandbox applies a default policy that ALLOWS public-internet
//! egress when a template omits `networkPolicy`; an empty rule list denies
//! all. The sandbox never needs the network (sub-calls travel over the
//! session's byte stream, which the API server carries by exec/attach, not
//! over the pod network), so the only policy this crate can express is
//! "no egress rule, no ingress rule". [`DenyAll`] has no field to set and
//! the template's field is not an `Option`: an omitted or allowing policy
//! cannot be rendered.
//!
//! ```
//! let policy = rlm_sandbox::k8s::network::DenyAll::new();
//! assert_eq!(
//!     serde_json::to_value(policy).unwrap(),
//!     serde_json::json!({"egress": [], "ingress": []})
//! );
//! ```
//!
//! There is no way to put a rule in it (the control above compiles, this
//! does not):
//!
//! ```compile_fail
//! let policy = rlm_sandbox::k8s::network::DenyAll { egress: vec!["0.0.0.0/0"] };
//! ```

use serde::ser::{Serialize, SerializeMap, Serializer};

/// `networkPolicy: {egress: [], ingress: []}`: no traffic in or out of the
/// pod over the cluster network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenyAll {
    _no_rules: (),
}

impl DenyAll {
    pub fn new() -> Self {
        DenyAll { _no_rules: () }
    }
}

impl Serialize for DenyAll {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let none: [(); 0] = [];
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("egress", &none)?;
        map.serialize_entry("ingress", &none)?;
        map.end()
    }
}
