//! Tests of the claim plan (golden files, names read back, quoting) and
//! of its runner against a fake kubectl that records what it is asked.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::json;

use super::*;
use crate::k8s::claim_run;

fn options() -> ClaimOptions {
    ClaimOptions {
        pool: "rlm-sandbox".into(),
        namespace: Some("rlm".into()),
        kubectl: "kubectl".into(),
        host: "Orchestrator_1.example".into(),
        pid: 4242,
        pid_start: 123_456,
        boot_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
        claim_id: "0123456789abcdef".into(),
        wait_seconds: DEFAULT_WAIT_SECONDS,
    }
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s/golden")
        .join(name)
}

/// Fails when the plan drifts from the checked-in files. After an
/// intended change: `RLM_UPDATE_GOLDEN=1 cargo test golden`, then review
/// the diff (refused under CI=true).
#[test]
fn golden_claim_plan_matches() {
    let update = crate::bundle::spec::tests::golden_update(
        std::env::var_os("RLM_UPDATE_GOLDEN").as_deref(),
        std::env::var_os("CI").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = plan(&options()).expect("plan");
    let mut json_text = serde_json::to_string_pretty(&p.json()).expect("json");
    json_text.push('\n');
    for (path, actual) in [
        (golden_path("claim.txt"), p.text()),
        (golden_path("claim.json"), json_text),
    ] {
        crate::bundle::spec::tests::check_golden(&path, &actual, update, "k8s::claim");
    }
}

#[test]
fn the_claim_names_the_pool_and_this_orchestrator() {
    let p = plan(&options()).expect("plan");
    assert_eq!(
        p.claim["spec"],
        json!({"warmPoolRef": {"name": "rlm-sandbox"}})
    );
    assert_eq!(p.claim["metadata"]["namespace"], "rlm");
    let labels = &p.claim["metadata"]["labels"];
    assert_eq!(labels["created-by"], "rlm-sandbox");
    assert_eq!(labels[HOST_LABEL], "orchestrator-1.example");
    assert_eq!(labels[PID_LABEL], "4242");
    assert_eq!(p.name, "rlm-0123456789abcdef");
    // The YAML text is the claim (comments aside) for `kubectl create -f -`.
    let docs = crate::k8s::yaml::parse_stream(&p.text()).expect("YAML");
    assert_eq!(docs, vec![p.claim.clone()]);
    // create's stdin is the claim.
    let stdin = p.step("create").stdin.clone().expect("stdin");
    assert_eq!(
        serde_json::from_str::<Value>(&stdin).expect("JSON"),
        p.claim
    );
    // Without a namespace: none in the object or the commands, and the
    // leftovers are looked for in every namespace.
    let p = plan(&ClaimOptions {
        namespace: None,
        ..options()
    })
    .expect("plan");
    assert!(p.claim["metadata"].get("namespace").is_none());
    assert!(p.steps.iter().all(|s| !s.argv.contains(&"-n".to_string())));
    assert!(p.leftovers.contains(&"--all-namespaces".to_string()));
}

#[test]
fn bad_options_are_refused_with_the_form() {
    for (o, what) in [
        (
            ClaimOptions {
                pool: "Pool_1".into(),
                ..options()
            },
            "warm pool",
        ),
        (
            ClaimOptions {
                namespace: Some("a b".into()),
                ..options()
            },
            "namespace",
        ),
        (
            ClaimOptions {
                claim_id: "xyz".into(),
                ..options()
            },
            "claim id",
        ),
        (
            ClaimOptions {
                kubectl: String::new(),
                ..options()
            },
            "kubectl",
        ),
    ] {
        let err = plan(&o).expect_err(what);
        assert_eq!(err.what, what);
        assert!(err.to_string().contains("expected"), "{err}");
    }
}

#[test]
fn names_read_back_from_the_cluster_are_strict() {
    assert_eq!(
        resource_name("x", "pool-abc12\n").as_deref(),
        Ok("pool-abc12")
    );
    assert_eq!(resource_name("x", "a.b-c").as_deref(), Ok("a.b-c"));
    for bad in [
        "",
        "Pod",
        "a;rm -rf /",
        "a b",
        "-a",
        "a..b",
        &"a".repeat(254),
    ] {
        assert!(resource_name("x", bad).is_err(), "{bad:?} was taken");
    }
}

#[test]
fn label_values_are_valid() {
    assert_eq!(label_value("Host_Name.local"), "host-name.local");
    assert_eq!(label_value("__"), "unknown");
    assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    assert_eq!(label_value("-x-"), "x");
}

#[test]
fn shell_words_survive_a_shell() {
    let words: Vec<String> = ["a b", "it's", "$HOME", "", "plain-1.2=x", "{pod}", "`id`"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &format!("printf '%s\\n' {}", shell_words(&words))])
        .output()
        .expect("sh");
    let back: Vec<String> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(back, words);
}

