//! The local seccomp allowlist as the file a node reads for a pod's
//! `seccompProfile: {type: Localhost, localhostProfile: PATH}`.
//!
//! The kubelet does not parse the file: it hands `<kubelet root>/seccomp/
//! PATH` to the container runtime. containerd reads it as the OCI
//! `linux.seccomp` object (its `contrib/seccomp.WithProfile` unmarshals
//! the file into the runtime-spec type) and puts it in the container's
//! config.json, where runsc applies it when the pod carries the
//! `dev.gvisor.flag.oci-seccomp` annotation. CRI-O reads the Docker
//! format, whose fields are a superset of the OCI ones under the same
//! names. So the conversion is: the OCI object the local sandbox uses,
//! written as JSON, refused if it holds a field outside the fields both
//! formats share (a seccomp agent's `listenerPath` names a socket on the
//! node that a cluster does not have).

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

/// The directory below the kubelet's seccomp root holding our profiles.
pub const PROFILE_DIR: &str = "rlm-sandbox";
/// The kubelet's seccomp root with its default `--root-dir`.
pub const KUBELET_SECCOMP_ROOT: &str = "/var/lib/kubelet/seccomp";

/// Top-level fields read alike by containerd (OCI) and CRI-O (Docker
/// format). Rules and their arguments use the OCI names, which the Docker
/// format shares (`names`, `action`, `errnoRet`, `args`: `index`,
/// `value`, `valueTwo`, `op`).
const NODE_FIELDS: &[&str] = &[
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "flags",
    "syscalls",
];

/// A profile as a node reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProfile {
    /// The file's content: pretty JSON, newline-terminated.
    pub json: String,
    /// `localhostProfile`: `rlm-sandbox/seccomp-<16 hex of its sha256>.json`,
    /// so an edited profile is a new file, never a silent replacement of
    /// the one running pods were admitted with.
    pub localhost_profile: String,
}

impl NodeProfile {
    /// Where the file goes on a node with the kubelet's default root dir.
    pub fn node_path(&self) -> String {
        format!("{KUBELET_SECCOMP_ROOT}/{}", self.localhost_profile)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeProfileError {
    #[error(
        "the seccomp profile has {field:?}, which a node's runtime does not read the same \
         way (containerd: OCI, CRI-O: Docker format); accepted top-level fields: {accepted}"
    )]
    Field { field: String, accepted: String },
    #[error("the seccomp profile does not serialise: {0}")]
    Json(#[from] serde_json::Error),
}

/// The node's file for `seccomp`, the profile the local sandbox uses.
pub fn node_profile(seccomp: &LinuxSeccomp) -> Result<NodeProfile, NodeProfileError> {
    let value = serde_json::to_value(seccomp)?;
    if let Some(field) = value
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .find(|k| !NODE_FIELDS.contains(&k.as_str()))
    {
        return Err(NodeProfileError::Field {
            field: field.clone(),
            accepted: NODE_FIELDS.join(", "),
        });
    }
    let mut json = serde_json::to_string_pretty(&value)?;
    json.push('\n');
    let digest = Sha256::digest(json.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(NodeProfile {
        json,
        localhost_profile: format!("{PROFILE_DIR}/seccomp-{hex}.json"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::seccomp::default_profile;

    /// What containerd does with the file: unmarshal it into the OCI type.
    /// It must give back exactly the allowlist the local sandbox uses.
    #[test]
    fn the_node_reads_the_local_allowlist() {
        let local = default_profile();
        let node = node_profile(&local).expect("renders");
        let read: LinuxSeccomp = serde_json::from_str(&node.json).expect("parses");
        assert_eq!(read, local);
        let shipped: serde_json::Value =
            serde_json::from_str(include_str!("../../bundles/seccomp/default.json")).expect("json");
        let written: serde_json::Value = serde_json::from_str(&node.json).expect("json");
        assert_eq!(
            written, shipped,
            "the same rules as bundles/seccomp/default.json"
        );
        assert_eq!(written["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn the_file_name_follows_the_content() {
        let a = node_profile(&default_profile()).expect("renders");
        assert_eq!(a, node_profile(&default_profile()).expect("renders"));
        assert!(a.localhost_profile.starts_with("rlm-sandbox/seccomp-"));
        assert_eq!(
            a.localhost_profile.len(),
            "rlm-sandbox/seccomp-.json".len() + 16
        );
        assert!(a
            .node_path()
            .starts_with("/var/lib/kubelet/seccomp/rlm-sandbox/"));
        let mut edited = default_profile();
        edited.set_default_errno_ret(Some(38));
        let b = node_profile(&edited).expect("renders");
        assert_ne!(a.localhost_profile, b.localhost_profile);
    }

    #[test]
    fn a_listener_socket_is_refused() {
        let mut with_agent = default_profile();
        with_agent.set_listener_path(Some("/run/seccomp-agent.sock".into()));
        let err = node_profile(&with_agent).expect_err("listenerPath has no node meaning");
        assert!(err.to_string().contains("listenerPath"), "{err}");
        assert!(err.to_string().contains("defaultAction"), "{err}");
    }
}
