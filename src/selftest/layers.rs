//! The layers of the threat model, each as the test-only change that
//! removes exactly that layer from a sandbox (a negative control), and the
//! rows of the catalogue it protects, as measured by `selftest --controls`.
//!
//! Why these settings cannot be reached by accident: they are not
//! configuration. No flag, variable or config-file key sets them; they are
//! applied through `Sandbox::spec_edit` (crate-private) by
//! [`super::run_controlled`], which runs only the catalogue's own attacks,
//! never code from a user. The few that are ordinary settings (network,
//! CPUs, the egress policy) are set on the attack's own `Config` copy.

use serde_json::json;

use crate::config::Config;
use crate::egress::{EgressConfig, Policy};
use crate::runtime::RuntimeKind;

use super::spec_edits::{
    allow_all_seccomp, drop_namespace, keep_capabilities, no_pids_limit, remove, run_as_root,
    tmp_options, unblock_interpreter,
};

/// One layer of the threat model, named for what its control removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Seccomp,
    Capabilities,
    NonRootUser,
    NoNewPrivileges,
    ReadOnlyRoot,
    Network,
    MemoryLimit,
    PidsLimit,
    CpuQuota,
    TmpSize,
    TmpNoexec,
    PidNamespace,
    UtsNamespace,
    CgroupNamespace,
    IpcNamespace,
    MaskedPaths,
    ReadonlyPaths,
    DevicesCgroup,
    Interpreter,
    Egress,
}

/// A layer, how its control removes it, and what that is seen to break.
pub struct Control {
    pub layer: Layer,
    /// The test-only setting, for people.
    pub removed: &'static str,
    /// Rows that must FAIL with the layer removed, per runtime.
    pub fails_runc: &'static [&'static str],
    pub fails_runsc: &'static [&'static str],
    /// Rows that fail as well on gVisor builds before 2023 (the 2022
    /// build Debian 12 ships).
    pub fails_gvisor_2022: &'static [&'static str],
    /// Rows run as well that must still PASS (another layer holds them);
    /// the reason is in docs/SECURITY.md.
    pub holds: &'static [&'static str],
    /// For rows whose entries belong to different layers: (row, keys) that
    /// must be among the row's `changed=` keys when it fails.
    pub changes: &'static [(&'static str, &'static str)],
    /// What the measurement says about the layer, for people.
    pub note: &'static str,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Seccomp => "seccomp",
            Layer::Capabilities => "capabilities",
            Layer::NonRootUser => "non_root_user",
            Layer::NoNewPrivileges => "no_new_privileges",
            Layer::ReadOnlyRoot => "read_only_root",
            Layer::Network => "network",
            Layer::MemoryLimit => "memory_limit",
            Layer::PidsLimit => "pids_limit",
            Layer::CpuQuota => "cpu_quota",
            Layer::TmpSize => "tmp_size",
            Layer::TmpNoexec => "tmp_noexec",
            Layer::PidNamespace => "pid_namespace",
            Layer::UtsNamespace => "uts_namespace",
            Layer::CgroupNamespace => "cgroup_namespace",
            Layer::IpcNamespace => "ipc_namespace",
            Layer::MaskedPaths => "masked_paths",
            Layer::ReadonlyPaths => "readonly_paths",
            Layer::DevicesCgroup => "devices_cgroup",
            Layer::Interpreter => "interpreter",
            Layer::Egress => "egress",
        }
    }

    pub fn from_name(name: &str) -> Option<Layer> {
        controls()
            .into_iter()
            .map(|c| c.layer)
            .find(|l| l.name() == name)
    }

    /// The ordinary settings this control changes on the attack's config
    /// (the rest is `spec_edit`).
    pub(crate) fn adjust_config(self, config: &mut Config) {
        match self {
            Layer::Network => config.network_enabled = true,
            Layer::CpuQuota => config.limits.cpus = 2.0,
            // The spec loses its memory limit; on cgroup v1 the driver also
            // limits the run's parent cgroup from this value, so it is
            // raised far past the memory bomb's 1 GB as well.
            Layer::MemoryLimit => config.limits.memory_bytes = 8 << 30,
            _ => {}
        }
    }

    /// The egress filter's settings under this control.
    pub(crate) fn egress(self, mut config: EgressConfig) -> EgressConfig {
        if self == Layer::Egress {
            // Findings are still reported; nothing is redacted.
            config.policy = Policy::Warn;
        }
        config
    }

    /// The config.json edit that removes this layer, if it is one.
    pub(crate) fn spec_edit(self) -> Option<crate::supervise::SpecEdit> {
        Some(match self {
            Layer::Seccomp => allow_all_seccomp,
            Layer::Capabilities => keep_capabilities,
            Layer::NonRootUser => run_as_root,
            Layer::NoNewPrivileges => |s, _| {
                s["process"]["noNewPrivileges"] = json!(false);
                Ok(())
            },
            Layer::ReadOnlyRoot => |s, _| {
                s["root"]["readonly"] = json!(false);
                Ok(())
            },
            Layer::MemoryLimit => |s, _| {
                remove(&mut s["linux"]["resources"], "memory");
                Ok(())
            },
            Layer::PidsLimit => no_pids_limit,
            Layer::TmpSize => |s, _| {
                tmp_options(s, |o| !o.starts_with("size="));
                Ok(())
            },
            Layer::TmpNoexec => |s, _| {
                tmp_options(s, |o| o != "noexec");
                Ok(())
            },
            Layer::PidNamespace => |s, _| {
                drop_namespace(s, "pid");
                Ok(())
            },
            Layer::UtsNamespace => |s, _| {
                drop_namespace(s, "uts");
                // runc refuses a hostname without a UTS namespace.
                remove(s, "hostname");
                Ok(())
            },
            Layer::CgroupNamespace => |s, _| {
                drop_namespace(s, "cgroup");
                Ok(())
            },
            Layer::IpcNamespace => |s, _| {
                drop_namespace(s, "ipc");
                Ok(())
            },
            Layer::MaskedPaths => |s, _| {
                remove(&mut s["linux"], "maskedPaths");
                Ok(())
            },
            Layer::ReadonlyPaths => |s, _| {
                remove(&mut s["linux"], "readonlyPaths");
                Ok(())
            },
            Layer::DevicesCgroup => |s, _| {
                s["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
                Ok(())
            },
            Layer::Interpreter => unblock_interpreter,
            Layer::Network | Layer::CpuQuota | Layer::Egress => return None,
        })
    }
}

