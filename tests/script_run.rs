//! A one-shot run from a standby (`exec` with `"namespace": "script"`)
//! gives what `rlm-sandbox run` gives for the same code: a table of
//! snippets run both ways on both runtimes, status, exit code, signal,
//! streams and truncation compared.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::repl::Repl;
use serde_json::{json, Value};

/// Small output limits, so truncation and the output ceiling are cheap.
const VARS: &[(&str, &str)] = &[
    ("RLM_MAX_STDOUT_BYTES", "2048"),
    ("RLM_MAX_OUTPUT_BYTES", "65536"),
    ("RLM_EXECUTION_TIMEOUT", "2"),
];

/// (name, code, whether the streams are compared: a run stopped by the
/// driver keeps whatever it printed before the kill, which differs by
/// timing).
const SNIPPETS: &[(&str, &str, bool)] = &[
    ("print", "print('hi')\nprint(40 + 2)", true),
    ("trailing expression prints nothing", "1 + 1", true),
    ("sys.exit(3)", "import sys\nprint('before')\nsys.exit(3)", true),
    ("sys.exit(0)", "import sys\nsys.exit(0)", true),
    ("sys.exit(None)", "raise SystemExit", true),
    ("sys.exit(256)", "import sys\nsys.exit(256)", true),
    ("sys.exit(-1)", "import sys\nsys.exit(-1)", true),
    ("exit('msg')", "print('out')\nexit('msg')", true),
    ("raise", "def f():\n    raise ValueError('bad')\nf()", true),
    ("raise from", "try:\n    1 / 0\nexcept Exception as e:\n    raise KeyError('k') from e", true),
    ("syntax error", "x = (\n", true),
    ("KeyboardInterrupt", "raise KeyboardInterrupt", true),
    ("stderr writes", "import sys\nsys.stderr.write('e1\\n')\nprint('o')\nsys.stderr.write('e2\\n')", true),
    ("__name__, __file__, argv", "import sys\nprint(__name__, __file__, sys.argv)\nprint(sorted(k for k in globals() if not k.startswith('__')))", true),
    ("over the kept output", "print('x' * 5000)\nprint('tail')", true),
    ("a thread outlives the code", "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()", true),
    ("atexit", "import atexit\natexit.register(print, 'bye')\nprint('main')", true),
    // Its workers end when threading's exit functions run, before the join.
    ("an executor never shut down", "from concurrent.futures import ThreadPoolExecutor\nex = ThreadPoolExecutor(2)\nprint(ex.submit(lambda: 6 * 7).result())", true),
    ("over the output ceiling", "while True:\n    print('y' * 1000)", false),
    ("timeout", "while True:\n    pass", false),
];

fn compared(result: &Value, streams: bool) -> Value {
    let mut v = json!({
        "status": result["status"],
        "exit_code": result["exit_code"],
        "signal": result["signal"],
    });
    if streams {
        v["stdout"] = result["stdout"].clone();
        v["stderr"] = result["stderr"].clone();
        v["truncated"] = result["truncated"].clone();
    }
    v
}

fn run(env: &common::Env, code: &str) -> Value {
    let mut command = env.command(&["run", "--json", "-c", code]);
    command.envs(VARS.iter().copied());
    let child = command.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    env.assert_clean(pid);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn script(env: &common::Env, code: &str) -> Value {
    let mut repl = Repl::standby(env, &[], VARS);
    let ready = repl.begin(&[]);
    assert_eq!(ready["event"], "ready", "{ready}");
    let r = repl.request("exec", json!({"code": code, "namespace": "script"}));
    assert_eq!(r["ok"], true, "{r}");
    assert!(r.get("cell").is_none(), "{r}");
    let pid = repl.child.id();
    repl.close_stdin();
    repl.wait_exit(std::time::Duration::from_secs(30));
    env.assert_clean(pid);
    r["result"].clone()
}

on_both_runtimes! {
    fn a_script_from_a_standby_gives_what_run_gives(env) {
        let mut differ = Vec::new();
        for (name, code, streams) in SNIPPETS {
            let want = compared(&run(env, code), *streams);
            let got = compared(&script(env, code), *streams);
            if want != got {
                differ.push(format!("{name}:\n  run:    {want}\n  script: {got}"));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }

    // A script cell starts from a fresh `__main__`: nothing of the
    // session's globals, nor of an earlier script's.
    fn a_script_sees_no_earlier_globals(env) {
        let mut repl = Repl::standby(env, &[], &[]);
        repl.begin(&[]);
        repl.exec("marker = 1");
        let code = "print('marker' in globals(), 'llm_query' in globals())\nleft = 2";
        let r = repl.request("exec", json!({"code": code, "namespace": "script"}));
        assert_eq!(r["result"]["stdout"], "False False\n", "{r}");
        let r = repl.request("exec", json!({"code": "print('left' in globals())", "namespace": "script"}));
        assert_eq!(r["result"]["stdout"], "False\n", "{r}");
        let pid = repl.child.id();
        assert!(repl.close().success());
        env.assert_clean(pid);
    }
}
