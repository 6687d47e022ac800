//! The attacks, one per row of the threat model. Each prints one
//! `RESULT key=value ...` line; errnos are printed as `Class/ERRNO` so a
//! check compares exact strings, per runtime where the runtimes differ
//! (measured on runc 1.1.5 and runsc 2022-12-19, see docs/SECURITY.md).

use crate::config::Limits;
use crate::result::Status;
use crate::runtime::RuntimeKind;

use super::{Attack, Fixture, Outcome, Verdict, RESULT_TAG};

/// Shared Python helpers: `err(f)` names what calling `f` raised,
/// `result(**kw)` prints the one machine-readable line.
pub(super) const PRELUDE: &str = r#"import errno, os, sys
def err(f):
    try:
        f()
        return "OK"
    except OSError as e:
        n = e.errno
        name = errno.errorcode.get(n, str(n)) if isinstance(n, int) and n > 0 else str(n)
        return "%s/%s" % (type(e).__name__, name)
    except BaseException as e:
        return type(e).__name__
def clear(f):
    # "clear" means the exception names the sandbox's policy.
    try:
        f()
        return "RAN"
    except BaseException as e:
        return type(e).__name__ + ("+clear" if "rlm-sandbox" in str(e) else "")
def result(**kw):
    print("RESULT " + " ".join("%s=%s" % kv for kv in kw.items()), flush=True)
"#;

fn py(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

fn keep(_: &mut Limits) {}

pub(super) fn attack(
    name: &'static str,
    threat: &'static str,
    expected: &'static str,
    body: &str,
    check: fn(&Outcome) -> Verdict,
) -> Attack {
    Attack {
        name,
        threat,
        code: py(body),
        expected,
        limits: keep,
        context: None,
        fixture: Fixture::None,
        check,
        probe: false,
    }
}

/// The raw `RESULT` line, required with a clean exit.
pub(super) fn line<'a>(o: &'a Outcome) -> Result<&'a str, String> {
    if o.result.status != Status::Ok {
        return Err(o.describe("the attack did not run to its end"));
    }
    o.result
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_TAG))
        .ok_or_else(|| o.describe("no RESULT line"))
}

/// The `RESULT` line must be exactly `runc` or `runsc`'s expectation.
pub(super) fn exact(o: &Outcome, runc: &str, runsc: &str) -> Verdict {
    let want = match o.runtime {
        RuntimeKind::Runc => runc,
        RuntimeKind::Runsc => runsc,
    };
    let got = line(o)?;
    if got == want {
        Ok(got.to_string())
    } else {
        Err(format!("{got} (want {want})"))
    }
}

/// The `RESULT` line must have exactly these keys and values; a mismatch
/// names the keys that differ (`changed=a,b`), which a negative control
/// compares with the entries its layer owns.
pub(super) fn keyed(o: &Outcome, want: &[(&str, String)]) -> Verdict {
    let got = line(o)?.to_string();
    let values = o.values()?;
    let changed: Vec<&str> = want
        .iter()
        .filter(|(k, v)| values.get(*k) != Some(v))
        .map(|(k, _)| *k)
        .collect();
    if changed.is_empty() && values.len() == want.len() {
        Ok(got)
    } else {
        let want: Vec<String> = want.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Err(format!(
            "{got} (want {}) changed={}",
            want.join(" "),
            changed.join(",")
        ))
    }
}

pub(super) fn value(o: &Outcome, key: &str) -> Result<String, String> {
    o.values()?
        .remove(key)
        .ok_or_else(|| o.describe(&format!("no {key}= in the RESULT line")))
}