/// Every control, with the rows it is measured to break (docs/SECURITY.md
/// has the observed outcomes; `selftest --controls` prints them).
pub fn controls() -> Vec<Control> {
    vec![
        Control {
            layer: Layer::Seccomp,
            removed: "an allow-all seccomp profile (defaultAction SCMP_ACT_ALLOW, no rules)",
            fails_runc: &[
                "builtin_fork_exec",
                "kernel_attack_surface",
                "kernel_syscalls",
            ],
            fails_gvisor_2022: &[],
            fails_runsc: &[
                "builtin_fork_exec",
                "kernel_attack_surface",
                "kernel_syscalls",
                "devices",
            ],
            holds: &["raw_and_packet_sockets", "devices"],
            changes: &[
                (
                    "kernel_syscalls",
                    "unshare,setns,ptrace,keyctl,add_key,perf_event_open,personality",
                ),
                ("kernel_attack_surface", "netlink,vsock,alg,socketpair_inet"),
            ],
            note: "what stays EPERM without seccomp is the capabilities' or the host's: \
                   chroot, sethostname, clock_settime (kernel_attack_surface) on both; \
                   swapon, reboot, userfaultfd (host sysctl) and clone_newns (runc); mount, \
                   umount2, clock_settime, clone_newns (runsc: gVisor's own checks). Under runc \
                   unshare(CLONE_NEWUSER) then succeeds and mount/umount2 run with a user \
                   namespace's capabilities (ENOENT). raw/packet sockets hold (no CAP_NET_RAW); \
                   mknod of devices holds on runc (no CAP_MKNOD), not on runsc",
        },
        Control {
            layer: Layer::Capabilities,
            removed: "Docker's default 14 capabilities (CHOWN, DAC_OVERRIDE, FOWNER, MKNOD, \
                      NET_RAW, SETUID, SETGID, SYS_CHROOT, ...) in all five sets",
            fails_runc: &[
                "privilege_escalation",
                "file_access",
                "raw_and_packet_sockets",
            ],
            fails_runsc: &["privilege_escalation"],
            fails_gvisor_2022: &["file_access"],
            holds: &[
                "file_access",
                "raw_and_packet_sockets",
                "kernel_attack_surface",
                "devices",
            ],
            changes: &[],
            note: "runsc 2024 gives the non-root process the bounding set only (CapBnd), so \
                   shadow and raw sockets hold there (the 2022 build lets it read shadow); \
                   chroot and mknod of devices hold on both (seccomp)",
        },
        Control {
            layer: Layer::NonRootUser,
            removed: "uid and gid 0 (capabilities still none; rlm-probe refuses to run as root, \
                      so kernel_syscalls is not run)",
            fails_runc: &["file_access", "privilege_escalation"],
            fails_gvisor_2022: &[],
            fails_runsc: &["file_access", "privilege_escalation", "read_only_root"],
            holds: &["read_only_root"],
            changes: &[],
            note: "as root the writes to / still fail (EROFS: the read-only root holds)",
        },
        Control {
            layer: Layer::NoNewPrivileges,
            removed: "process.noNewPrivileges false",
            fails_runc: &["privilege_escalation"],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["privilege_escalation"],
            changes: &[],
            note: "only the NoNewPrivs=1 readout flips (runc): there is no setuid file to \
                   exploit; gVisor does not report it, so nothing flips under runsc",
        },
        Control {
            layer: Layer::ReadOnlyRoot,
            removed: "root.readonly false",
            fails_runc: &["read_only_root"],
            fails_gvisor_2022: &[],
            fails_runsc: &["read_only_root"],
            holds: &[],
            changes: &[],
            note: "the writes still fail (EACCES): the sandbox user owns nothing in the rootfs",
        },
        Control {
            layer: Layer::Network,
            removed: "the host's network (no network namespace; runsc --network=host)",
            fails_runc: &["network_exfiltration", "host_loopback"],
            fails_gvisor_2022: &[],
            fails_runsc: &["network_exfiltration", "host_loopback"],
            holds: &["dns"],
            changes: &[("network_exfiltration", "interfaces")],
            note: "dns holds: the rootfs has no resolver configuration",
        },
        Control {
            layer: Layer::MemoryLimit,
            removed: "no linux.resources.memory (and an 8 GiB parent limit on cgroup v1)",
            fails_runc: &["memory_bomb"],
            fails_gvisor_2022: &[],
            fails_runsc: &["memory_bomb"],
            holds: &[],
            changes: &[],
            note: "",
        },
        Control {
            layer: Layer::PidsLimit,
            removed: "no linux.resources.pids, no RLIMIT_NPROC",
            fails_runc: &["fork_bomb"],
            fails_gvisor_2022: &[],
            fails_runsc: &["fork_bomb"],
            holds: &[],
            changes: &[],
            note: "runc: 10000 threads start; runsc: the Sentry dies (exit 2)",
        },
        Control {
            layer: Layer::CpuQuota,
            removed: "2 CPUs instead of 1 (and of 0.5 for cpu_quota_half)",
            fails_runc: &["cpu_mining", "cpu_quota_half"],
            fails_gvisor_2022: &[],
            fails_runsc: &["cpu_mining", "cpu_quota_half"],
            holds: &[],
            changes: &[],
            note: "needs spare CPU on the host: on a busy host the rows report N/A",
        },
        Control {
            layer: Layer::TmpSize,
            removed: "/tmp without size= (the tmpfs default: half the host's memory)",
            fails_runc: &["disk_fill"],
            fails_gvisor_2022: &[],
            fails_runsc: &["disk_fill"],
            holds: &[],
            changes: &[],
            note: "the memory limit then stops the writer: status oom instead of ENOSPC",
        },
        Control {
            layer: Layer::TmpNoexec,
            removed: "/tmp without noexec",
            fails_runc: &["kernel_syscalls"],
            fails_gvisor_2022: &[],
            fails_runsc: &["kernel_syscalls"],
            holds: &[],
            changes: &[("kernel_syscalls", "tmp_exec")],
            note: "",
        },
        Control {
            layer: Layer::PidNamespace,
            removed: "no pid namespace",
            fails_runc: &["namespaces", "host_files"],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["namespaces", "host_files"],
            changes: &[],
            note: "runc: the host's processes are listed and /proc/1/root is the host's \
                   init's (EACCES); runsc: gVisor's kernel has its own process table",
        },
        Control {
            layer: Layer::UtsNamespace,
            removed: "no UTS namespace (and no hostname)",
            fails_runc: &["namespaces"],
            fails_gvisor_2022: &[],
            fails_runsc: &["namespaces"],
            holds: &[],
            changes: &[],
            note: "runc: the host's hostname; runsc: an empty one",
        },
        Control {
            layer: Layer::CgroupNamespace,
            removed: "no cgroup namespace",
            fails_runc: &["namespaces"],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["namespaces"],
            changes: &[],
            note: "runc: the run's host cgroup path shows; runsc: gVisor's own cgroupfs",
        },
        Control {
            layer: Layer::IpcNamespace,
            removed: "no IPC namespace",
            fails_runc: &["ipc"],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["ipc"],
            changes: &[],
            note: "runsc: gVisor implements SysV IPC in the Sentry",
        },
        Control {
            layer: Layer::MaskedPaths,
            removed: "no linux.maskedPaths",
            fails_runc: &["proc_timer_list", "proc_kcore"],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["proc_timer_list", "proc_kcore"],
            changes: &[],
            note: "runsc: gVisor's /proc has none of these files",
        },
        Control {
            layer: Layer::ReadonlyPaths,
            removed: "no linux.readonlyPaths",
            fails_runc: &["proc_sys_write", "proc_sysrq_trigger"],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["proc_sys_write", "proc_sysrq_trigger"],
            changes: &[],
            note: "runc: EACCES (the file's mode) instead of EROFS; runsc: gVisor's own /proc",
        },
        Control {
            layer: Layer::DevicesCgroup,
            removed: "linux.resources.devices allowing every device (rwm)",
            fails_runc: &[],
            fails_gvisor_2022: &[],
            fails_runsc: &[],
            holds: &["devices", "dev_mem", "dev_kmsg"],
            changes: &[],
            note: "flips no row: no device node can come to exist in the sandbox to be opened \
                   (no CAP_MKNOD, seccomp refuses character and block mknod, /dev is a fresh \
                   tmpfs, writable mounts are nodev); the devices cgroup is a further layer \
                   behind those",
        },
        Control {
            layer: Layer::Interpreter,
            removed: "an empty file mounted over sitecustomize.py (no audit hook, no import \
                      blocker; the removed modules stay removed)",
            fails_runc: &["subprocess", "python_escapes"],
            fails_gvisor_2022: &[],
            fails_runsc: &["subprocess", "python_escapes"],
            holds: &[],
            changes: &[],
            note: "_posixsubprocess imports; os.execv replaces the attack (no RESULT line)",
        },
        Control {
            layer: Layer::Egress,
            removed: "egress policy warn (findings reported, nothing redacted)",
            fails_runc: &["secret_leakage"],
            fails_gvisor_2022: &[],
            fails_runsc: &["secret_leakage"],
            holds: &[],
            changes: &[],
            note: "",
        },
    ]
}

