//! `k8s check`: a set of manifests (rendered or hand-edited) against the
//! policy `render` encodes. Every object must be a v1beta1 SandboxTemplate
//! or SandboxWarmPool; a template's pod must keep every protection the
//! local sandbox has that a pod can express. Keys are allowlisted at each
//! level (an unknown or added field is an error, not a pass), and every
//! error names the field, what was found and the accepted value.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::bundle::spec::agent_args;

use super::{
    quantity, CONTAINER_NAME, EXTENSIONS_API_VERSION, GVISOR_ANNOTATION_PREFIX,
    OCI_SECCOMP_ANNOTATION,
};

/// One violation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Index of the object in the set (0-based), after `List`s are expanded.
    pub document: usize,
    pub kind: String,
    pub name: String,
    /// Dotted path, e.g. `spec.podTemplate.spec.containers[0].env`.
    pub field: String,
    /// The value found; `None` when the field is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<Value>,
    pub accepted: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found = match &self.found {
            Some(v) => format!("found {v}"),
            None => "absent".to_string(),
        };
        write!(
            f,
            "object {} ({} {:?}): {}: {found}; accepted: {}",
            self.document, self.kind, self.name, self.field, self.accepted
        )
    }
}

/// The result of checking a set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    /// `{document, kind, name}` of each object checked.
    pub objects: Vec<Value>,
    pub errors: Vec<Finding>,
}

/// The objects of parsed documents: a `kind: List` gives its items, the
/// `k8s render --json` output its `objects`.
pub fn objects_of(documents: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in documents {
        match doc {
            Value::Object(mut m) if m.get("kind") == Some(&json!("List")) => {
                if let Some(Value::Array(items)) = m.remove("items") {
                    out.extend(items);
                } else {
                    out.push(Value::Object(m));
                }
            }
            Value::Object(mut m) if !m.contains_key("kind") && m.contains_key("objects") => {
                if let Some(Value::Array(items)) = m.remove("objects") {
                    out.extend(items);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Checks every object of a set.
pub fn check(objects: &[Value]) -> Report {
    let mut errors = Vec::new();
    let mut summaries = Vec::new();
    let template_names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "SandboxTemplate")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for (i, object) in objects.iter().enumerate() {
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        summaries.push(json!({"document": i, "kind": kind, "name": name}));
        let mut c = Ctx {
            document: i,
            kind: kind.clone(),
            name,
            errors: &mut errors,
        };
        let Some(map) = c.object("", Some(object), "an API object (a mapping)") else {
            continue;
        };
        c.keys("", map, &["apiVersion", "kind", "metadata", "spec"]);
        c.equal(
            "apiVersion",
            map.get("apiVersion"),
            &json!(EXTENSIONS_API_VERSION),
        );
        match kind.as_str() {
            "SandboxTemplate" => template(&mut c, map),
            "SandboxWarmPool" => warm_pool(&mut c, map, &template_names),
            _ => c.error(
                "kind",
                map.get("kind"),
                "SandboxTemplate or SandboxWarmPool (a set holds nothing else)",
            ),
        }
    }
    if template_names.is_empty() {
        errors.push(Finding {
            document: objects.len(),
            kind: String::new(),
            name: String::new(),
            field: "(the set)".into(),
            found: None,
            accepted: "at least one SandboxTemplate".into(),
        });
    }
    Report {
        ok: errors.is_empty(),
        objects: summaries,
        errors,
    }
}

struct Ctx<'a> {
    document: usize,
    kind: String,
    name: String,
    errors: &'a mut Vec<Finding>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Ctx<'_> {
    fn error(&mut self, field: &str, found: Option<&Value>, accepted: &str) {
        self.errors.push(Finding {
            document: self.document,
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_string(),
            found: found.cloned(),
            accepted: accepted.to_string(),
        });
    }

    fn object<'v>(
        &mut self,
        field: &str,
        v: Option<&'v Value>,
        accepted: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            Some(Value::Object(m)) => Some(m),
            other => {
                self.error(field, other, accepted);
                None
            }
        }
    }

    /// Every key of `map` must be in `allowed`; `why` gives the accepted
    /// value of keys that are refused for a known reason.
    fn keys(&mut self, path: &str, map: &Map<String, Value>, allowed: &[&str]) {
        for (key, value) in map {
            if !allowed.contains(&key.as_str()) {
                let accepted = refused_reason(key).map(str::to_string).unwrap_or_else(|| {
                    format!("absent (accepted fields here: {})", allowed.join(", "))
                });
                self.error(&join(path, key), Some(value), &accepted);
            }
        }
    }

    fn equal(&mut self, field: &str, v: Option<&Value>, want: &Value) {
        if v != Some(want) {
            self.error(field, v, &want.to_string());
        }
    }

    fn absent_or(&mut self, field: &str, v: Option<&Value>, want: &Value) {
        if v.is_some() && v != Some(want) {
            self.error(field, v, &format!("absent or {want}"));
        }
    }
}

/// The accepted value of fields refused for a reason worth saying.
fn refused_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "env" | "envFrom" => "absent: no environment variable enters the sandbox",
        "ports" => "absent: the session talks over exec/attach; the pod listens on nothing",
        "args" => "absent: the container runs the agent's command, nothing else",
        "initContainers" | "ephemeralContainers" => "absent: the pod runs one container, the agent",
        "serviceAccountName" | "serviceAccount" => {
            "absent: the sandbox has no service account identity"
        }
        "hostPath" | "secret" | "configMap" | "projected" | "persistentVolumeClaim" => {
            "absent: the only volumes are memory-backed emptyDirs"
        }
        "volumeClaimTemplates" => "absent: the only volumes are memory-backed emptyDirs",
        "procMount" | "sysctls" | "appArmorProfile" | "seLinuxOptions" => {
            "absent: the runtime's defaults"
        }
        _ => return None,
    })
}

