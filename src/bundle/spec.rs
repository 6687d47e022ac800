//! config.json for one sandbox, built with the oci-spec builders.
//!
//! `spec` is a pure function of its input: the golden files under
//! `bundles/golden/` are its output for each preset and runtime, and a test
//! fails when the two drift, so a reviewer can read exactly what a sandbox
//! gets.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;

use crate::config::Limits;
use crate::runtime::RuntimeKind;

/// Where the sandbox sees the driver's input directory (code, context).
pub const INPUT_DIR: &str = rootfs_builder::INPUT_DIR;
/// The code file inside [`INPUT_DIR`].
pub const CODE_FILE: &str = "main.py";
/// CFS period; the quota is `cpus × period`.
const CPU_PERIOD_US: u64 = 100_000;

/// Everything config.json depends on.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub limits: &'a Limits,
    pub runtime: RuntimeKind,
    pub network_enabled: bool,
    /// The read-only Python rootfs.
    pub rootfs: &'a Path,
    /// Host directory bind-mounted read-only at [`INPUT_DIR`].
    pub input_dir: &'a Path,
    /// `linux.cgroupsPath`: a leaf below the driver's own per-run cgroup.
    pub cgroups_path: &'a str,
    pub seccomp: LinuxSeccomp,
    pub program: Program,
    /// Host files bind-mounted read-only at [`CONTEXTS_DIR`]`/0`, `/1`, …
    /// (sessions; their mount points are files the driver created in
    /// `input_dir/contexts`).
    pub contexts: &'a [PathBuf],
    /// Whether `input_dir/contexts` is a drop directory (sessions): mounted
    /// at [`CONTEXTS_DIR`] on its own, read-only with `rslave`
    /// propagation, so that a file the driver mounts there while the
    /// sandbox runs appears in it (src/supervise/drop_dir.rs).
    pub drop_dir: bool,
}

/// What the sandbox's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Python running [`CODE_FILE`]; the input mount is `noexec`.
    Python,
    /// The `rlm-probe` binary at [`PROBE_FILE`] (selftest only): the input
    /// mount must allow exec for it.
    Probe,
    /// The session agent ([`agent_args`]): waits for cells
    /// on its stdin, so a sandbox starts before any code is known.
    Agent,
}

/// Where a session's contexts appear in the sandbox: `input_dir/contexts`
/// on the host, seen through the read-only input mount.
pub const CONTEXTS_DIR: &str = "/rlm/contexts";
/// [`CONTEXTS_DIR`] relative to the input directory.
pub const CONTEXTS_SUBDIR: &str = "contexts";

/// The probe binary inside [`INPUT_DIR`].
pub const PROBE_FILE: &str = "probe";

/// The process the sandbox runs: isolated-mode Python (no environment
/// variables, no user site), no bytecode writes (the root is read-only
/// anyway). Not `-u`: unbuffered text output drops the rest of a partial
/// pipe write, which gVisor's pipes produce (64 MiB of 1 GiB arrived).
pub fn python_args() -> Vec<String> {
    vec![
        rootfs_builder::PYTHON.to_string(),
        "-I".to_string(),
        "-B".to_string(),
        format!("{INPUT_DIR}/{CODE_FILE}"),
    ]
}

/// The session agent's process: the same isolated, no-bytecode-write
/// Python, running the agent module from the read-only stdlib. Its main
/// is imported and called by `-c` rather than run by `-m`: runpy's own
/// imports (importlib.util, functools, contextlib, warnings) would cost
/// every sandbox's start ~3 ms of CPU (scripts/bench_agent_start.py).
/// `python3 -I -B -m _rlm_agent` starts the same agent.
pub fn agent_args() -> Vec<String> {
    agent_args_with("")
}

/// Where the agent's host channel is in a local sandbox under a runtime
/// that relays its container's stdio ([`RuntimeKind::relays_stdio`]): the
/// frames from the host on fd 3, the agent's on fd 4, passed to the
/// runtime past its relay (`--preserve-fds 2`).
pub const AGENT_CHANNEL_FDS: [i32; 2] = [3, 4];