/// The rows a control runs: those it must break and those it must not.
pub fn rows_of(c: &Control) -> Vec<&'static str> {
    let mut rows: Vec<&str> = c
        .fails_runc
        .iter()
        .chain(c.fails_runsc)
        .chain(c.holds)
        .copied()
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Whether `row` must fail under control `c` on `runtime`.
pub fn must_fail(c: &Control, row: &str, runtime: RuntimeKind) -> bool {
    match runtime {
        RuntimeKind::Runc => c.fails_runc.contains(&row),
        RuntimeKind::Runsc => c.fails_runsc.contains(&row),
    }
}

/// One row run under one control, and whether it behaved as measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlRow {
    pub layer: Layer,
    /// True: the row must fail without the layer; false: another layer
    /// must still hold it.
    pub must_fail: bool,
    pub row: super::Row,
    /// `confirmed`, `unconfirmed`, or `n/a` (the row has nothing to
    /// prove on this host, with or without the layer).
    pub verdict: &'static str,
}

impl ControlRow {
    pub fn confirmed(&self) -> bool {
        self.verdict == "confirmed"
    }
}

/// Whether `runtime` as `base` selects it is a gVisor build before 2023.
fn is_gvisor_2022(base: &Config, runtime: RuntimeKind) -> bool {
    runtime == RuntimeKind::Runsc
        && crate::runtime::find_binary("runsc", base.runsc_path.as_deref())
            .and_then(|path| crate::runtime::version_of(&path))
            .and_then(|v| crate::runtime::gvisor::release(&v))
            .is_some_and(|d| d < 20230101)
}