const TEMPLATE_SPEC_KEYS: &[&str] = &[
    "podTemplate",
    "networkPolicy",
    "networkPolicyManagement",
    "envVarsInjectionPolicy",
    "volumeClaimTemplatesPolicy",
    "service",
];

/// Rendered pod fields, then fields that change where a pod is scheduled
/// or how its image is pulled, not what it can do.
const POD_KEYS: &[&str] = &[
    "runtimeClassName",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "restartPolicy",
    "securityContext",
    "containers",
    "volumes",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "nodeSelector",
    "affinity",
    "tolerations",
    "topologySpreadConstraints",
    "priorityClassName",
    "priority",
    "preemptionPolicy",
    "schedulerName",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "imagePullSecrets",
    "overhead",
];
const POD_SECURITY_KEYS: &[&str] = &["runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile"];
const CONTAINER_KEYS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "workingDir",
    "stdin",
    "stdinOnce",
    "tty",
    "resources",
    "securityContext",
    "volumeMounts",
    "terminationMessagePath",
    "terminationMessagePolicy",
];
const CONTAINER_SECURITY_KEYS: &[&str] = &[
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "privileged",
    "capabilities",
    "seccompProfile",
];

fn template(c: &mut Ctx, doc: &Map<String, Value>) {
    let Some(spec) = c.object("spec", doc.get("spec"), "a SandboxTemplate spec") else {
        return;
    };
    c.keys("spec", spec, TEMPLATE_SPEC_KEYS);
    network_policy(c, spec.get("networkPolicy"));
    c.absent_or(
        "spec.networkPolicyManagement",
        spec.get("networkPolicyManagement"),
        &json!("Managed"),
    );
    c.absent_or(
        "spec.envVarsInjectionPolicy",
        spec.get("envVarsInjectionPolicy"),
        &json!("Disallowed"),
    );
    c.absent_or(
        "spec.volumeClaimTemplatesPolicy",
        spec.get("volumeClaimTemplatesPolicy"),
        &json!("Disallowed"),
    );
    c.absent_or("spec.service", spec.get("service"), &json!(false));
    let Some(pod) = c.object(
        "spec.podTemplate",
        spec.get("podTemplate"),
        "a pod template {metadata, spec}",
    ) else {
        return;
    };
    c.keys("spec.podTemplate", pod, &["metadata", "spec"]);
    annotations(c, pod.get("metadata"));
    if let Some(spec) = c.object("spec.podTemplate.spec", pod.get("spec"), "a PodSpec") {
        pod_spec(c, "spec.podTemplate.spec", spec);
    }
}

