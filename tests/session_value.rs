//! A cell's value (its trailing expression's, when not None) through a
//! real session: it travels beside the output, nothing is printed for it,
//! and it leaves only through the egress filter (docs/PROTOCOL.md).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::repl::Repl;
use serde_json::{json, Value};

fn value(cell: &Value) -> &Value {
    &cell["value"]
}

on_both_runtimes! {
    fn a_trailing_expression_s_value_travels_beside_the_output(env) {
        let mut repl = Repl::start(env, &[]);
        let cell = repl.exec("x = 40\nprint('side')\nx + 2");
        assert_eq!(cell["status"], "ok", "{cell}");
        assert_eq!(cell["stdout"], "side\n", "{cell}");
        assert_eq!(value(&cell), &json!({"repr": "42", "truncated": false, "json": 42}), "{cell}");
        let cell = repl.exec("{'a': (1, 2.5), 'b': {1, 2}}");
        assert_eq!(value(&cell)["json"], Value::Null, "a set has no JSON form: {cell}");
        assert_eq!(value(&cell)["repr"], "{'a': (1, 2.5), 'b': {1, 2}}", "{cell}");
        let cell = repl.exec("import json\njson.dumps({'a': [1, None]})");
        assert_eq!(value(&cell)["json"], "{\"a\": [1, null]}", "{cell}");
        // None, a statement, an error: no value.
        for code in ["None", "y = 1", "print(1)", "1 / 0"] {
            let cell = repl.exec(code);
            assert_eq!(value(&cell), &Value::Null, "{code}: {cell}");
        }
        assert!(repl.close().success());
    }

    fn a_secret_in_the_value_is_redacted_and_its_json_withheld(env) {
        let mut repl = Repl::start(env, &[]);
        let key = "AKIAIOSFODNN7EXAMPLE";
        // Built in the sandbox, so the secret is not in the code either.
        let cell = repl.exec("k = 'AKIAIOSF' + 'ODNN7EXAMPLE'\n{'key': k}");
        assert_eq!(cell["status"], "ok", "{cell}");
        let v = value(&cell);
        // Redacted in its JSON string as in printed output: still JSON.
        assert_eq!(v["json"], json!({"key": "[REDACTED:aws_access_key_id]"}), "{cell}");
        let repr = v["repr"].as_str().unwrap();
        assert!(!repr.contains(key) && repr.contains("[REDACTED:aws_access_key_id]"), "{cell}");
        assert_eq!(cell["findings"][0]["stream"], "value", "{cell}");
        assert_eq!(cell["findings"][0]["kind"], "aws_access_key_id", "{cell}");
        assert!(repl.close().success());
    }

    fn a_context_echo_in_the_value_is_redacted(env) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("context.txt");
        let lines: Vec<String> = (0..40)
            .map(|i| format!("Line {i}: the ledger of account {} shows a balance of {} crowns.", i * 7919, i * 104_729))
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut repl = Repl::start(env, &["--context", path.to_str().unwrap()]);
        // The baseline: a value that is not the context passes whole.
        let cell = repl.exec("len(context)");
        assert_eq!(value(&cell)["json"], json!(lines.join("\n").len()), "{cell}");
        // The context itself as the value (repr escapes its newlines; the
        // JSON form carries them raw): neither leaves.
        let cell = repl.exec("context");
        let v = value(&cell);
        assert!(!v["json"].to_string().contains("ledger of account 7919"), "{cell}");
        assert!(!v["repr"].as_str().unwrap().contains("ledger of account 7919"), "{cell}");
        let kinds: Vec<&str> = cell["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"context_echo"), "{cell}");
        // Its lines as a list of strings, too.
        let cell = repl.exec("context.splitlines()");
        assert!(!value(&cell)["json"].to_string().contains("ledger of account 7919"), "{cell}");
        assert!(!value(&cell)["repr"].as_str().unwrap().contains("ledger of account 7919"), "{cell}");
        assert!(repl.close().success());
    }
}
