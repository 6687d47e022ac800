use super::*;
use std::path::Path;

/// tests/fixtures/k8s/claims/list.json: SandboxClaims in the shape the
/// API server returns (validated against the CRD by
/// tests/k8s/test_claim_schema.py). On host `orch-1` pid 100 is live with
/// start time 5000; pid 101 is gone.
fn items() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s/claims/list.json");
    parse_list(&std::fs::read_to_string(path).expect("fixture")).expect("list")
}

const BOOT: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn start_of(pid: u32) -> Option<u64> {
    (pid == 100).then_some(5000)
}

fn local(older_than: Option<u64>) -> Local<'static> {
    Local {
        host: "orch-1".into(),
        boot_id: BOOT.into(),
        start_of: &start_of,
        now: parse_timestamp("2026-12-07T06:00:00Z").expect("time"),
        older_than,
    }
}

fn deleted(verdicts: &[Verdict]) -> Vec<&str> {
    verdicts
        .iter()
        .filter(|v| v.delete)
        .map(|v| v.name.as_str())
        .collect()
}

#[test]
fn claims_whose_orchestrator_on_this_host_is_gone_are_deleted() {
    let v = select(&items(), &local(None));
    // Not ours: not even listed.
    assert!(v.iter().all(|v| v.name != "someone-else"));
    assert_eq!(v.len(), 7);
    assert_eq!(
        deleted(&v),
        [
            "rlm-00000000000000a2", // pid 101 is gone
            "rlm-00000000000000a3", // pid 100 started at another time
            "rlm-00000000000000a4", // another boot
        ]
    );
    let why = |name: &str| {
        v.iter()
            .find(|v| v.name == name)
            .expect("verdict")
            .why
            .clone()
    };
    assert!(why("rlm-00000000000000a1").contains("is running"));
    assert!(why("rlm-00000000000000a3").contains("another process"));
    assert!(why("rlm-00000000000000a5").contains("no readable start time"));
    assert!(why("rlm-00000000000000b1").contains("--older-than"));
}

#[test]
fn another_hosts_claims_go_only_past_the_age_bound() {
    let day = 86_400;
    let v = select(&items(), &local(Some(day)));
    // b1 is 25 hours old, b2 a minute.
    assert_eq!(
        deleted(&v),
        [
            "rlm-00000000000000a2",
            "rlm-00000000000000a3",
            "rlm-00000000000000a4",
            "rlm-00000000000000b1"
        ]
    );
    let v = select(&items(), &local(Some(30)));
    assert!(deleted(&v).contains(&"rlm-00000000000000b2"));
    let v = select(&items(), &local(Some(25 * 3600 + 1)));
    assert!(!deleted(&v).contains(&"rlm-00000000000000b1"));
}

#[test]
fn a_live_orchestrator_keeps_all_its_claims() {
    // Control: with pid 101 live at its labelled start, its claim (a2)
    // stays; the reused pid's and the other boot's still go.
    let both = |pid: u32| (pid == 100 || pid == 101).then_some(5000);
    let l = Local {
        start_of: &both,
        ..local(None)
    };
    assert_eq!(
        deleted(&select(&items(), &l)),
        ["rlm-00000000000000a3", "rlm-00000000000000a4"]
    );
}

#[test]
fn hostile_names_and_labels_are_kept_not_run() {
    let mut list = items();
    list[1]["metadata"]["name"] = "x; rm -rf /".into();
    list[2]["metadata"]["labels"]["rlm-sandbox/pid"] = "-1".into();
    let v = select(&list, &local(None));
    assert!(!v[1].delete && v[1].why.contains("DNS-1123"), "{:?}", v[1]);
    assert!(!v[2].delete && v[2].why.contains("pid label"), "{:?}", v[2]);
    assert!(parse_list("[]").expect_err("no items").contains("items"));
    assert!(parse_list("{").expect_err("not JSON").contains("not JSON"));
}

#[test]
fn commands_are_kubectls_with_the_namespace() {
    assert_eq!(
        list_command("kubectl", Some("rlm")),
        [
            "kubectl",
            "get",
            CLAIMS,
            "-n",
            "rlm",
            "-l",
            "created-by=rlm-sandbox",
            "-o",
            "json"
        ]
    );
    assert!(list_command("kubectl", None).contains(&"--all-namespaces".to_string()));
    let v = &select(&items(), &local(None))[1];
    assert_eq!(
        delete_command("kubectl", v),
        [
            "kubectl",
            "delete",
            "-n",
            "rlm",
            &format!("{CLAIMS}/rlm-00000000000000a2"),
            "--ignore-not-found",
            "--wait=false"
        ]
    );
}

#[test]
fn timestamps_and_ages_are_read_strictly() {
    assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_timestamp("2000-03-01T00:00:00Z"), Some(951_868_800));
    assert_eq!(parse_timestamp("2026-12-07T06:00:00Z"), Some(1_796_623_200));
    assert_eq!(
        parse_timestamp("2026-12-07T06:00:00.123456Z"),
        Some(1_796_623_200)
    );
    for bad in [
        "",
        "2026-12-07 06:00:00Z",
        "2026-12-07T06:00:00+01:00",
        "2026-13-07T06:00:00Z",
        "2026-12-07T06:00:00.Z1",
        "+026-12-07T06:00:00Z",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
    assert_eq!(parse_age("90m"), Ok(5400));
    assert_eq!(parse_age("2d"), Ok(172_800));
    for bad in ["", "m", "5", "1.5h", "-1h", "1w", "99999999999999999999d"] {
        assert!(
            parse_age(bad).expect_err(bad).contains("s, m, h or d"),
            "{bad}"
        );
    }
}
