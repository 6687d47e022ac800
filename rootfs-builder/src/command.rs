//! Running the host's tools (apt, dpkg-deb, chroot) with a fixed
//! environment and errors that name the command, its status and stderr.

use std::process::{Command, Stdio};

use crate::Error;

/// Lines of stderr kept in an error.
const STDERR_TAIL_LINES: usize = 8;

/// A command with a cleared environment: a fixed PATH, and the C locale so
/// apt's output (`Depends:`) is parsed in English whatever the host's
/// language.
pub(crate) fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd`; its stdout on success, an error naming it otherwise.
pub(crate) fn run(cmd: &mut Command) -> Result<String, Error> {
    let command = describe(cmd);
    let out = cmd.output().map_err(|err| Error::Spawn {
        command: command.clone(),
        err,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), STDERR_TAIL_LINES),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to the end whatever its status: its output, or an error
/// when it cannot be started.
pub(crate) fn output(cmd: &mut Command) -> Result<std::process::Output, Error> {
    cmd.output().map_err(|err| Error::Spawn {
        command: describe(cmd),
        err,
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` non-empty lines, joined with " | " to fit one error line.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "no stderr".into();
    }
    lines[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_command_status_and_stderr_tail() {
        let err = run(command("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]))
            .expect_err("exit 3 is a failure");
        assert_eq!(
            err.to_string(),
            "`sh -c echo one >&2; echo two >&2; exit 3` failed (exit status: 3): one | two"
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = run(&mut command("/nonexistent/apt-get")).expect_err("no such program");
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "no stderr");
    }
}
