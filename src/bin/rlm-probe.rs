//! `rlm-probe`: calls each syscall of the kernel attack surface once, with
//! arguments that would do nothing harmful even if the call were allowed,
//! and prints one `RESULT name=ERRNO ...` line. `rlm-sandbox selftest` runs
//! it as the sandbox's process (Python cannot reach these calls: ctypes is
//! not in the rootfs). `getpid=ok` is the baseline: the probe ran. Some
//! EPERMs are also what missing capabilities give (swapon, reboot, mount
//! under gVisor): `selftest --controls` runs the probe under an allow-all
//! seccomp profile to show which entries are the profile's (docs/SECURITY.md,
//! "What proves what"). The order matters: once `unshare(CLONE_NEWUSER)` is
//! allowed, later calls run with the new user namespace's capabilities.
//!
//! Last, it copies itself to /tmp and tries to execute the copy: /tmp is
//! mounted `noexec`, so `tmp_exec=EACCES`; if the exec worked, the copy
//! prints the line with `tmp_exec=ran` (the probe itself runs from the
//! input directory, the one mount without `noexec`, for this reason).

use std::ffi::CStr;

/// The result of one raw syscall: "ok" or the errno's name.
fn outcome(ret: libc::c_long) -> String {
    if ret >= 0 {
        return "ok".into();
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EACCES => "EACCES".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOENT => "ENOENT".into(),
        other => format!("errno{other}"),
    }
}

fn c(s: &CStr) -> libc::c_long {
    s.as_ptr() as libc::c_long
}

/// Where the copy of this program goes.
const TMP_COPY: &str = "/tmp/rlm-probe-copy";
/// The copy's first argument: print the line it is given and stop.
const FROM_TMP: &str = "--executed-from-tmp";

/// Writes a copy of this program to /tmp and executes it with `line`:
/// returns only if the exec failed, with its errno's name (or what failed
/// before it).
fn exec_from_tmp(line: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::copy("/proc/self/exe", TMP_COPY) {
        return format!("copy-failed:{}", e.raw_os_error().unwrap_or(0));
    }
    let _ = std::fs::set_permissions(TMP_COPY, std::fs::Permissions::from_mode(0o755));
    let path = c"/tmp/rlm-probe-copy";
    let flag = c"--executed-from-tmp";
    let Ok(arg) = std::ffi::CString::new(line) else {
        return "bad-line".into();
    };
    let argv = [path.as_ptr(), flag.as_ptr(), arg.as_ptr(), std::ptr::null()];
    // SAFETY: every pointer is a NUL-terminated string alive for the call
    // and argv ends with null; on success execv does not return.
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    outcome(-1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == FROM_TMP {
        // The copy in /tmp ran: noexec did not hold.
        println!("RESULT {} tmp_exec=ran", args[2]);
        return;
    }
    // Never outside a sandbox: as root on a host, an allowed mount would
    // really mount. The sandbox runs it as the unprivileged sandbox user.
    // SAFETY: getuid cannot fail and takes no arguments.
    if unsafe { libc::getuid() } == 0 {
        eprintln!("rlm-probe: refusing to run as root; it is meant to run inside a sandbox");
        std::process::exit(2);
    }
    // Targets that do not exist: even an allowed call would fail (ENOENT).
    let target = c"/nonexistent-rlm-probe";
    let tmpfs = c"tmpfs";
    let user = c"user";
    let empty = c"";
    // An invalid time (nsec out of range): EINVAL if the call were allowed.
    let bad_time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 2_000_000_000,
    };
    let calls: [(&str, [libc::c_long; 6], libc::c_long); 19] = [
        ("getpid", [0; 6], libc::SYS_getpid),
        (
            "mount",
            [c(tmpfs), c(target), c(tmpfs), 0, 0, 0],
            libc::SYS_mount,
        ),
        ("umount2", [c(target), 0, 0, 0, 0, 0], libc::SYS_umount2),
        (
            "unshare",
            [libc::CLONE_NEWUSER as libc::c_long, 0, 0, 0, 0, 0],
            libc::SYS_unshare,
        ),
        ("setns", [-1, 0, 0, 0, 0, 0], libc::SYS_setns),
        (
            "ptrace",
            [libc::PTRACE_TRACEME as libc::c_long, 0, 0, 0, 0, 0],
            libc::SYS_ptrace,
        ),
        ("bpf", [0, 0, 0, 0, 0, 0], libc::SYS_bpf),
        ("keyctl", [0, -1, 0, 0, 0, 0], libc::SYS_keyctl),
        (
            "add_key",
            [c(user), c(empty), 0, 0, -3, 0],
            libc::SYS_add_key,
        ),
        ("userfaultfd", [0; 6], libc::SYS_userfaultfd),
        (
            "io_uring_setup",
            [1, 0, 0, 0, 0, 0],
            libc::SYS_io_uring_setup,
        ),
        (
            "perf_event_open",
            [0, 0, -1, -1, 0, 0],
            libc::SYS_perf_event_open,
        ),
        ("kexec_load", [0; 6], libc::SYS_kexec_load),
        (
            "init_module",
            [0, 0, c(empty), 0, 0, 0],
            libc::SYS_init_module,
        ),
        ("swapon", [c(target), 0, 0, 0, 0, 0], libc::SYS_swapon),
        // Bad magic numbers: EINVAL if the call were allowed.
        ("reboot", [0, 0, 0, 0, 0, 0], libc::SYS_reboot),
        (
            "clock_settime",
            [
                libc::CLOCK_REALTIME as libc::c_long,
                &bad_time as *const _ as libc::c_long,
                0,
                0,
                0,
                0,
            ],
            libc::SYS_clock_settime,
        ),
        (
            "personality",
            [0x0040_0000, 0, 0, 0, 0, 0],
            libc::SYS_personality,
        ), // READ_IMPLIES_EXEC
        ("clone3", [0, 0, 0, 0, 0, 0], libc::SYS_clone3),
    ];
    let mut line = Vec::new();
    for (name, a, nr) in calls {
        // SAFETY: every argument is a constant, a pointer to a NUL-terminated
        // string or a timespec that outlives the call, or null; none of the
        // calls can touch this process's memory beyond reading them.
        let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        line.push(format!("{name}={}", outcome(ret)));
    }
    // clone with namespace flags: if it were allowed the child exits at once.
    let flags = (libc::CLONE_NEWNS | libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
    // SAFETY: a fork-like clone (no CLONE_VM, null stack): the child gets a
    // copy of this process and leaves immediately through _exit.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if ret == 0 {
        // SAFETY: _exit never returns and runs no destructors in the child.
        unsafe { libc::_exit(0) };
    }
    line.push(format!("clone_newns={}", outcome(ret)));
    let line = line.join(" ");
    let tmp_exec = exec_from_tmp(&line);
    println!("RESULT {line} tmp_exec={tmp_exec}");
}
