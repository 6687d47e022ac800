//! `rlm-sandbox run` against real runsc and runc: outputs, exit codes,
//! inputs, limits and their classification, and nothing left behind.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

on_both_runtimes! {
    fn prints_and_exit_codes(env) {
        let (r, out) = env.run_json(
            b"import sys\nprint('hello from the sandbox')\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n",
            &[],
        );
        assert_eq!(r["status"], "error", "{r}");
        assert_eq!(r["exit_code"], 3);
        assert_eq!(r["signal"], serde_json::Value::Null);
        assert_eq!(r["stdout"], "hello from the sandbox\n");
        assert_eq!(r["stderr"], "to stderr\n");
        assert_eq!(r["runtime"]["name"], env.runtime.as_str());
        assert_eq!(r["runtime"]["fallback"], false);
        assert_eq!(out.status.code(), Some(3));
        let (r, out) = env.run_json(b"print(6 * 7)", &[]);
        assert_eq!((r["status"].as_str(), r["exit_code"].as_i64()), (Some("ok"), Some(0)));
        assert_eq!(r["stdout"], "42\n");
        assert_eq!(out.status.code(), Some(0));
        assert!(r["duration_ms"].as_u64().is_some());
        assert!(r["usage"]["memory_peak_bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
    }

    fn passes_streams_through_without_json(env) {
        let out = env
            .command(&["run", "-c", "import sys; print('out'); sys.stderr.write('err\\n'); sys.exit(5)"])
            .output()
            .expect("run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
        assert_eq!(out.status.code(), Some(5));
    }

    fn code_from_argument_file_and_stdin(env) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("code.py");
        std::fs::write(&file, "print('from a file')").expect("write");
        let out = env.command(&["run", file.to_str().expect("utf8")]).output().expect("run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from a file\n");
        let out = env.command(&["run", "-c", "print('from -c')"]).output().expect("run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from -c\n");
        let (r, _) = env.run_json(b"print('from stdin')", &["-"]);
        assert_eq!(r["stdout"], "from stdin\n");
    }

    fn ten_megabytes_of_code_from_stdin(env) {
        // 10 MB of code never fits argv (128 KiB per argument): it must
        // travel through the bundle.
        let mut code = String::from("total = 0\n");
        while code.len() < 10 << 20 {
            code.push_str("total += 1  # padding padding padding padding padding padding\n");
        }
        code.push_str("print(total)\n");
        let lines = code.lines().count() - 2;
        let (r, _) = env.run_json(code.as_bytes(), &["--timeout", "60"]);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["stdout"], format!("{lines}\n"));
    }

    fn the_rootfs_is_hardened(env) {
        let code = br#"
import os
print("uid", os.getuid(), os.getgid())
for m in ("subprocess", "multiprocessing", "ctypes", "_posixsubprocess"):
    try:
        __import__(m)
        print(m, "IMPORTED")
    except ImportError as e:
        print(m, "ImportError", "rlm-sandbox" in str(e))
try:
    os.system("true")
    print("system RAN")
except PermissionError as e:
    print("system PermissionError", "rlm-sandbox" in str(e))
try:
    open("/etc/shadow")
    print("shadow READ")
except PermissionError:
    print("shadow PermissionError")
import json, sqlite3, threading, hashlib
t = threading.Thread(target=lambda: None); t.start(); t.join()
open("/tmp/x", "w").write("ok")
print("stdlib ok")
"#;
        let (r, _) = env.run_json(code, &[]);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(
            r["stdout"],
            "uid 65432 65432\nsubprocess ImportError True\nmultiprocessing ImportError True\n\
             ctypes ImportError True\n_posixsubprocess ImportError True\n\
             system PermissionError True\nshadow PermissionError\nstdlib ok\n"
        );
    }

    fn timeout_stops_the_code_at_the_limit(env) {
        // The code's own clock says how long it ran: the limit counts from
        // before the sandbox starts, so the code cannot outlive it by more
        // than the kill takes, however slow start-up is on this machine.
        let code = b"import time\nprint('first', time.monotonic(), flush=True)\nwhile True:\n    \
                     print('last', time.monotonic(), flush=True)\n    time.sleep(0.01)\n";
        let (r, _) = env.run_json(code, &["--timeout", "5"]);
        assert_eq!(r["status"], "timeout", "{r}");
        let out = r["stdout"].as_str().expect("stdout");
        let stamp = |tag: &str| -> f64 {
            let line = out.lines().rfind(|l| l.starts_with(tag));
            let line = line.unwrap_or_else(|| panic!("no {tag:?} line (the code never ran?): {r}"));
            line[tag.len() + 1..].parse().expect("a time")
        };
        let ran = stamp("last") - stamp("first");
        assert!(ran > 0.0 && ran < 5.5, "the code ran {ran:.2} s under a 5 s limit: {r}");
        assert!(r["duration_ms"].as_u64().is_some_and(|ms| ms >= 5000), "ended before the limit: {r}");
    }

    fn output_ceiling_ends_an_endless_print_loop(env) {
        let (r, _) = env.run_json(
            b"while True: print('spam' * 1000)",
            &["--max-output-bytes", "20m", "--max-stdout-bytes", "64k", "--timeout", "30"],
        );
        assert_eq!(r["status"], "output_limit", "{r}");
        assert!(r["truncated"]["stdout"].as_u64().expect("count") > 10 << 20, "{r}");
        assert!(r["stdout"].as_str().expect("text").contains("bytes dropped"));
    }

    fn a_gigabyte_of_output_keeps_the_driver_small(env) {
        let mut child = env
            .command(&[
                "run", "--json", "--max-output-bytes", "2g", "--timeout", "120", "-c",
                "import sys\nb = 'x' * (1 << 20)\nfor _ in range(1024): sys.stdout.write(b)\nprint('END')",
            ])
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            stdout.read_to_string(&mut s).expect("read");
            s
        });
        let mut peak_kib = 0u64;
        while child.try_wait().expect("try_wait").is_none() {
            if let Some(kib) = vm_hwm_kib(pid) {
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let r: serde_json::Value = serde_json::from_str(reader.join().expect("join").trim()).expect("json");
        env.assert_clean(pid);
        assert_eq!(r["status"], "ok", "{r}");
        let kept = r["stdout"].as_str().expect("stdout");
        assert!(kept.ends_with("xxxxEND\n"), "tail kept");
        let dropped = r["truncated"]["stdout"].as_u64().expect("dropped");
        assert_eq!(dropped + (1 << 20), (1 << 30) + 4, "1 GiB + 'END\\n' minus the 1 MiB kept");
        assert!(peak_kib > 0, "never saw the driver's memory");
        assert!(peak_kib < 20 * 1024, "driver peak RSS {peak_kib} KiB");
    }

    fn nothing_left_after_a_runtime_failure(env) {
        // A rootfs without Python: refused before anything starts.
        let empty = tempfile::tempdir().expect("tempdir");
        let out = env
            .command(&["run", "--rootfs", empty.path().to_str().expect("utf8"), "-c", "print(1)"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("has no Python"));
        // A rootfs whose Python cannot start: the runtime fails.
        let broken = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(broken.path().join("usr/bin")).expect("mkdir");
        std::fs::write(broken.path().join("usr/bin/python3"), "not an executable").expect("write");
        let child = env
            .command(&["run", "--json", "--rootfs", broken.path().to_str().expect("utf8"), "-c", "print(1)"])
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let out = child.wait_with_output().expect("wait");
        env.assert_clean(pid);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(r["status"], "sandbox_error", "{r}");
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
        assert_eq!(out.status.code(), Some(125));
    }

    fn interrupted_driver_removes_its_sandbox(env) {
        let mut child = env
            .command(&["run", "-c", &format!("{}import time\ntime.sleep(60)", common::MARK_STARTED)])
            .spawn()
            .expect("spawn");
        let pid = child.id();
        common::wait_for_code(pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT)
            .expect("SIGINT");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(130));
        env.assert_clean(pid);
    }

    fn gc_removes_what_a_killed_driver_left(env) {
        let mut child = env
            .command(&["run", "-c", &format!("{}import time\ntime.sleep(120)", common::MARK_STARTED)])
            .spawn()
            .expect("spawn");
        let pid = child.id();
        common::wait_for_code(pid);
        // The driver and its watchdog both die (a power cut, a kill of the
        // whole tree): nothing cleans up but gc.
        let watchdog = common::watchdog_of(pid).expect("the run's watchdog");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(watchdog as i32), nix::sys::signal::SIGKILL)
            .expect("SIGKILL the watchdog");
        child.kill().expect("SIGKILL the driver");
        child.wait().expect("reap");
        // The driver died without cleaning: its run is still there.
        let runs: Vec<_> = std::fs::read_dir(env.state.path()).expect("state").flatten().collect();
        assert_eq!(runs.len(), 1, "the killed driver's run directory");
        let out = env.command(&["gc", "--json"]).output().expect("gc");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let prefix = format!("rlms-{pid}-");
        assert!(
            report["removed"].as_array().expect("removed").iter().any(|id| id.as_str().is_some_and(|s| s.starts_with(&prefix))),
            "{report}"
        );
        env.assert_clean(pid);
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// A `run` forks its watchdog at its start (no exec of the binary while
// the runtime starts): named rlm-watchdog, in a process group of its own
// (a kill of the driver's group spares it), with the signal dispositions
// an exec'd one has (only the terminal's signals and SIGPIPE ignored, no
// handler of the driver's), holding none of the driver's stdio. The
// control: with RLM_SANDBOX_BIN naming another copy of the binary, that
// binary is exec'd as the watchdog instead. (That either one cleans up
// after a killed driver: a_killed_driver_leaves_no_sandbox_running.)
#[test]
fn a_run_forks_its_watchdog_unless_another_binary_is_named() {
    if !common::prerequisites("runc") {
        return;
    }
    let env = common::Env::new("runc");
    let copy = env.state.path().join("rlm-sandbox-copy");
    std::fs::copy(common::BIN, &copy).expect("copy the binary");
    for named in [None, Some(&copy)] {
        let mut command = env.command(&[
            "run",
            "-c",
            &format!("{}import time\ntime.sleep(120)", common::MARK_STARTED),
        ]);
        match named {
            Some(path) => command.env("RLM_SANDBOX_BIN", path),
            None => command.env_remove("RLM_SANDBOX_BIN"),
        };
        let mut child = command.spawn().expect("spawn");
        let pid = child.id();
        common::wait_for_code(pid);
        let watchdog = common::watchdog_of(pid).expect("the run's watchdog");
        let proc = |file: &str| {
            std::fs::read_to_string(format!("/proc/{watchdog}/{file}")).expect("/proc")
        };
        let status_field = |name: &str| {
            let status = proc("status");
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .expect("field")
                .to_string();
            u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
        };
        let fd = |n: u32| std::fs::read_link(format!("/proc/{watchdog}/fd/{n}")).expect("fd");
        let stat = proc("stat");
        let pgid: u32 = stat
            .rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .nth(2)
            .expect("pgid")
            .parse()
            .expect("pgid");
        assert_eq!(pgid, watchdog, "a process group of its own");
        let ignored = [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE]
            .iter()
            .fold(0u64, |m, s| m | 1 << (s - 1));
        // The standard signals (1-31); real-time ones ignored by whoever
        // started this test stay ignored across an exec as across a fork.
        let standard = (1u64 << 31) - 1;
        assert_eq!(status_field("SigIgn:") & standard, ignored);
        let drivers = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
            .iter()
            .fold(0u64, |m, s| m | 1 << (s - 1));
        assert_eq!(
            status_field("SigCgt:") & drivers,
            0,
            "no handler of the driver's"
        );
        if named.is_none() {
            assert_eq!(proc("comm"), "rlm-watchdog\n");
            for n in 0..3 {
                assert_eq!(fd(n), std::path::Path::new("/dev/null"), "fd {n}");
            }
        } else {
            assert_eq!(
                proc("comm"),
                "rlm-sandbox-cop\n",
                "the named binary, exec'd"
            );
            assert!(proc("cmdline").contains("__watchdog"));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        assert_eq!(child.wait().expect("wait").code(), Some(130));
        env.assert_clean(pid);
    }
}

#[test]
fn memory_bomb_is_oom_with_137_on_runc() {
    if !common::prerequisites("runc") {
        return;
    }
    let env = common::Env::new("runc");
    let (r, out) = env.run_json(b"x = 'a' * 10**9\nprint('survived')", &[]);
    assert_eq!(r["status"], "oom", "{r}");
    assert_eq!(r["exit_code"], 137);
    assert_eq!(
        r["usage"]["oom_kills"].as_u64().map(|n| n >= 1),
        Some(true),
        "{r}"
    );
    assert_eq!(out.status.code(), Some(137));
    assert!(!r["stdout"].as_str().expect("stdout").contains("survived"));
}

#[test]
fn memory_bomb_on_runsc_is_contained_and_reported_as_measured() {
    if !common::prerequisites("runsc") {
        return;
    }
    let env = common::Env::new("runsc");
    let (r, _) = env.run_json(b"x = 'a' * 10**9\nprint('survived')", &[]);
    // gVisor's Sentry holds the guest's memory: the host OOM killer ends
    // the whole sandbox, and the cgroup counter says so.
    assert!(
        !r["stdout"].as_str().expect("stdout").contains("survived"),
        "{r}"
    );
    assert_eq!(r["status"], "oom", "{r}");
    assert_eq!(r["exit_code"], 137, "{r}");
    assert!(
        r["usage"]["oom_kills"].as_u64().is_some_and(|n| n >= 1),
        "{r}"
    );
}

#[test]
fn a_hung_runtime_is_killed_at_the_timeout() {
    if !common::prerequisites("runsc") {
        return;
    }
    // runsc --platform=kvm hangs forever on this kind of host: the driver
    // must kill the runtime's own processes, not only the sandbox.
    let env = common::Env::new("runsc");
    let start = Instant::now();
    let (r, _) = env.run_json(
        b"print('never')",
        &["--timeout", "3", "--runsc-flags", "--platform=kvm"],
    );
    // The hang is forever: returning at all is the property. The bound is
    // generous (a loaded machine tears down slowly), the lower one exact.
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(r["status"], "timeout", "{r}");
    assert_ne!(r["stdout"], "never\n");
}

/// Runs `argv` with a stdin pipe holding `MARKER` and kept open until the
/// process has exited (closing it early would make an inherited stdin read
/// as empty too); returns its stdout.
fn stdout_with_open_stdin(mut command: std::process::Command) -> String {
    const MARKER: &[u8] = b"host-stdin-marker-5f3a\n";
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, MARKER).expect("write the marker");
    let out = child.wait_with_output().expect("wait");
    drop(stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads whatever is already on stdin without blocking on a pipe that
/// stays open: an inherited stdin shows the marker.
const READ_STDIN: &str =
    "import os, select\nr, _, _ = select.select([0], [], [], 5)\nprint(repr(os.read(0, 100) if r else 'nothing'))";

#[test]
fn stdin_is_not_inherited() {
    // Negative control: the same code, given the same open stdin directly,
    // sees the marker (so the check below can fail).
    let mut host = std::process::Command::new("python3");
    host.args(["-c", READ_STDIN]);
    assert_eq!(
        stdout_with_open_stdin(host),
        "b'host-stdin-marker-5f3a\\n'\n"
    );
    for runtime in ["runc", "runsc"] {
        if !common::prerequisites(runtime) {
            continue;
        }
        let env = common::Env::new(runtime);
        let got =
            stdout_with_open_stdin(env.command(&["run", "--timeout", "60", "-c", READ_STDIN]));
        assert!(
            !got.contains("marker"),
            "{runtime}: the sandbox read the driver's stdin: {got}"
        );
        assert!(got == "b''\n" || got == "'nothing'\n", "{runtime}: {got:?}");
    }
}

on_both_runtimes! {
    // An orchestrator that SIGKILLs its worker (or the OOM killer choosing
    // the driver) must not leave untrusted code running: the run's
    // watchdog ends and removes the sandbox within seconds.
    fn a_killed_driver_leaves_no_sandbox_running(env) {
        for code in ["while True: pass", "import time\ntime.sleep(600)"] {
            let mut child = env
                .command(&["run", "--timeout", "600", "-c", &format!("{}{code}", common::MARK_STARTED)])
                .spawn()
                .expect("spawn");
            let pid = child.id();
            let prefix = format!("rlms-{pid}-");
            common::wait_for_code(pid);
            // Baseline: the sandbox really runs, with processes in its cgroup.
            let before = common::leftovers(env.state.path(), &prefix);
            assert!(before.iter().any(|l| l.starts_with("cgroup ") && !l.ends_with("[]")), "{before:?}");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL)
                .expect("kill the driver");
            let _ = child.wait();
            let killed = Instant::now();
            let mut left = common::leftovers(env.state.path(), &prefix);
            while !left.is_empty() && killed.elapsed() < common::WATCHDOG_BOUND {
                std::thread::sleep(Duration::from_millis(20));
                left = common::leftovers(env.state.path(), &prefix);
            }
            assert!(left.is_empty(), "{code:?}: {:?} after the driver's SIGKILL: {left:?}", killed.elapsed());
            eprintln!("{code:?}: all gone {:?} after the driver's SIGKILL", killed.elapsed());
        }
    }

    // A run is watched or it does not run: a watchdog that cannot arm (here
    // one that reads its run, lets the runtime start, and exits) ends the
    // run as a driver error, and the sandbox already started is removed
    // with everything else.
    fn a_run_whose_watchdog_cannot_arm_is_refused(env) {
        let fake = env.state.path().join("fake-watchdog");
        std::fs::write(&fake, "#!/bin/sh\nread -r run\nsleep 1\nexit 3\n").expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let child = env
            .command(&["run", "-c", "import time\ntime.sleep(30)\nprint('ran')"])
            .env("RLM_SANDBOX_BIN", &fake)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let out = child.wait_with_output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("watchdog") && stderr.contains("exited"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
        env.assert_clean(pid);
        let left = common::leftovers(env.state.path(), &format!("rlms-{pid}-"));
        assert!(left.is_empty(), "{left:?}");
    }
}

on_both_runtimes! {
    // A one-sentence context printed whole is an echo however short: the
    // run's stdout carries the redaction and its findings the echo. The
    // baseline, the same run without the context, prints the sentence.
    fn a_short_context_printed_whole_is_redacted(env) {
        let dir = tempfile::tempdir().expect("tempdir");
        let context = dir.path().join("context.txt");
        let sentence = "The quarterly revenue of Acme Corp was 4.2 million USD";
        std::fs::write(&context, sentence).expect("write");
        let code = format!("print({sentence:?})\nprint('done')");
        let (r, _) = env.run_json(b"", &["-c", &code]);
        assert_eq!(r["stdout"], format!("{sentence}\ndone\n"), "{r}");
        let path = context.to_str().expect("utf8");
        let (r, _) = env.run_json(b"", &["--context", path, "-c", &code]);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["stdout"], "[REDACTED:context_echo]\ndone\n", "{r}");
        assert_eq!(r["findings"][0]["kind"], "context_echo", "{r}");
        assert_eq!(r["findings"][0]["span"], serde_json::json!([0, 54]), "{r}");
    }
}
