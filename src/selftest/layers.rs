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

use std::path::Path;

use serde_json::{json, Value};

use crate::config::Config;
use crate::egress::{EgressConfig, Policy};
use crate::runtime::RuntimeKind;

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
    /// Rows run as well that must still PASS (another layer holds them);
    /// the reason is in docs/SECURITY.md.
    pub holds: &'static [&'static str],
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

fn remove(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
}

fn drop_namespace(s: &mut Value, typ: &str) {
    if let Some(ns) = s["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != typ);
    }
}

fn tmp_options(s: &mut Value, keep: impl Fn(&str) -> bool) {
    for m in s["mounts"].as_array_mut().into_iter().flatten() {
        if m["destination"] == "/tmp" {
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| o.as_str().is_some_and(&keep));
            }
        }
    }
}

/// `defaultAction` SCMP_ACT_ALLOW and no rules: the profile allows all.
fn allow_all_seccomp(s: &mut Value, _: &Path) -> std::io::Result<()> {
    let arches = s["linux"]["seccomp"]["architectures"].clone();
    s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": arches});
    Ok(())
}

/// Docker's default capability set, in all five sets (ambient too, so the
/// non-root process keeps them across its exec).
fn keep_capabilities(s: &mut Value, _: &Path) -> std::io::Result<()> {
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        s["process"]["capabilities"][set] = caps.clone();
    }
    Ok(())
}

/// uid and gid 0 (still without capabilities).
fn run_as_root(s: &mut Value, _: &Path) -> std::io::Result<()> {
    s["process"]["user"]["uid"] = json!(0);
    s["process"]["user"]["gid"] = json!(0);
    Ok(())
}

/// No pids cgroup limit, and (runsc) no RLIMIT_NPROC, the guest's limit.
fn no_pids_limit(s: &mut Value, _: &Path) -> std::io::Result<()> {
    remove(&mut s["linux"]["resources"], "pids");
    if let Some(r) = s["process"]["rlimits"].as_array_mut() {
        r.retain(|l| l["type"] != "RLIMIT_NPROC");
    }
    Ok(())
}

/// Where the rootfs installs the interpreter's hook (rootfs-builder).
const SITECUSTOMIZE: &str = "/usr/lib/python3.11/sitecustomize.py";

/// An empty file mounted over the rootfs's sitecustomize.py: the audit
/// hook and the import blocker are never installed (the removed modules
/// stay removed; the rootfs is not rebuilt).
fn unblock_interpreter(s: &mut Value, input_dir: &Path) -> std::io::Result<()> {
    let empty = input_dir.join("control-empty-sitecustomize.py");
    std::fs::write(&empty, b"")?;
    crate::supervise::guard::share_with_sandbox(&empty, 0o644)?;
    let mount = json!({
        "destination": SITECUSTOMIZE,
        "type": "bind",
        "source": empty,
        "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
    });
    if let Some(m) = s["mounts"].as_array_mut() {
        m.push(mount);
    }
    Ok(())
}

/// Every control, with the rows it is measured to break.
pub fn controls() -> Vec<Control> {
    vec![
        Control {
            layer: Layer::Seccomp,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::Capabilities,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::NonRootUser,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::NoNewPrivileges,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::ReadOnlyRoot,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::Network,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::MemoryLimit,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::PidsLimit,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::CpuQuota,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::TmpSize,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::TmpNoexec,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::PidNamespace,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::UtsNamespace,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::CgroupNamespace,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::IpcNamespace,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::MaskedPaths,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::ReadonlyPaths,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::DevicesCgroup,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::Interpreter,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
            note: "",
        },
        Control {
            layer: Layer::Egress,
            removed: "TODO",
            fails_runc: &[],
            fails_runsc: &[],
            holds: &[],
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

/// Runs control `c` on `runtime`: each of its rows with the layer removed.
pub fn run_control(base: &Config, runtime: RuntimeKind, c: &Control) -> Vec<ControlRow> {
    let catalogue = super::catalogue();
    rows_of(c)
        .into_iter()
        .map(|name| {
            let must_fail = must_fail(c, name, runtime);
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
                (super::RowOutcome::Fail, true) | (super::RowOutcome::Pass, false) => "confirmed",
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
