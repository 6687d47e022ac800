//! Config → a SandboxTemplate and a SandboxWarmPool whose pod runs the
//! session agent under gVisor with the local sandbox's policy, the node's
//! seccomp file, and the warnings for what a pod cannot carry.
//!
//! A pure function of its input, golden-tested like `bundle::spec`
//! (tests/fixtures/k8s/golden/), validated in CI against the agent-sandbox
//! CRD schemas and the Kubernetes Pod schema (tests/k8s/).

use oci_spec::runtime::LinuxSeccomp;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bundle::spec::agent_args;
use crate::config::{Config, ExecutionMode};

use super::network::DenyAll;
use super::seccomp_profile::{node_profile, NodeProfile, NodeProfileError};
use super::warnings::{warnings, Warning};
use super::{quantity, CONTAINER_NAME, EXTENSIONS_API_VERSION, OCI_SECCOMP_ANNOTATION};

/// Where the local sandbox has a size-limited tmpfs (bundle::spec): each
/// becomes a memory-backed emptyDir of the same size. `/dev` is the
/// runtime's own in a pod too.
const DEV_SHM_BYTES: u64 = 1 << 20;

/// What the rendering needs beyond the Config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// metadata.name of both objects.
    pub name: String,
    /// metadata.namespace; `None` leaves it to `kubectl apply -n`.
    pub namespace: Option<String>,
    /// SandboxWarmPool replicas.
    pub pool_size: u32,
    /// The rootfs image (see [`super::image`]).
    pub image: String,
    /// A RuntimeClass whose handler is runsc.
    pub runtime_class: String,
}

impl RenderOptions {
    pub const DEFAULT_NAME: &'static str = "rlm-sandbox";
    pub const DEFAULT_RUNTIME_CLASS: &'static str = "gvisor";
    pub const DEFAULT_POOL_SIZE: u32 = 1;
    /// More would be a typo, not a pool (the CRD's field is an int32).
    pub const MAX_POOL_SIZE: u32 = 100_000;
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "execution mode local has no isolation to render; accepted: execution mode oci \
         (RLM_EXECUTION_MODE=oci)"
    )]
    LocalMode,
    #[error(
        "the configuration enables the network (--network / RLM_NETWORK_ENABLED), but a \
         rendered SandboxTemplate always denies all egress; accepted: network disabled"
    )]
    Network,
    #[error("invalid {what} {value:?}: expected {accepted}")]
    Invalid {
        what: &'static str,
        value: String,
        accepted: &'static str,
    },
    #[error(transparent)]
    Seccomp(#[from] NodeProfileError),
}

/// `metadata` of both objects.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: serde_json::Map<String, Value>,
}

/// A SandboxTemplate: its `networkPolicy` is [`DenyAll`], not an option.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplate {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: TemplateSpec,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    /// `{metadata: {labels, annotations}, spec: PodSpec}`.
    pub pod_template: Value,
    pub network_policy: DenyAll,
    /// `Managed`: the controller applies `network_policy`; `Unmanaged`
    /// would leave the pod's traffic to whatever else the cluster has.
    pub network_policy_management: &'static str,
    /// `Disallowed`: a claim cannot add environment variables to the pod.
    pub env_vars_injection_policy: &'static str,
    /// `Disallowed`: a claim cannot add volumes to the pod.
    pub volume_claim_templates_policy: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPool {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: Value,
}

/// Everything `k8s render` prints or writes.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template: SandboxTemplate,
    pub warm_pool: SandboxWarmPool,
    pub seccomp: NodeProfile,
    pub warnings: Vec<Warning>,
}

impl Rendered {
    /// The API objects, in the order `kubectl apply` needs them.
    // Plain structs of strings and JSON values: serialising cannot fail.
    #[allow(clippy::expect_used)]
    pub fn objects(&self) -> Vec<Value> {
        vec![
            serde_json::to_value(&self.template).expect("template serialises"),
            serde_json::to_value(&self.warm_pool).expect("warm pool serialises"),
        ]
    }

    /// The objects as a multi-document YAML stream.
    pub fn yaml(&self) -> String {
        super::yaml::to_stream(&self.objects())
    }

    /// The `--json` output: objects, the node's seccomp file, warnings.
    // The profile was serialised from JSON by `node_profile`.
    #[allow(clippy::expect_used)]
    pub fn json(&self) -> Value {
        let profile: Value = serde_json::from_str(&self.seccomp.json).expect("profile is JSON");
        json!({
            "objects": self.objects(),
            "seccompProfile": {
                "localhostProfile": self.seccomp.localhost_profile,
                "nodePath": self.seccomp.node_path(),
                "profile": profile,
            },
            "warnings": self.warnings,
        })
    }
}