pub fn catalogue() -> Vec<Attack> {
    vec![
        attack(
            "network_exfiltration",
            "network exfiltration",
            "connect to 8.8.8.8:53 fails: ENETUNREACH (runc) / EHOSTUNREACH (runsc)",
            r#"import socket
# The interfaces the sandbox has: its own loopback only (whether or not the
# host can reach 8.8.8.8, which decides nothing here).
def interfaces():
    # /proc/net/dev: one line per interface of the sandbox's namespace.
    lines = open("/proc/net/dev").read().splitlines()[2:]
    return ",".join(sorted(l.split(":")[0].strip() for l in lines))
result(interfaces=interfaces(),
       connect=err(lambda: socket.socket().connect(("8.8.8.8", 53))),
       connect6=err(lambda: socket.socket(socket.AF_INET6).connect(("2001:4860:4860::8888", 53))))
"#,
            |o| {
                let unreachable = match o.runtime {
                    RuntimeKind::Runc => "OSError/ENETUNREACH",
                    RuntimeKind::Runsc => "OSError/EHOSTUNREACH",
                };
                keyed(
                    o,
                    &[
                        ("interfaces", "lo".to_string()),
                        ("connect", unreachable.to_string()),
                        ("connect6", unreachable.to_string()),
                    ],
                )
            },
        ),
        attack(
            "dns",
            "DNS",
            "gethostbyname and getaddrinfo raise socket.gaierror",
            r#"import socket
def kind(f):
    try:
        f()
        return "RESOLVED"
    except socket.gaierror:
        return "gaierror"
    except BaseException as e:
        return type(e).__name__
result(gethostbyname=kind(lambda: socket.gethostbyname("example.com")),
       getaddrinfo=kind(lambda: socket.getaddrinfo("example.com", 443)))
"#,
            |o| {
                exact(
                    o,
                    "gethostbyname=gaierror getaddrinfo=gaierror",
                    "gethostbyname=gaierror getaddrinfo=gaierror",
                )
            },
        ),
        Attack {
            fixture: Fixture::LoopbackListener,
            ..attack(
                "host_loopback",
                "host loopback",
                "connect to the host's 127.0.0.1 listener is refused; it accepts nothing",
                r#"import socket
s = socket.socket()
s.settimeout(5)
result(port=int("@PORT@") > 0, connect=err(lambda: s.connect(("127.0.0.1", int("@PORT@")))))
"#,
                |o| {
                    let got = exact(
                        o,
                        "port=True connect=ConnectionRefusedError/ECONNREFUSED",
                        "port=True connect=ConnectionRefusedError/ECONNREFUSED",
                    )?;
                    match o.host.connections {
                        Some(0) => Ok(format!("{got} host_accepted=0")),
                        n => Err(format!("{got} host_accepted={n:?} (want 0)")),
                    }
                },
            )
        },
        attack(
            "raw_and_packet_sockets",
            "raw and packet sockets",
            "AF_PACKET and SOCK_RAW sockets raise PermissionError (EPERM)",
            r#"import socket
result(packet=err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)),
       raw=err(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
       raw6=err(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)))
"#,
            |o| {
                let want = "packet=PermissionError/EPERM raw=PermissionError/EPERM \
                            raw6=PermissionError/EPERM";
                exact(o, want, want)
            },
        ),
        attack(
            "file_access",
            "file access",
            "open('/etc/shadow') raises PermissionError; /etc/passwd (baseline) reads",
            r#"result(passwd=err(lambda: open("/etc/passwd").read()),
       shadow=err(lambda: open("/etc/shadow").read()))
