//! Tests of `render`: golden files, the mapping of each local setting,
//! and the network policy that cannot be omitted.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::bundle::seccomp::default_profile;
use crate::config::{Key, Layers, Preset, Source};

/// Fixed options, so the golden files do not follow the rootfs content id.
fn options() -> RenderOptions {
    RenderOptions {
        name: "rlm-sandbox".into(),
        namespace: Some("rlm".into()),
        pool_size: 3,
        image: "localhost/rlm-sandbox-rootfs:0123456789abcdef".into(),
        runtime_class: "gvisor".into(),
    }
}

/// The Config of `settings` (flag layer), as the CLI resolves it.
fn config(settings: &[(Key, &str)]) -> Config {
    let mut layers = Layers::default();
    for (key, value) in settings {
        layers.set(*key, value.to_string(), Source::Flag);
    }
    layers.resolve().expect("valid settings")
}

fn rendered(settings: &[(Key, &str)], options: &RenderOptions) -> Rendered {
    render(&config(settings), &default_profile(), options).expect("renders")
}

fn pod(r: &Rendered) -> Value {
    r.objects()[0]["spec"]["podTemplate"]["spec"].clone()
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s/golden")
        .join(name)
}

/// Fails when the rendering drifts from the checked-in files. After an
/// intended change: `RLM_UPDATE_GOLDEN=1 cargo test golden`, then review
/// the diff (refused under CI=true, like the config.json golden files).
#[test]
fn golden_manifests_match() {
    let update = crate::bundle::spec::tests::golden_update(
        std::env::var_os("RLM_UPDATE_GOLDEN").as_deref(),
        std::env::var_os("CI").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for preset in [Preset::Standard, Preset::Development] {
        let r = rendered(&[(Key::Preset, preset.name())], &options());
        let mut json_text = serde_json::to_string_pretty(&r.json()).expect("json");
        json_text.push('\n');
        for (path, actual) in [
            (golden_path(&format!("{}.yaml", preset.name())), r.yaml()),
            (golden_path(&format!("{}.json", preset.name())), json_text),
        ] {
            crate::bundle::spec::tests::check_golden(&path, &actual, update, "k8s::render");
        }
    }
}

#[test]
fn the_yaml_stream_is_the_json_objects() {
    let r = rendered(&[], &options());
    let read = crate::k8s::yaml::parse_stream(&r.yaml()).expect("parses");
    assert_eq!(read, r.objects());
}

#[test]
fn the_pod_carries_the_local_policy() {
    let r = rendered(&[], &options());
    let objects = r.objects();
    let template = &objects[0];
    assert_eq!(template["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");
    assert_eq!(template["kind"], "SandboxTemplate");
    assert_eq!(
        template["spec"]["podTemplate"]["metadata"]["annotations"]["dev.gvisor.flag.oci-seccomp"],
        "true"
    );
    let pod = pod(&r);
    assert_eq!(pod["runtimeClassName"], "gvisor");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);
    let ctr = &pod["containers"][0];
    assert_eq!(ctr["command"], json!(crate::bundle::spec::agent_args()));
    assert!(ctr.get("env").is_none() && ctr.get("ports").is_none() && ctr.get("args").is_none());
    assert_eq!(ctr["stdin"], true);
    let sc = &ctr["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], rootfs_builder::SANDBOX_UID);
    assert_eq!(sc["runAsGroup"], rootfs_builder::SANDBOX_GID);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"]["type"], "Localhost");
    assert_eq!(
        sc["seccompProfile"]["localhostProfile"],
        r.seccomp.localhost_profile
    );
    // Standard preset: 512 MiB, 1 cpu, 64 MiB /tmp, limits = requests.
    assert_eq!(
        ctr["resources"]["limits"],
        json!({"cpu": "1", "memory": "512Mi"})
    );
    assert_eq!(ctr["resources"]["requests"], ctr["resources"]["limits"]);
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "dev-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ])
    );
    let pool = &objects[1];
    assert_eq!(pool["kind"], "SandboxWarmPool");
    assert_eq!(
        pool["spec"],
        json!({"replicas": 3, "sandboxTemplateRef": {"name": "rlm-sandbox"}})
    );
    assert_eq!(pool["metadata"]["namespace"], "rlm");
}

/// Each local setting moves the manifest, and only where it should: the
/// same render with one setting changed differs exactly there.
#[test]
fn changing_a_local_setting_changes_the_manifest() {
    let base = rendered(&[], &options());
    let base_pod = pod(&base);
    let limit =
        |r: &Rendered, what: &str| pod(r)["containers"][0]["resources"]["limits"][what].clone();
    let request =
        |r: &Rendered, what: &str| pod(r)["containers"][0]["resources"]["requests"][what].clone();

    let memory = rendered(&[(Key::MemoryLimit, "1g")], &options());
    assert_eq!(limit(&memory, "memory"), "1Gi");
    assert_eq!(request(&memory, "memory"), "1Gi");
    let odd = rendered(&[(Key::MemoryLimit, "123456789")], &options());
    assert_eq!(
        limit(&odd, "memory"),
        "123456789",
        "the same bytes, not rounded"
    );
    assert_eq!(limit(&memory, "cpu"), limit(&base, "cpu"));

    let cpus = rendered(&[(Key::CpuLimit, "0.25")], &options());
    assert_eq!(limit(&cpus, "cpu"), "250m");
    assert_eq!(request(&cpus, "cpu"), "250m");
    assert_eq!(limit(&cpus, "memory"), limit(&base, "memory"));

    let tmp = rendered(&[(Key::TmpSize, "100m")], &options());
    assert_eq!(pod(&tmp)["volumes"][0]["emptyDir"]["sizeLimit"], "100Mi");

    let class = rendered(
        &[],
        &RenderOptions {
            runtime_class: "gvisor-systrap".into(),
            ..options()
        },
    );
    assert_eq!(pod(&class)["runtimeClassName"], "gvisor-systrap");
    let mut unchanged = pod(&class);
    unchanged["runtimeClassName"] = base_pod["runtimeClassName"].clone();
    assert_eq!(unchanged, base_pod, "only the runtime class moved");

    let pool = rendered(
        &[],
        &RenderOptions {
            pool_size: 40,
            ..options()
        },
    );
    assert_eq!(pool.objects()[1]["spec"]["replicas"], 40);
    assert_eq!(
        pool.objects()[0],
        base.objects()[0],
        "the template does not move"
    );

    let pids = rendered(&[(Key::PidsLimit, "99")], &options());
    assert_eq!(pids.objects(), base.objects(), "a pod has no pids field");
    let warning = pids
        .warnings
        .iter()
        .find(|w| w.id == "pids")
        .expect("pids warning");
    assert!(
        warning.node.contains("podPidsLimit") && warning.node.contains("227"),
        "{warning:?}"
    );
}

/// Whatever the configuration and options, the template denies all
/// egress and ingress: the policy is a type with nothing to configure.
#[test]
fn the_network_policy_always_denies_everything() {
    let settings: &[&[(Key, &str)]] = &[
        &[],
        &[(Key::Preset, "maximum")],
        &[(Key::Preset, "development")],
        &[(Key::Runtime, "runc")],
        &[(Key::MemoryLimit, "4g"), (Key::CpuLimit, "8")],
    ];
    for s in settings {
        for o in [
            options(),
            RenderOptions {
                namespace: None,
                pool_size: 0,
                ..options()
            },
        ] {
            let r = rendered(s, &o);
            let spec = &r.objects()[0]["spec"];
            assert_eq!(
                spec["networkPolicy"],
                json!({"egress": [], "ingress": []}),
                "{s:?}"
            );
            assert_eq!(spec["networkPolicyManagement"], "Managed");
            assert_eq!(spec["envVarsInjectionPolicy"], "Disallowed");
        }
    }
    // A configuration that asks for the network is refused, not rendered
    // without it.
    let err = render(
        &config(&[(Key::NetworkEnabled, "true")]),
        &default_profile(),
        &options(),
    )
    .expect_err("network enabled");
    assert!(err.to_string().contains("denies all egress"), "{err}");
}

#[test]
fn what_cannot_be_rendered_is_refused_with_the_accepted_form() {
    let local = render(
        &config(&[(Key::ExecutionMode, "local")]),
        &default_profile(),
        &options(),
    );
    assert!(local.expect_err("local").to_string().contains("oci"));
    for (o, what) in [
        (
            RenderOptions {
                name: "Bad_Name".into(),
                ..options()
            },
            "name",
        ),
        (
            RenderOptions {
                namespace: Some("-x".into()),
                ..options()
            },
            "namespace",
        ),
        (
            RenderOptions {
                runtime_class: String::new(),
                ..options()
            },
            "runtime class",
        ),
        (
            RenderOptions {
                image: "a b".into(),
                ..options()
            },
            "image",
        ),
        (
            RenderOptions {
                pool_size: 1_000_000,
                ..options()
            },
            "pool size",
        ),
    ] {
        let err = render(&config(&[]), &default_profile(), &o)
            .expect_err(what)
            .to_string();
        assert!(err.contains(what) && err.contains("expected"), "{err}");
    }
}

#[test]
fn warnings_name_the_node_settings() {
    let r = rendered(&[], &options());
    let ids: Vec<&str> = r.warnings.iter().map(|w| w.id).collect();
    assert_eq!(
        ids,
        [
            "pids",
            "rlimits",
            "swap",
            "runtime",
            "seccomp-annotations",
            "seccomp-profile"
        ]
    );
    let text: Vec<String> = r.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        text[4].contains("pod_annotations = [\"dev.gvisor.*\"]"),
        "{}",
        text[4]
    );
    assert!(text[5].contains(&r.seccomp.node_path()), "{}", text[5]);
    let runc = rendered(
        &[
            (Key::Runtime, "runc"),
            (Key::RunscFlags, "--platform=systrap"),
        ],
        &options(),
    );
    let ids: Vec<&str> = runc.warnings.iter().map(|w| w.id).collect();
    assert!(
        ids.contains(&"runtime-choice") && ids.contains(&"runsc-flags"),
        "{ids:?}"
    );
    assert_eq!(r.json()["warnings"].as_array().map(Vec::len), Some(6));
}

/// The rendered set passes `k8s check` (the negative controls of
/// check_tests.rs start from it).
#[test]
fn the_rendered_set_passes_the_check() {
    for settings in [&[][..], &[(Key::Preset, "development")][..]] {
        let report = crate::k8s::check::check(&rendered(settings, &options()).objects());
        assert!(report.ok, "{:#?}", report.errors);
    }
}
