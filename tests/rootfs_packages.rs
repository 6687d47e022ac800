//! `rlm-sandbox rootfs build --with` / RLM_ROOTFS_PACKAGES, end to end:
//! a rootfs with python3-numpy built into a temporary directory through
//! the CLI, recorded in its manifest, and used by `rlm-sandbox run
//! --rootfs DIR` on runsc and on runc; a package whose import needs
//! subprocess refused with the reason; bad lists refused before anything
//! is built. Needs root, apt (Debian or Ubuntu, with network for the
//! downloads), runsc and runc: without them each test prints why and
//! returns; with CI=true that is a failure.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::{Env, BIN};
use rootfs_builder::ExtraPackages;

/// What is missing to build a rootfs and run it on `runtimes`.
fn missing(runtimes: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges".to_string());
    }
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "chroot"] {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            missing.push(format!("{tool} (not Debian or Ubuntu?)"));
        }
    }
    for runtime in runtimes {
        if rlm_sandbox::runtime::find_binary(runtime, None).is_none() {
            missing.push(format!("{runtime} (apt-get install {runtime})"));
        }
    }
    missing
}

/// Skips locally with a printed reason; fails under CI=true.
fn prerequisites(test: &str, runtimes: &[&str]) -> bool {
    common::present(missing(runtimes), test)
}

/// `rlm-sandbox rootfs build <args>`, RLM_ROOTFS_PACKAGES set to
/// `env_packages` or removed.
fn rootfs_build(args: &[&str], env_packages: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["rootfs", "build"])
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RLM_ROOTFS_PACKAGES");
    if let Some(list) = env_packages {
        cmd.env("RLM_ROOTFS_PACKAGES", list);
    }
    cmd.output().expect("run rlm-sandbox rootfs build")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const NUMPY_CODE: &str = "import numpy\n\
    print(numpy.arange(6).reshape(2, 3).sum())\n\
    try:\n    import subprocess\nexcept ImportError as e:\n    print(e)\n";

#[test]
fn a_numpy_rootfs_runs_numpy_on_runsc_and_runc() {
    if !prerequisites(
        "a_numpy_rootfs_runs_numpy_on_runsc_and_runc",
        &["runsc", "runc"],
    ) {
        return;
    }
    // Removed with everything in it when the test ends, passed or not.
    let dir = tempfile::Builder::new()
        .prefix("rlm-test-rootfs-numpy-")
        .tempdir()
        .expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    let start = Instant::now();
    let out = rootfs_build(
        &[
            "--with",
            "python3-numpy",
            "--output",
            rootfs.to_str().expect("utf-8 path"),
            "--json",
        ],
        None,
    );
    let built_in = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "build failed: {stderr}");
    eprintln!("numpy rootfs built in {:.1} s", built_in.as_secs_f64());
    assert!(
        stderr.contains("resolving the dependencies of python3-numpy"),
        "{stderr}"
    );
    assert!(
        stderr.contains("self-check imports the added packages' modules: numpy\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("--rootfs {}", rootfs.display())),
        "{stderr}"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints the manifest");
    assert_eq!(
        manifest["extra_packages"],
        serde_json::json!(["python3-numpy"])
    );
    let names: Vec<&str> = manifest["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // numpy, its BLAS and LAPACK (Debian's first alternatives), and
    // nothing the default rootfs leaves out.
    for name in ["python3-numpy", "libblas3", "liblapack3", "libc6"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    for name in &names {
        assert!(
            !name.starts_with("perl") && !name.starts_with("libffi"),
            "{name} in {names:?}"
        );
    }
    let numpy = ExtraPackages::parse("python3-numpy").expect("valid");
    assert_eq!(
        manifest["content_id"].as_str(),
        Some(rootfs_builder::content_id_with(&numpy).as_str())
    );
    assert!(rootfs_builder::is_current_with(&rootfs, &numpy));
    assert!(
        !rootfs_builder::is_current(&rootfs),
        "a numpy rootfs must not pass for the default one"
    );
    assert!(rootfs_builder::verify(&rootfs).expect("verify"));
    assert_eq!(entries(dir.path()), ["rootfs"], "no staging left");

    for runtime in ["runsc", "runc"] {
        let env = Env::new(runtime);
        let (result, out) = env.run_json(
            NUMPY_CODE.as_bytes(),
            &["--rootfs", rootfs.to_str().expect("utf-8 path")],
        );
        assert_eq!(
            result["status"],
            "ok",
            "{runtime}: {result} stderr={}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(result["runtime"]["name"], runtime);
        // numpy works, and the hardening is all still there.
        assert_eq!(
            result["stdout"],
            "15\nrlm-sandbox: subprocess is blocked: the sandbox runs no other programs\n",
            "{runtime}: {result}"
        );
    }
}

#[test]
fn a_package_whose_import_needs_subprocess_is_refused() {
    if !prerequisites("a_package_whose_import_needs_subprocess_is_refused", &[]) {
        return;
    }
    // python3-distro (20 kB): distro/distro.py has `import subprocess` at
    // its top level. Given through the environment variable.
    let dir = tempfile::Builder::new()
        .prefix("rlm-test-rootfs-distro-")
        .tempdir()
        .expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    let out = rootfs_build(
        &["--output", rootfs.to_str().expect("utf-8 path")],
        Some("python3-distro"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The refusal comes from importing it in the built tree, as the
    // sandbox user.
    assert!(
        stderr.contains("self-check imports the added packages' modules: distro\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rlm-sandbox: error: python3-distro: `import distro` needs subprocess, \
             which the sandbox removes; leave it out"
        ),
        "{stderr}"
    );
    assert!(!rootfs.exists(), "nothing is left at the output");
    assert!(entries(dir.path()).is_empty(), "no staging left");
}

#[test]
fn bad_package_lists_are_refused_by_name() {
    let dir = tempfile::Builder::new()
        .prefix("rlm-test-rootfs-bad-")
        .tempdir()
        .expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    let output = rootfs.to_str().expect("utf-8 path");
    // Validation needs nothing: it happens before the build starts.
    let out = rootfs_build(
        &["--with", "python3-numpy,Python3-SciPy", "--output", output],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"Python3-SciPy\" does not start with a lower-case letter or digit"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(--with or RLM_ROOTFS_PACKAGES)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("accepted: comma-separated Debian package names"),
        "{stderr}"
    );
    let out = rootfs_build(&["--output", output], Some("python3-numpy,,"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("an empty name in the package list"),
        "{stderr}"
    );

    // An unknown name is apt's answer: root and apt are needed.
    if !prerequisites("bad_package_lists_are_refused_by_name (unknown name)", &[]) {
        return;
    }
    let out = rootfs_build(&["--with", "python3-nump", "--output", output], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rlm-sandbox: error: apt-cache knows no package \"python3-nump\""),
        "{stderr}"
    );
    assert!(
        entries(dir.path()).is_empty(),
        "nothing built, no staging left"
    );
}
