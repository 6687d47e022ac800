//! Calls from a session's sandbox to the host: answered by the
//! orchestrator, by a command and by an OpenAI-compatible endpoint, with
//! the host's limits enforced and prompts filtered for secrets.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

/// The OpenAI-compatible test server (tests/fixtures/openai_server.py).
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("requests.log");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/openai_server.py"
        );
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", "0", "--port-file", port_file.to_str().unwrap()])
            .args(["--log", log.to_str().unwrap()])
            .args(args)
            .spawn()
            .expect("python3 for the test server");
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "the test server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Server {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    fn a_command_answers_with_the_limits_enforced(env) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("concurrency");
        // Each answer takes 300 ms and records its start and end.
        let cmd = format!(
            "echo start >> {log}; read -r p; sleep 0.3; echo end >> {log}; echo \"cmd:$p\"",
            log = log.display()
        );
        let mut repl = Repl::start(env, &[
            "--llm-command", &cmd, "--llm-max-in-flight", "2", "--max-llm-calls", "8",
            "--llm-max-prompt-bytes", "1k",
        ]);
        let started = Instant::now();
        let cell = repl.exec("print(llm_query_batched([f'q{i}' for i in range(6)]))");
        let took = started.elapsed();
        let want: Vec<String> = (0..6).map(|i| format!("'cmd:q{i}'")).collect();
        assert_eq!(stdout(&cell), format!("[{}]\n", want.join(", ")), "{cell}");
        // Six 300 ms answers, two at a time: at least 0.9 s.
        assert!(took >= Duration::from_millis(900), "{took:?}");
        let mut running = 0i32;
        let mut peak = 0;
        for line in std::fs::read_to_string(&log).unwrap().lines() {
            running += if line == "start" { 1 } else { -1 };
            peak = peak.max(running);
        }
        assert_eq!(peak, 2, "at most two commands at once");
        // A prompt above the byte limit is refused without running the
        // command (it counts as the seventh call).
        let lines = std::fs::read_to_string(&log).unwrap().lines().count();
        let cell = repl.exec("print(llm_query('x' * 2000))");
        assert!(stdout(&cell).starts_with("Error: prompt of 2000 bytes"), "{cell}");
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), lines);
        // The eighth call is the last one allowed; the ninth is refused.
        let cell = repl.exec("print(llm_query('q7'))\nprint(llm_query('q8'))");
        assert_eq!(stdout(&cell).lines().next(), Some("cmd:q7"), "{cell}");
        assert!(stdout(&cell).lines().nth(1).unwrap().starts_with("Error: call limit reached"), "{cell}");
        assert!(repl.close().success());
    }

    fn a_call_beyond_its_timeout_returns_an_error(env) {
        let mut repl = Repl::start(env, &["--llm-command", "sleep 30", "--llm-timeout", "1"]);
        let started = Instant::now();
        let cell = repl.exec("print(llm_query('slow'))");
        // At the 1 s timeout, not when the command would end (30 s).
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(30), "{took:?}");
        assert!(stdout(&cell).starts_with("Error: "), "{cell}");
        assert!(stdout(&cell).contains("timed out"), "{cell}");
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

    fn an_openai_compatible_endpoint_answers(env) {
        let server = Server::start(&["--require-key", "sk-test-key-1234"]);
        let url = server.url();
        let mut repl = Repl::start_with_env(env, &[
            "--llm-endpoint", &url, "--llm-model", "small", "--llm-api-key-env", "TEST_LLM_KEY",
        ], &[("TEST_LLM_KEY", "sk-test-key-1234")]);
        let cell = repl.exec("print(llm_query('hi'))\nprint(llm_query_batched(['a', 'b'], model='big'))\nimport os\nprint(sorted(k for k in os.environ if 'KEY' in k))");
        assert_eq!(stdout(&cell), "echo:small:hi\n['echo:big:a', 'echo:big:b']\n[]\n", "{cell}");
        assert_eq!(server.requests().len(), 3);
        assert!(repl.close().success());
        // A wrong key: an error string, not a hang.
        let mut repl = Repl::start_with_env(env, &[
            "--llm-endpoint", &url, "--llm-model", "small", "--llm-api-key-env", "TEST_LLM_KEY",
        ], &[("TEST_LLM_KEY", "wrong")]);
        let cell = repl.exec("print(llm_query('hi'))");
        assert!(stdout(&cell).starts_with("Error: ") && stdout(&cell).contains("401"), "{cell}");
        assert!(repl.close().success());
    }
}
