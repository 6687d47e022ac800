//! `rlm-sandbox gc --k8s` end to end without a cluster: a stand-in
//! kubectl (a shell script) serves a claim list and records what it is
//! asked to delete. The list is tests/fixtures/k8s/claims/list.json with
//! two claims made this host's: one by this test process (alive: kept),
//! one by a process that has ended (deleted); the other host's claims are
//! deleted only past `--older-than`, and `--dry-run` deletes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rlm_sandbox::k8s::claim::{boot_id, host_name, label_value, start_time, CLAIMS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rlm-sandbox");

/// A kubectl that prints `list.json` for `get` and appends each `delete`'s
/// arguments to `deleted.txt`, in `dir`.
fn fake_kubectl(dir: &Path, list: &Value) -> PathBuf {
    std::fs::write(dir.join("list.json"), list.to_string()).expect("write list");
    let script = dir.join("kubectl");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get) cat '{d}/list.json' ;;\n  \
             delete) echo \"$*\" >> '{d}/deleted.txt' ;;\n  *) exit 2 ;;\nesac\n"
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

/// The fixture with claims a1 (by this process) and a2 (by an ended one)
/// made on this host.
fn list() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s/claims/list.json");
    let mut list: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let me = std::process::id();
    let mut child = Command::new("true").spawn().expect("spawn true");
    let gone = child.id();
    child.wait().expect("wait");
    for (i, pid) in [(0, me), (1, gone)] {
        let labels = &mut list["items"][i]["metadata"]["labels"];
        labels["rlm-sandbox/host"] = label_value(&host_name()).into();
        labels["rlm-sandbox/boot-id"] = label_value(&boot_id()).into();
        labels["rlm-sandbox/pid"] = pid.to_string().into();
        labels["rlm-sandbox/pid-start"] = start_time(me).expect("own start").to_string().into();
    }
    // The rest belong to other hosts.
    for item in list["items"]
        .as_array_mut()
        .expect("items")
        .iter_mut()
        .skip(2)
    {
        if item["metadata"]["labels"].get("rlm-sandbox/host").is_some() {
            item["metadata"]["labels"]["rlm-sandbox/host"] = "elsewhere".into();
        }
    }
    list
}

fn gc(kubectl: &Path, extra: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["gc", "--k8s", "--json", "--kubectl"])
        .arg(kubectl)
        .args(extra)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "gc --k8s failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn deleted(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("deleted.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn outcome<'a>(report: &'a Value, name: &str) -> &'a str {
    report["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["outcome"].as_str())
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

#[test]
fn the_claim_of_an_ended_orchestrator_is_deleted_and_a_live_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubectl = fake_kubectl(dir.path(), &list());

    let report = gc(&kubectl, &["--dry-run"]);
    assert_eq!(outcome(&report, "rlm-00000000000000a1"), "kept");
    assert_eq!(outcome(&report, "rlm-00000000000000a2"), "would delete");
    assert!(deleted(dir.path()).is_empty(), "--dry-run deleted");
    let list: Vec<&str> = report["list"]
        .as_array()
        .expect("list")
        .iter()
        .skip(1)
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        list,
        [
            "get",
            CLAIMS,
            "--all-namespaces",
            "-l",
            "created-by=rlm-sandbox",
            "-o",
            "json"
        ]
    );

    let report = gc(&kubectl, &[]);
    assert_eq!(outcome(&report, "rlm-00000000000000a2"), "deleted");
    assert_eq!(outcome(&report, "rlm-00000000000000b1"), "kept");
    assert_eq!(
        deleted(dir.path()),
        [format!(
            "delete -n rlm {CLAIMS}/rlm-00000000000000a2 --ignore-not-found --wait=false"
        )]
    );

    // Another host's claim goes only past --older-than (b1 was made on
    // 2026-12-06, b2 a day later).
    std::fs::remove_file(dir.path().join("deleted.txt")).expect("rm");
    let report = gc(
        &kubectl,
        &["--older-than", "100000d", "--namespace", "batch"],
    );
    assert_eq!(outcome(&report, "rlm-00000000000000b1"), "kept");
    let report = gc(&kubectl, &["--older-than", "1s", "--namespace", "batch"]);
    assert_eq!(outcome(&report, "rlm-00000000000000b1"), "deleted");
    assert!(deleted(dir.path()).iter().any(|l| l.contains("-n batch")));
}

#[test]
fn a_failing_kubectl_is_an_error_naming_its_command() {
    let out = Command::new(BIN)
        .args(["gc", "--k8s", "--kubectl", "/bin/false"])
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/bin/false get"), "{err}");
}
