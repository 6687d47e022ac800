//! The seccomp allowlist that goes into `linux.seccomp` of config.json.
//!
//! The policy is data: `bundles/seccomp/default.json` is the OCI object
//! itself, and `bundles/seccomp/README.md` gives the reason and the errno
//! for every denied group (JSON has no comments). This module embeds the
//! default profile in the binary, loads alternative profiles from disk,
//! and its tests pin the rules the security review depends on.
//!
//! Runtime notes (measured with runc 1.1.5 and runsc 2022-12-19):
//! - runsc applies the profile only with `--oci-seccomp`.
//! - runsc 2022-12-19 ignores `errnoRet`: every `SCMP_ACT_ERRNO` answers
//!   EPERM there. That is why `clone3` uses `SCMP_ACT_TRACE` (ENOSYS when no
//!   tracer is attached, on Linux and in gVisor) rather than ERRNO 38.
//! - Names a runtime does not know are skipped, not errors (runc via
//!   libseccomp, runsc via its own table). gVisor 2022 calls `pselect6`
//!   `pselect`, so the profile lists both.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;

/// The default profile, exactly as shipped in `bundles/seccomp/default.json`.
const DEFAULT_PROFILE_JSON: &str = include_str!("../../bundles/seccomp/default.json");

/// A seccomp profile file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to read seccomp profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// oci-spec silently drops fields it does not know. A Docker-format
    /// profile's `includes`/`excludes` would vanish and turn capability-
    /// conditional allows (bpf, mount, ptrace...) into unconditional ones,
    /// so any unknown field is refused instead.
    #[error(
        "seccomp profile {path}: field {field:?} at {location} is not part of the OCI \
         linux.seccomp object and would be silently dropped. Hint: Docker-format \
         profiles (archMap, includes, excludes, comment) must be converted first"
    )]
    UnknownField {
        path: PathBuf,
        field: String,
        location: String,
    },
    #[error(
        "seccomp profile {path} is not an OCI linux.seccomp object: {source}. \
         Hint: the file must hold the object itself (defaultAction, syscalls, ...), \
         not a whole config.json"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The built-in allowlist: default EPERM, x86_64 + aarch64, no namespace,
/// mount, module, BPF, keyring, io_uring, ptrace or clock-setting calls.
pub fn default_profile() -> LinuxSeccomp {
    // The JSON is compiled in and `tests::default_profile_parses` parses it,
    // so this cannot fail in a binary whose tests passed.
    #[allow(clippy::expect_used)]
    serde_json::from_str(DEFAULT_PROFILE_JSON)
        .expect("bundles/seccomp/default.json is valid (checked by unit test)")
}

/// Loads a `linux.seccomp` object from `path` (e.g. a user-supplied profile).
pub fn load(path: &Path) -> Result<LinuxSeccomp, SeccompError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |source| SeccompError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(parse_err)?;
    if let Some((location, field)) = first_unknown_field(&value) {
        return Err(SeccompError::UnknownField {
            path: path.to_path_buf(),
            field,
            location,
        });
    }
    serde_json::from_value(value).map_err(parse_err)
}

/// Fields of the OCI object at each level (runtime-spec config-linux.md).
const PROFILE_FIELDS: &[&str] = &[
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
];
const SYSCALL_FIELDS: &[&str] = &["names", "action", "errnoRet", "args"];
const ARG_FIELDS: &[&str] = &["index", "value", "valueTwo", "op"];

