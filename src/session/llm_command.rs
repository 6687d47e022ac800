//! `--llm-command`: answer each prompt by running a shell command.
//!
//! One process per prompt: `sh -c CMD`, in its own process group, with the
//! prompt on its stdin and the answer read from its stdout. The model the
//! code asked for (if any) is in `RLM_LLM_MODEL`. At the deadline, when the
//! answer grows past its limit, or once the command has exited, the whole
//! process group is killed, so nothing the command started outlives it.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::calls::PromptHandler;

/// How much of the command's stderr is kept (its end) for error messages.
const STDERR_TAIL_BYTES: usize = 2048;

/// How often a running command is checked for having exited while its
/// pipes are still open (its output normally ends with its exit).
const EXIT_CHECK: Duration = Duration::from_millis(20);

/// How long, once the command exited and its group was killed, its pipes
/// may stay open (held by a process that left the group) before the
/// answer is taken as read so far.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Answers prompts with a shell command (`--llm-command`).
#[derive(Debug, Clone)]
pub struct CommandHandler {
    command: String,
    max_answer_bytes: usize,
}

impl CommandHandler {
    /// `command` is run by `sh -c`; an answer longer than
    /// `max_answer_bytes` is an error.
    pub fn new(command: impl Into<String>, max_answer_bytes: usize) -> Self {
        CommandHandler {
            command: command.into(),
            max_answer_bytes,
        }
    }
}

impl PromptHandler for CommandHandler {
    fn answer(
        &self,
        model: Option<&str>,
        prompt: &str,
        deadline: Instant,
    ) -> Result<String, String> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let timed_out = || format!("timed out after {} ms", round_ms(budget));
        if budget.is_zero() {
            return Err(timed_out());
        }
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(model) = model {
            command.env("RLM_LLM_MODEL", model);
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot run `sh -c {}`: {err}", self.command))?;
        let mut group = Group::new(&mut child);

        // The prompt is written by a thread, so a command that does not
        // read it (or reads it late) cannot block us; it ends with EPIPE
        // at the latest when the group is killed.
        if let Some(mut stdin) = group.child.stdin.take() {
            let prompt = prompt.as_bytes().to_vec();
            let spawned = std::thread::Builder::new()
                .name("llm-command-stdin".into())
                .spawn(move || {
                    let _ = stdin.write_all(&prompt);
                });
            if let Err(err) = spawned {
                return Err(format!("cannot start the prompt writer: {err}"));
            }
        }
        let (Some(stdout), Some(stderr)) = (group.child.stdout.take(), group.child.stderr.take())
        else {
            return Err("command's pipes are missing".into());
        };

        let mut out = Output::new(stdout, self.max_answer_bytes.saturating_add(1));
        let mut err = Output::new(stderr, STDERR_TAIL_BYTES);
        loop {
            if !group.exited {
                group.check_exited()?;
            }
            if group.exited && out.eof && err.eof {
                break;
            }
            let now = Instant::now();
            let mut wait = match group.exited_at {
                // Exited, but something that left the group may hold its
                // output open: answer with what was read by then.
                Some(at) if now >= deadline.min(at + DRAIN_GRACE) => break,
                Some(at) => deadline.min(at + DRAIN_GRACE) - now,
                None if now >= deadline => return Err(timed_out()),
                None => deadline - now,
            };
            if !group.exited {
                wait = wait.min(EXIT_CHECK);
            }
            if out.eof && err.eof {
                std::thread::sleep(wait);
                continue;
            }
            wait_readable(&mut out, &mut err, wait)?;
            if out.buf.len() > self.max_answer_bytes {
                return Err(format!(
                    "answer larger than the limit of {} bytes",
                    self.max_answer_bytes
                ));
            }
        }
        let status = group.reap()?;
        if !status.success() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("command exited with status {code}"),
                (None, Some(signal)) => format!("command killed by signal {signal}"),
                (None, None) => format!("command ended with {status}"),
            };
            let tail = String::from_utf8_lossy(&err.buf);
            let tail = tail.trim();
            return Err(if tail.is_empty() {
                how
            } else {
                format!("{how}: {tail}")
            });
        }
        let mut answer = out.buf;
        if answer.last() == Some(&b'\n') {
            answer.pop();
        }
        Ok(match String::from_utf8(answer) {
            Ok(answer) => answer,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        })
    }
}

/// `d` in whole milliseconds, rounded to the nearest.
pub(crate) fn round_ms(d: Duration) -> u128 {
    (d.as_micros() + 500) / 1000
}

