//! `rlm-sandbox session` against the real runtimes: state, output
//! separation, interrupts, deaths, contexts, answers, the protocol's
//! errors, and cleanup. Calls answered by the orchestrator are in
//! tests/session_calls.rs.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::io::Write;
use std::time::Duration;

use common::repl::Repl;
use serde_json::{json, Value};

fn text(cell: &Value, stream: &str) -> String {
    cell[stream].as_str().unwrap_or_default().to_string()
}

/// Asserts nothing of the session process `pid` is left.
fn clean(env: &common::Env, pid: u32) {
    env.assert_clean(pid);
}

on_both_runtimes! {
    fn state_persists_across_a_hundred_cells(env) {
        let mut repl = Repl::start(env, &[]);
        assert_eq!(repl.ready["runtime"]["name"], env.runtime.as_str());
        let cell = repl.exec("total = 0\nseen = []");
        assert_eq!(cell["status"], "ok", "{cell}");
        for i in 1..=100 {
            let cell = repl.exec(&format!("total += {i}\nseen.append({i})\nprint(total)"));
            assert_eq!(cell["status"], "ok", "{cell}");
            assert_eq!(text(&cell, "stdout"), format!("{}\n", i * (i + 1) / 2), "cell {i}");
        }
        let cell = repl.exec("print(len(seen), seen[-1], total)");
        assert_eq!(text(&cell, "stdout"), "100 100 5050\n");
        let pid = repl.child.id();
        assert!(repl.close().success());
        clean(env, pid);
    }

    fn raw_fd_writes_land_in_their_own_cell(env) {
        let mut repl = Repl::start(env, &[]);
        let cell = repl.exec(concat!(
            "import os, sys\n",
            "print('py-out')\n",
            "os.write(1, b'fd1-out\\n')\n",
            "os.write(2, b'fd2-err\\n')\n",
            "sys.stderr.write('py-err\\n')\n",
            // Bytes that look like a frame header must stay output.
            "os.write(1, b'\\x00\\x00\\x00\\x05J{}\\n')\n",
        ));
        assert_eq!(cell["status"], "ok", "{cell}");
        let out = text(&cell, "stdout");
        assert!(out.contains("py-out\n") && out.contains("fd1-out\n"), "{out:?}");
        assert!(out.contains("J{}"), "{out:?}");
        let err = text(&cell, "stderr");
        assert!(err.contains("fd2-err\n") && err.contains("py-err\n"), "{err:?}");
        assert!(!out.contains("err") && !err.contains("out"), "{cell}");
        let next = repl.exec("print('next')");
        assert_eq!(text(&next, "stdout"), "next\n");
        assert_eq!(text(&next, "stderr"), "");
        assert!(repl.close().success());
    }

    fn a_thread_printing_after_its_cell_does_not_corrupt_later_results(env) {
        let mut repl = Repl::start(env, &[]);
        let cell = repl.exec(concat!(
            "import threading, time, os\n",
            "stop = False\n",
            "def chatter():\n",
            "    while not stop:\n",
            "        print('chatter ' * 50)\n",
            "        os.write(2, b'raw chatter\\n')\n",
            "        time.sleep(0.001)\n",
            "t = threading.Thread(target=chatter, daemon=True)\n",
            "t.start()\n",
        ));
        assert_eq!(cell["status"], "ok", "{cell}");
        for i in 0..30 {
            let cell = repl.exec(&format!("x_{i} = {i}\nprint('value', x_{i})"));
            assert_eq!(cell["status"], "ok", "{cell}");
            // The chatter may land in a running cell; the cell's own
            // output is whole and the protocol intact.
            assert!(text(&cell, "stdout").contains(&format!("value {i}\n")), "{cell}");
        }
        let cell = repl.exec("stop = True\nt.join()\nprint('quiet')");
        assert!(text(&cell, "stdout").ends_with("quiet\n"), "{cell}");
        let cell = repl.exec("print('after')");
        assert_eq!(text(&cell, "stdout"), "after\n", "{cell}");
        assert_eq!(text(&cell, "stderr"), "", "{cell}");
        assert!(repl.close().success());
    }

    fn output_past_the_ceiling_ends_the_cell_and_the_session_lives_on(env) {
        let mut repl = Repl::start(env, &["--max-output-bytes", "1m"]);
        repl.exec("kept = 7");
        let cell = repl.exec("import os\nwhile True:\n    print('x' * 1000)\n    os.write(2, b'e' * 100)");
        assert_eq!(cell["status"], "output_limit", "{cell}");
        assert_eq!((cell["interrupted"].as_bool(), cell["session_dead"].as_bool()), (Some(true), Some(false)), "{cell}");
        // What was kept is bounded: the agent sends one byte past the
        // ceiling in all, the host keeps head and tail of 1 MiB per stream.
        let kept = text(&cell, "stdout").len() + text(&cell, "stderr").len();
        assert!(kept < (1 << 20) + 512, "{kept} bytes");
        assert!(text(&cell, "stdout").starts_with("xxxx"), "{cell}");
        let cell = repl.exec("print(kept)");
        assert_eq!((text(&cell, "stdout").as_str(), text(&cell, "stderr").as_str()), ("7\n", ""), "{cell}");
        assert!(repl.close().success());
    }

    fn a_traceback_leaves_the_session_alive(env) {
        let mut repl = Repl::start(env, &[]);
        repl.exec("kept = 41");
        let cell = repl.exec("def f():\n    raise ValueError('boom')\nf()");
        assert_eq!(cell["status"], "error", "{cell}");
        let err = text(&cell, "stderr");
        assert!(err.starts_with("Traceback (most recent call last):"), "{err}");
        assert!(err.contains("ValueError: boom"), "{err}");
        assert!(err.contains("<cell"), "{err}");
        assert!(!err.contains("_rlm_agent"), "agent frames leak: {err}");
        let cell = repl.exec("syntax error here");
        assert_eq!(cell["status"], "error");
        assert!(text(&cell, "stderr").contains("SyntaxError"), "{cell}");
        let cell = repl.exec("raise SystemExit(3)");
        assert_eq!(cell["status"], "error", "{cell}");
        let cell = repl.exec("print(kept + 1)");
        assert_eq!((cell["status"].as_str(), text(&cell, "stdout").as_str()), (Some("ok"), "42\n"));
        assert!(repl.close().success());
    }

    fn a_cell_timeout_interrupts_and_keeps_the_state(env) {
        let mut repl = Repl::start(env, &[]);
        repl.exec("before = 'kept'");
        let r = repl.request("exec", json!({"code": "import time\nprint('started')\ntime.sleep(30)", "timeout": 1}));
        let cell = &r["cell"];
        assert_eq!(cell["status"], "timeout", "{r}");
        assert_eq!(cell["interrupted"], true, "{r}");
        assert_eq!(cell["session_dead"], false, "{r}");
        assert!(text(cell, "stdout").contains("started"), "{r}");
        assert!(text(cell, "stderr").contains("KeyboardInterrupt"), "{r}");
        let ms = cell["duration_ms"].as_u64().unwrap();
        assert!((1000..5000).contains(&ms), "{ms} ms");
        let cell = repl.exec("print(before)");
        assert_eq!(text(&cell, "stdout"), "kept\n", "{cell}");
        // A busy loop is interrupted too.
        let r = repl.request("exec", json!({"code": "while True:\n    pass", "timeout": 0.5}));
        assert_eq!((r["cell"]["status"].as_str(), r["cell"]["session_dead"].as_bool()), (Some("timeout"), Some(false)), "{r}");
        assert!(repl.close().success());
    }

    fn a_cell_that_swallows_the_interrupt_gets_the_sandbox_killed(env) {
        let mut repl = Repl::start(env, &["--interrupt-grace", "1"]);
        let pid = repl.child.id();
        let code = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
        let r = repl.request("exec", json!({"code": code, "timeout": 0.5}));
        let cell = &r["cell"];
        assert_eq!(cell["status"], "timeout", "{r}");
        assert_eq!(cell["session_dead"], true, "{r}");
        assert!(cell["error"].as_str().unwrap().contains("killed"), "{r}");
        for op in ["exec", "vars", "reset"] {
            let r = repl.request(op, json!({"code": "1"}));
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["error"]["kind"], "session_dead", "{r}");
        }
        // The sandbox is gone already, while the session still answers.
        common::assert_clean_runs(env.state.path(), &format!("rlms-{pid}-"));
        assert!(repl.close().success());
    }

    fn out_of_memory_in_a_cell_is_reported_and_ends_the_session(env) {
        let mut repl = Repl::start(env, &["--memory", "128m"]);
        let pid = repl.child.id();
        let cell = repl.exec("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))");
        assert_eq!(cell["status"], "oom", "{cell}");
        assert_eq!(cell["session_dead"], true, "{cell}");
        assert!(cell["usage"]["oom_kills"].as_u64().unwrap_or(0) >= 1, "{cell}");
        let r = repl.request("exec", json!({"code": "print(1)"}));
        assert_eq!(r["error"]["kind"], "session_dead", "{r}");
        assert!(repl.close().success());
        clean(env, pid);
    }

    fn final_answers_from_answer_ready_and_final_var(env) {
        let mut repl = Repl::start(env, &[]);
        let cell = repl.exec("answer['content'] = 'forty-two'\nanswer['ready'] = True");
        assert_eq!(cell["final_answer"], "forty-two", "{cell}");
        // An old answer never ends a later task.
        let cell = repl.exec("print(answer['ready'])");
        assert_eq!(cell["final_answer"], Value::Null, "{cell}");
        assert_eq!(text(&cell, "stdout"), "False\n");
        let cell = repl.exec("result = {'a': 1}\nFINAL_VAR('result')");
        assert_eq!(cell["final_answer"], "{'a': 1}", "{cell}");
        let cell = repl.exec("FINAL('done')");
        assert_eq!(cell["final_answer"], "done", "{cell}");
        // Overwritten names come back.
        repl.exec("answer = 3\nllm_query = None\ndel FINAL_VAR");
        let cell = repl.exec("print(type(answer).__name__, callable(llm_query), callable(FINAL_VAR))");
        assert_eq!(text(&cell, "stdout"), "dict True True\n", "{cell}");
        assert!(repl.close().success());
    }

    fn vars_get_and_reset(env) {
        let mut repl = Repl::start(env, &[]);
        repl.exec("numbers = list(range(10))\nname = 'x' * 100000\n_private = 1");
        let r = repl.request("vars", json!({}));
        assert_eq!(r["ok"], true, "{r}");
        let vars = r["vars"].as_array().unwrap();
        let find = |n: &str| vars.iter().find(|v| v["name"] == n).cloned();
        assert_eq!(find("numbers").unwrap()["type"], "list");
        assert_eq!(find("numbers").unwrap()["size"], 10);
        assert!(find("_private").is_none() && find("llm_query").is_none(), "{r}");
        let r = repl.request("get", json!({"name": "numbers"}));
        assert_eq!(r["repr"], "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "{r}");
        let r = repl.request("get", json!({"name": "name"}));
        assert_eq!(r["truncated"], true, "{r}");
        assert!(r["repr"].as_str().unwrap().len() <= 64 << 10, "{r}");
        let r = repl.request("get", json!({"name": "missing"}));
        assert_eq!((r["ok"].as_bool(), r["error"]["kind"].as_str()), (Some(false), Some("bad_request")), "{r}");
        assert!(repl.request("reset", json!({}))["ok"].as_bool().unwrap());
        let cell = repl.exec("print('numbers' in globals(), callable(llm_query))");
        assert_eq!(text(&cell, "stdout"), "False True\n", "{cell}");
        assert!(repl.close().success());
    }
}