/// Renders `config` with the seccomp allowlist `seccomp` (the one a local
/// run of `config` uses).
pub fn render(
    config: &Config,
    seccomp: &LinuxSeccomp,
    options: &RenderOptions,
) -> Result<Rendered, RenderError> {
    if config.mode == ExecutionMode::Local {
        return Err(RenderError::LocalMode);
    }
    if config.network_enabled {
        return Err(RenderError::Network);
    }
    validate(options)?;
    let limits = &config.limits;
    let cpu = quantity::cpus(limits.cpus).ok_or_else(|| RenderError::Invalid {
        what: "cpu limit",
        value: limits.cpus.to_string(),
        accepted: "at least 0.001 cores (1m, the smallest Kubernetes cpu quantity)",
    })?;
    let memory = quantity::bytes(limits.memory_bytes);
    let profile = node_profile(seccomp)?;
    let uid = rootfs_builder::SANDBOX_UID;
    let gid = rootfs_builder::SANDBOX_GID;
    let seccomp_profile =
        json!({"type": "Localhost", "localhostProfile": profile.localhost_profile});
    let pod_spec = json!({
        "runtimeClassName": options.runtime_class,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": uid,
            "runAsGroup": gid,
            "seccompProfile": seccomp_profile,
        },
        "containers": [{
            "name": CONTAINER_NAME,
            "image": options.image,
            "imagePullPolicy": "IfNotPresent",
            "command": agent_args(),
            "workingDir": "/tmp",
            "stdin": true,
            "stdinOnce": true,
            "tty": false,
            "resources": {
                "limits": {"cpu": cpu, "memory": memory},
                "requests": {"cpu": cpu, "memory": memory},
            },
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": uid,
                "runAsGroup": gid,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": seccomp_profile,
            },
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "dev-shm", "mountPath": "/dev/shm"},
            ],
        }],
        "volumes": [
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": quantity::bytes(limits.tmp_bytes)}},
            {"name": "dev-shm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity::bytes(DEV_SHM_BYTES)}},
        ],
    });
    let labels = labels(&options.name);
    let metadata = ObjectMeta {
        name: options.name.clone(),
        namespace: options.namespace.clone(),
        labels: labels.clone(),
    };
    let template = SandboxTemplate {
        api_version: EXTENSIONS_API_VERSION,
        kind: "SandboxTemplate",
        metadata: metadata.clone(),
        spec: TemplateSpec {
            pod_template: json!({
                "metadata": {
                    "labels": labels,
                    "annotations": {OCI_SECCOMP_ANNOTATION: "true"},
                },
                "spec": pod_spec,
            }),
            network_policy: DenyAll::new(),
            network_policy_management: "Managed",
            env_vars_injection_policy: "Disallowed",
            volume_claim_templates_policy: "Disallowed",
        },
    };
    let warm_pool = SandboxWarmPool {
        api_version: EXTENSIONS_API_VERSION,
        kind: "SandboxWarmPool",
        metadata,
        spec: json!({
            "replicas": options.pool_size,
            "sandboxTemplateRef": {"name": options.name},
        }),
    };
    let warnings = warnings(config, &options.runtime_class, &profile);
    Ok(Rendered {
        template,
        warm_pool,
        seccomp: profile,
        warnings,
    })
}

fn labels(name: &str) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("app.kubernetes.io/name".into(), json!(name));
    labels.insert("app.kubernetes.io/managed-by".into(), json!("rlm-sandbox"));
    labels
}

/// A DNS-1123 label: what names, namespaces and RuntimeClass names accept.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn validate(o: &RenderOptions) -> Result<(), RenderError> {
    const LABEL: &str = "a DNS-1123 label: 1-63 lower-case letters, digits and '-', \
                         starting and ending with a letter or digit";
    let invalid = |what, value: &str, accepted| RenderError::Invalid {
        what,
        value: value.to_string(),
        accepted,
    };
    if !is_dns_label(&o.name) {
        return Err(invalid("name", &o.name, LABEL));
    }
    if let Some(ns) = &o.namespace {
        if !is_dns_label(ns) {
            return Err(invalid("namespace", ns, LABEL));
        }
    }
    if !is_dns_label(&o.runtime_class) {
        return Err(invalid("runtime class", &o.runtime_class, LABEL));
    }
    if o.image.is_empty()
        || o.image.len() > 512
        || o.image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "image",
            &o.image,
            "an image reference without whitespace, e.g. localhost/rlm-sandbox-rootfs:0123456789abcdef",
        ));
    }
    if o.pool_size > RenderOptions::MAX_POOL_SIZE {
        return Err(invalid(
            "pool size",
            &o.pool_size.to_string(),
            "a whole number from 0 to 100000",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