/// The command's process group; killed and reaped when dropped unless
/// already reaped, so no early return leaves a process behind.
struct Group<'a> {
    child: &'a mut Child,
    pgid: Pid,
    /// The leader exited (a zombie, not yet reaped, so its pid and
    /// group id cannot be reused) and the group was killed.
    exited: bool,
    exited_at: Option<Instant>,
    reaped: bool,
}

impl<'a> Group<'a> {
    fn new(child: &'a mut Child) -> Self {
        let pgid = Pid::from_raw(child.id() as i32);
        Group {
            child,
            pgid,
            exited: false,
            exited_at: None,
            reaped: false,
        }
    }

    /// Notes (without reaping) whether the leader exited; if so, kills
    /// what it left running in its group.
    fn check_exited(&mut self) -> Result<(), String> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pgid), flags) {
            Ok(WaitStatus::StillAlive) => Ok(()),
            Ok(_) => {
                self.exited = true;
                self.exited_at = Some(Instant::now());
                self.kill();
                Ok(())
            }
            Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(err) => Err(format!("cannot wait for the command: {err}")),
        }
    }

    fn kill(&self) {
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }

    /// Kills the group (again: harmless) and reaps the leader.
    fn reap(&mut self) -> Result<ExitStatus, String> {
        self.kill();
        let status = self
            .child
            .wait()
            .map_err(|err| format!("cannot wait for the command: {err}"));
        self.reaped = true;
        status
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// One of the command's output pipes and what was read from it.
struct Output<R> {
    pipe: R,
    buf: Vec<u8>,
    /// Keep at most this many bytes: stdout keeps its start (one byte past
    /// the answer limit, to notice it), stderr its end.
    keep: usize,
    eof: bool,
}

impl<R: Read + AsFd> Output<R> {
    fn new(pipe: R, keep: usize) -> Self {
        Output {
            pipe,
            buf: Vec::new(),
            keep,
            eof: false,
        }
    }

    /// Reads what is available (the pipe polled readable, so this does
    /// not block).
    fn read_some(&mut self, tail: bool) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match self.pipe.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                if self.buf.len() > self.keep {
                    if tail {
                        let excess = self.buf.len() - self.keep;
                        self.buf.drain(..excess);
                    } else {
                        self.buf.truncate(self.keep);
                    }
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read the command's output: {err}")),
        }
        Ok(())
    }
}

