//! Calls from a session's sandbox to the host answered by the
//! orchestrator, with prompts filtered for secrets. (The command and
//! endpoint handlers' tests are in tests/pending/session_calls.rs.)

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::repl::{Answer, Repl};
use serde_json::{json, Value};

fn stdout(cell: &Value) -> String {
    cell["stdout"].as_str().unwrap_or_default().to_string()
}

/// Answers every prompt with `re:<prompt>`.
fn echo_answer() -> Answer {
    Box::new(|call: &Value| {
        Ok(call["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| json!(format!("re:{}", p.as_str().unwrap())))
            .collect())
    })
}

on_both_runtimes! {
    fn the_orchestrator_answers_llm_query_and_batches(env) {
        let mut repl = Repl::start(env, &[]);
        let mut answer = echo_answer();
        let r = repl.request_with("exec", json!({"code": concat!(
            "a = llm_query('hello', model='m1')\n",
            "b = llm_query_batched(['x', 'y', 'z'])\n",
            "print(a, b)\n",
        )}), Some(&mut answer));
        let cell = &r["cell"];
        assert_eq!(stdout(cell), "re:hello ['re:x', 're:y', 're:z']\n", "{r}");
        assert_eq!(repl.calls.len(), 2, "a batch is one event: {:?}", repl.calls);
        assert_eq!(repl.calls[0]["kind"], "llm_query");
        assert_eq!(repl.calls[0]["model"], "m1");
        assert_eq!(repl.calls[1]["prompts"], json!(["x", "y", "z"]));
        let calls = cell["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2, "{cell}");
        assert_eq!(calls[1]["prompts"], 3);
        assert_eq!(calls[0]["prompt_bytes"], 5);
        assert_eq!(calls[0]["answer_bytes"], 8);
        // An error answer is an "Error: ..." string in the code.
        let mut refuse: Answer = Box::new(|_| Err("no model today".into()));
        let r = repl.request_with("exec", json!({"code": "print(llm_query('q'))\nprint(llm_query_batched(['a','b']))"}), Some(&mut refuse));
        assert_eq!(stdout(&r["cell"]), "Error: no model today\n['Error: no model today', 'Error: no model today']\n", "{r}");
        assert_eq!(r["cell"]["calls"][0]["error"], "no model today");
        // rlm_query without --rlm-calls is sent as llm_query.
        let mut answer = echo_answer();
        let r = repl.request_with("exec", json!({"code": "print(rlm_query('deep'))"}), Some(&mut answer));
        assert_eq!(stdout(&r["cell"]), "re:deep\n", "{r}");
        assert_eq!(repl.calls.last().unwrap()["kind"], "llm_query");
        assert_eq!(r["cell"]["calls"][0]["kind"], "rlm_query");
        assert_eq!(r["cell"]["calls"][0]["fallback"], true);
        assert!(repl.close().success());
    }

    fn calls_from_threads_are_in_flight_at_once(env) {
        let mut repl = Repl::start(env, &["--rlm-calls", "--tool", "lookup:key"]);
        let mut answer: Answer = Box::new(|call: &Value| match call["kind"].as_str() {
            Some("tool") => Ok(vec![json!({"value": call["args"]["key"]})]),
            _ => Ok(vec![json!(format!("{}:{}", call["kind"].as_str().unwrap(), call["prompts"][0].as_str().unwrap()))]),
        });
        let code = concat!(
            "import threading\n",
            "out = {}\n",
            "def ask(i):\n",
            "    out[i] = llm_query(f'p{i}')\n",
            "ts = [threading.Thread(target=ask, args=(i,)) for i in range(6)]\n",
            "[t.start() for t in ts]\n",
            "[t.join() for t in ts]\n",
            "print(sorted(out.values()))\n",
            "print(rlm_query('r'))\n",
            "print(lookup('k1'), lookup(key='k2'))\n",
        );
        let r = repl.request_with("exec", json!({"code": code}), Some(&mut answer));
        let out = stdout(&r["cell"]);
        assert!(out.starts_with("['llm_query:p0', 'llm_query:p1'"), "{r}");
        assert!(out.contains("rlm_query:r\n"), "{r}");
        assert!(out.contains("{'value': 'k1'} {'value': 'k2'}"), "{r}");
        assert_eq!(r["cell"]["calls"].as_array().unwrap().len(), 9, "{r}");
        assert!(repl.close().success());
    }

    fn a_secret_in_a_prompt_is_redacted_before_the_handler_sees_it(env) {
        let mut repl = Repl::start(env, &[]);
        let mut answer = echo_answer();
        let key = "AKIAIOSFODNN7EXAMPLE";
        let r = repl.request_with("exec", json!({"code": format!("llm_query('the key is {key} ok')")}), Some(&mut answer));
        let prompt = repl.calls[0]["prompts"][0].as_str().unwrap().to_string();
        assert!(!prompt.contains(key), "the secret left the sandbox: {prompt}");
        assert!(prompt.starts_with("the key is ") && prompt.ends_with(" ok"), "{prompt}");
        let findings = &r["cell"]["calls"][0]["findings"];
        assert_eq!(findings[0]["stream"], "prompt", "{r}");
        assert!(repl.close().success());
    }
}