fn network_policy(c: &mut Ctx, v: Option<&Value>) {
    const FIELD: &str = "spec.networkPolicy";
    let Some(np) = c.object(
        FIELD,
        v,
        "{egress: []} (omitted, agent-sandbox applies a default that allows public-internet egress)",
    ) else {
        return;
    };
    c.keys(FIELD, np, &["egress", "ingress"]);
    match np.get("egress") {
        Some(Value::Array(rules)) if rules.is_empty() => {}
        other => c.error(
            "spec.networkPolicy.egress",
            other,
            "[] (no egress rule: all egress denied)",
        ),
    }
    match np.get("ingress") {
        None => {}
        Some(Value::Array(rules)) if rules.is_empty() => {}
        other => c.error(
            "spec.networkPolicy.ingress",
            other,
            "absent or [] (no ingress rule: the pod listens on nothing)",
        ),
    }
}

fn annotations(c: &mut Ctx, metadata: Option<&Value>) {
    const FIELD: &str = "spec.podTemplate.metadata";
    let Some(meta) = c.object(
        FIELD,
        metadata,
        "{annotations: {dev.gvisor.flag.oci-seccomp: \"true\"}}",
    ) else {
        return;
    };
    c.keys(FIELD, meta, &["labels", "annotations"]);
    let field = format!("{FIELD}.annotations");
    let Some(annotations) = c.object(
        &field,
        meta.get("annotations"),
        "a mapping holding dev.gvisor.flag.oci-seccomp: \"true\"",
    ) else {
        return;
    };
    c.equal(
        &format!("{field}.{OCI_SECCOMP_ANNOTATION}"),
        annotations.get(OCI_SECCOMP_ANNOTATION),
        &json!("true"),
    );
    for (key, value) in annotations {
        if key.starts_with(GVISOR_ANNOTATION_PREFIX) && key != OCI_SECCOMP_ANNOTATION {
            c.error(
                &format!("{field}.{key}"),
                Some(value),
                "absent: runsc can read dev.gvisor.* annotations as flag overrides; only \
                 dev.gvisor.flag.oci-seccomp is accepted",
            );
        }
    }
}

fn pod_spec(c: &mut Ctx, path: &str, spec: &Map<String, Value>) {
    c.keys(path, spec, POD_KEYS);
    match spec.get("runtimeClassName") {
        Some(Value::String(s)) if !s.is_empty() => {}
        other => c.error(
            &join(path, "runtimeClassName"),
            other,
            "the name of a gVisor (runsc) RuntimeClass, e.g. \"gvisor\"",
        ),
    }
    c.equal(
        &join(path, "automountServiceAccountToken"),
        spec.get("automountServiceAccountToken"),
        &json!(false),
    );
    c.equal(
        &join(path, "enableServiceLinks"),
        spec.get("enableServiceLinks"),
        &json!(false),
    );
    for key in ["hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"] {
        c.absent_or(&join(path, key), spec.get(key), &json!(false));
    }
    let security_path = join(path, "securityContext");
    let pod_security = match spec.get("securityContext") {
        None => None,
        v => c.object(&security_path, v, "a pod securityContext"),
    };
    if let Some(s) = pod_security {
        c.keys(&security_path, s, POD_SECURITY_KEYS);
    }
    let volumes = volumes(c, &join(path, "volumes"), spec.get("volumes"));
    let containers_path = join(path, "containers");
    match spec.get("containers") {
        Some(Value::Array(list)) if list.len() == 1 => {
            let field = format!("{containers_path}[0]");
            if let Some(container_map) =
                c.object(&field, list.first(), "the agent container (a mapping)")
            {
                container(
                    c,
                    &field,
                    container_map,
                    pod_security,
                    &security_path,
                    &volumes,
                );
            }
        }
        other => c.error(&containers_path, other, "exactly one container, the agent"),
    }
}

