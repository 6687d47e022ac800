//! `k8s check` on hand-edits of a rendered set: each edit is an error
//! naming its field and the accepted value; the unedited set (the control)
//! passes.

use serde_json::{json, Value};

use super::*;
use crate::bundle::seccomp::default_profile;
use crate::config::Config;
use crate::k8s::render::{render, RenderOptions};

fn rendered() -> Vec<Value> {
    let options = RenderOptions {
        name: "rlm-sandbox".into(),
        namespace: None,
        pool_size: 2,
        image: "localhost/rlm-sandbox-rootfs:0123456789abcdef".into(),
        runtime_class: "gvisor".into(),
    };
    render(&Config::default(), &default_profile(), &options)
        .expect("renders")
        .objects()
}

const POD: &str = "/0/spec/podTemplate/spec";
const CTR: &str = "/0/spec/podTemplate/spec/containers/0";

/// An edit: set (Some) or remove (None) the value at a JSON pointer into
/// the set `[template, pool]`.
fn edited(pointer: &str, value: Option<Value>) -> Vec<Value> {
    let mut set = Value::Array(rendered());
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = set
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{pointer}: no parent"));
    match (parent, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(key.replace("~1", "/"), v);
        }
        (Value::Object(m), None) => {
            assert!(
                m.remove(&key.replace("~1", "/")).is_some(),
                "{pointer}: nothing to remove"
            );
        }
        (Value::Array(a), Some(v)) => {
            let i: usize = key.parse().expect("index");
            if i == a.len() {
                a.push(v);
            } else {
                a[i] = v;
            }
        }
        (other, _) => panic!("{pointer}: cannot edit {other}"),
    }
    match set {
        Value::Array(objects) => objects,
        _ => unreachable!(),
    }
}

#[test]
fn the_unedited_set_passes() {
    let report = check(&rendered());
    assert!(report.ok, "{:#?}", report.errors);
    assert_eq!(report.objects.len(), 2);
}