/// Waits up to `wait` for either pipe to be readable, then reads them.
fn wait_readable(
    out: &mut Output<ChildStdout>,
    err: &mut Output<ChildStderr>,
    wait: Duration,
) -> Result<(), String> {
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    let events = PollFlags::POLLIN;
    let (out_ready, err_ready) = {
        let mut fds = Vec::with_capacity(2);
        if !out.eof {
            fds.push(PollFd::new(out.pipe.as_fd(), events));
        }
        if !err.eof {
            fds.push(PollFd::new(err.pipe.as_fd(), events));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => return Err(format!("cannot poll the command's output: {e}")),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let mut ready = fds.iter().map(ready);
        let out_ready = !out.eof && ready.next().unwrap_or(false);
        let err_ready = !err.eof && ready.next().unwrap_or(false);
        (out_ready, err_ready)
    };
    if out_ready {
        out.read_some(false)?;
    }
    if err_ready {
        err.read_some(true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ms(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// Whether a process whose command line is exactly `argv` still runs
    /// after its group was killed (SIGKILL is delivered at once, but a
    /// grandchild finishes dying, and is reaped by init, on its own): waits
    /// for it to go, up to a failure deadline far beyond its 30 s sleep's
    /// share of a loaded machine.
    fn survives(argv: &[&str]) -> bool {
        let start = Instant::now();
        while running(argv) {
            if start.elapsed() > Duration::from_secs(20) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Whether a process whose command line is exactly `argv` is running.
    fn running(argv: &[&str]) -> bool {
        let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return false;
        };
        dir.flatten().any(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline != want {
                return false;
            }
            // A zombie has an empty cmdline, but be explicit anyway.
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[test]
    fn answers_from_stdout() {
        let h = CommandHandler::new("tr a-z A-Z", 1024);
        assert_eq!(
            h.answer(None, "hello world\n", in_ms(5000)),
            Ok("HELLO WORLD".into())
        );
        // Only one trailing newline is stripped.
        let h = CommandHandler::new("printf 'a\\n\\n'", 1024);
        assert_eq!(h.answer(None, "", in_ms(5000)), Ok("a\n".into()));
    }

    #[test]
    fn passes_the_model() {
        let h = CommandHandler::new("printf '%s' \"$RLM_LLM_MODEL\"", 1024);
        assert_eq!(h.answer(Some("m-1"), "x", in_ms(5000)), Ok("m-1".into()));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let h = CommandHandler::new("printf 'a\\377b'", 1024);
        assert_eq!(h.answer(None, "", in_ms(5000)), Ok("a\u{fffd}b".into()));
    }

    #[test]
    fn non_zero_exit_names_status_and_stderr() {
        let h = CommandHandler::new("echo partial; echo 'bad key' >&2; exit 3", 1024);
        assert_eq!(
            h.answer(None, "x", in_ms(5000)),
            Err("command exited with status 3: bad key".into())
        );
        let h = CommandHandler::new("exit 4", 1024);
        assert_eq!(
            h.answer(None, "x", in_ms(5000)),
            Err("command exited with status 4".into())
        );
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let h = CommandHandler::new(
            "head -c 100000 /dev/zero | tr '\\0' e >&2; echo END >&2; exit 1",
            1024,
        );
        let err = h.answer(None, "", in_ms(5000)).expect_err("fails");
        assert!(err.ends_with("eeeeEND"), "{err}");
        assert!(err.len() <= STDERR_TAIL_BYTES + 64, "{}", err.len());
    }

    #[test]
    fn timeout_kills_the_group() {
        // A unique argument, so no other test's process is mistaken for it.
        let argv = ["sleep", "30.0417"];
        let h = CommandHandler::new(format!("{} {} & wait", argv[0], argv[1]), 1024);
        let start = Instant::now();
        let got = h.answer(None, "x", in_ms(300));
        let took = start.elapsed();
        assert_eq!(got, Err("timed out after 300 ms".into()));
        // At the deadline, not when the command would have ended (30 s):
        // bounds that hold on any machine, however loaded.
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert!(!survives(&argv), "the sleep survived");
    }

    #[test]
    fn exited_command_leaves_nothing_behind() {
        // The shell exits at once; its background job (holding stdout
        // open) is killed with the group instead of being waited for.
        let argv = ["sleep", "30.0418"];
        let h = CommandHandler::new(format!("echo hi; {} {} &", argv[0], argv[1]), 1024);
        let start = Instant::now();
        assert_eq!(h.answer(None, "x", in_ms(60_000)), Ok("hi".into()));
        // Not held until the background job's 30 s sleep ends.
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(!survives(&argv), "the background sleep survived");
    }

    #[test]
    fn process_leaving_the_group_does_not_hold_the_answer() {
        let argv = ["sleep", "30.0419"];
        let h = CommandHandler::new(
            format!("echo hi; setsid {} {} & sleep 0.1", argv[0], argv[1]),
            1024,
        );
        let start = Instant::now();
        let got = h.answer(None, "x", in_ms(60_000));
        let took = start.elapsed();
        // Not ours to kill any more (it left the group): the test cleans up.
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
            if std::fs::read(entry.path().join("cmdline")).unwrap_or_default() == want {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        assert_eq!(got, Ok("hi".into()));
        // Not held until the escaped 30 s sleep ends.
        assert!(took < Duration::from_secs(30), "{took:?}");
    }

    #[test]
    fn answer_too_large() {
        // `yes` never ends: the limit error (not a timeout) proves the
        // answer was cut off, with no clock involved.
        let h = CommandHandler::new("yes", 1000);
        assert_eq!(
            h.answer(None, "x", in_ms(60_000)),
            Err("answer larger than the limit of 1000 bytes".into())
        );
        // Exactly the limit is fine.
        let h = CommandHandler::new("head -c 1000 /dev/zero | tr '\\0' a", 1000);
        assert_eq!(h.answer(None, "x", in_ms(5000)).map(|a| a.len()), Ok(1000));
    }

    #[test]
    fn large_prompt_not_read_does_not_deadlock() {
        let prompt = "p".repeat(4 << 20);
        let h = CommandHandler::new("echo ignored", 1024);
        assert_eq!(h.answer(None, &prompt, in_ms(5000)), Ok("ignored".into()));
        // And one that reads it all answers in full.
        let h = CommandHandler::new("wc -c", 1024);
        let got = h.answer(None, &prompt, in_ms(5000)).expect("answers");
        assert_eq!(got.trim(), (4 << 20).to_string());
    }

    #[test]
    fn deadline_already_past() {
        let h = CommandHandler::new("echo hi", 1024);
        assert_eq!(
            h.answer(None, "x", Instant::now()),
            Err("timed out after 0 ms".into())
        );
    }
}
