//! The host's security posture for a configuration: what a run would get,
//! and whether the configured policy can be met (`rlm-sandbox check`).

use std::path::PathBuf;

use serde::Serialize;

use crate::cgroup::{CgroupLayout, CgroupMode};
use crate::config::{Config, ExecutionMode};
use crate::runtime::gvisor::{self, Platform};
use crate::runtime::{find_binary, select, version_of, RuntimeKind};

#[derive(Debug, Serialize)]
pub struct RuntimeFound {
    pub name: RuntimeKind,
    pub path: Option<String>,
    pub version: Option<String>,
    /// runsc only (`null` for runc): the gVisor release date (`20240729`),
    /// from `version`.
    pub gvisor_release: Option<u32>,
    /// runsc only: the platform a run uses (systrap, ptrace, kvm) and
    /// whether RLM_RUNSC_FLAGS or the binary's default chose it; `null`
    /// when it cannot be told.
    pub platform: Option<Platform>,
}

#[derive(Debug, Serialize)]
pub struct Enforced {
    pub memory: bool,
    /// `null` when it cannot be told (no memory controller).
    pub no_swap: Option<bool>,
    pub pids: bool,
    pub cpu: bool,
    /// An OOM kill can be told apart from any other SIGKILL.
    pub oom_detection: bool,
}

#[derive(Debug, Serialize)]
pub struct RootfsState {
    pub path: String,
    pub present: bool,
    /// The manifest, when the rootfs has one.
    pub manifest: Option<crate::rootfs::Manifest>,
}

#[derive(Debug, Serialize)]
pub struct Posture {
    pub preset: &'static str,
    pub mode: ExecutionMode,
    pub root: bool,
    pub runtimes: Vec<RuntimeFound>,
    /// The runtime a run would use: name, or `null` when none can be used.
    pub would_use: Option<RuntimeKind>,
    pub fallback: bool,
    pub cgroup_mode: Option<&'static str>,
    pub enforced: Option<Enforced>,
    /// Kernel seccomp filter support (`Seccomp:` in /proc/self/status).
    pub seccomp_kernel: bool,
    pub seccomp_profile: String,
    pub network: &'static str,
    pub limits: crate::config::Limits,
    pub rootfs: RootfsState,
    /// Why the configured policy cannot be met; empty when it can.
    pub problems: Vec<String>,
    /// What holds but deserves attention (e.g. a runc fallback).
    pub warnings: Vec<String>,
}

pub fn posture(config: &Config) -> Posture {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        problems.push("not root: runc and runsc need root privileges".into());
    }
    let runtimes = [
        (RuntimeKind::Runsc, config.runsc_path.as_deref()),
        (RuntimeKind::Runc, config.runc_path.as_deref()),
    ]
    .map(|(kind, configured)| {
        let path = find_binary(kind.name(), configured);
        let version = path.as_deref().and_then(version_of);
        let runsc = kind == RuntimeKind::Runsc;
        RuntimeFound {
            name: kind,
            gvisor_release: version
                .as_deref()
                .filter(|_| runsc)
                .and_then(gvisor::release),
            platform: path
                .as_deref()
                .filter(|_| runsc)
                .and_then(|p| gvisor::platform(p, &config.runsc_flags)),
            version,
            path: path.map(|p| p.display().to_string()),
        }
    })
    .into_iter()
    .collect::<Vec<_>>();
    let (would_use, fallback) = match select(config) {
        Ok(s) => {
            if let Some(w) = s.warning() {
                warnings.push(w);
            }
            if s.runtime.kind == RuntimeKind::Runsc {
                let platform = runtimes.iter().find_map(|r| r.platform.as_ref());
                match platform {
                    Some(p) if p.name == "ptrace" => warnings.push(gvisor::ptrace_warning(p)),
                    Some(_) => {}
                    None => warnings.push(
                        "cannot tell which platform runsc uses (`runsc flags` names none)".into(),
                    ),
                }
            }
            (Some(s.runtime.kind), s.fallback)
        }
        Err(e) => {
            problems.push(e.to_string());
            (None, false)
        }
    };
    if config.mode == ExecutionMode::Local {
        problems.push(crate::local::DANGER.to_string());
    }
    let (cgroup_mode, enforced) = match CgroupLayout::detect() {
        Ok(layout) => {
            let caps = layout.capabilities();
            let enforced = Enforced {
                memory: caps.memory,
                no_swap: caps.memory_swap,
                pids: caps.pids,
                cpu: caps.cpu,
                oom_detection: caps.memory,
            };
            for (ok, what) in [
                (enforced.memory, "memory limit (no memory controller)"),
                (enforced.pids, "pids limit (no pids controller)"),
                (enforced.cpu, "CPU quota (no cpu controller)"),
            ] {
                if !ok {
                    problems.push(format!("cannot enforce the {what}"));
                }
            }
            if enforced.no_swap == Some(false) {
                warnings.push(
                    "swap accounting is off: the memory limit holds but the sandbox may swap \
                     (boot with swapaccount=1)"
                        .into(),
                );
            }
            let mode = match layout.mode() {
                CgroupMode::V1 => "v1",
                CgroupMode::V2 => "v2",
                CgroupMode::Hybrid => "hybrid",
            };
            (Some(mode), Some(enforced))
        }
        Err(e) => {
            problems.push(format!("cgroups: {e}"));
            (None, None)
        }
    };
    let seccomp_kernel = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    if !seccomp_kernel {
        problems.push("the kernel has no seccomp filter support".into());
    }
    let seccomp_profile = match &config.seccomp_profile {
        Some(path) => match crate::bundle::seccomp::load(path) {
            Ok(_) => path.display().to_string(),
            Err(e) => {
                problems.push(e.to_string());
                path.display().to_string()
            }
        },
        None => "built-in (bundles/seccomp/default.json)".into(),
    };
    let rootfs_path: PathBuf = config
        .rootfs
        .clone()
        .unwrap_or_else(rootfs_builder::default_rootfs_dir);
    let present = crate::rootfs::has_python(&rootfs_path);
    if !present {
        if config.rootfs.is_some() {
            problems.push(format!("rootfs {} has no Python", rootfs_path.display()));
        } else {
            warnings.push(format!(
                "the default rootfs {} will be built on first run",
                rootfs_path.display()
            ));
        }
    }
    Posture {
        preset: config.preset.name(),
        mode: config.mode,
        root,
        runtimes,
        would_use,
        fallback,
        cgroup_mode,
        enforced,
        seccomp_kernel,
        seccomp_profile,
        network: if config.network_enabled {
            "host (ENABLED)"
        } else {
            "none"
        },
        limits: config.limits.clone(),
        rootfs: RootfsState {
            path: rootfs_path.display().to_string(),
            present,
            manifest: rootfs_builder::read_manifest(&rootfs_path).ok(),
        },
        problems,
        warnings,
    }
}