"#,
            |o| {
                let want = "passwd=OK shadow=PermissionError/EACCES";
                exact(o, want, want)
            },
        ),
        Attack {
            fixture: Fixture::HostCanary,
            ..attack(
                "host_files",
                "host files",
                "a host file is unreachable by its path, via /proc/1/root and /proc/self/root; \
                 mountinfo's host paths are unreachable; /sys writes fail (no /sys under runc; \
                 gVisor's own). The kernel's files are rows of their own (proc_*, dev_*)",
                r#"p = "@CANARY@"
def read(path):
    def f():
        print(open(path).read())
    return f
def mount_roots_reachable():
    # A mount's root is a path in its source filesystem: for bind mounts
    # from the host (the rootfs, the input dir) a host path. proc and
    # sysfs roots are paths inside those kernel filesystems, not host paths.
    n = 0
    for l in open("/proc/self/mountinfo"):
        f = l.split()
        fstype = f[f.index("-") + 1]
        if f[3] != "/" and fstype not in ("proc", "sysfs") and os.path.exists(f[3]):
            n += 1
    return n
def write(path, data):
    def f():
        with open(path, "w") as fh:
            fh.write(data)
    return f
result(direct=err(read(p)), proc1root=err(read("/proc/1/root" + p)),
       procselfroot=err(read("/proc/self/root" + p)),
       mountinfo_host_paths_reachable=mount_roots_reachable(),
       sys=err(write("/sys/kernel/mm/transparent_hugepage/enabled", "never")))
"#,
                |o| {
                    let common = "direct=FileNotFoundError/ENOENT \
                                  proc1root=FileNotFoundError/ENOENT \
                                  procselfroot=FileNotFoundError/ENOENT \
                                  mountinfo_host_paths_reachable=0 \
                                  sys=FileNotFoundError/ENOENT";
                    let got = exact(o, common, common)?;
                    // Baseline: the canary existed on the host, and its
                    // content reached neither stream.
                    match &o.host.canary {
                        Some(c) if !o.result.stdout.contains(c) && !o.result.stderr.contains(c) => {
                            Ok(got)
                        }
                        Some(_) => Err(format!("{got} but the canary's content leaked")),
                        None => Err(format!("{got} but no canary was set up")),
                    }
                },
            )
        },
        attack(
            "read_only_root",
            "read-only root",
            "writes to /usr, /etc and / fail: EROFS (runc) / EACCES (runsc, permission is \
             checked before the read-only mount); / is mounted ro",
            r#"def write(path):
    def f():
        open(path, "w").close()
    return f
def root_ro():
    for l in open("/proc/self/mountinfo"):
        f = l.split()
        if f[4] == "/":
            return "ro" in f[5].split(",")
result(usr=err(write("/usr/rlms")), etc=err(write("/etc/rlms")), root=err(write("/rlms")),
       root_mount_ro=root_ro())
"#,
            |o| {
                exact(
                    o,
                    "usr=OSError/EROFS etc=OSError/EROFS root=OSError/EROFS root_mount_ro=True",
                    "usr=PermissionError/EACCES etc=PermissionError/EACCES \
                     root=PermissionError/EACCES root_mount_ro=True",
                )
            },
        ),
        ]
    .into_iter()
    .chain(super::kernel_files::attacks())
    .chain(super::namespaces::attacks())
    .chain(super::resources::attacks())
    .chain([
        attack(
            "subprocess",
            "subprocess",
            "import subprocess raises ImportError naming the sandbox's policy",
            r#"result(subprocess=clear(lambda: __import__("subprocess")),
       posixsubprocess=clear(lambda: __import__("_posixsubprocess")))
"#,
            |o| {
                let want = "subprocess=ImportError+clear posixsubprocess=ImportError+clear";
                exact(o, want, want)
            },
        ),
        attack(
            "python_escapes",
            "other escapes from Python",
            "os.system, os.execv, os.posix_spawn, pty.spawn raise PermissionError; ctypes and \
             multiprocessing raise ImportError; each names the sandbox's policy",
            r#"import pty
exe = sys.executable
result(system=clear(lambda: os.system("true")),
       execv=clear(lambda: os.execv(exe, [exe, "-c", "pass"])),
       posix_spawn=clear(lambda: os.posix_spawn(exe, [exe, "-c", "pass"], {})),
       pty_spawn=clear(lambda: pty.spawn([exe, "-c", "pass"])),
       ctypes=clear(lambda: __import__("ctypes")),
       multiprocessing=clear(lambda: __import__("multiprocessing")))
"#,
            |o| {
                let want = "system=PermissionError+clear execv=PermissionError+clear \
                            posix_spawn=PermissionError+clear pty_spawn=PermissionError+clear \
                            ctypes=ImportError+clear multiprocessing=ImportError+clear";
                exact(o, want, want)
            },
        ),
        attack(
            "builtin_fork_exec",
            "other escapes from Python",
            "the interpreter's built-in _posixsubprocess, reached around the import hook with \
             _imp.create_builtin, cannot start a process: seccomp refuses clone without \
             CLONE_THREAD (EPERM), while threads work (baseline)",
            r#"import _imp, importlib.machinery, threading
done = []
t = threading.Thread(target=lambda: done.append(1)); t.start(); t.join()
def fork_exec():
    m = _imp.create_builtin(importlib.machinery.BuiltinImporter.find_spec("_posixsubprocess"))
    r, w = os.pipe()
    exe = sys.executable.encode()
    # Python 3.11's signature: args, executables, close_fds, pass_fds, cwd,
    # env, six pipe ends, errpipe r/w, restore_signals, call_setsid, pgid,
    # gid, groups, uid, umask, preexec_fn, allow_vfork.
    m.fork_exec([exe, b"-c", b"pass"], [exe], True, (), None, None, -1, -1, -1, -1, -1, -1,
                r, w, True, False, -1, None, None, None, -1, None, False)
result(thread=len(done), fork_exec=err(fork_exec))
"#,
            |o| {
                let want = "thread=1 fork_exec=PermissionError/EPERM";
                exact(o, want, want)
            },
        ),
        attack(
            "privilege_escalation",
            "privilege escalation",
            "setuid/setgid fail (EPERM); no capabilities; NoNewPrivs 1 (runc; gVisor does not \
             report it); no setuid or setgid file in the rootfs",
            r#"import stat
status = {}
for l in open("/proc/self/status"):
    k, _, v = l.partition(":")
    status[k] = v.strip()
def setid_files():
    n = 0
    for top in ("/usr", "/etc", "/lib", "/lib64", "/bin", "/sbin", "/rlm"):
        for d, _, files in os.walk(top):
            for f in files:
                try:
                    m = os.lstat(os.path.join(d, f)).st_mode
                except OSError:
                    continue
                if m & (stat.S_ISUID | stat.S_ISGID):
                    n += 1
    return n
result(uid=os.getuid(), setuid=err(lambda: os.setuid(0)), setgid=err(lambda: os.setgid(0)),
       setgroups=err(lambda: os.setgroups([0])),
       CapEff=status.get("CapEff"), CapPrm=status.get("CapPrm"), CapBnd=status.get("CapBnd"),
       NoNewPrivs=status.get("NoNewPrivs", "unreported"), setid_files=setid_files())
"#,
            |o| {
                let caps = "CapEff=0000000000000000 CapPrm=0000000000000000 \
                            CapBnd=0000000000000000";
                let ids = "uid=65432 setuid=PermissionError/EPERM setgid=PermissionError/EPERM \
                           setgroups=PermissionError/EPERM";
                exact(
                    o,
                    &format!("{ids} {caps} NoNewPrivs=1 setid_files=0"),
                    &format!("{ids} {caps} NoNewPrivs=unreported setid_files=0"),
                )
            },
        ),
        attack(
            "kernel_attack_surface",
            "kernel attack surface",
            "what Python 3.11 reaches of the denied syscalls fails with EPERM: sockets of \
             families an unprivileged process may normally open (netlink, vsock, alg) and \
             socketpair(AF_INET), seccomp's alone (the seccomp control flips them); chroot, \
             sethostname, clock_settime, which missing capabilities refuse as well",
            r#"import socket, time
result(netlink=err(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)),
       vsock=err(lambda: socket.socket(40, socket.SOCK_STREAM, 0)),
       alg=err(lambda: socket.socket(38, socket.SOCK_SEQPACKET, 0)),
       socketpair_inet=err(lambda: socket.socketpair(socket.AF_INET)),
       chroot=err(lambda: os.chroot("/")),
       sethostname=err(lambda: socket.sethostname("rlms")),
       clock_settime=err(lambda: time.clock_settime(time.CLOCK_REALTIME, 0)))
"#,
            |o| {
                let keys = [
                    "netlink",
                    "vsock",
                    "alg",
                    "socketpair_inet",
                    "chroot",
                    "sethostname",
                    "clock_settime",
                ];
                let want: Vec<_> = keys
                    .iter()
                    .map(|k| (*k, "PermissionError/EPERM".to_string()))
                    .collect();
                keyed(o, &want)
            },
        ),
        Attack {
            probe: true,
            code: String::new(),
            ..attack(
                "kernel_syscalls",
                "kernel attack surface",
                "rlm-probe (a binary run as the sandbox's process) gets EPERM for mount, \
                 umount2, unshare, setns, ptrace, bpf, keyctl, add_key, userfaultfd, \
                 io_uring_setup, perf_event_open, kexec_load, init_module, swapon, reboot, \
                 clock_settime, personality(READ_IMPLIES_EXEC) and clone with namespace flags, \
                 and ENOSYS for clone3; getpid works (the baseline); a copy of the probe \
                 written to /tmp cannot be executed (noexec: EACCES). Without seccomp, unshare, \
                 setns, ptrace, keyctl, add_key, perf_event_open and personality change on every \
                 build (the seccomp control); swapon, reboot and clone_newns (runc) or mount and \
                 umount2 (runsc) stay EPERM for missing capabilities",
                "",
                |o| {
                    let denied = [
                        "mount", "umount2", "unshare", "setns", "ptrace", "bpf", "keyctl",
                        "add_key", "userfaultfd", "io_uring_setup", "perf_event_open",
                        "kexec_load", "init_module", "swapon", "reboot", "clock_settime",
                        "personality", "clone_newns",
                    ];
                    let mut want = vec![("getpid", "ok".to_string())];
                    want.extend(denied.iter().map(|n| (*n, "EPERM".to_string())));
                    want.push(("clone3", "ENOSYS".into()));
                    // /tmp is noexec: a copy of the probe there cannot run.
                    want.push(("tmp_exec", "EACCES".into()));
                    keyed(o, &want)
                },
            )
        },
        attack(
            "devices",
            "devices",
            "mknod of character devices gVisor implements \
             (null, zero, full, random, urandom, tty, ptmx, net/tun, fuse, mem) and of block \
             devices (loop, sd) fails with EPERM (seccomp: mknod's file-type bits); a FIFO \
             (made, written, read back) and a regular file still work (the baseline)",
            r#"S_IFCHR, S_IFBLK = 0o020000, 0o060000
def refused(kind, nodes):
    bad = []
    for major, minor in nodes:
        path = "/tmp/node-%o-%d-%d" % (kind, major, minor)
        got = err(lambda: os.mknod(path, 0o600 | kind, os.makedev(major, minor)))
        if got != "PermissionError/EPERM":
            bad.append("%d:%d:%s" % (major, minor, got))
    return ",".join(bad) or "none"
def fifo():
    os.mkfifo("/tmp/fifo")
    r = os.open("/tmp/fifo", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open("/tmp/fifo", os.O_WRONLY)
    os.write(w, b"through")
    return os.read(r, 16).decode()
def regular():
    os.mknod("/tmp/plain", 0o600)
    return "regular" if os.path.isfile("/tmp/plain") else "not-regular"
listed = set(os.listdir("/dev"))
hot = [d for d in ("mem", "kmem", "port", "kmsg", "kvm", "sda", "vda", "nvme0", "loop0") if d in listed]
chars = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (10, 200), (10, 229), (1, 1)]
result(char_nodes_not_refused=refused(S_IFCHR, chars),
       block_nodes_not_refused=refused(S_IFBLK, [(7, 0), (8, 0)]),
       fifo=fifo(), mknod_regular=regular(), sensitive_dev_nodes=len(hot))
"#,
            |o| {
                let want = "char_nodes_not_refused=none block_nodes_not_refused=none \
                            fifo=through mknod_regular=regular sensitive_dev_nodes=0";
                exact(o, want, want)
            },
        ),
        Attack {
            fixture: Fixture::HostIpc,
            ..attack(
                "ipc",
                "IPC",
                "own IPC namespace: the host's SysV segment is invisible (runc: not listed in \
                 /proc/sysvipc/shm; runsc: gVisor has no /proc/sysvipc) and /dev/shm is private \
                 (empty inside; a file made there is not on the host). /proc/self/ns/ipc: runc, \
                 an ipc:[inode] other than the host's; runsc 2022, absent (ENOENT); runsc \
                 2023 and later, gVisor's own ipc:[n], not the host's",
                r#"def ns():
    try:
        return os.readlink("/proc/self/ns/ipc")
    except OSError as e:
        return "%s/%s" % (type(e).__name__, errno.errorcode.get(e.errno))
def shm():
    try:
        keys = [l.split()[0] for l in open("/proc/sysvipc/shm").readlines()[1:]]
    except OSError as e:
        return "%s/%s" % (type(e).__name__, errno.errorcode.get(e.errno))
    return "host_key_visible" if "@SHMKEY@" in keys else "host_key_invisible"
before = len(os.listdir("/dev/shm"))
open("/dev/shm/@MARKER@", "w").write("x")
result(ipc_ns=ns(), sysvipc_shm=shm(), devshm_entries_before=before)
"#,
                |o| {
                    let ns = value(o, "ipc_ns")?;
                    let host = &o.host;
                    let not_hosts = ns.starts_with("ipc:[") && Some(&ns) != host.host_ipc_ns.as_ref();
                    // gVisor shows its own ipc namespace from the 2023
                    // releases on; the 2022 build has no ns/ipc link.
                    let (own_ns, build) = match (o.runtime, o.gvisor_release()) {
                        (RuntimeKind::Runc, _) => (not_hosts, String::new()),
                        (RuntimeKind::Runsc, Some(d)) if d < 20230101 => {
                            (ns == "FileNotFoundError/ENOENT", format!(" gvisor={d}"))
                        }
                        (RuntimeKind::Runsc, d) => (
                            not_hosts,
                            format!(" gvisor={}", d.map_or("unknown".into(), |d| d.to_string())),
                        ),
                    };
                    let got = exact(
                        o,
                        &format!(
                            "ipc_ns={ns} sysvipc_shm=host_key_invisible devshm_entries_before=0"
                        ),
                        &format!(
                            "ipc_ns={ns} sysvipc_shm=FileNotFoundError/ENOENT \
                             devshm_entries_before=0"
                        ),
                    )?;
                    let observed = format!(
                        "{got}{build} own_ns={own_ns} host_ipc_ns={:?} host_segment_listed={} \
                         marker_on_host={}",
                        host.host_ipc_ns, host.shm_on_host, host.marker_on_host
                    );
                    // Baseline: the host really lists its segment.
                    if own_ns && host.shm_on_host && !host.marker_on_host {
                        Ok(observed)
                    } else {
                        Err(observed)
                    }
                },
            )
        },
        super::secrets::attack(),
    ])
    .collect()
}
