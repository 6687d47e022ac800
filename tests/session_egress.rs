//! What a session's sandbox sends to the host besides its output leaves
//! through the egress filter too (docs/PROTOCOL.md, "What the egress
//! filter covers"): a cell's final answer, a `get`'s repr and a tool
//! call's arguments.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::repl::{Answer, Repl};
use serde_json::{json, Value};

const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
/// The key built in the sandbox, so that it is not in the code.
const MAKE_KEY: &str = "k = 'AKIAIOSF' + 'ODNN7EXAMPLE'\n";

/// The (stream, kind) of each finding in `findings`.
fn found(findings: &Value) -> Vec<(String, String)> {
    findings
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("stream"), s("kind"))
        })
        .collect()
}

fn pair(stream: &str, kind: &str) -> (String, String) {
    (stream.to_string(), kind.to_string())
}

/// A context of 40 distinct lines (about 3 KiB).
fn ledger() -> String {
    (0..40)
        .map(|i| {
            format!(
                "Line {i}: the ledger of account {} shows a balance of {} crowns.",
                i * 7919,
                i * 104_729
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

on_both_runtimes! {
    fn a_final_answer_reproducing_the_context_is_redacted(env) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("context.txt");
        std::fs::write(&path, ledger()).unwrap();
        let mut repl = Repl::start(env, &["--context", path.to_str().unwrap()]);
        // The baseline: an answer quoting one line of the context passes.
        let cell = repl.exec("line = context.splitlines()[3]\nFINAL_VAR('line')");
        assert_eq!(cell["final_answer"], ledger().lines().nth(3).unwrap(), "{cell}");
        assert_eq!(cell["findings"], json!([]), "{cell}");
        // The whole context as the answer does not leave.
        let cell = repl.exec("doc = str(context)\nFINAL_VAR('doc')");
        let answer = cell["final_answer"].as_str().unwrap();
        assert!(!answer.contains("ledger of account 7919"), "{cell}");
        assert!(answer.contains("[REDACTED:context_echo]"), "{cell}");
        assert!(found(&cell["findings"]).contains(&pair("final_answer", "context_echo")), "{cell}");
        assert!(repl.close().success());
    }

    fn a_secret_in_a_final_answer_is_redacted(env) {
        let mut repl = Repl::start(env, &[]);
        let cell = repl.exec(&format!("{MAKE_KEY}FINAL('the key is ' + k)"));
        assert_eq!(cell["final_answer"], "the key is [REDACTED:aws_access_key_id]", "{cell}");
        // FINAL's return value is the cell's value, filtered too.
        assert_eq!(
            found(&cell["findings"]),
            vec![pair("value", "aws_access_key_id"), pair("final_answer", "aws_access_key_id")],
            "{cell}"
        );
        assert!(!cell.to_string().contains(KEY), "{cell}");
        // answer["ready"] is the same answer.
        let cell = repl.exec(&format!("{MAKE_KEY}answer['content'] = k\nanswer['ready'] = True"));
        assert_eq!(cell["final_answer"], "[REDACTED:aws_access_key_id]", "{cell}");
        assert!(repl.close().success());
    }

    fn a_secret_in_a_get_repr_is_redacted(env) {
        let mut repl = Repl::start(env, &[]);
        repl.exec(&format!("{MAKE_KEY}note = 'id ' + k"));
        let r = repl.request("get", json!({"name": "note"}));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["repr"], "'id [REDACTED:aws_access_key_id]'", "{r}");
        assert_eq!(r["type"], "str", "{r}");
        assert_eq!(found(&r["findings"]), vec![pair("get", "aws_access_key_id")], "{r}");
        // A clean variable comes back whole, with no findings.
        repl.exec("n = [1, 2]");
        let r = repl.request("get", json!({"name": "n"}));
        assert_eq!((&r["repr"], &r["findings"]), (&json!("[1, 2]"), &json!([])), "{r}");
        assert!(!r.to_string().contains(KEY));
        assert!(repl.close().success());
    }

    fn a_get_of_the_context_is_redacted(env) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("context.txt");
        std::fs::write(&path, ledger()).unwrap();
        let mut repl = Repl::start(env, &["--context", path.to_str().unwrap()]);
        // Its repr escapes the newlines; the lines between still match.
        repl.exec("doc = str(context)");
        let r = repl.request("get", json!({"name": "doc"}));
        assert_eq!(r["ok"], true, "{r}");
        assert!(!r["repr"].as_str().unwrap().contains("ledger of account 7919"), "{r}");
        assert!(found(&r["findings"]).contains(&pair("get", "context_echo")), "{r}");
        assert!(repl.close().success());
    }

    fn a_secret_as_a_variable_name_is_redacted_in_vars(env) {
        let mut repl = Repl::start(env, &[]);
        // Any string can name a global, and a class.
        let r = repl.request("exec", json!({"code": format!("{MAKE_KEY}globals()[k] = type(k, (), {{}})()"), "vars": true}));
        assert_eq!(r["ok"], true, "{r}");
        let cell = &r["cell"];
        assert!(!cell.to_string().contains(KEY), "{cell}");
        let listed = |vars: &Value| vars.as_array().unwrap().iter().any(|v| v["name"] == "[REDACTED:aws_access_key_id]" && v["type"] == "[REDACTED:aws_access_key_id]");
        assert!(listed(&cell["vars"]), "{cell}");
        assert!(found(&cell["findings"]).contains(&pair("vars", "aws_access_key_id")), "{cell}");
        let r = repl.request("vars", json!({}));
        assert!(!r.to_string().contains(KEY), "{r}");
        assert!(listed(&r["vars"]), "{r}");
        assert_eq!(found(&r["findings"]), vec![pair("vars", "aws_access_key_id"); 2], "{r}");
        assert!(repl.close().success());
    }

    fn a_secret_in_tool_args_is_redacted_before_the_handler(env) {
        let mut repl = Repl::start(env, &["--tool", "lookup:key"]);
        let mut answer: Answer = Box::new(|call: &Value| Ok(vec![json!({"got": call["args"]["key"]})]));
        let code = format!("{MAKE_KEY}print(lookup(['id', {{'k': k}}]))");
        let r = repl.request_with("exec", json!({"code": code}), Some(&mut answer));
        assert_eq!(r["ok"], true, "{r}");
        let seen = &repl.calls.last().unwrap()["args"];
        assert_eq!(seen, &json!({"key": ["id", {"k": "[REDACTED:aws_access_key_id]"}]}), "{r}");
        let record = &r["cell"]["calls"][0];
        assert_eq!(found(&record["findings"]), vec![pair("tool_args", "aws_access_key_id")], "{r}");
        assert!(!r.to_string().contains(KEY), "{r}");
        assert!(repl.close().success());
    }

    fn a_secret_as_a_query_s_model_is_redacted_before_the_handler(env) {
        let mut repl = Repl::start(env, &[]);
        let mut answer: Answer = Box::new(|call: &Value| Ok(vec![json!(format!("model {}", call["model"]))]));
        let code = format!("{MAKE_KEY}print(llm_query('hi', model=k))");
        let r = repl.request_with("exec", json!({"code": code}), Some(&mut answer));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(repl.calls.last().unwrap()["model"], "[REDACTED:aws_access_key_id]", "{r}");
        let record = &r["cell"]["calls"][0];
        assert_eq!(record["model"], "[REDACTED:aws_access_key_id]", "{r}");
        assert_eq!(found(&record["findings"]), vec![pair("model", "aws_access_key_id")], "{r}");
        assert!(!r.to_string().contains(KEY), "{r}");
        assert!(repl.close().success());
    }
}
