//! The security suite: every attack of the catalogue
//! (`rlm_sandbox::selftest::catalogue`, the same list `rlm-sandbox selftest`
//! runs) as one test per runtime, each asserting its exact outcome and then
//! that nothing of the run was left behind.
//!
//! With CI=true a missing runtime, rootfs or root privilege fails the test
//! (`common::prerequisites`); locally it is a printed skip.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use rlm_sandbox::config::Config;
use rlm_sandbox::runtime::RuntimeKind;
use rlm_sandbox::selftest::{catalogue, run_attack, RowOutcome};

/// The library runs sandboxes in this process, so every run id starts with
/// `rlms-<this pid>-`: two concurrent tests could not tell their leftovers
/// from each other's live runs. One attack at a time keeps the check exact
/// (and keeps the CPU test's measurement free of a neighbour).
static SERIAL: Mutex<()> = Mutex::new(());

fn run_row(name: &str, runtime: RuntimeKind) {
    if !common::prerequisites(runtime.name()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let attack = catalogue()
        .into_iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no attack named {name} in the catalogue"));
    let state = tempfile::Builder::new()
        .prefix("rlm-security-state-")
        .tempdir()
        .expect("state tempdir");
    let config = Config {
        state_dir: state.path().to_path_buf(),
        rootfs: std::env::var_os("RLM_ROOTFS").map(PathBuf::from),
        // scripts/test runs the runsc rows a second time on Debian 12's
        // own runsc build (RLM_RUNSC_PATH).
        runsc_path: std::env::var_os("RLM_RUNSC_PATH").map(PathBuf::from),
        ..Config::default()
    };
    let row = run_attack(&config, runtime, &attack);
    common::assert_clean_runs(state.path(), &format!("rlms-{}-", std::process::id()));
    if row.outcome == RowOutcome::NotApplicable {
        // libtest has no "skipped": the row's own check verified the
        // reason on the host (the file does not exist here; the host had
        // no spare CPU); selftest and pytest count it apart from passes.
        eprintln!(
            "N/A (not counted as a pass): {name} on {}: {}",
            runtime.name(),
            row.observed
        );
        return;
    }
    assert!(
        row.pass,
        "{name} on {}:\n  expected: {}\n  observed: {}",
        runtime.name(),
        row.expected,
        row.observed
    );
    eprintln!("{name} on {}: {}", runtime.name(), row.observed);
}

per_runtime_rows!(
    run_row,
    every_attack_of_the_catalogue_has_its_tests,
    catalogue().iter().map(|a| a.name).collect(),
    "tests/security.rs",
    [
        network_exfiltration,
        dns,
        host_loopback,
        raw_and_packet_sockets,
        file_access,
        host_files,
        proc_kcore,
        proc_timer_list,
        proc_sysrq_trigger,
        proc_sys_write,
        dev_mem,
        dev_kmsg,
        namespaces,
        read_only_root,
        memory_bomb,
        fork_bomb,
        cpu_quota_half,
        cpu_mining,
        disk_fill,
        subprocess,
        python_escapes,
        builtin_fork_exec,
        privilege_escalation,
        kernel_attack_surface,
        kernel_syscalls,
        devices,
        ipc,
        secret_leakage,
    ]
);
