//! Replays every example of docs/PROTOCOL.md against a real session: the
//! document cannot drift from what `rlm-sandbox session` does.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::repl::Repl;
use serde_json::Value;

const DOC: &str = include_str!("../docs/PROTOCOL.md");

/// One ```session block: the session's flags (after ```session, e.g.
/// `--standby`) and its lines, (sent?, line).
struct Example {
    flags: Vec<String>,
    lines: Vec<(bool, String)>,
}

/// The ```session blocks.
fn examples() -> Vec<Example> {
    let mut blocks = Vec::new();
    let mut current: Option<Example> = None;
    for line in DOC.lines() {
        match (&mut current, line) {
            (None, l) if l == "```session" || l.starts_with("```session ") => {
                let flags = l["```session".len()..].split_whitespace().map(String::from);
                current = Some(Example {
                    flags: flags.collect(),
                    lines: Vec::new(),
                })
            }
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), l) if l.starts_with("> ") => block.lines.push((true, l[2..].to_string())),
            (Some(block), l) if l.starts_with("< ") => {
                block.lines.push((false, l[2..].to_string()))
            }
            (Some(_), l) => panic!("a session example line must start with > or <: {l:?}"),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an example block is not closed");
    blocks
}

/// Whether `actual` has every field of `want` (recursively; arrays
/// element by element, of the same length); `"*"` matches anything.
fn matches(want: &Value, actual: &Value) -> bool {
    match (want, actual) {
        (Value::String(s), _) if s == "*" => true,
        (Value::Object(w), Value::Object(a)) => w
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(w), Value::Array(a)) => {
            w.len() == a.len() && w.iter().zip(a).all(|(w, a)| matches(w, a))
        }
        (w, a) => w == a,
    }
}

on_both_runtimes! {
    fn every_protocol_example_replays(env) {
        let blocks = examples();
        assert!(blocks.len() >= 4, "examples found: {}", blocks.len());
        assert!(blocks.iter().any(|b| b.flags == ["--standby"]), "no --standby example");
        for block in blocks {
            let flags: Vec<&str> = block.flags.iter().map(String::as_str).collect();
            // A standby's example shows its first line (`standby`); a cold
            // session's starts after `ready`.
            let mut repl = if flags.contains(&"--standby") {
                Repl::spawn(env, &flags, &[])
            } else {
                Repl::start(env, &flags)
            };
            for (sent, line) in &block.lines {
                if *sent {
                    let mut bytes = line.clone().into_bytes();
                    bytes.push(b'\n');
                    repl.raw(&bytes);
                    continue;
                }
                let want: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad example line {line:?}: {e}"));
                let got = repl.line(Duration::from_secs(60)).expect("a line from the session");
                assert!(matches(&want, &got), "expected {want}\n     got {got}");
            }
        }
    }
}

#[test]
fn the_matcher_compares_only_given_fields() {
    let got: Value = serde_json::json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
    assert!(matches(&serde_json::json!({"b": {"c": [1, 2]}}), &got));
    assert!(matches(&serde_json::json!({"a": "*"}), &got));
    assert!(!matches(&serde_json::json!({"b": {"c": [1]}}), &got));
    assert!(!matches(&serde_json::json!({"e": null}), &got));
    assert!(!matches(&serde_json::json!({"a": 2}), &got));
}

/// The error kinds the document lists are the ones `SessionError::kind`
/// gives, and it names no other (`error.kind = "x"`, `"kind": "x"` in an
/// error object).
#[test]
fn the_error_kinds_are_the_ones_the_code_gives() {
    use rlm_sandbox::session::SessionError;
    use rlm_sandbox::supervise::SuperviseError;
    let code: std::collections::BTreeSet<&str> = [
        SessionError::Dead(String::new()).kind(),
        SessionError::Request(String::new()).kind(),
        SessionError::Start(String::new()).kind(),
        SessionError::Forbidden(String::new()).kind(),
        SessionError::Supervise(SuperviseError::Interrupted).kind(),
        SessionError::Supervise(SuperviseError::Cgroup(
            rlm_sandbox::cgroup::CgroupError::InvalidRunId { id: String::new() },
        ))
        .kind(),
    ]
    .into_iter()
    .collect();
    let list = DOC
        .split_once("Error kinds:")
        .expect("an \"Error kinds:\" paragraph")
        .1
        .split("\n\n")
        .next()
        .unwrap();
    // The first backticked word of each comma-separated entry.
    let listed: std::collections::BTreeSet<&str> = list
        .split("), ")
        .filter_map(|entry| entry.split('`').nth(1))
        .collect();
    assert_eq!(listed, code, "the \"Error kinds:\" paragraph: {list}");
    for (i, _) in DOC.match_indices("error.kind = \"") {
        let name = DOC[i + 14..].split('"').next().unwrap();
        assert!(
            code.contains(name),
            "docs/PROTOCOL.md names error kind {name:?}; the code gives {code:?}"
        );
    }
}