on_both_runtimes! {
    fn a_large_context_is_searched_through_mmap(env) {
        // 200 MB of filler with one marker in the middle.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do\n";
        let lines = 200_000_000 / line.len();
        let mut block = Vec::with_capacity(line.len() * 10_000);
        for _ in 0..10_000 {
            block.extend_from_slice(line);
        }
        for i in 0..lines / 10_000 {
            file.write_all(&block).unwrap();
            if i == lines / 20_000 {
                file.write_all(b"THE-NEEDLE-7f3a\n").unwrap();
            }
        }
        file.flush().unwrap();
        let size = file.as_file().metadata().unwrap().len();
        let path = file.path().to_str().unwrap().to_string();
        let mut repl = Repl::start(env, &["--context", &path, "--memory", "256m"]);
        assert_eq!(repl.ready["contexts"][0]["size"], size);
        let cell = repl.exec(concat!(
            "print(type(context).__name__, 'ctx' in context)\n",
            "hits = ctx.search('THE-NEEDLE-[0-9a-f]+')\n",
            "print(len(hits), hits[0]['match'], hits[0]['offset'])\n",
            "print(ctx.size)\n",
            "print(ctx.snippet(hits[0]['offset'], 20))\n",
        ));
        assert_eq!(cell["status"], "ok", "{cell}");
        let out = text(&cell, "stdout");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("str True"), "{out}");
        let hit: Vec<&str> = lines.next().unwrap().split(' ').collect();
        assert_eq!(&hit[..2], ["1", "THE-NEEDLE-7f3a"], "{out}");
        let offset: u64 = hit[2].parse().unwrap();
        assert!(offset > size / 3 && offset < 2 * size / 3, "{offset} of {size}");
        assert_eq!(lines.next(), Some(size.to_string().as_str()));
        let stats = repl.request("stats", json!({}));
        let peak = stats["usage"]["memory_peak_bytes"].as_u64().expect("memory peak");
        assert!(peak < size / 2, "memory peak {peak} for a {size}-byte context");
        assert!(repl.close().success());
    }

    fn a_json_context_arrives_parsed_and_contexts_can_be_added(env) {
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("data.json");
        std::fs::write(&json_path, br#"{"items": [1, 2, 3], "name": "ctx"}"#).unwrap();
        let mut repl = Repl::start(env, &["--context", json_path.to_str().unwrap()]);
        let cell = repl.exec("print(type(context).__name__, context['items'], context_0 is context)");
        assert_eq!(text(&cell, "stdout"), "dict [1, 2, 3] True\n", "{cell}");
        let added = dir.path().join("more.txt");
        std::fs::write(&added, "second context\n").unwrap();
        let r = repl.request("add_context", json!({"path": added.to_str().unwrap()}));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["context"]["name"], "context_1", "{r}");
        let cell = repl.exec("print(repr(context_1), ctxs[1].size, len(ctxs))");
        assert_eq!(text(&cell, "stdout"), "'second context\\n' 15 2\n", "{cell}");
        let r = repl.request("add_context", json!({"path": "/nonexistent/file"}));
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("/nonexistent/file"), "{r}");
        let as_text = dir.path().join("raw.json");
        std::fs::write(&as_text, "{not json").unwrap();
        let r = repl.request("add_context", json!({"path": as_text.to_str().unwrap(), "format": "text"}));
        assert_eq!(r["ok"], true, "{r}");
        let cell = repl.exec("print(context_2)");
        assert_eq!(text(&cell, "stdout"), "{not json\n", "{cell}");
        assert!(repl.close().success());
    }

    // A 1 GiB context added to a running sandbox is not copied: the state
    // directory is a 16 MiB tmpfs (no hard link from another filesystem,
    // no room for a copy), and a marker written into the host file after
    // `add_context` is read in the sandbox, which no copy could show. The
    // sandbox sees it read-only although the file is writable by all; the
    // mounts go with the session. Its echo index is built without holding
    // the file in memory, and an echo of it right after `add_context` is
    // redacted.
    fn a_gib_context_added_from_another_filesystem_is_mounted_not_copied(env) {
        const GIB: u64 = 1 << 30;
        let _state_fs = common::Tmpfs::mount(env.state.path(), "16m");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        let write_at = |offset: u64, bytes: &[u8]| {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
            f.set_len(GIB).unwrap();
            f.write_all_at(bytes, offset).unwrap();
        };
        write_at(GIB - 32, b"first-marker-before-add-context\n");
        // 64 KiB of text at its start, never repeating.
        let text_start: String = (0..8192u32).map(|i| format!("w{:07x} ", i.wrapping_mul(2_654_435_761) >> 4)).collect();
        write_at(0, text_start.as_bytes());
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        let r = repl.request("add_context", json!({"path": path.to_str().unwrap()}));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["context"]["placed"], "mount", "{r}");
        assert_eq!(r["context"]["size"], GIB, "{r}");
        // Right after the reply (the index of 1 GiB still being built):
        // the output waits for it, and the echo is redacted.
        let cell = repl.exec("print(open(ctxs[0].path, 'rb').read(65536).decode())");
        assert!(!text(&cell, "stdout").contains(&text_start[1000..2000]), "the context left: {cell}");
        assert_eq!(cell["findings"][0]["kind"], "context_echo", "{cell}");
        // Indexed by reads of one chunk, not read whole into the driver:
        // its peak resident memory stays far below the file's size.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hwm_kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmHWM");
        assert!(hwm_kb < 256 << 10, "the session's peak RSS is {hwm_kb} kB for a 1 GiB context");
        // Written after add_context, over the end of the first marker.
        write_at(GIB - 16, b"second-marker-02");
        let cell = repl.exec(concat!(
            "import os\n",
            "f = open(ctxs[0].path, 'rb')\n",
            "f.seek(ctxs[0].size - 32)\n",
            "print(f.read(32), os.stat(ctxs[0].path).st_size)\n",
            "try:\n",
            "    open(ctxs[0].path, 'r+b')\n",
            "    print('writable')\n",
            "except OSError as e:\n",
            "    print('write', e.errno)\n",
        ));
        assert_eq!(
            text(&cell, "stdout"),
            format!("b'first-marker-befsecond-marker-02' {GIB}\nwrite {}\n", libc::EROFS),
            "{cell}"
        );
        let live = common::mounts_of_runs(env.state.path(), &format!("rlms-{pid}-"));
        assert_eq!(live.len(), 2, "the drop directory and the context: {live:?}");
        assert!(repl.close().success());
        clean(env, pid);
    }

    // A driver and its watchdog killed with a context mounted into their
    // sandbox: `gc` unmounts it and removes the run.
    fn gc_unmounts_the_contexts_of_a_killed_session(env) {
        let _state_fs = common::Tmpfs::mount(env.state.path(), "16m");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.txt");
        std::fs::write(&path, "a context on another filesystem\n").unwrap();
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        let r = repl.request("add_context", json!({"path": path.to_str().unwrap()}));
        assert_eq!(r["context"]["placed"], "mount", "{r}");
        let watchdog = common::watchdog_of(pid).expect("the session's watchdog");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(watchdog as i32), nix::sys::signal::SIGKILL).unwrap();
        repl.child.kill().unwrap();
        repl.child.wait().unwrap();
        let prefix = format!("rlms-{pid}-");
        assert_eq!(common::mounts_of_runs(env.state.path(), &prefix).len(), 2, "left by the killed driver");
        let out = env.command(&["gc", "--json"]).output().expect("gc");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["errors"], json!([]), "{report}");
        clean(env, pid);
    }

    fn an_added_context_printed_whole_is_redacted(env) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("added.txt");
        let sentence = "The quarterly figures for the northern region were revised twice before release.";
        std::fs::write(&path, sentence).unwrap();
        let mut repl = Repl::start(env, &[]);
        let r = repl.request("add_context", json!({"path": path.to_str().unwrap()}));
        assert_eq!(r["ok"], true, "{r}");
        let cell = repl.exec("print(context_0)\nprint(len(context_0))");
        let out = text(&cell, "stdout");
        assert!(!out.contains(sentence), "the added context left whole: {cell}");
        assert!(out.ends_with(&format!("{}\n", sentence.len())), "{cell}");
        assert_eq!(cell["findings"][0]["kind"], "context_echo", "{cell}");
        assert!(repl.close().success());
    }

    fn a_session_has_no_network_and_cannot_write_its_contexts(env) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.txt");
        std::fs::write(&path, "the context\n").unwrap();
        let mut repl = Repl::start_with_env(env, &["--context", path.to_str().unwrap()], &[("HOST_ONLY_SECRET", "s3")]);
        let added = dir.path().join("added.txt");
        std::fs::write(&added, "added\n").unwrap();
        let r = repl.request("add_context", json!({"path": added.to_str().unwrap()}));
        assert_eq!(r["ok"], true, "{r}");
        let cell = repl.exec(concat!(
            "import errno, os, socket\n",
            "def attempt(f):\n",
            "    try:\n",
            "        f()\n",
            "        return 'ok'\n",
            "    except OSError as e:\n",
            "        return '%s/%s' % (type(e).__name__, errno.errorcode.get(e.errno, e.errno))\n",
            "print('net', attempt(lambda: socket.create_connection(('8.8.8.8', 53), timeout=2)))\n",
            "print('ctx', attempt(lambda: open(ctxs[0].path, 'a').write('x')))\n",
            "print('added', attempt(lambda: open(ctxs[1].path, 'a').write('x')))\n",
            "d = os.path.dirname(ctxs[1].path)\n",
            "print('dir', attempt(lambda: open(os.path.join(d, 'new'), 'w').write('x')))\n",
            "print('env', sorted(k for k in os.environ if 'SECRET' in k))\n",
        ));
        // The exact class and errno per runtime, as docs/SECURITY.md states
        // them (and the catalogue's err() compares): an unrelated failure
        // (a timeout, a DNS error, ENOENT) is not the layer working.
        let (net, dir) = match env.runtime.as_str() {
            "runc" => ("OSError/ENETUNREACH", "OSError/EROFS"),
            _ => ("OSError/EHOSTUNREACH", "PermissionError/EACCES"),
        };
        let want = format!(
            "net {net}\nctx PermissionError/EACCES\nadded PermissionError/EACCES\ndir {dir}\nenv []\n"
        );
        assert_eq!(text(&cell, "stdout"), want, "{cell}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "the context\n");
        assert_eq!(std::fs::read_to_string(&added).unwrap(), "added\n");
        assert!(repl.close().success());
    }
}