/// Runs control `c` on `runtime`: each of its rows with the layer removed.
pub fn run_control(base: &Config, runtime: RuntimeKind, c: &Control) -> Vec<ControlRow> {
    let catalogue = super::catalogue();
    let old_gvisor = is_gvisor_2022(base, runtime);
    rows_of(c)
        .into_iter()
        .map(|name| {
            let must_fail =
                must_fail(c, name, runtime) || (old_gvisor && c.fails_gvisor_2022.contains(&name));
            let row = match catalogue.iter().find(|a| a.name == name) {
                Some(attack) => super::run_controlled(base, runtime, attack, c.layer),
                None => super::Row {
                    attack: name.to_string(),
                    threat: String::new(),
                    runtime,
                    expected: String::new(),
                    observed: format!("no row {name} in the catalogue"),
                    pass: false,
                    outcome: super::RowOutcome::Fail,
                    without: Some(c.layer),
                },
            };
            let verdict = match (row.outcome, must_fail) {
                (super::RowOutcome::NotApplicable, _) => "n/a",
                (super::RowOutcome::Fail, true) if owns_its_changes(c, &row) => "confirmed",
                (super::RowOutcome::Pass, false) => "confirmed",
                _ => "unconfirmed",
            };
            ControlRow {
                layer: c.layer,
                must_fail,
                row,
                verdict,
            }
        })
        .collect()
}

