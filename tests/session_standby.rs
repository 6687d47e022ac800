//! `rlm-sandbox session --standby` against the real runtimes: the sandbox
//! starts before its work, one `begin` brings the work (contexts, tools,
//! limits) and the session goes on as a cold one; a bad `begin` is
//! answered and the standby lives on; a standby left alone, ended or
//! killed leaves nothing behind.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::repl::{Answer, Repl};
use serde_json::{json, Value};

fn text(cell: &Value, stream: &str) -> String {
    cell[stream].as_str().unwrap_or_default().to_string()
}

/// A context file the sandbox user may read.
fn context(dir: &tempfile::TempDir, name: &str, data: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path.to_str().unwrap().to_string()
}

fn context_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

on_both_runtimes! {
    fn begin_brings_a_context_a_tool_and_limits_to_a_started_sandbox(env) {
        let dir = context_dir();
        let path = context(&dir, "p.txt", "the standby's context\n");
        // RLM_* defaults apply to begin as to a cold session.
        let mut repl = Repl::standby(env, &[], &[("RLM_MAX_LLM_CALLS", "5")]);
        let standby = repl.ready.clone();
        assert_eq!(standby["runtime"]["name"], env.runtime.as_str(), "{standby}");
        assert!(standby["startup_ms"].as_u64().is_some(), "{standby}");
        let ready = repl.begin(&["--context", &path, "--tool", "lookup:key", "--llm-timeout", "9"]);
        assert_eq!(ready["event"], "ready", "{ready}");
        assert_eq!(ready["standby"], true, "{ready}");
        assert!(ready["claim_ms"].as_f64().is_some(), "{ready}");
        assert_eq!(ready["contexts"][0]["host_path"], path.as_str(), "{ready}");
        assert_eq!(ready["limits"]["max_calls"], 5, "{ready}");
        assert_eq!(ready["limits"]["call_timeout_s"], 9.0, "{ready}");
        let mut answer: Answer = Box::new(|call: &Value| match call["kind"].as_str() {
            Some("tool") => Ok(vec![json!({"value": call["args"]["key"]})]),
            _ => Err("unexpected".into()),
        });
        let r = repl.request_with(
            "exec",
            json!({"code": "print(len(context), context.split()[1])\nprint(lookup(key='k1'))"}),
            Some(&mut answer),
        );
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(text(&r["cell"], "stdout"), "22 standby's\n{'value': 'k1'}\n", "{r}");
        assert_eq!(repl.calls.len(), 1, "{:?}", repl.calls);
        // The claim's context is the session's own: its echo is filtered.
        let cell = repl.exec("print(context)");
        assert!(text(&cell, "stdout").contains("[REDACTED:context_echo]"), "{cell}");
        let pid = repl.child.id();
        assert!(repl.close().success());
        env.assert_clean(pid);
    }

    fn a_bad_begin_is_answered_and_the_standby_lives_on(env) {
        let dir = context_dir();
        let path = context(&dir, "q.txt", "second try\n");
        let mut repl = Repl::standby(env, &[], &[]);
        let refused = |r: &Value, want: &str| {
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["error"]["kind"], "bad_request", "{r}");
            let message = r["error"]["message"].as_str().unwrap();
            assert!(message.contains(want), "{want:?} not in {message:?}");
        };
        let r = repl.request("exec", json!({"code": "1"}));
        refused(&r, "op \"exec\" before begin");
        let r = repl.begin(&["--memory", "1g"]);
        refused(&r, "--memory is set at standby, not at begin");
        let r = repl.begin(&["--frobnicate"]);
        refused(&r, "unknown flag \"--frobnicate\"");
        let r = repl.request("begin", json!({"args": "--tool f"}));
        refused(&r, "must be a list of strings");
        let missing = dir.path().join("missing.txt");
        let r = repl.begin(&["--context", missing.to_str().unwrap()]);
        refused(&r, "still on standby");
        // The same standby, untouched, serves the good begin.
        let ready = repl.begin(&["--context", &path]);
        assert_eq!(ready["event"], "ready", "{ready}");
        let cell = repl.exec("print(context, end='')\nimport os\nprint(sorted(os.listdir('/rlm/contexts')))");
        assert_eq!(text(&cell, "stdout"), "second try\n['0']\n", "{cell}");
        // After begin, begin is an unknown op like any other.
        let r = repl.begin(&[]);
        assert_eq!(r["error"]["kind"], "bad_request", "{r}");
        let pid = repl.child.id();
        assert!(repl.close().success());
        env.assert_clean(pid);
    }

    fn a_standby_ended_or_killed_before_begin_leaves_nothing(env) {
        // End of input.
        let mut repl = Repl::standby(env, &[], &[]);
        let pid = repl.child.id();
        repl.close_stdin();
        assert!(repl.wait_exit(Duration::from_secs(20)).success());
        env.assert_clean(pid);
        // SIGTERM.
        let mut repl = Repl::standby(env, &[], &[]);
        let pid = repl.child.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = repl.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(130), "{status:?}");
        env.assert_clean(pid);
        // SIGKILL: the watchdog removes the sandbox.
        let mut repl = Repl::standby(env, &[], &[]);
        let pid = repl.child.id();
        let prefix = format!("rlms-{pid}-");
        // Baseline: the standby's sandbox exists.
        let before = common::leftovers(env.state.path(), &prefix);
        assert!(before.iter().any(|l| l.starts_with("run directory ")), "{before:?}");
        repl.child.kill().unwrap();
        repl.child.wait().unwrap();
        let killed = Instant::now();
        while !common::leftovers(env.state.path(), &prefix).is_empty() {
            assert!(killed.elapsed() < common::WATCHDOG_BOUND, "left after SIGKILL: {:?}",
                common::leftovers(env.state.path(), &prefix));
            std::thread::sleep(Duration::from_millis(20));
        }
        env.assert_clean(pid);
    }
}

#[test]
fn claim_flags_on_the_command_line_are_refused_with_standby() {
    // Refused before anything starts: no runtime needed.
    let env = common::Env::new("runc");
    let out = env
        .command(&["session", "--standby", "--tool", "f:x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tool: with --standby") && err.contains("\"op\": \"begin\""),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}
