//! The names of every setting: flag, environment variable, config file
//! key, and the accepted form used in error messages and `--help`.

/// One configurable setting and its three names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Preset,
    ExecutionMode,
    Runtime,
    AllowUnsafeRuntime,
    NetworkEnabled,
    MemoryLimit,
    CpuLimit,
    PidsLimit,
    ExecutionTimeout,
    MaxStdoutBytes,
    MaxOutputBytes,
    TmpSize,
    Rootfs,
    SeccompProfile,
    StateDir,
    RunscPath,
    RuncPath,
    RunscFlags,
}

impl Key {
    pub const ALL: [Key; 18] = [
        Key::Preset,
        Key::ExecutionMode,
        Key::Runtime,
        Key::AllowUnsafeRuntime,
        Key::NetworkEnabled,
        Key::MemoryLimit,
        Key::CpuLimit,
        Key::PidsLimit,
        Key::ExecutionTimeout,
        Key::MaxStdoutBytes,
        Key::MaxOutputBytes,
        Key::TmpSize,
        Key::Rootfs,
        Key::SeccompProfile,
        Key::StateDir,
        Key::RunscPath,
        Key::RuncPath,
        Key::RunscFlags,
    ];

    /// The environment variable (the names of the system this replaces).
    pub fn env(self) -> &'static str {
        match self {
            Key::Preset => "RLM_PRESET",
            Key::ExecutionMode => "RLM_EXECUTION_MODE",
            Key::Runtime => "RLM_DOCKER_RUNTIME",
            Key::AllowUnsafeRuntime => "RLM_ALLOW_UNSAFE_RUNTIME",
            Key::NetworkEnabled => "RLM_NETWORK_ENABLED",
            Key::MemoryLimit => "RLM_MEMORY_LIMIT",
            Key::CpuLimit => "RLM_CPU_LIMIT",
            Key::PidsLimit => "RLM_PIDS_LIMIT",
            Key::ExecutionTimeout => "RLM_EXECUTION_TIMEOUT",
            Key::MaxStdoutBytes => "RLM_MAX_STDOUT_BYTES",
            Key::MaxOutputBytes => "RLM_MAX_OUTPUT_BYTES",
            Key::TmpSize => "RLM_TMP_SIZE",
            Key::Rootfs => "RLM_ROOTFS",
            Key::SeccompProfile => "RLM_SECCOMP_PROFILE",
            Key::StateDir => "RLM_STATE_DIR",
            Key::RunscPath => "RLM_RUNSC_PATH",
            Key::RuncPath => "RLM_RUNC_PATH",
            Key::RunscFlags => "RLM_RUNSC_FLAGS",
        }
    }

    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Key::Preset => "--preset",
            Key::ExecutionMode => "--mode",
            Key::Runtime => "--runtime",
            Key::AllowUnsafeRuntime => "--allow-unsafe-runtime",
            Key::NetworkEnabled => "--network",
            Key::MemoryLimit => "--memory",
            Key::CpuLimit => "--cpus",
            Key::PidsLimit => "--pids",
            Key::ExecutionTimeout => "--timeout",
            Key::MaxStdoutBytes => "--max-stdout-bytes",
            Key::MaxOutputBytes => "--max-output-bytes",
            Key::TmpSize => "--tmp-size",
            Key::Rootfs => "--rootfs",
            Key::SeccompProfile => "--seccomp-profile",
            Key::StateDir => "--state-dir",
            Key::RunscPath => "--runsc-path",
            Key::RuncPath => "--runc-path",
            Key::RunscFlags => "--runsc-flags",
        }
    }

    /// The key in a JSON config file: the variable's name without `RLM_`, lower case.
    pub fn file_key(self) -> String {
        self.env().trim_start_matches("RLM_").to_ascii_lowercase()
    }

    pub(super) fn from_file_key(key: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.file_key() == key)
    }

    /// The accepted form, for error messages and `--help`.
    pub fn accepted(self) -> &'static str {
        match self {
            Key::Preset => "one of maximum, standard, development",
            Key::ExecutionMode => "one of oci, docker (alias of oci), local",
            Key::Runtime => "one of auto, runsc, runc",
            Key::AllowUnsafeRuntime | Key::NetworkEnabled => {
                "a boolean: true/false, 1/0, yes/no, on/off"
            }
            Key::MemoryLimit | Key::TmpSize => {
                "a size: a byte count or a number with k, m or g (binary units), e.g. 512m"
            }
            Key::MaxStdoutBytes | Key::MaxOutputBytes => {
                "a size: a byte count or a number with k, m or g, at least 1k"
            }
            Key::CpuLimit => "a number of cores greater than 0, e.g. 1 or 0.5",
            Key::PidsLimit => "a whole number of tasks from 8 to 1000000",
            Key::ExecutionTimeout => "seconds, greater than 0 and at most 86400, e.g. 30 or 2.5",
            Key::Rootfs | Key::SeccompProfile | Key::StateDir => "an absolute path",
            Key::RunscPath | Key::RuncPath => "a path to the runtime's executable",
            Key::RunscFlags => "space-separated runsc global flags, each starting with --",
        }
    }
}
