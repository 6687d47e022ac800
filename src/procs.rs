//! Finding and killing a run's processes through /proc, for when neither
//! the runtime nor the cgroup can: a runtime that hung before its processes
//! joined the cgroup, or the leftovers of a driver that was killed.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Pids (other than our own) whose command line contains `needle` as a
/// whole argument or inside one (a run id is in the runtime's argv and in
/// its bundle path).
pub fn pids_mentioning(proc_root: &Path, needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))
                .map(|cmd| {
                    cmd.split(|&b| b == 0)
                        .any(|arg| String::from_utf8_lossy(arg).contains(needle))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every process whose command line mentions `needle`; returns how
/// many were signalled.
pub fn kill_mentioning(needle: &str) -> usize {
    pids_mentioning(Path::new("/proc"), needle)
        .into_iter()
        .filter(|&pid| kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_and_kills_a_process_by_an_argument() {
        let marker = format!("rlms-proctest-{}", std::process::id());
        // The marker is the shell's $0; `read` is a builtin, so the shell
        // neither execs (losing its argv) nor starts a child (which a
        // wrapper such as a pyenv shim would, with the marker in its argv).
        let mut child = Command::new("/bin/sh")
            .args(["-c", "read line", &marker])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        // Until the child has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = Vec::new();
        while found.is_empty() && std::time::Instant::now() < deadline {
            found = pids_mentioning(Path::new("/proc"), &marker);
        }
        assert_eq!(found, vec![child.id() as i32]);
        assert_eq!(kill_mentioning(&marker), 1);
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }
}