/// The first field oci-spec would silently drop, as (location, field name).
/// Shape errors (a non-object, a non-array) are left to serde.
fn first_unknown_field(profile: &serde_json::Value) -> Option<(String, String)> {
    fn unknown(v: &serde_json::Value, known: &[&str], location: &str) -> Option<(String, String)> {
        let key = v
            .as_object()?
            .keys()
            .find(|k| !known.contains(&k.as_str()))?;
        Some((location.to_string(), key.clone()))
    }
    if let Some(hit) = unknown(profile, PROFILE_FIELDS, "top level") {
        return Some(hit);
    }
    let syscalls = profile.get("syscalls").and_then(|s| s.as_array());
    for (i, rule) in syscalls.into_iter().flatten().enumerate() {
        if let Some(hit) = unknown(rule, SYSCALL_FIELDS, &format!("syscalls[{i}]")) {
            return Some(hit);
        }
        let args = rule.get("args").and_then(|a| a.as_array());
        for (j, arg) in args.into_iter().flatten().enumerate() {
            let location = format!("syscalls[{i}].args[{j}]");
            if let Some(hit) = unknown(arg, ARG_FIELDS, &location) {
                return Some(hit);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        Arch, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
    };

    /// Every syscall the profile must never allow unconditionally (see README.md).
    #[rustfmt::skip]
    const DENIED: &[&str] = &[
        // io_uring
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        // memory / tracing of other processes
        "userfaultfd", "ptrace", "process_vm_readv", "process_vm_writev",
        "process_madvise", "pidfd_getfd", "kcmp",
        // kernel keyring
        "keyctl", "add_key", "request_key",
        // BPF and perf
        "bpf", "perf_event_open",
        // mounts and root changes
        "mount", "umount", "umount2", "fsopen", "fsmount", "fsconfig", "fspick",
        "move_mount", "open_tree", "mount_setattr", "pivot_root", "chroot",
        // namespaces (clone is only allowed through its masked rule)
        "unshare", "setns", "clone3",
        // process creation: fork/vfork, and clone without CLONE_THREAD
        "fork", "vfork",
        // kernel modules, kexec, swap, reboot, accounting
        "init_module", "finit_module", "delete_module", "create_module",
        "kexec_load", "kexec_file_load", "swapon", "swapoff", "reboot", "acct",
        // clocks
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
        // assorted privileged or legacy interfaces
        "quotactl", "quotactl_fd", "lookup_dcookie", "name_to_handle_at",
        "open_by_handle_at", "iopl", "ioperm", "vhangup", "syslog",
        "sethostname", "setdomainname", "modify_ldt", "uselib", "nfsservctl",
        "fanotify_init", "fanotify_mark",
        // stricter than Docker (README.md gives the reasons)
        "io_setup", "io_submit", "io_getevents", "io_cancel", "io_destroy",
        "io_pgetevents", "mq_open", "mq_notify", "mq_timedsend",
        "mq_timedreceive", "mq_unlink", "mq_getsetattr", "execveat", "vmsplice",
        "get_robust_list", "remap_file_pages", "memfd_secret",
        "process_mrelease", "mbind", "set_mempolicy", "move_pages",
        "migrate_pages",
    ];

    /// Names allowed only through an argument-checked rule.
    const CONDITIONAL: &[&str] = &[
        "clone",
        "socket",
        "socketpair",
        "personality",
        "mknod",
        "mknodat",
    ];

    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    fn is_allow(r: &LinuxSyscall) -> bool {
        matches!(
            r.action(),
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        )
    }

    #[test]
    fn default_profile_parses() {
        let p: LinuxSeccomp =
            serde_json::from_str(DEFAULT_PROFILE_JSON).expect("default.json must parse");
        assert!(!p.syscalls().as_deref().unwrap_or_default().is_empty());
        // and the public fn agrees
        assert_eq!(default_profile(), p);
    }

    #[test]
    fn default_action_is_eperm_on_x86_64_and_aarch64() {
        let p = default_profile();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1), "EPERM");
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchAarch64][..])
        );
    }

    /// oci-spec 0.10 must not drop anything we wrote (errnoRet, valueTwo,
    /// ops): serialising the parsed profile gives back the file's JSON.
    #[test]
    fn oci_spec_round_trips_the_file_exactly() {
        let original: serde_json::Value =
            serde_json::from_str(DEFAULT_PROFILE_JSON).expect("valid JSON");
        let reserialised = serde_json::to_value(default_profile()).expect("serialises");
        assert_eq!(reserialised, original);
    }

    #[test]
    fn errno_ret_survives_round_trip() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
            "syscalls":[{"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#;
        let p: LinuxSeccomp = serde_json::from_str(json).expect("parses");
        let v = serde_json::to_value(&p).expect("serialises");
        assert_eq!(v["syscalls"][0]["errnoRet"], 38);
        assert_eq!(v["defaultErrnoRet"], 1);
    }

    #[test]
    fn clone_is_allowed_only_for_threads_without_namespace_flags() {
        let p = default_profile();
        let rules = rules_for(&p, "clone");
        assert_eq!(rules.len(), 1, "exactly one rule may mention clone");
        let r = rules[0];
        assert_eq!(r.names(), &["clone".to_string()]);
        assert_eq!(r.action(), LinuxSeccompAction::ScmpActAllow);
        let args = r
            .args()
            .as_deref()
            .expect("clone rule must check its flags");
        assert_eq!(args.len(), 1);
        let a = args[0];
        assert_eq!(a.index(), 0, "flags are arg 0 on x86_64 and aarch64");
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET must be
        // 0 and CLONE_THREAD (0x10000) set: threads, never a new process.
        assert_eq!(a.value(), 0x7E03_0000);
        assert_eq!(a.value_two(), Some(0x1_0000));
    }

    /// docs/SECURITY.md quotes the clone mask: every mask it quotes is
    /// the profile's (a stale one was quoted once).
    #[test]
    fn the_clone_mask_quoted_in_security_md_is_the_profiles() {
        let doc = include_str!("../../docs/SECURITY.md");
        let p = default_profile();
        let args = rules_for(&p, "clone")[0]
            .args()
            .clone()
            .expect("clone args");
        let want = format!("0x{:08X}", args[0].value());
        let quoted: Vec<&str> = doc
            .match_indices("SCMP_CMP_MASKED_EQ` 0x")
            .map(|(i, m)| &doc[i + m.len() - 2..i + m.len() + 8])
            .collect();
        assert!(!quoted.is_empty(), "docs/SECURITY.md quotes no clone mask");
        for q in quoted {
            assert_eq!(
                q.to_ascii_uppercase().replace("0X", "0x"),
                want,
                "docs/SECURITY.md"
            );
        }
    }

    #[test]
    fn clone3_fails_with_enosys_so_glibc_falls_back_to_clone() {
        let p = default_profile();
        let rules = rules_for(&p, "clone3");
        assert_eq!(rules.len(), 1);
        // SCMP_ACT_TRACE with no tracer = ENOSYS (seccomp(2); gVisor does
        // the same). ptrace is denied, so nothing inside can become a tracer.
        assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActTrace);
        assert!(rules[0].args().is_none());
    }

    #[test]
    fn no_denied_syscall_is_allowed() {
        let p = default_profile();
        for name in DENIED {
            for r in rules_for(&p, name) {
                assert!(!is_allow(r), "{name} is in an allow rule: {r:?}");
            }
        }
    }

    #[test]
    fn conditional_syscalls_are_never_unconditional() {
        let p = default_profile();
        for name in CONDITIONAL {
            let rules = rules_for(&p, name);
            assert!(!rules.is_empty(), "{name} has no rule");
            for r in rules {
                if is_allow(r) {
                    assert!(
                        r.args().as_deref().is_some_and(|a| !a.is_empty()),
                        "{name} allowed without an argument check: {r:?}"
                    );
                    assert_eq!(r.names().len(), 1, "conditional rule shared: {r:?}");
                }
            }
        }
    }

    /// Returns the EQ values of arg 0 across the allow rules for `name`;
    /// fails if any allow rule checks anything else.
    fn allowed_arg0_values(p: &LinuxSeccomp, name: &str) -> Vec<u64> {
        let mut values: Vec<u64> = single_comparisons(p, name)
            .into_iter()
            .map(|arg| {
                assert_eq!(arg.index(), 0);
                assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpEq);
                arg.value()
            })
            .collect();
        values.sort_unstable();
        values
    }

    /// The one comparison of each allow rule for `name` (one per rule, so
    /// the rules OR); fails on any other kind of rule.
    fn single_comparisons<'p>(p: &'p LinuxSeccomp, name: &str) -> Vec<&'p LinuxSeccompArg> {
        rules_for(p, name)
            .into_iter()
            .map(|r| {
                assert!(is_allow(r), "unexpected non-allow rule for {name}: {r:?}");
                let args = r.args().as_deref().expect("argument-checked");
                assert_eq!(
                    args.len(),
                    1,
                    "{name}: one comparison per rule, so rules OR"
                );
                &args[0]
            })
            .collect()
    }

    #[test]
    fn socket_only_for_unix_inet_inet6() {
        let p = default_profile();
        // AF_UNIX 1, AF_INET 2, AF_INET6 10: no AF_PACKET, AF_NETLINK, AF_VSOCK...
        assert_eq!(allowed_arg0_values(&p, "socket"), vec![1, 2, 10]);
        assert_eq!(allowed_arg0_values(&p, "socketpair"), vec![1]);
    }

    #[test]
    fn personality_only_linux_and_query() {
        let p = default_profile();
        // PER_LINUX and 0xffffffff (query); READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE... denied.
        assert_eq!(allowed_arg0_values(&p, "personality"), vec![0, 0xFFFF_FFFF]);
    }

    /// The file-type bits (`S_IFMT`) of the mode each allow rule accepts,
    /// with the mode's argument index; fails on any other comparison.
    fn allowed_file_types(p: &LinuxSeccomp, name: &str) -> Vec<(u32, u64)> {
        let mut types: Vec<(u32, u64)> = single_comparisons(p, name)
            .into_iter()
            .map(|arg| {
                assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
                assert_eq!(arg.value(), 0o170000, "{name}: the mask must be S_IFMT");
                (arg.index() as u32, arg.value_two().expect("datum"))
            })
            .collect();
        types.sort_unstable();
        types
    }

    #[test]
    fn mknod_only_for_regular_files_and_fifos() {
        let p = default_profile();
        // No type bits (a regular file), S_IFREG, S_IFIFO: never S_IFCHR
        // (0o020000) or S_IFBLK (0o060000), so no device node of the
        // sandbox's own making exists, on runc or in gVisor's tmpfs.
        let want = |index| vec![(index, 0), (index, 0o010000), (index, 0o100000)];
        assert_eq!(allowed_file_types(&p, "mknod"), want(1), "mode is arg 1");
        assert_eq!(allowed_file_types(&p, "mknodat"), want(2), "mode is arg 2");
    }

    #[test]
    fn python_essentials_are_allowed() {
        let p = default_profile();
        #[rustfmt::skip]
        let essentials = [
            "read", "write", "openat", "close", "mmap", "munmap", "mprotect", "brk",
            "futex", "rt_sigaction", "rt_sigreturn", "set_robust_list", "rseq",
            "getrandom", "clock_gettime", "epoll_wait", "epoll_pwait", "poll", "ppoll",
            "select", "pselect6", "pselect", "pipe2", "execve", "exit_group", "wait4",
            "newfstatat", "statx", "connect", "alarm", "setitimer",
        ];
        for name in essentials {
            assert!(
                rules_for(&p, name)
                    .iter()
                    .any(|r| is_allow(r) && r.args().is_none()),
                "{name} must be allowed unconditionally"
            );
        }
    }

    #[test]
    fn load_reads_a_profile_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.json");
        std::fs::write(&path, DEFAULT_PROFILE_JSON).expect("write");
        assert_eq!(load(&path).expect("loads"), default_profile());
    }

    #[test]
    fn load_refuses_docker_only_fields_that_oci_spec_would_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.json");
        let docker_style = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["bpf"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        std::fs::write(&path, docker_style).expect("write");
        let err = load(&path).expect_err("must refuse");
        match &err {
            SeccompError::UnknownField {
                field, location, ..
            } => {
                assert_eq!(field, "includes");
                assert_eq!(location, "syscalls[1]");
            }
            other => panic!("wrong error: {other:?}"),
        }
        assert!(err.to_string().contains(&path.display().to_string()));

        std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[]}"#).expect("write");
        assert!(matches!(
            load(&path),
            Err(SeccompError::UnknownField { .. })
        ));
        let arg_extra = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],
            "action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ","x":1}]}]}"#;
        std::fs::write(&path, arg_extra).expect("write");
        assert!(matches!(
            load(&path),
            Err(SeccompError::UnknownField { .. })
        ));
    }

    #[test]
    fn load_error_names_the_path_and_the_serde_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).expect("write");
        let err = load(&path).expect_err("must fail");
        assert!(matches!(err, SeccompError::Parse { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("SCMP_ACT_NOPE"), "serde detail missing: {msg}");

        let missing = dir.path().join("missing.json");
        let err = load(&missing).expect_err("must fail");
        assert!(matches!(err, SeccompError::Read { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));
    }
}