/// Where a local sandbox's agent finds its host channel: `None` for stdin
/// and stdout, or the descriptors passed past the runtime's stdio relay.
pub fn agent_channel_fds(program: Program, runtime: RuntimeKind) -> Option<[i32; 2]> {
    (program == Program::Agent && runtime.relays_stdio()).then_some(AGENT_CHANNEL_FDS)
}

/// The agent's process with its host channel on `fds` ([`AGENT_CHANNEL_FDS`])
/// instead of stdin and stdout.
pub fn agent_args_on(fds: [i32; 2]) -> Vec<String> {
    agent_args_with(&format!("{}, {}", fds[0], fds[1]))
}

fn agent_args_with(main_args: &str) -> Vec<String> {
    vec![
        rootfs_builder::PYTHON.to_string(),
        "-I".to_string(),
        "-B".to_string(),
        "-c".to_string(),
        format!(
            "import {}.__main__ as agent; agent.main({main_args})",
            rootfs_builder::AGENT_MODULE
        ),
    ]
}

/// The sandbox process's working directory (its writable tmpfs).
pub const SANDBOX_CWD: &str = "/tmp";

/// The sandbox process's whole environment (the OCI image config carries
/// the same, `src/image`).
pub fn sandbox_env() -> Vec<String> {
    vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        "HOME=/tmp".to_string(),
        "LANG=C.UTF-8".to_string(),
    ]
}

pub fn spec(input: &SpecInput) -> Result<Spec, OciSpecError> {
    let limits = input.limits;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(rootfs_builder::SANDBOX_UID)
                .gid(rootfs_builder::SANDBOX_GID)
                .additional_gids(Vec::<u32>::new())
                .build()?,
        )
        .args(match input.program {
            Program::Python => python_args(),
            Program::Probe => vec![format!("{INPUT_DIR}/{PROBE_FILE}")],
            Program::Agent => match agent_channel_fds(input.program, input.runtime) {
                Some(fds) => agent_args_on(fds),
                None => agent_args(),
            },
        })
        .env(sandbox_env())
        .cwd(SANDBOX_CWD)
        // No capability in any set: root inside (if reached) could do nothing
        // a capability grants.
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(HashSet::new())
                .effective(HashSet::new())
                .inheritable(HashSet::new())
                .permitted(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        // setuid binaries and file capabilities cannot raise privileges.
        .no_new_privileges(true)
        .rlimits(rlimits(limits, input.runtime)?)
        .oom_score_adj(1000)
        .build()?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if !input.network_enabled {
        // A new network namespace with nothing in it but a down loopback.
        namespaces.insert(1, LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;

    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    let resources = LinuxResourcesBuilder::default()
        // swap = memory: the sandbox can never swap.
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory)
                .disable_oom_killer(false)
                .build()?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(pids_cgroup_limit(limits, input.runtime))
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota((limits.cpus * CPU_PERIOD_US as f64).round() as i64)
                .period(CPU_PERIOD_US)
                .build()?,
        )
        // No device node beyond the runtime's defaults (null, zero, full,
        // random, urandom, tty).
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?])
        .build()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .seccomp(input.seccomp.clone())
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()?;

    SpecBuilder::default()
        .version("1.0.2")
        .hostname("sandbox")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(true)
                .build()?,
        )
        .mounts(mounts(
            limits,
            input.input_dir,
            input.program,
            input.contexts,
            input.drop_dir,
        )?)
        .process(process)
        .linux(linux)
        .build()
}

/// Host tasks the Sentry and the gofer need beyond the guest's own: Go
/// runtime threads and, on the ptrace platform, stub threads.
pub const RUNSC_HOST_TASKS: i64 = 128;

/// The pids cgroup limit. Under runc it is the sandbox's task limit. Under
/// runsc it counts the Sentry's host tasks, not the guest's (the guest's
/// limit is RLIMIT_NPROC, which gVisor enforces): without headroom a guest
/// at its limit starves the Sentry, whose Go runtime then dies ("failed to
/// create new OS thread", exit 2).
fn pids_cgroup_limit(limits: &Limits, runtime: RuntimeKind) -> i64 {
    let pids = i64::from(limits.pids);
    match runtime {
        RuntimeKind::Runc => pids,
        RuntimeKind::Runsc => pids + RUNSC_HOST_TASKS,
    }
}

