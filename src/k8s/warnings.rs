//! What the local sandbox enforces that a pod spec cannot express, and
//! what an operator must set on the nodes instead. Printed on stderr by
//! `k8s render` and listed under `warnings` in its JSON output;
//! docs/KUBERNETES.md explains each.

use serde::Serialize;

use crate::bundle::spec::RUNSC_HOST_TASKS;
use crate::config::{Config, RuntimeChoice};

use super::seccomp_profile::NodeProfile;
use super::OCI_SECCOMP_ANNOTATION;

/// One setting the pod cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Stable name (`pids`, `rlimits`, `swap`, ...), for programs.
    pub id: &'static str,
    /// What the local sandbox does.
    pub local: String,
    /// What the operator must set on every node that runs these pods.
    pub node: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rlm-sandbox: k8s: warning [{}]: {}; on the nodes: {}",
            self.id, self.local, self.node
        )
    }
}

/// The warnings for `config` rendered with `runtime_class` and `profile`.
pub fn warnings(config: &Config, runtime_class: &str, profile: &NodeProfile) -> Vec<Warning> {
    let limits = &config.limits;
    let mut out = vec![
        Warning {
            id: "pids",
            local: format!(
                "the sandbox is limited to {} tasks (pids cgroup; RLIMIT_NPROC under runsc), \
                 and a pod has no pids field",
                limits.pids
            ),
            node: format!(
                "set the kubelet's podPidsLimit (KubeletConfiguration) to {} (the {} tasks \
                 plus {RUNSC_HOST_TASKS} for gVisor's own host threads, which the pod's pids \
                 cgroup also counts)",
                u64::from(limits.pids) + RUNSC_HOST_TASKS as u64,
                limits.pids
            ),
        },
        Warning {
            id: "rlimits",
            local: format!(
                "the sandbox's rlimits are RLIMIT_NOFILE={}, RLIMIT_CORE=0, RLIMIT_NPROC={}, \
                 and a pod has no rlimit field",
                limits.open_files, limits.pids
            ),
            node: format!(
                "give the runsc runtime handler a containerd base_runtime_spec whose \
                 process.rlimits hold RLIMIT_NOFILE {}, RLIMIT_CORE 0 and RLIMIT_NPROC {} \
                 (without it the runtime's defaults apply)",
                limits.open_files, limits.pids
            ),
        },
        Warning {
            id: "swap",
            local: "memory.swap equals the memory limit: the sandbox never swaps".into(),
            node: "keep swap off (kubelet failSwapOn: true), or with NodeSwap keep \
                   memorySwap.swapBehavior NoSwap or LimitedSwap (these pods have limits = \
                   requests, Guaranteed QoS, which LimitedSwap gives no swap)"
                .into(),
        },
        Warning {
            id: "runtime",
            local: "without runsc the standard preset falls back to runc with a warning; a \
                    cluster has no fallback: a pod whose RuntimeClass is missing is never started"
                .into(),
            node: format!(
                "install gVisor and create RuntimeClass {runtime_class:?} with handler runsc \
                 (the containerd runtime named in its handler) on the nodes these pods may use"
            ),
        },
        Warning {
            id: "seccomp-annotations",
            local: format!(
                "runsc applies the seccomp allowlist only with --oci-seccomp; the pod asks for \
                 it with the annotation {OCI_SECCOMP_ANNOTATION}: \"true\""
            ),
            node: "set pod_annotations = [\"dev.gvisor.*\"] in containerd's runsc runtime \
                   options (plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc), \
                   or the annotation never reaches runsc and the profile is silently ignored"
                .into(),
        },
        Warning {
            id: "seccomp-profile",
            local: "the seccomp allowlist is built into rlm-sandbox".into(),
            node: format!(
                "copy the rendered profile to {} on every node (<the kubelet's --root-dir>\
                 /seccomp/{} if the root dir is not the default); a pod whose profile file \
                 is missing fails to start",
                profile.node_path(),
                profile.localhost_profile
            ),
        },
    ];
    if config.runtime == RuntimeChoice::Runc {
        out.push(Warning {
            id: "runtime-choice",
            local: "the local configuration asks for runc".into(),
            node: format!(
                "nothing: the pods run under RuntimeClass {runtime_class:?} (gVisor), not runc"
            ),
        });
    }
    if !config.runsc_flags.is_empty() {
        out.push(Warning {
            id: "runsc-flags",
            local: format!(
                "the local runsc gets the extra flags {:?}",
                config.runsc_flags.join(" ")
            ),
            node: "set them in the runsc runtime's configuration (containerd's runsc.toml \
                   [runsc_config]); a pod cannot pass runsc flags"
                .into(),
        });
    }
    out
}
