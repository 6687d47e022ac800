//! Requests written together (a client pipelining, as `Pool.run` does
//! with a claim's `begin` and its `exec`): the session sends an `exec` read behind a running cell (or
//! behind a claim's `hello`) to the agent at once, and still answers each
//! request in its turn, exactly as if it had been written after the
//! answer before it: its own output, its own timeout from its own start,
//! a bad request refused, a dead sandbox reported.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::repl::Repl;
use serde_json::{json, Value};

/// Writes `requests` (each `{op, ...}`, ids 1.. given here) in one write
/// and reads one answer per request, in order.
fn together(repl: &mut Repl, requests: &[Value]) -> Vec<Value> {
    let mut bytes = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let mut request = request.clone();
        request["id"] = json!(i + 1);
        bytes.extend(serde_json::to_vec(&request).unwrap());
        bytes.push(b'\n');
    }
    repl.raw(&bytes);
    (1..=requests.len())
        .map(|id| {
            let line = repl
                .line(Duration::from_secs(60))
                .unwrap_or_else(|| panic!("no answer to request {id}"));
            assert_eq!(line["id"], json!(id), "answers out of order: {line}");
            line
        })
        .collect()
}

/// Ends the session in order and checks it left nothing behind.
fn close_clean(env: &common::Env, repl: Repl) {
    let pid = repl.child.id();
    assert!(repl.close().success());
    env.assert_clean(pid);
}

fn stdout(answer: &Value) -> &str {
    answer["cell"]["stdout"].as_str().unwrap_or_default()
}

on_both_runtimes! {
    fn a_claim_and_its_cells_written_together_are_answered_in_turn(env) {
        let mut repl = Repl::standby(env, &[], &[]);
        let answers = together(&mut repl, &[
            json!({"op": "begin", "args": ["--tool", "lookup:key"]}),
            json!({"op": "exec", "code": "x = 41\nprint('first')"}),
            json!({"op": "exec", "code": "print(x + 1)"}),
            // Refused in its turn; the cells around it are unaffected.
            json!({"op": "exec", "code": "print('never')", "timeout": "soon"}),
            json!({"op": "exec", "code": "import sys\nprint('third', file=sys.stderr)\nx"}),
            json!({"op": "vars"}),
        ]);
        assert_eq!(answers[0]["event"], "ready", "{}", answers[0]);
        assert_eq!(stdout(&answers[1]), "first\n", "{}", answers[1]);
        assert_eq!(stdout(&answers[2]), "42\n", "{}", answers[2]);
        assert_eq!(answers[3]["ok"], false, "{}", answers[3]);
        assert_eq!(answers[3]["error"]["kind"], "bad_request", "{}", answers[3]);
        assert_eq!(answers[4]["cell"]["stderr"], "third\n", "{}", answers[4]);
        assert_eq!(answers[4]["cell"]["value"]["repr"], "41", "{}", answers[4]);
        let names: Vec<&str> = answers[5]["vars"].as_array().unwrap().iter()
            .map(|v| v["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"x"), "{}", answers[5]);
        close_clean(env, repl);
    }

    fn a_cell_sent_ahead_has_its_own_timeout_from_its_own_start(env) {
        let mut repl = Repl::start(env, &[]);
        // The second cell's 2.5 s would be over before it starts if its
        // clock ran from when it was sent; the first cell's interrupt is
        // the first cell's alone.
        let answers = together(&mut repl, &[
            json!({"op": "exec", "code": "import time\ntime.sleep(3)\nprint('slept')", "timeout": 30}),
            json!({"op": "exec", "code": "import time\ntime.sleep(1)\nprint('in time')", "timeout": 2.5}),
            json!({"op": "exec", "code": "while True: pass", "timeout": 1}),
            json!({"op": "exec", "code": "print('after the interrupt')"}),
        ]);
        assert_eq!(stdout(&answers[0]), "slept\n", "{}", answers[0]);
        assert_eq!(answers[1]["cell"]["status"], "ok", "{}", answers[1]);
        assert_eq!(stdout(&answers[1]), "in time\n", "{}", answers[1]);
        assert_eq!(answers[2]["cell"]["status"], "timeout", "{}", answers[2]);
        assert_eq!(answers[2]["cell"]["session_dead"], false, "{}", answers[2]);
        assert_eq!(stdout(&answers[3]), "after the interrupt\n", "{}", answers[3]);
        close_clean(env, repl);
    }

    fn a_cell_sent_behind_one_that_ends_the_sandbox_is_answered_dead(env) {
        let mut repl = Repl::start(env, &[]);
        let answers = together(&mut repl, &[
            json!({"op": "exec", "code": "import os\nos._exit(3)"}),
            json!({"op": "exec", "code": "print('too late')"}),
        ]);
        assert_eq!(answers[0]["cell"]["session_dead"], true, "{}", answers[0]);
        assert_eq!(answers[1]["ok"], false, "{}", answers[1]);
        assert_eq!(answers[1]["error"]["kind"], "session_dead", "{}", answers[1]);
        close_clean(env, repl);
    }
}
