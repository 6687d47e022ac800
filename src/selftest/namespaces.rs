//! The pid, UTS and cgroup namespaces: the sandbox cannot see or signal a
//! host process (the driver itself, whose pid the code is given), has its
//! own hostname, and sees its own cgroup as the root.

use crate::runtime::RuntimeKind;

use super::catalogue::{attack, exact};
use super::Attack;

pub(super) fn attacks() -> Vec<Attack> {
    vec![attack(
        "namespaces",
        "host processes and names",
        "pid namespace: the sandbox is pid 1 of 1 and cannot see or signal the driver's host \
         pid (ESRCH); UTS namespace: its hostname is `sandbox` (the host's is another); cgroup \
         namespace: /proc/self/cgroup shows `/` (gVisor 2022: an empty file)",
        r#"import socket
pids = [p for p in os.listdir("/proc") if p.isdigit()]
def cgroup_paths():
    paths = set()
    for l in open("/proc/self/cgroup"):
        parts = l.rstrip("\n").split(":", 2)
        if len(parts) == 3:
            paths.add(parts[2])
    return ",".join(sorted(paths)) or "none"
host = int("@HOSTPID@")
result(pid=os.getpid(), processes=len(pids), host_pid_seen=os.path.exists("/proc/%d" % host),
       signal_host=err(lambda: os.kill(host, 0)), hostname=socket.gethostname(),
       cgroup_paths=cgroup_paths())
"#,
        |o| {
            let cgroup = match (o.runtime, o.gvisor_release()) {
                (RuntimeKind::Runsc, Some(d)) if d < 20230101 => "none",
                _ => "/",
            };
            let want = format!(
                "pid=1 processes=1 host_pid_seen=False signal_host=ProcessLookupError/ESRCH \
                 hostname=sandbox cgroup_paths={cgroup}"
            );
            let got = exact(o, &want, &want)?;
            // Baseline: the host's own name is another, so `sandbox` was
            // set by the UTS namespace, not found.
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            if host.is_empty() || host == "sandbox" {
                return Err(format!("{got} but the host's hostname is {host:?}"));
            }
            Ok(format!("{got} host_hostname={host}"))
        },
    )]
}
