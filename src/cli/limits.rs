//! The limit flags of one sandbox, shared by every command that starts
//! one and by the server's request lines (the only sandbox flags a
//! server's client may set).

use std::collections::BTreeMap;

use clap::Args;
use rlm_sandbox::config::Key;

#[derive(Debug, Args, Clone, Default)]
pub struct LimitArgs {
    /// Memory limit, no swap, e.g. 512m [RLM_MEMORY_LIMIT]
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU cores, fractional, e.g. 1 or 0.5 [RLM_CPU_LIMIT]
    #[arg(long, value_name = "CORES")]
    pub cpus: Option<String>,
    /// Maximum tasks (processes + threads) [RLM_PIDS_LIMIT]
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
    /// Wall-clock limit in seconds [RLM_EXECUTION_TIMEOUT]
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<String>,
    /// Bytes kept per stream, head and tail [RLM_MAX_STDOUT_BYTES]
    #[arg(long, value_name = "SIZE")]
    pub max_stdout_bytes: Option<String>,
    /// Bytes printed in all after which the sandbox is killed [RLM_MAX_OUTPUT_BYTES]
    #[arg(long, value_name = "SIZE")]
    pub max_output_bytes: Option<String>,
    /// Size of the sandbox's /tmp [RLM_TMP_SIZE]
    #[arg(long, value_name = "SIZE")]
    pub tmp_size: Option<String>,
}

impl LimitArgs {
    /// Each limit with its flag and configuration key.
    fn each(&self) -> [(&'static str, Key, &Option<String>); 7] {
        [
            ("--memory", Key::MemoryLimit, &self.memory),
            ("--cpus", Key::CpuLimit, &self.cpus),
            ("--pids", Key::PidsLimit, &self.pids),
            ("--timeout", Key::ExecutionTimeout, &self.timeout),
            (
                "--max-stdout-bytes",
                Key::MaxStdoutBytes,
                &self.max_stdout_bytes,
            ),
            (
                "--max-output-bytes",
                Key::MaxOutputBytes,
                &self.max_output_bytes,
            ),
            ("--tmp-size", Key::TmpSize, &self.tmp_size),
        ]
    }

    /// The limits given, as configuration flags.
    pub fn flags(&self) -> BTreeMap<Key, String> {
        self.each()
            .into_iter()
            .filter_map(|(_, key, value)| Some((key, value.clone()?)))
            .collect()
    }

    /// The limits given, as a command line.
    pub fn cli_args(&self) -> Vec<String> {
        self.each()
            .into_iter()
            .filter_map(|(flag, _, value)| Some(format!("{flag}={}", value.as_ref()?)))
            .collect()
    }
}
