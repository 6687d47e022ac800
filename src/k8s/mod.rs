//! Kubernetes: the local sandbox policy rendered for kubernetes-sigs/agent-sandbox
//! (v0.5.6: SandboxTemplate and SandboxWarmPool, API group
//! `extensions.agents.x-k8s.io/v1beta1`) under gVisor, and the check of a
//! rendered or hand-edited set of manifests against that policy.
//!
//! - [`render`]: Config → the two objects, the kubelet's seccomp file, and
//!   the warnings for what a pod cannot express (docs/KUBERNETES.md).
//! - [`network`]: the only network policy a template can carry (deny all).
//! - [`seccomp_profile`]: the local allowlist as a node's `Localhost` file.
//! - [`check`]: the policy, applied to any set of manifests.
//! - [`yaml`]: the block-YAML writer and the strict YAML reader.
//! - [`claim`], [`claim_run`]: `session --k8s-claim`, a SandboxClaim on a
//!   warm pool, as data and as kubectl commands run.
//! - [`leftovers`]: `gc --k8s`, the claims a killed orchestrator left.
//! - [`quantity`]: Kubernetes resource quantities, written and compared.

pub mod check;
pub mod claim;
pub mod claim_run;
pub mod image;
pub mod leftovers;
pub mod network;
pub mod quantity;
pub mod render;
pub mod seccomp_profile;
pub mod warnings;
pub mod yaml;

/// The API version of SandboxTemplate, SandboxWarmPool and SandboxClaim.
pub const EXTENSIONS_API_VERSION: &str = "extensions.agents.x-k8s.io/v1beta1";
/// The pod annotation that makes runsc apply the pod's seccomp profile
/// (`--oci-seccomp`); containerd passes it only with `pod_annotations =
/// ["dev.gvisor.*"]` in the runsc runtime's options.
pub const OCI_SECCOMP_ANNOTATION: &str = "dev.gvisor.flag.oci-seccomp";
/// The prefix of every annotation runsc reads as a flag override.
pub const GVISOR_ANNOTATION_PREFIX: &str = "dev.gvisor.";
/// The sandbox's one container.
pub const CONTAINER_NAME: &str = "agent";