on_both_runtimes! {
    fn malformed_lines_get_errors_and_the_session_lives_on(env) {
        let mut repl = Repl::start(env, &[]);
        let cases: [(&[u8], &str); 9] = [
            (b"this is not json\n", "not JSON"),
            (b"[1, 2]\n", "must be a JSON object"),
            (b"{\"id\": 1}\n", "missing field \"op\""),
            (b"{\"id\": 2, \"op\": \"fly\"}\n", "unknown op \"fly\""),
            (b"{\"op\": \"vars\"}\n", "missing field \"id\""),
            (b"{\"id\": 3, \"op\": \"exec\"}\n", "missing field \"code\""),
            (b"{\"id\": 4, \"op\": \"exec\", \"code\": 5}\n", "must be a string"),
            (b"{\"id\": 5, \"op\": \"exec\", \"code\": \"1\", \"timeout\": -1}\n", "timeout"),
            (b"{\"op\": \"call_result\", \"call\": 99, \"results\": []}\n", "no call 99"),
        ];
        for (line, want) in cases {
            repl.raw(line);
            let r = repl.line(Duration::from_secs(10)).expect("a response");
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["error"]["kind"], "bad_request", "{r}");
            assert!(r["error"]["message"].as_str().unwrap().contains(want), "{want}: {r}");
        }
        // A line above the limit (64 MiB) is skipped whole.
        let mut huge = vec![b'x'; (64 << 20) + 10];
        huge.push(b'\n');
        repl.raw(&huge);
        let r = repl.line(Duration::from_secs(30)).expect("a response");
        assert!(r["error"]["message"].as_str().unwrap().contains("more than"), "{r}");
        let cell = repl.exec("print('alive')");
        assert_eq!(text(&cell, "stdout"), "alive\n");
        assert!(repl.close().success());
    }

    fn end_of_input_sigterm_and_sigkill_leave_nothing_behind(env) {
        // End of stdin.
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        repl.exec("x = 1");
        repl.close_stdin();
        assert!(repl.wait_exit(Duration::from_secs(20)).success());
        clean(env, pid);
        // SIGTERM in the middle of a cell (its first line has run).
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        repl.send(&json!({"id": 1, "op": "exec", "code": format!("{}import time\ntime.sleep(60)", common::MARK_STARTED)}));
        common::wait_for_code(pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = repl.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(130), "{status:?}");
        clean(env, pid);
        // SIGKILL in the middle of a cell: the watchdog removes the sandbox.
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        let prefix = format!("rlms-{pid}-");
        repl.send(&json!({"id": 1, "op": "exec", "code": format!("{}while True: pass", common::MARK_STARTED)}));
        common::wait_for_code(pid);
        // Baseline: the sandbox runs, with processes in its cgroup.
        let before = common::leftovers(env.state.path(), &prefix);
        assert!(before.iter().any(|l| l.starts_with("cgroup ") && !l.ends_with("[]")), "{before:?}");
        repl.child.kill().unwrap();
        repl.child.wait().unwrap();
        let killed = std::time::Instant::now();
        while !common::leftovers(env.state.path(), &prefix).is_empty() {
            assert!(killed.elapsed() < common::WATCHDOG_BOUND, "left after SIGKILL: {:?}",
                common::leftovers(env.state.path(), &prefix));
            std::thread::sleep(Duration::from_millis(20));
        }
        clean(env, pid);
    }

    fn a_crashed_agent_ends_the_session_cleanly(env) {
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        let cell = repl.exec("import os\nos._exit(7)");
        assert_eq!(cell["session_dead"], true, "{cell}");
        assert!(cell["error"].as_str().unwrap().contains("agent"), "{cell}");
        let r = repl.request("get", json!({"name": "x"}));
        assert_eq!(r["error"]["kind"], "session_dead", "{r}");
        common::assert_clean_runs(env.state.path(), &format!("rlms-{pid}-"));
        // Frames forged by user code end the session, not the host, and
        // the session removes its sandbox as for any other death.
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        let cell = repl.exec("import os\nfor fd in range(100, 110):\n    try:\n        os.write(fd, b'\\xff\\xff\\xff\\xff')\n    except OSError:\n        pass\nimport time\ntime.sleep(1)");
        assert_eq!(cell["session_dead"], true, "{cell}");
        assert!(cell["error"].as_str().unwrap().contains("protocol error"), "{cell}");
        let r = repl.request("exec", json!({"code": "1"}));
        assert_eq!(r["error"]["kind"], "session_dead", "{r}");
        common::assert_clean_runs(env.state.path(), &format!("rlms-{pid}-"));
        assert!(repl.close().success());
    }

    fn a_done_forged_with_a_setup_the_cell_had_not_ends_the_session(env) {
        // User code writes a well-formed `done` for its own cell that
        // reports a setup (as the agent does for a cell that had one) on
        // every descriptor the agent's channel may use. The same frame
        // without `setup` would pass as the cell's end: the check is what
        // ends the session.
        let mut repl = Repl::start(env, &[]);
        let pid = repl.child.id();
        let forge = r#"import os, struct
msg = b'J{"t":"done","cell":1,"status":"ok","final_answer":"forged","setup":"ok"}'
for fd in range(100, 120):
    try:
        os.write(fd, struct.pack('>I', len(msg)) + msg)
    except OSError:
        pass
import time
time.sleep(1)"#;
        let cell = repl.exec(forge);
        assert_eq!(cell["session_dead"], true, "{cell}");
        assert!(
            cell["error"].as_str().unwrap().contains("reported a setup for cell 1, which had none"),
            "{cell}"
        );
        common::assert_clean_runs(env.state.path(), &format!("rlms-{pid}-"));
        assert!(repl.close().success());
    }
}