/// Each bad hand-edit fails, naming the field and the accepted value.
#[test]
fn each_bad_hand_edit_is_an_error_naming_the_field() {
    let cases: Vec<(String, Option<Value>, &str, &str)> = vec![
        // (pointer, new value or removal, field named, accepted contains)
        (
            "/0/spec/networkPolicy".to_string(),
            None,
            "spec.networkPolicy",
            "egress: []",
        ),
        (
            "/0/spec/networkPolicy/egress".to_string(),
            Some(json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])),
            "spec.networkPolicy.egress",
            "[]",
        ),
        (
            "/0/spec/networkPolicy/egress".to_string(),
            None,
            "spec.networkPolicy.egress",
            "[]",
        ),
        (
            "/0/spec/networkPolicy/ingress".to_string(),
            Some(json!([{}])),
            "spec.networkPolicy.ingress",
            "absent or []",
        ),
        (
            "/0/spec/networkPolicyManagement".to_string(),
            Some(json!("Unmanaged")),
            "spec.networkPolicyManagement",
            "Managed",
        ),
        (
            "/0/spec/envVarsInjectionPolicy".to_string(),
            Some(json!("Allowed")),
            "spec.envVarsInjectionPolicy",
            "Disallowed",
        ),
        (
            "/0/spec/podTemplate/metadata/annotations/dev.gvisor.flag.oci-seccomp".to_string(),
            None,
            "spec.podTemplate.metadata.annotations.dev.gvisor.flag.oci-seccomp",
            "\"true\"",
        ),
        (
            "/0/spec/podTemplate/metadata/annotations/dev.gvisor.flag.network".to_string(),
            Some(json!("host")),
            "spec.podTemplate.metadata.annotations.dev.gvisor.flag.network",
            "only dev.gvisor.flag.oci-seccomp",
        ),
        (
            format!("{POD}/runtimeClassName"),
            None,
            "spec.podTemplate.spec.runtimeClassName",
            "gVisor",
        ),
        (
            format!("{POD}/automountServiceAccountToken"),
            Some(json!(true)),
            "spec.podTemplate.spec.automountServiceAccountToken",
            "false",
        ),
        (
            format!("{POD}/automountServiceAccountToken"),
            None,
            "spec.podTemplate.spec.automountServiceAccountToken",
            "false",
        ),
        (
            format!("{POD}/enableServiceLinks"),
            None,
            "spec.podTemplate.spec.enableServiceLinks",
            "false",
        ),
        (
            format!("{POD}/hostNetwork"),
            Some(json!(true)),
            "spec.podTemplate.spec.hostNetwork",
            "absent or false",
        ),
        (
            format!("{POD}/serviceAccountName"),
            Some(json!("admin")),
            "spec.podTemplate.spec.serviceAccountName",
            "no service account",
        ),
        (
            format!("{POD}/volumes/2"),
            Some(json!({"name": "token", "projected": {"sources": []}})),
            "spec.podTemplate.spec.volumes[2].projected",
            "memory-backed emptyDirs",
        ),
        (
            format!("{POD}/volumes/0/emptyDir/medium"),
            None,
            "spec.podTemplate.spec.volumes[0].emptyDir.medium",
            "Memory",
        ),
        (
            format!("{POD}/volumes/0/emptyDir/sizeLimit"),
            None,
            "spec.podTemplate.spec.volumes[0].emptyDir.sizeLimit",
            "a size",
        ),
        (
            format!("{POD}/initContainers"),
            Some(json!([{"name": "x", "image": "busybox"}])),
            "spec.podTemplate.spec.initContainers",
            "one container",
        ),
        (
            format!("{POD}/containers/1"),
            Some(json!({"name": "sidecar", "image": "busybox"})),
            "spec.podTemplate.spec.containers",
            "exactly one container",
        ),
        (
            format!("{CTR}/env"),
            Some(json!([{"name": "OPENAI_API_KEY", "value": "sk-x"}])),
            "spec.podTemplate.spec.containers[0].env",
            "no environment variable",
        ),
        (
            format!("{CTR}/envFrom"),
            Some(json!([{"secretRef": {"name": "keys"}}])),
            "spec.podTemplate.spec.containers[0].envFrom",
            "no environment variable",
        ),
        (
            format!("{CTR}/ports"),
            Some(json!([{"containerPort": 8080}])),
            "spec.podTemplate.spec.containers[0].ports",
            "listens on nothing",
        ),
        (
            format!("{CTR}/command"),
            Some(json!(["/bin/sh", "-c", "sleep 1d"])),
            "spec.podTemplate.spec.containers[0].command",
            "_rlm_agent",
        ),
        (
            format!("{CTR}/stdin"),
            None,
            "spec.podTemplate.spec.containers[0].stdin",
            "true",
        ),
        (
            format!("{CTR}/resources/requests/memory"),
            Some(json!("256Mi")),
            "spec.podTemplate.spec.containers[0].resources.requests.memory",
            "equal to limits.memory",
        ),
        (
            format!("{CTR}/resources/limits/cpu"),
            None,
            "spec.podTemplate.spec.containers[0].resources.limits.cpu",
            "a quantity",
        ),
        (
            format!("{CTR}/securityContext/readOnlyRootFilesystem"),
            Some(json!(false)),
            "spec.podTemplate.spec.containers[0].securityContext.readOnlyRootFilesystem",
            "true",
        ),
        (
            format!("{CTR}/securityContext/allowPrivilegeEscalation"),
            None,
            "spec.podTemplate.spec.containers[0].securityContext.allowPrivilegeEscalation",
            "false",
        ),
        (
            format!("{CTR}/securityContext/privileged"),
            Some(json!(true)),
            "spec.podTemplate.spec.containers[0].securityContext.privileged",
            "absent or false",
        ),
        (
            format!("{CTR}/securityContext/capabilities"),
            Some(json!({"drop": ["ALL"], "add": ["SYS_ADMIN"]})),
            "spec.podTemplate.spec.containers[0].securityContext.capabilities.add",
            "no capability",
        ),
        (
            format!("{CTR}/securityContext/capabilities"),
            Some(json!({"drop": ["NET_RAW"]})),
            "spec.podTemplate.spec.containers[0].securityContext.capabilities.drop",
            "ALL",
        ),
        (
            format!("{CTR}/securityContext/runAsUser"),
            Some(json!(0)),
            "spec.podTemplate.spec.containers[0].securityContext.runAsUser",
            "65432",
        ),
        (
            format!("{CTR}/securityContext/runAsNonRoot"),
            Some(json!(false)),
            "spec.podTemplate.spec.containers[0].securityContext.runAsNonRoot",
            "true",
        ),
        (
            format!("{CTR}/securityContext/seccompProfile"),
            Some(json!({"type": "Unconfined"})),
            "spec.podTemplate.spec.containers[0].securityContext.seccompProfile.type",
            "Localhost",
        ),
        (
            format!("{CTR}/securityContext/procMount"),
            Some(json!("Unmasked")),
            "spec.podTemplate.spec.containers[0].securityContext.procMount",
            "runtime's defaults",
        ),
        (
            format!("{CTR}/volumeMounts/2"),
            Some(json!({"name": "host", "mountPath": "/host"})),
            "spec.podTemplate.spec.containers[0].volumeMounts[2].name",
            "tmp, dev-shm",
        ),
        (
            "/0/apiVersion".to_string(),
            Some(json!("extensions.agents.x-k8s.io/v1alpha1")),
            "apiVersion",
            "v1beta1",
        ),
        (
            "/1/spec/sandboxTemplateRef/name".to_string(),
            Some(json!("other")),
            "spec.sandboxTemplateRef.name",
            "rlm-sandbox",
        ),
        (
            "/1/kind".to_string(),
            Some(json!("NetworkPolicy")),
            "kind",
            "SandboxTemplate or SandboxWarmPool",
        ),
    ];
    for (pointer, value, field, accepted) in cases {
        let report = check(&edited(&pointer, value.clone()));
        assert!(!report.ok, "{pointer} = {value:?} passed the check");
        let hit = report.errors.iter().find(|e| e.field == field);
        let hit = hit.unwrap_or_else(|| {
            panic!(
                "{pointer} = {value:?}: no error names {field}: {:#?}",
                report.errors
            )
        });
        assert!(
            hit.accepted.contains(accepted),
            "{pointer}: accepted {:?} lacks {accepted:?}",
            hit.accepted
        );
    }
}

