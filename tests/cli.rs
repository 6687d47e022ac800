//! The command line: bad configuration refused by name, runtime selection
//! and its warnings, `check`, local mode's warning.

mod common;

use std::process::Command;

fn rlm(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args).env_remove("RLM_DOCKER_RUNTIME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rlm-sandbox")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_values_are_refused_with_the_name_the_value_and_the_form() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["run", "-c", "print(1)"],
            &[("RLM_MEMORY_LIMIT", "lots")],
            "invalid RLM_MEMORY_LIMIT value \"lots\": expected a size",
        ),
        (
            &["run", "--memory", "12q", "-c", "print(1)"],
            &[],
            "invalid --memory value \"12q\"",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_EXECUTION_TIMEOUT", "-1")],
            "invalid RLM_EXECUTION_TIMEOUT value \"-1\": expected seconds",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_CPU_LIMIT", "many")],
            "invalid RLM_CPU_LIMIT value \"many\"",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_PIDS_LIMIT", "0")],
            "invalid RLM_PIDS_LIMIT value \"0\": expected a whole number of tasks from 8",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_DOCKER_RUNTIME", "kata")],
            "invalid RLM_DOCKER_RUNTIME value \"kata\": expected one of auto, runsc, runc",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_EXECUTION_MODE", "vm")],
            "invalid RLM_EXECUTION_MODE value \"vm\": expected one of oci, docker",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_NETWORK_ENABLED", "maybe")],
            "invalid RLM_NETWORK_ENABLED value \"maybe\": expected a boolean",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_MAX_STDOUT_BYTES", "10")],
            "invalid RLM_MAX_STDOUT_BYTES value \"10\"",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_ROOTFS", "relative/dir")],
            "invalid RLM_ROOTFS value \"relative/dir\": expected an absolute path",
        ),
        (
            &["run", "-c", "print(1)"],
            &[("RLM_PRESET", "maximum"), ("RLM_DOCKER_RUNTIME", "runc")],
            "preset maximum requires runtime runsc",
        ),
        (
            &["run", "--context", "/nonexistent/ctx.txt", "-c", "print(1)"],
            &[],
            "--context / RLM_CONTEXT_FILE: cannot read /nonexistent/ctx.txt",
        ),
        (
            &["session", "--context", "/nonexistent/ctx.txt"],
            &[],
            "--context / RLM_CONTEXT_FILE: cannot read /nonexistent/ctx.txt",
        ),
        (
            &[
                "run",
                "--redact-env",
                "RLM_TEST_UNSET_SECRET",
                "-c",
                "print(1)",
            ],
            &[],
            "environment variable RLM_TEST_UNSET_SECRET (to redact) is unset",
        ),
    ];
    for (args, env, expected) in cases {
        let out = rlm(args, env);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(expected),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_config_file_is_read_and_its_errors_name_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rlm.json");
    std::fs::write(&path, r#"{"memory_limit": "tiny"}"#).expect("write");
    let out = rlm(&["check", "--config", path.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("invalid memory_limit in {}", path.display())),
        "{}",
        stderr(&out)
    );
    std::fs::write(&path, r#"{"memory_limit": "256m"}"#).expect("write");
    let out = rlm(
        &["check", "--json", "--config", path.to_str().expect("utf8")],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["limits"]["memory_bytes"], 256 << 20);
}

#[test]
fn missing_runsc_falls_back_loudly_or_is_refused() {
    if !common::prerequisites("runc") {
        return;
    }
    let state = tempfile::tempdir().expect("state");
    let state = state.path().to_str().expect("utf8");
    let missing = [
        ("RLM_RUNSC_PATH", "/nonexistent/runsc"),
        ("RLM_STATE_DIR", state),
    ];
    // auto: runc, with a warning and fallback: true.
    let out = rlm(&["run", "--json", "-c", "print(1)"], &missing);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("WARNING: runsc (gVisor) not found; falling back to runc"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            v["runtime"]["name"].as_str(),
            v["runtime"]["fallback"].as_bool()
        ),
        (Some("runc"), Some(true))
    );
    // Explicit runsc: refused, unless the unsafe fallback is allowed.
    let mut env = missing.to_vec();
    env.push(("RLM_DOCKER_RUNTIME", "runsc"));
    let out = rlm(&["run", "-c", "print(1)"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("runsc (gVisor) not found at /nonexistent/runsc"),
        "{}",
        stderr(&out)
    );
    env.push(("RLM_ALLOW_UNSAFE_RUNTIME", "true"));
    let out = rlm(&["run", "--json", "-c", "print(1)"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["runtime"]["fallback"], true);
}

#[test]
fn check_reports_the_posture_and_fails_an_unmeetable_policy() {
    if !common::prerequisites("runsc") || !common::prerequisites("runc") {
        return;
    }
    let out = rlm(&["check", "--json"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["would_use"], "runsc");
    assert_eq!(v["fallback"], false);
    assert!(
        v["runtimes"][0]["version"]
            .as_str()
            .is_some_and(|s| s.contains("runsc")),
        "{v}"
    );
    assert!(
        v["runtimes"][1]["version"]
            .as_str()
            .is_some_and(|s| s.contains("runc")),
        "{v}"
    );
    assert_eq!(v["enforced"]["memory"], true);
    assert_eq!(v["enforced"]["pids"], true);
    assert_eq!(v["network"], "none");
    assert!(
        v["rootfs"]["manifest"]["tree_sha256"].as_str().is_some(),
        "{v}"
    );
    // scripts/setup installs a gVisor that defaults to systrap.
    let runsc = &v["runtimes"][0];
    assert_eq!(
        runsc["platform"]["name"], "systrap",
        "run scripts/setup: {v}"
    );
    assert_eq!(runsc["platform"]["source"], "runsc_default", "{v}");
    assert!(runsc["gvisor_release"].as_u64() >= Some(20230601), "{v}");
    assert!(v["runtimes"][1]["platform"].is_null(), "{v}");
    assert!(!v["warnings"].to_string().contains("ptrace"), "{v}");
    let table = rlm(&["check"], &[]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("policy can be met"), "{table}");
    assert!(
        table.contains("runsc platform    systrap (runsc's default)"),
        "{table}"
    );
    // maximum without runsc cannot be met.
    let out = rlm(
        &["check", "--preset", "maximum"],
        &[("RLM_RUNSC_PATH", "/nonexistent/runsc")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy CANNOT be met"));
}

/// ptrace, whether the 2022 build's default or chosen by RLM_RUNSC_FLAGS on
/// the current one, is reported and warned about, with the way out; the
/// policy still holds (exit 0).
#[test]
fn check_warns_when_runsc_would_use_ptrace() {
    if !common::prerequisites("runsc") || !common::prerequisites("runc") {
        return;
    }
    let check = |env: &[(&str, &str)]| {
        let out = rlm(&["check", "--json"], env);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(out.status.code(), Some(0), "{v}");
        assert_eq!(v["would_use"], "runsc", "{v}");
        let warning = v["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .filter_map(|w| w.as_str())
            .find(|w| w.starts_with("runsc platform is ptrace"))
            .unwrap_or_else(|| panic!("no ptrace warning: {v}"))
            .to_string();
        (v, warning)
    };
    let (v, warning) = check(&[("RLM_RUNSC_FLAGS", "--platform=systrap --platform=ptrace")]);
    assert_eq!(v["runtimes"][0]["platform"]["name"], "ptrace", "{v}");
    assert_eq!(v["runtimes"][0]["platform"]["source"], "flags", "{v}");
    assert!(warning.contains("drop --platform=ptrace"), "{warning}");
    let Some(old) = common::runsc_2022() else {
        return;
    };
    let old = old.to_str().expect("utf8");
    let (v, warning) = check(&[("RLM_RUNSC_PATH", old)]);
    let runsc = &v["runtimes"][0];
    assert_eq!(runsc["path"], old, "{v}");
    assert_eq!(runsc["gvisor_release"], 20221219, "{v}");
    assert_eq!(runsc["platform"]["name"], "ptrace", "{v}");
    assert_eq!(runsc["platform"]["source"], "runsc_default", "{v}");
    assert!(warning.contains("~30x slower"), "{warning}");
    assert!(
        warning.contains("apt-get install -t bookworm-backports runsc"),
        "{warning}"
    );
    let table = rlm(&["check"], &[("RLM_RUNSC_PATH", old)]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("runsc platform    ptrace (runsc's default)"),
        "{table}"
    );
    assert!(
        table.contains("warning: runsc platform is ptrace"),
        "{table}"
    );
}

#[test]
fn local_mode_warns_every_time() {
    let out = rlm(
        &["run", "--json", "--mode", "local", "-c", "print(2 + 2)"],
        &[],
    );
    assert!(stderr(&out).contains("DANGER"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["stdout"], "4\n");
    assert_eq!(v["runtime"], serde_json::Value::Null);
}

#[test]
fn rootfs_verify_matches_its_manifest() {
    if !common::prerequisites("runc") {
        return;
    }
    let out = rlm(&["rootfs", "verify"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// CPython stops reading a source file at a NUL byte, silently: such code
/// is refused before any sandbox starts, naming the first NUL's offset.
#[test]
fn code_with_a_nul_byte_is_refused_before_any_sandbox_starts() {
    let state = tempfile::tempdir().expect("state dir");
    let code_file = state.path().join("code.py");
    std::fs::write(&code_file, b"print(1)\x00print(2)\x00").expect("write code");
    let file = code_file.to_str().expect("utf-8 path");
    let state_dir = state.path().join("state");
    let state_var = state_dir.to_str().expect("utf-8 path");
    for args in [
        vec!["run", file],
        vec!["run", "--json", file],
        vec!["run", "--mode", "local", file],
        vec!["run", "--json", "--mode", "local", file],
    ] {
        let out = rlm(&args, &[("RLM_STATE_DIR", state_var)]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("NUL byte at byte offset 8"),
            "{args:?}: {}",
            stderr(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if args.contains(&"--json") {
            let v: serde_json::Value = serde_json::from_str(stdout.trim())
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout:?}"));
            assert_eq!(v["error"]["kind"], "nul_byte_in_code", "{v}");
            assert_eq!(v["error"]["offset"], 8, "{v}");
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("offset 8")));
        } else {
            assert_eq!(stdout, "", "{args:?}: nothing ran");
        }
        assert!(!state_dir.exists(), "{args:?}: a run directory was made");
    }
    // Stdin is read the same way.
    let mut child = Command::new(common::BIN)
        .args(["run", "--json"])
        .env("RLM_STATE_DIR", state_var)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    common::feed(&mut child, b"\x00");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error object");
    assert_eq!(v["error"]["offset"], 0, "{v}");
}

/// A one-sentence context file printed whole is an echo, in text and JSON
/// output; a few words of it are a mention and pass.
#[test]
fn filter_redacts_a_short_context_printed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let context = dir.path().join("context.txt");
    let sentence = "The quarterly revenue of Acme Corp was 4.2 million USD";
    std::fs::write(&context, sentence).expect("write");
    let filter = |args: &[&str], input: &str| {
        let mut child = Command::new(common::BIN)
            .args(["filter", "--context", context.to_str().expect("utf8")])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        common::feed(&mut child, input.as_bytes());
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        out
    };
    let out = filter(&[], &format!("{sentence}\n"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[REDACTED:context_echo]\n"
    );
    assert!(
        stderr(&out).contains("context_echo on stdout at bytes 0..54"),
        "{}",
        stderr(&out)
    );
    let out = filter(&["--json"], &format!("Summary: {sentence}.\n"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["text"], "Summary: [REDACTED:context_echo].\n", "{v}");
    assert_eq!(v["findings"][0]["kind"], "context_echo", "{v}");
    assert_eq!(v["findings"][0]["span"], serde_json::json!([9, 63]), "{v}");
    let mention = "Acme Corp revenue was 4.2 million USD this quarter.\n";
    let out = filter(&[], mention);
    assert_eq!(String::from_utf8_lossy(&out.stdout), mention);
}
