//! The negative controls: for each layer of the threat model, the rows it
//! protects run with exactly that layer removed (`rlm_sandbox::selftest::
//! layers`, the same list `rlm-sandbox selftest --controls` runs) and must
//! FAIL, naming what was observed; the rows another layer still holds
//! must PASS. A control whose layer flips nothing says so in its note.
//! One test per layer and runtime, `<layer>::runsc` and `<layer>::runc`,
//! each followed by a check that nothing of its runs was left behind.
//!
//! With CI=true a missing runtime, rootfs or root privilege fails the test
//! (`common::prerequisites`); locally it is a printed skip. A row with
//! nothing to prove on this host (N/A) is printed as such and is neither a
//! confirmation nor a failure.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use rlm_sandbox::config::Config;
use rlm_sandbox::runtime::RuntimeKind;
use rlm_sandbox::selftest::controls;
use rlm_sandbox::selftest::layers::run_control;

/// One control at a time: run ids share this process's prefix (the
/// leftovers check must be exact) and the CPU rows need the host's spare
/// CPU.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_layer(name: &str, runtime: RuntimeKind) {
    if !common::prerequisites(runtime.name()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let control = controls()
        .into_iter()
        .find(|c| c.layer.name() == name)
        .unwrap_or_else(|| panic!("no control for a layer named {name}"));
    let state = tempfile::Builder::new()
        .prefix("rlm-controls-state-")
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
    let rows = run_control(&config, runtime, &control);
    common::assert_clean_runs(state.path(), &format!("rlms-{}-", std::process::id()));
    let mut report = Vec::new();
    for r in &rows {
        report.push(format!(
            "  {} must {}: got {} ({}): {}",
            r.row.attack,
            if r.must_fail { "FAIL" } else { "PASS" },
            r.row.outcome.label(),
            r.verdict,
            r.row.observed
        ));
    }
    let report = report.join("\n");
    eprintln!("without {name} on {}:\n{report}", runtime.name());
    assert!(!rows.is_empty(), "the control for {name} ran no row");
    assert!(
        rows.iter().all(|r| r.verdict != "unconfirmed"),
        "without {name} ({}) on {}, a row did not behave as measured:\n{report}",
        control.removed,
        runtime.name()
    );
}

per_runtime_rows!(
    run_layer,
    every_layer_has_its_control_tests,
    controls().iter().map(|c| c.layer.name()).collect(),
    "tests/controls.rs",
    [
        seccomp,
        capabilities,
        non_root_user,
        no_new_privileges,
        read_only_root,
        network,
        memory_limit,
        pids_limit,
        cpu_quota,
        tmp_size,
        tmp_noexec,
        pid_namespace,
        uts_namespace,
        cgroup_namespace,
        ipc_namespace,
        masked_paths,
        readonly_paths,
        devices_cgroup,
        interpreter,
        egress,
    ]
);