/// A pod-level setting stands when the container does not override it,
/// and the container's wins: the check follows the value the kubelet uses.
#[test]
fn the_effective_security_setting_is_checked() {
    let mut set = edited(&format!("{CTR}/securityContext/runAsUser"), None);
    assert!(check(&set).ok, "the pod's runAsUser (65432) applies");
    set[0]["spec"]["podTemplate"]["spec"]["securityContext"]["runAsUser"] = json!(0);
    let report = check(&set);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.field == "spec.podTemplate.spec.securityContext.runAsUser"),
        "{:#?}",
        report.errors
    );
}

#[test]
fn equal_quantities_in_other_spellings_pass() {
    let set = edited(
        &format!("{CTR}/resources/requests/memory"),
        Some(json!("536870912")),
    );
    assert!(check(&set).ok, "{:#?}", check(&set).errors);
}

#[test]
fn a_set_without_a_template_fails() {
    let pool_only = vec![rendered().remove(1)];
    let report = check(&pool_only);
    assert!(
        report.errors.iter().any(|e| e.field == "(the set)"),
        "{:#?}",
        report.errors
    );
}

#[test]
fn lists_and_the_render_json_are_read_as_their_objects() {
    let objects = rendered();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    assert_eq!(objects_of(vec![list]), objects);
    let report = json!({"objects": objects, "warnings": []});
    assert_eq!(objects_of(vec![report]), objects);
}