/// A failed row's `changed=` keys include every key `c` says it owns.
fn owns_its_changes(c: &Control, row: &super::Row) -> bool {
    let changed: Vec<&str> = row
        .observed
        .rsplit_once("changed=")
        .map_or(Vec::new(), |(_, keys)| {
            keys.split(',').map(str::trim).collect()
        });
    c.changes
        .iter()
        .filter(|(name, _)| *name == row.attack)
        .flat_map(|(_, keys)| keys.split(','))
        .all(|k| changed.contains(&k.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::spec::{spec, Program, SpecInput};
    use crate::config::Limits;
    use serde_json::Value;
    use std::path::Path;

    fn spec_json(runtime: RuntimeKind) -> Value {
        let limits = Limits::default();
        let input = SpecInput {
            limits: &limits,
            runtime,
            network_enabled: false,
            rootfs: Path::new("/rootfs"),
            input_dir: Path::new("/input"),
            cgroups_path: "/rlm-sandbox/x/ctr",
            contexts: &[],
            drop_dir: false,
            seccomp: crate::bundle::seccomp::default_profile(),
            program: Program::Python,
        };
        serde_json::to_value(spec(&input).expect("spec")).expect("json")
    }

    /// Every edit changes the spec (a misspelt key would be a control
    /// that removes nothing, and a layer that "flips no row" by mistake),
    /// and only where its layer lives.
    #[test]
    fn every_spec_edit_removes_its_layer_and_only_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        for runtime in [RuntimeKind::Runc, RuntimeKind::Runsc] {
            let before = spec_json(runtime);
            for c in controls() {
                let Some(edit) = c.layer.spec_edit() else {
                    continue;
                };
                let mut after = before.clone();
                edit(&mut after, dir.path()).expect("edit");
                let changed: Vec<&str> = ["process", "root", "hostname", "mounts", "linux"]
                    .into_iter()
                    .filter(|k| before.get(*k) != after.get(*k))
                    .collect();
                let want: &[&str] = match c.layer {
                    Layer::Capabilities | Layer::NonRootUser | Layer::NoNewPrivileges => {
                        &["process"]
                    }
                    Layer::ReadOnlyRoot => &["root"],
                    Layer::UtsNamespace => &["hostname", "linux"],
                    Layer::TmpSize | Layer::TmpNoexec | Layer::Interpreter => &["mounts"],
                    Layer::PidsLimit if runtime == RuntimeKind::Runsc => &["process", "linux"],
                    _ => &["linux"],
                };
                assert_eq!(changed, want, "{} on {}", c.layer.name(), runtime.name());
            }
        }
        let mut s = spec_json(RuntimeKind::Runc);
        allow_all_seccomp(&mut s, dir.path()).expect("edit");
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(s["linux"]["seccomp"].get("syscalls").is_none());
    }

    #[test]
    fn layer_names_round_trip_and_every_row_named_exists() {
        let names: Vec<&str> = crate::selftest::catalogue()
            .iter()
            .map(|a| a.name)
            .collect();
        for c in controls() {
            assert_eq!(Layer::from_name(c.layer.name()), Some(c.layer));
            for row in rows_of(&c)
                .into_iter()
                .chain(c.fails_gvisor_2022.iter().copied())
            {
                assert!(names.contains(&row), "{}: no row {row}", c.layer.name());
            }
            for (row, _) in c.changes {
                assert!(rows_of(&c).contains(row), "{}: {row}", c.layer.name());
            }
        }
    }

    #[test]
    fn a_control_owns_the_keys_it_names() {
        let c = controls()
            .into_iter()
            .find(|c| c.layer == Layer::TmpNoexec)
            .expect("tmp_noexec");
        let row = |observed: &str| crate::selftest::Row {
            attack: "kernel_syscalls".into(),
            threat: String::new(),
            runtime: RuntimeKind::Runc,
            expected: String::new(),
            observed: observed.into(),
            pass: false,
            outcome: crate::selftest::RowOutcome::Fail,
            without: Some(Layer::TmpNoexec),
        };
        assert!(owns_its_changes(
            &c,
            &row("x=1 (want x=2) changed=mount,tmp_exec")
        ));
        assert!(!owns_its_changes(&c, &row("x=1 (want x=2) changed=mount")));
        assert!(!owns_its_changes(
            &c,
            &row("the attack did not run to its end")
        ));
    }
}