/// The names of the pod's volumes, each checked to be a memory-backed,
/// size-limited emptyDir.
fn volumes(c: &mut Ctx, path: &str, v: Option<&Value>) -> Vec<String> {
    let mut names = Vec::new();
    let items = match v {
        None => return names,
        Some(Value::Array(items)) => items,
        other => {
            c.error(path, other, "a list of memory-backed emptyDir volumes");
            return names;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let field = format!("{path}[{i}]");
        let Some(volume) = c.object(
            &field,
            Some(item),
            "{name, emptyDir: {medium: Memory, sizeLimit}}",
        ) else {
            continue;
        };
        c.keys(&field, volume, &["name", "emptyDir"]);
        if let Some(name) = volume.get("name").and_then(Value::as_str) {
            names.push(name.to_string());
        }
        let dir_field = format!("{field}.emptyDir");
        let Some(dir) = c.object(
            &dir_field,
            volume.get("emptyDir"),
            "{medium: Memory, sizeLimit: SIZE} (the only volumes are memory-backed emptyDirs)",
        ) else {
            continue;
        };
        c.keys(&dir_field, dir, &["medium", "sizeLimit"]);
        c.equal(
            &format!("{dir_field}.medium"),
            dir.get("medium"),
            &json!("Memory"),
        );
        let size = dir.get("sizeLimit");
        if size
            .and_then(quantity::milli_units)
            .map_or(true, |m| m <= 0)
        {
            c.error(
                &format!("{dir_field}.sizeLimit"),
                size,
                "a size (e.g. 64Mi): the tmpfs counts against the memory limit, bounded",
            );
        }
    }
    names
}

fn container(
    c: &mut Ctx,
    path: &str,
    ctr: &Map<String, Value>,
    pod_security: Option<&Map<String, Value>>,
    pod_security_path: &str,
    volume_names: &[String],
) {
    c.keys(path, ctr, CONTAINER_KEYS);
    c.equal(&join(path, "name"), ctr.get("name"), &json!(CONTAINER_NAME));
    match ctr.get("image") {
        Some(Value::String(s)) if !s.is_empty() => {}
        other => c.error(&join(path, "image"), other, "the rootfs image reference"),
    }
    c.equal(
        &join(path, "command"),
        ctr.get("command"),
        &json!(agent_args()),
    );
    c.equal(&join(path, "stdin"), ctr.get("stdin"), &json!(true));
    c.absent_or(&join(path, "tty"), ctr.get("tty"), &json!(false));
    resources(c, &join(path, "resources"), ctr.get("resources"));

    let security_path = join(path, "securityContext");
    let security = c.object(
        &security_path,
        ctr.get("securityContext"),
        "a container securityContext",
    );
    if let Some(s) = security {
        c.keys(&security_path, s, CONTAINER_SECURITY_KEYS);
    }
    // A container's value wins over the pod's; the error names the field
    // that decided (or the container's, when neither is set).
    let effective = |c: &mut Ctx, key: &str, want: Value, accepted: &str| {
        let (field, found) = match (
            security.and_then(|s| s.get(key)),
            pod_security.and_then(|s| s.get(key)),
        ) {
            (Some(v), _) => (join(&security_path, key), Some(v)),
            (None, Some(v)) => (join(pod_security_path, key), Some(v)),
            (None, None) => (join(&security_path, key), None),
        };
        if found != Some(&want) {
            c.error(&field, found, accepted);
        }
    };
    let uid = rootfs_builder::SANDBOX_UID;
    let gid = rootfs_builder::SANDBOX_GID;
    effective(c, "runAsNonRoot", json!(true), "true");
    effective(
        c,
        "runAsUser",
        json!(uid),
        &format!("{uid} (the rootfs's sandbox user)"),
    );
    effective(
        c,
        "runAsGroup",
        json!(gid),
        &format!("{gid} (the rootfs's sandbox group)"),
    );
    let Some(s) = security else {
        return;
    };
    c.equal(
        &join(&security_path, "readOnlyRootFilesystem"),
        s.get("readOnlyRootFilesystem"),
        &json!(true),
    );
    c.equal(
        &join(&security_path, "allowPrivilegeEscalation"),
        s.get("allowPrivilegeEscalation"),
        &json!(false),
    );
    c.absent_or(
        &join(&security_path, "privileged"),
        s.get("privileged"),
        &json!(false),
    );
    capabilities(
        c,
        &join(&security_path, "capabilities"),
        s.get("capabilities"),
    );
    let seccomp = match (
        s.get("seccompProfile"),
        pod_security.and_then(|p| p.get("seccompProfile")),
    ) {
        (Some(v), _) => (join(&security_path, "seccompProfile"), Some(v)),
        (None, Some(v)) => (join(pod_security_path, "seccompProfile"), Some(v)),
        (None, None) => (join(&security_path, "seccompProfile"), None),
    };
    seccomp_profile(c, &seccomp.0, seccomp.1);
    volume_mounts(
        c,
        &join(path, "volumeMounts"),
        ctr.get("volumeMounts"),
        volume_names,
    );
}

fn resources(c: &mut Ctx, path: &str, v: Option<&Value>) {
    let Some(r) = c.object(
        path,
        v,
        "{limits: {cpu, memory}, requests: equal to the limits}",
    ) else {
        return;
    };
    c.keys(path, r, &["limits", "requests"]);
    for part in ["limits", "requests"] {
        let field = join(path, part);
        if let Some(m) = c.object(&field, r.get(part), "{cpu, memory}") {
            c.keys(&field, m, &["cpu", "memory", "ephemeral-storage"]);
        }
    }
    for resource in ["memory", "cpu"] {
        let limit = r.get("limits").and_then(|l| l.get(resource));
        let request = r.get("requests").and_then(|l| l.get(resource));
        let limit_value = limit.and_then(quantity::milli_units).filter(|&m| m > 0);
        if limit_value.is_none() {
            c.error(
                &format!("{path}.limits.{resource}"),
                limit,
                "a quantity (the local limit, e.g. 512Mi or 500m)",
            );
        } else if request.and_then(quantity::milli_units) != limit_value {
            c.error(
                &format!("{path}.requests.{resource}"),
                request,
                &format!(
                    "equal to limits.{resource} ({})",
                    limit.unwrap_or(&Value::Null)
                ),
            );
        }
    }
}

fn capabilities(c: &mut Ctx, path: &str, v: Option<&Value>) {
    let Some(caps) = c.object(path, v, "{drop: [ALL]}") else {
        return;
    };
    c.keys(path, caps, &["drop", "add"]);
    let drops_all = caps
        .get("drop")
        .and_then(Value::as_array)
        .is_some_and(|d| d.contains(&json!("ALL")));
    if !drops_all {
        c.error(&join(path, "drop"), caps.get("drop"), "[\"ALL\"]");
    }
    match caps.get("add") {
        None => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        other => c.error(&join(path, "add"), other, "absent or [] (no capability)"),
    }
}

fn seccomp_profile(c: &mut Ctx, path: &str, v: Option<&Value>) {
    let Some(p) = c.object(
        path,
        v,
        "{type: Localhost, localhostProfile: rlm-sandbox/seccomp-<hash>.json}",
    ) else {
        return;
    };
    c.keys(path, p, &["type", "localhostProfile"]);
    c.equal(&join(path, "type"), p.get("type"), &json!("Localhost"));
    match p.get("localhostProfile") {
        Some(Value::String(s))
            if !s.is_empty() && !s.starts_with('/') && !s.split('/').any(|p| p == "..") => {}
        other => c.error(
            &join(path, "localhostProfile"),
            other,
            "the rendered profile's path below the kubelet's seccomp root \
             (rlm-sandbox/seccomp-<hash>.json)",
        ),
    }
}

fn volume_mounts(c: &mut Ctx, path: &str, v: Option<&Value>, volume_names: &[String]) {
    let items = match v {
        None => return,
        Some(Value::Array(items)) => items,
        other => {
            c.error(
                path,
                other,
                "a list of mounts of the pod's emptyDir volumes",
            );
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let field = format!("{path}[{i}]");
        let Some(m) = c.object(&field, Some(item), "{name, mountPath}") else {
            continue;
        };
        c.keys(&field, m, &["name", "mountPath", "readOnly"]);
        let known = m
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| volume_names.iter().any(|v| v == n));
        if !known {
            c.error(
                &format!("{field}.name"),
                m.get("name"),
                &format!(
                    "the name of one of the pod's volumes: {}",
                    volume_names.join(", ")
                ),
            );
        }
    }
}

fn warm_pool(c: &mut Ctx, doc: &Map<String, Value>, templates: &[&str]) {
    let Some(spec) = c.object("spec", doc.get("spec"), "a SandboxWarmPool spec") else {
        return;
    };
    c.keys(
        "spec",
        spec,
        &["replicas", "sandboxTemplateRef", "updateStrategy"],
    );
    if let Some(r) = spec.get("replicas") {
        if !r.as_u64().is_some_and(|n| n <= u64::from(i32::MAX as u32)) {
            c.error("spec.replicas", Some(r), "a whole number, 0 or more");
        }
    }
    let name = spec.get("sandboxTemplateRef").and_then(|r| r.get("name"));
    let known = name
        .and_then(Value::as_str)
        .is_some_and(|n| templates.contains(&n));
    if !known {
        c.error(
            "spec.sandboxTemplateRef.name",
            name,
            &format!(
                "the name of a SandboxTemplate in the set, checked with it: {}",
                templates.join(", ")
            ),
        );
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
