//! The host kernel's own files (/proc/kcore, /proc/sysrq-trigger, /dev/mem,
//! ...): one row each, with a baseline taken on the host. A file the host
//! does not have proves nothing when the sandbox cannot see it either (the
//! kernel, not the mask, made it absent), so such a row reports "not
//! applicable on this host", never a pass.

use std::path::Path;

use super::catalogue::{attack, exact};
use super::{not_applicable, Attack, Outcome, Verdict};

/// How the sandbox touches the file: `read` (16 bytes; `empty` when the
/// mask gives /dev/null's nothing) or `write` (`open(path, "w")`, which
/// truncates: the read-only mount is checked before the file's mode).
#[derive(Clone, Copy)]
enum Touch {
    Read,
    Write,
    Open,
}

struct KernelFile {
    name: &'static str,
    threat: &'static str,
    path: &'static str,
    touch: Touch,
    expected: &'static str,
    runc: &'static str,
    runsc: &'static str,
}

const FILES: [KernelFile; 6] = [
    KernelFile {
        name: "proc_kcore",
        threat: "host files",
        path: "/proc/kcore",
        touch: Touch::Read,
        expected: "/proc/kcore (the host's memory) reads as empty under runc (linux.maskedPaths: \
                   /dev/null mounted over it); gVisor has none (ENOENT); N/A where the host has \
                   no /proc/kcore",
        runc: "empty",
        runsc: "FileNotFoundError/ENOENT",
    },
    KernelFile {
        name: "proc_timer_list",
        threat: "host files",
        path: "/proc/timer_list",
        touch: Touch::Read,
        expected: "/proc/timer_list (the host's timers) reads as empty under runc \
                   (linux.maskedPaths); gVisor has none (ENOENT)",
        runc: "empty",
        runsc: "FileNotFoundError/ENOENT",
    },
    KernelFile {
        name: "proc_sysrq_trigger",
        threat: "host files",
        path: "/proc/sysrq-trigger",
        touch: Touch::Write,
        expected: "writing /proc/sysrq-trigger fails: EROFS under runc (linux.readonlyPaths), \
                   EACCES under gVisor's own /proc; N/A where the host has none",
        runc: "OSError/EROFS",
        runsc: "PermissionError/EACCES",
    },
    KernelFile {
        name: "proc_sys_write",
        threat: "host files",
        path: "/proc/sys/kernel/hostname",
        touch: Touch::Write,
        expected: "writing /proc/sys/kernel/hostname fails: EROFS under runc \
                   (linux.readonlyPaths has /proc/sys), EACCES under gVisor's own /proc",
        runc: "OSError/EROFS",
        runsc: "PermissionError/EACCES",
    },
    KernelFile {
        name: "dev_mem",
        threat: "devices",
        path: "/dev/mem",
        touch: Touch::Open,
        expected: "/dev/mem (physical memory) is absent: /dev is a fresh tmpfs with the \
                   runtime's default nodes only; N/A where the host has no /dev/mem",
        runc: "FileNotFoundError/ENOENT",
        runsc: "FileNotFoundError/ENOENT",
    },
    KernelFile {
        name: "dev_kmsg",
        threat: "devices",
        path: "/dev/kmsg",
        touch: Touch::Open,
        expected: "/dev/kmsg (the host's kernel log) is absent: /dev is a fresh tmpfs",
        runc: "FileNotFoundError/ENOENT",
        runsc: "FileNotFoundError/ENOENT",
    },
];

pub(super) fn attacks() -> Vec<Attack> {
    FILES
        .iter()
        .map(|f| {
            let op = match f.touch {
                Touch::Read => "read",
                Touch::Write => "write",
                Touch::Open => "opened",
            };
            let body = format!(
                r#"def read(p):
    with open(p, "rb") as fh:
        return "empty" if not fh.read(16) else "data"
def write(p):
    with open(p, "w") as fh:
        fh.write("h")
    return "written"
def opened(p):
    os.close(os.open(p, os.O_RDONLY))
    return "opened"
def touch(f, p):
    got = err(lambda: seen.append(f(p)))
    return seen.pop() if got == "OK" else got
seen = []
result(touched=touch({op}, "{path}"))
"#,
                path = f.path
            );
            attack(f.name, f.threat, f.expected, &body, |o| {
                match FILES.iter().find(|f| f.name == o.attack) {
                    Some(f) => check(o, f),
                    None => Err(format!("{} is not a kernel file row", o.attack)),
                }
            })
        })
        .collect()
}

fn check(o: &Outcome, f: &KernelFile) -> Verdict {
    // The baseline: the host's own file. Checked first, so a host without
    // it never turns the sandbox's ENOENT into a pass.
    if !Path::new(f.path).exists() {
        return not_applicable(&format!("the host has no {}", f.path));
    }
    exact(
        o,
        &format!("touched={}", f.runc),
        &format!("touched={}", f.runsc),
    )
    .map(|got| format!("{got} (host has {})", f.path))
}