fn rlimits(
    limits: &Limits,
    runtime: RuntimeKind,
) -> Result<Vec<oci_spec::runtime::PosixRlimit>, OciSpecError> {
    let rlimit = |typ, n: u64| {
        PosixRlimitBuilder::default()
            .typ(typ)
            .soft(n)
            .hard(n)
            .build()
    };
    let mut out = vec![
        // No core dumps: a crash must not write the process's memory anywhere.
        rlimit(PosixRlimitType::RlimitCore, 0)?,
        rlimit(PosixRlimitType::RlimitNofile, limits.open_files)?,
    ];
    // Under runsc the pids cgroup counts the Sentry's host tasks, not the
    // guest's; gVisor enforces RLIMIT_NPROC per sandbox, so it is the guest
    // task limit there. Under runc RLIMIT_NPROC counts per host uid across
    // every sandbox, so it would let one sandbox starve the others: the pids
    // cgroup is the limit there.
    if runtime == RuntimeKind::Runsc {
        out.push(rlimit(
            PosixRlimitType::RlimitNproc,
            u64::from(limits.pids),
        )?);
    }
    Ok(out)
}

fn mounts(
    limits: &Limits,
    input_dir: &Path,
    program: Program,
    contexts: &[PathBuf],
    drop_dir: bool,
) -> Result<Vec<Mount>, OciSpecError> {
    // Recursive although a drop directory below it is mounted on its own
    // (read-only, over the copy this carries): runsc's gofer refuses a
    // plain "bind" of a directory with a mount below it (EINVAL).
    let mut input_options = vec!["rbind", "ro", "nosuid", "nodev"];
    if program != Program::Probe {
        input_options.push("noexec");
    }
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
    };
    let tmp_size = format!("size={}", limits.tmp_bytes);
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        )?,
        // Own, small /dev/shm: nothing shared with the host or other sandboxes.
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=1m"],
        )?,
        // The only writable place; its pages are charged to the memory limit.
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "noexec", "mode=1777", &tmp_size],
        )?,
        MountBuilder::default()
            .destination(INPUT_DIR)
            .typ("bind")
            .source(input_dir)
            .options(
                input_options
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            )
            .build()?,
    ];
    if drop_dir {
        out.push(
            MountBuilder::default()
                .destination(CONTEXTS_DIR)
                .typ("bind")
                .source(input_dir.join(CONTEXTS_SUBDIR))
                .options(
                    ["bind", "ro", "nosuid", "nodev", "noexec", "rslave"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()?,
        );
    }
    // After the input mount: their mount points are inside it.
    for (i, file) in contexts.iter().enumerate() {
        out.push(
            MountBuilder::default()
                .destination(format!("{CONTEXTS_DIR}/{i}"))
                .typ("bind")
                .source(file)
                .options(
                    ["bind", "ro", "nosuid", "nodev", "noexec"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()?,
        );
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Preset;

    /// Renders the golden config.json of a preset and runtime: fixed paths
    /// and ids so the file is byte-for-byte reproducible.
    pub(crate) fn golden(preset: Preset, runtime: RuntimeKind) -> String {
        let config = preset.config();
        let input = SpecInput {
            limits: &config.limits,
            runtime,
            network_enabled: config.network_enabled,
            rootfs: Path::new("/var/cache/rlm-sandbox/rootfs"),
            input_dir: Path::new("/run/rlm-sandbox/rlms-golden/input"),
            cgroups_path: "/rlm-sandbox/rlms-golden/ctr",
            contexts: &[],
            drop_dir: false,
            seccomp: crate::bundle::seccomp::default_profile(),
            program: Program::Python,
        };
        let spec = spec(&input).expect("spec builds");
        let mut text = serde_json::to_string_pretty(&spec).expect("spec serialises");
        text.push('\n');
        text
    }

    fn golden_cases() -> Vec<(Preset, RuntimeKind)> {
        vec![
            (Preset::Maximum, RuntimeKind::Runsc),
            (Preset::Standard, RuntimeKind::Runsc),
            (Preset::Standard, RuntimeKind::Runc),
            (Preset::Development, RuntimeKind::Runsc),
            (Preset::Development, RuntimeKind::Runc),
        ]
    }

    fn golden_path(preset: Preset, runtime: RuntimeKind) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bundles/golden")
            .join(format!("{}-{}.json", preset.name(), runtime.name()))
    }

    /// Whether the golden files are rewritten rather than compared: only
    /// on request (`RLM_UPDATE_GOLDEN`), and never under CI, where a run
    /// with the variable set would pass whatever the writer produces.
    pub(crate) fn golden_update(
        update: Option<&std::ffi::OsStr>,
        ci: Option<&std::ffi::OsStr>,
    ) -> Result<bool, String> {
        let ci = ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        match (update.is_some(), ci) {
            (true, true) => Err(format!(
                "RLM_UPDATE_GOLDEN is set under CI={:?}: CI compares the golden files and \
                 never rewrites them; unset one of the two",
                std::env::var("CI").unwrap_or_default()
            )),
            (update, _) => Ok(update),
        }
    }

    /// Compares `actual` with the golden file at `path`, or rewrites the
    /// file when `update` (from [`golden_update`]); `source` names what
    /// produced it, for the drift message.
    pub(crate) fn check_golden(path: &Path, actual: &str, update: bool, source: &str) {
        if update {
            if std::fs::read_to_string(path).ok().as_deref() != Some(actual) {
                eprintln!("golden: rewrote {}", path.display());
                std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
                std::fs::write(path, actual).expect("write golden");
            }
            return;
        }
        let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run RLM_UPDATE_GOLDEN=1 cargo test golden",
                path.display()
            )
        });
        assert!(
            expected == actual,
            "{} drifted from {source}; run RLM_UPDATE_GOLDEN=1 cargo test golden and review \
             the diff",
            path.display()
        );
    }

    #[test]
    fn golden_files_are_never_rewritten_under_ci() {
        let set = Some(std::ffi::OsStr::new("1"));
        let ci = |v: &'static str| Some(std::ffi::OsStr::new(v));
        assert_eq!(golden_update(None, None), Ok(false));
        assert_eq!(golden_update(None, ci("true")), Ok(false));
        assert_eq!(golden_update(set, None), Ok(true));
        assert_eq!(golden_update(set, ci("false")), Ok(true));
        for on in ["true", "1", "yes"] {
            let err = golden_update(set, ci(on)).expect_err(on);
            assert!(
                err.contains("RLM_UPDATE_GOLDEN") && err.contains("CI"),
                "{err}"
            );
        }
    }

    /// Fails when the writer's output drifts from the checked-in golden
    /// files. After an intended change: `RLM_UPDATE_GOLDEN=1 cargo test
    /// golden`, then review the diff (it names the files it rewrote).
    #[test]
    fn golden_config_json_matches() {
        let update = golden_update(
            std::env::var_os("RLM_UPDATE_GOLDEN").as_deref(),
            std::env::var_os("CI").as_deref(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for (preset, runtime) in golden_cases() {
            let path = golden_path(preset, runtime);
            check_golden(&path, &golden(preset, runtime), update, "the bundle writer");
        }
    }

    #[test]
    fn the_threat_model_is_in_the_spec() {
        let text = golden(Preset::Standard, RuntimeKind::Runc);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["process"]["user"]["uid"], rootfs_builder::SANDBOX_UID);
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            assert_eq!(
                v["process"]["capabilities"][set],
                serde_json::json!([]),
                "{set}"
            );
        }
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .map(|n| n["type"].as_str().expect("type"))
            .collect();
        assert_eq!(ns, ["pid", "network", "ipc", "uts", "mount", "cgroup"]);
        let mem = &v["linux"]["resources"]["memory"];
        assert_eq!(mem["limit"], 536_870_912);
        assert_eq!(mem["swap"], 536_870_912);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 50);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 100_000);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let tmp = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .expect("/tmp mount");
        for opt in ["nosuid", "nodev", "noexec", "size=67108864"] {
            assert!(
                tmp["options"]
                    .as_array()
                    .expect("options")
                    .contains(&opt.into()),
                "{opt}"
            );
        }
    }

    #[test]
    fn nproc_only_under_runsc() {
        let has_nproc = |runtime| golden(Preset::Standard, runtime).contains("RLIMIT_NPROC");
        assert!(has_nproc(RuntimeKind::Runsc));
        assert!(!has_nproc(RuntimeKind::Runc));
    }
}