/// The pipes among `pid`'s descriptors (`pipe:[inode]`).
fn pipes_of(pid: u32) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with("pipe:"))
        .collect()
}

/// The agent process below `ancestor` (its command line runs the agent).
fn agent_below(ancestor: u32) -> u32 {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    let agents: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("_rlm_agent"))
        })
        .filter(|&pid| std::iter::successors(Some(pid), |&p| parent(p)).any(|p| p == ancestor))
        .collect();
    assert_eq!(agents.len(), 1, "agents below {ancestor}: {agents:?}");
    agents[0]
}

/// runc copies its container's stdio through pipes of its own (a hop
/// through runc each way), so a session's channel goes past it on fds 3
/// and 4: the agent's two channel pipes are the session process's own.
/// Through the relay no pipe is shared (the agent's are all runc's).
#[test]
fn under_runc_the_agent_channel_is_the_session_process_own_pipes() {
    if !common::prerequisites("runc") {
        return;
    }
    let env = common::Env::new("runc");
    let mut repl = Repl::start(&env, &[]);
    let session = repl.child.id();
    let agent = agent_below(session);
    let shared: Vec<_> = pipes_of(agent)
        .intersection(&pipes_of(session))
        .cloned()
        .collect();
    assert_eq!(
        shared.len(),
        2,
        "pipes shared by the agent and the session: {shared:?}"
    );
    // The agent moved them off 3 and 4: user code finds nothing there.
    let cell = repl.exec(concat!(
        "import errno, os\n",
        "for fd in (3, 4):\n",
        "    try:\n",
        "        os.fstat(fd)\n",
        "        print(fd, 'open')\n",
        "    except OSError as e:\n",
        "        print(fd, errno.errorcode[e.errno])\n",
    ));
    assert_eq!(text(&cell, "stdout"), "3 EBADF\n4 EBADF\n", "{cell}");
    assert!(repl.close().success());
    clean(&env, session);
}