/// A kubectl that logs each call's argv (and create's stdin) and answers
/// as a controller would: the claim bound Sandbox `sb-1`, whose adopted
/// pod is `pool-pod-7`; `wait` fails when FAIL_WAIT exists.
fn fake_kubectl(dir: &Path) -> String {
    let path = dir.join("kubectl");
    let script = format!(
        r#"#!/bin/sh
d={dir}
echo "$*" >> $d/log
case "$1" in
  create) cat > $d/created; echo sandboxclaim.extensions.agents.x-k8s.io/x ;;
  wait) [ -e $d/FAIL_WAIT ] && {{ echo 'error: timed out waiting for the condition' >&2; exit 1; }}; echo ok ;;
  get) case "$*" in *sandboxclaims*) printf sb-1 ;; *) printf pool-pod-7 ;; esac ;;
  delete) echo deleted ;;
esac
"#,
        dir = dir.display()
    );
    std::fs::write(&path, script).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_string_lossy().into_owned()
}

fn log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_runner_runs_the_plan_and_deletes_the_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubectl = fake_kubectl(dir.path());
    let p = plan(&ClaimOptions {
        kubectl,
        ..options()
    })
    .expect("plan");
    let mut lines = Vec::new();
    let claimed = claim_run::claim(&p, &AtomicBool::new(false), &mut |l| {
        lines.push(l.to_string())
    })
    .expect("claimed");
    assert_eq!(claimed.pod, "pool-pod-7");
    let agent = substitute(&p.step("agent").argv, POD_PLACEHOLDER, "pool-pod-7");
    assert_eq!(claimed.agent_command, shell_words(&agent));
    assert!(claimed
        .agent_command
        .contains(" exec -n rlm -i pool-pod-7 -c agent -- "));
    let created: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("created")).expect("created"),
    )
    .expect("JSON");
    assert_eq!(created, p.claim);
    assert_eq!(log(dir.path()), ["create", "wait", "get", "get"]);
    drop(claimed);
    assert_eq!(log(dir.path()), ["create", "wait", "get", "get", "delete"]);
    let logged = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(
        logged.contains("sandboxes.agents.x-k8s.io/sb-1"),
        "{logged}"
    );
}

#[test]
fn a_failed_wait_deletes_the_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubectl = fake_kubectl(dir.path());
    std::fs::write(dir.path().join("FAIL_WAIT"), "").expect("flag");
    let p = plan(&ClaimOptions {
        kubectl,
        ..options()
    })
    .expect("plan");
    let err = claim_run::claim(&p, &AtomicBool::new(false), &mut |_| {})
        .err()
        .expect("the wait failed");
    assert!(err.contains("timed out waiting"), "{err}");
    assert_eq!(log(dir.path()), ["create", "wait", "delete"]);
}

#[test]
fn a_signal_before_the_claim_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubectl = fake_kubectl(dir.path());
    let p = plan(&ClaimOptions {
        kubectl,
        ..options()
    })
    .expect("plan");
    let err = claim_run::claim(&p, &AtomicBool::new(true), &mut |_| {})
        .err()
        .expect("interrupted");
    assert!(err.contains("interrupted"), "{err}");
    assert!(log(dir.path()).is_empty());
}
