//! `rlm-sandbox rootfs build --with` / RLM_ROOTFS_PACKAGES and `--pip` /
//! RLM_ROOTFS_PIP, end to end: a rootfs with python3-numpy built into a
//! temporary directory through the CLI, recorded in its manifest, and used
//! by `rlm-sandbox run --rootfs DIR` on runsc and on runc; packages whose
//! imports need subprocess or ctypes (python3-distro, pandas, matplotlib)
//! working with inert stand-ins while user code still cannot import
//! either; pandas and matplotlib doing real work in sessions; pandas
//! wheels from PyPI; a requirement without a wheel and bad lists refused
//! by name. Needs root, apt (Debian or Ubuntu, with network for the
//! downloads), pip (python3-pip), runsc and runc: without them each test
//! prints why and returns; with CI=true that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use common::repl::Repl;
use common::{Env, BIN};
use rootfs_builder::{ExtraPackages, PipRequirements};
use serde_json::{json, Value};

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
    rootfs_build_env(args, &[("RLM_ROOTFS_PACKAGES", env_packages)])
}

/// `rlm-sandbox rootfs build <args>` with RLM_ROOTFS_PACKAGES and
/// RLM_ROOTFS_PIP removed, then each of `vars` set (or left removed).
fn rootfs_build_env(args: &[&str], vars: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["rootfs", "build"])
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RLM_ROOTFS_PACKAGES")
        .env_remove("RLM_ROOTFS_PIP");
    for (name, value) in vars {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    cmd.output().expect("run rlm-sandbox rootfs build")
}

fn has_pip() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `rootfs build --pip` needs the host's pip: a printed skip locally, a
/// failure under CI=true (`common::present`).
fn pip_present(test: &str) -> bool {
    let missing = if has_pip() {
        vec![]
    } else {
        vec!["pip (apt-get install python3-pip)".into()]
    };
    common::present(missing, test)
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

const DISTRO_CODE: &str = "import distro, sys\n\
    print(repr(distro.id()))\n\
    try:\n    distro.distro.subprocess.check_output(['id'])\nexcept PermissionError as e:\n    print(e)\n\
    for name in ('subprocess', 'ctypes'):\n    try:\n        __import__(name)\n    except ImportError as e:\n        print(e)\n\
    print(sorted(n for n in ('subprocess', 'ctypes') if n in sys.modules))\n";

#[test]
fn a_package_whose_import_needs_subprocess_gets_an_inert_stand_in() {
    if !prerequisites(
        "a_package_whose_import_needs_subprocess_gets_an_inert_stand_in",
        &["runsc", "runc"],
    ) {
        return;
    }
    // python3-distro (20 kB): distro/distro.py has `import subprocess` at
    // its top level; before stand-ins the build refused it. Given through
    // the environment variable.
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
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // stdout is the rootfs's directory and nothing else:
    // RLM_ROOTFS=$(rlm-sandbox rootfs build ...) works.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", rootfs.display()),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("rlm-sandbox: rootfs: built "), "{stderr}");
    // The self-check imported it, saw the stand-in handed out and proved
    // it inert.
    assert!(
        stderr.contains(
            "self-check: python3-distro: an inert subprocess for \
             /usr/lib/python3/dist-packages/distro/distro.py:"
        ),
        "{stderr}"
    );
    let manifest = rootfs_builder::read_manifest(&rootfs).expect("manifest");
    assert!(
        manifest.stand_ins.iter().any(|s| s.module == "subprocess"
            && s.file == "/usr/lib/python3/dist-packages/distro/distro.py"),
        "{:?}",
        manifest.stand_ins
    );
    for runtime in ["runsc", "runc"] {
        let env = Env::new(runtime);
        let (result, _) = env.run_json(
            DISTRO_CODE.as_bytes(),
            &["--rootfs", rootfs.to_str().expect("utf-8 path")],
        );
        assert_eq!(result["status"], "ok", "{runtime}: {result}");
        // distro asks lsb_release, gets PermissionError (an OSError, as a
        // missing program would be) and carries on; user code gets
        // ImportError for both modules, and neither is in sys.modules.
        assert_eq!(
            result["stdout"],
            "''\n\
             rlm-sandbox: subprocess is blocked: the sandbox runs no other programs \
             (check_output was called on the inert stand-in a package's import gets)\n\
             rlm-sandbox: subprocess is blocked: the sandbox runs no other programs\n\
             rlm-sandbox: ctypes is blocked: the sandbox calls no foreign code\n\
             []\n",
            "{runtime}: {result}"
        );
    }
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

/// The Debian packages of the shared analysis rootfs.
const ANALYSIS: &str = "python3-pandas,python3-matplotlib";

/// A rootfs with pandas and matplotlib from Debian 12, built once per test
/// process (about a minute and 1 GB: Debian's matplotlib brings scipy,
/// sympy and a compiler with it) into the CLI's own directory for that
/// list, and reused while it is this builder's. Built through
/// `RLM_ROOTFS=$(rlm-sandbox rootfs build --with ...)`: stdout is the
/// directory.
fn analysis_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let extra = ExtraPackages::parse(ANALYSIS).expect("valid");
            let dir = rootfs_builder::default_rootfs_dir_for(&extra);
            if rootfs_builder::is_current_with(&dir, &extra) {
                eprintln!("reusing the pandas rootfs at {}", dir.display());
                return dir;
            }
            let start = Instant::now();
            let out = rootfs_build(&["--with", ANALYSIS], None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "build failed: {stderr}");
            eprintln!(
                "pandas rootfs built in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{}\n", dir.display()),
                "stdout is the directory alone; stderr: {stderr}"
            );
            for needle in [
                "self-check: python3-pandas: an inert subprocess for \
                 /usr/lib/python3/dist-packages/pandas/_config/localization.py:",
                "self-check: python3-pandas: an inert ctypes for \
                 /usr/lib/python3/dist-packages/pandas/errors/__init__.py:",
                "self-check: python3-matplotlib: an inert subprocess for \
                 /usr/lib/python3/dist-packages/matplotlib/__init__.py:",
            ] {
                assert!(stderr.contains(needle), "{needle}: {stderr}");
            }
            assert!(rootfs_builder::is_current_with(&dir, &extra));
            dir
        })
        .clone()
}

/// Real pandas and matplotlib work in cells, over a CSV context.
const SALES: &str =
    "region,year,units\nnorth,2023,10\nnorth,2024,14\nsouth,2023,7\nsouth,2024,9\neast,2024,3\n";

fn pandas_session(runtime: &str) {
    let test = format!("pandas_and_matplotlib_in_a_session_{runtime}");
    if !prerequisites(&test, &[runtime]) {
        return;
    }
    let rootfs = analysis_rootfs();
    let data = tempfile::tempdir().expect("tempdir");
    let csv = data.path().join("sales.csv");
    std::fs::write(&csv, SALES).expect("write csv");
    let env = Env::new(runtime);
    let mut repl = Repl::start(
        &env,
        &[
            "--rootfs",
            rootfs.to_str().expect("utf-8 path"),
            "--memory",
            "1g",
            "--context",
            csv.to_str().expect("utf-8 path"),
        ],
    );
    let ok = |cell: &Value| {
        assert_eq!(cell["status"], "ok", "{runtime}: {cell}");
        cell["stdout"].as_str().unwrap_or_default().to_string()
    };
    let cell = repl.exec(
        "import pandas as pd\n\
         df = pd.read_csv(ctxs[0].path)\n\
         targets = pd.DataFrame({'region': ['north', 'south', 'east'], 'target': [20, 20, 5]})\n\
         totals = df.groupby('region', as_index=False)['units'].sum()\n\
         merged = totals.merge(targets, on='region')\n\
         merged['met'] = merged['units'] >= merged['target']\n\
         print(merged.sort_values('region').to_json(orient='records'))\n\
         wide = df.pivot(index='region', columns='year', values='units').fillna(0).astype(int)\n\
         print(wide.to_json(orient='index'))\n\
         print(len(df), pd.__version__.split('.')[0])",
    );
    assert_eq!(
        ok(&cell),
        "[{\"region\":\"east\",\"units\":3,\"target\":5,\"met\":false},\
         {\"region\":\"north\",\"units\":24,\"target\":20,\"met\":true},\
         {\"region\":\"south\",\"units\":16,\"target\":20,\"met\":false}]\n\
         {\"east\":{\"2023\":0,\"2024\":3},\"north\":{\"2023\":10,\"2024\":14},\"south\":{\"2023\":7,\"2024\":9}}\n\
         5 1\n",
        "{runtime}"
    );
    // State persists: the frame from the first cell.
    let cell = repl.exec("print(df['units'].sum(), round(df['units'].mean(), 2))");
    assert_eq!(ok(&cell), "43 8.6\n", "{runtime}");
    let cell = repl.exec(
        "import matplotlib\n\
         matplotlib.use('Agg')\n\
         import matplotlib.pyplot as plt\n\
         fig, ax = plt.subplots(figsize=(4, 3), dpi=50)\n\
         wide.plot(kind='bar', ax=ax)\n\
         fig.savefig('/tmp/units.png')\n\
         plt.close(fig)\n\
         data = open('/tmp/units.png', 'rb').read()\n\
         import struct\n\
         print(data[:8] == b'\\x89PNG\\r\\n\\x1a\\n', struct.unpack('>II', data[16:24]), matplotlib.get_backend())",
    );
    assert_eq!(ok(&cell), "True (200, 150) agg\n", "{runtime}");
    // User code still cannot reach subprocess or ctypes by any route; what
    // pandas holds is the inert stand-in.
    let cell = repl.exec(
        "import importlib, sys\n\
         for name in ('subprocess', 'ctypes'):\n\
         \x20   for attempt in (lambda: __import__(name), lambda: importlib.import_module(name)):\n\
         \x20       try:\n\
         \x20           attempt()\n\
         \x20           print('imported', name)\n\
         \x20       except ImportError as e:\n\
         \x20           print(e)\n\
         print([n for n in ('subprocess', 'ctypes') if n in sys.modules])\n\
         import pandas._config.localization as loc\n\
         try:\n\
         \x20   loc.subprocess.Popen(['id'])\n\
         except PermissionError as e:\n\
         \x20   print(type(e).__name__, e)",
    );
    assert_eq!(
        ok(&cell),
        "rlm-sandbox: subprocess is blocked: the sandbox runs no other programs\n\
         rlm-sandbox: subprocess is blocked: the sandbox runs no other programs\n\
         rlm-sandbox: ctypes is blocked: the sandbox calls no foreign code\n\
         rlm-sandbox: ctypes is blocked: the sandbox calls no foreign code\n\
         []\n\
         PermissionError rlm-sandbox: subprocess is blocked: the sandbox runs no other programs \
         (Popen was called on the inert stand-in a package's import gets)\n",
        "{runtime}"
    );
    let cell = repl.exec("import subprocess");
    assert_eq!(cell["status"], "error", "{runtime}: {cell}");
    assert!(
        cell.to_string()
            .contains("rlm-sandbox: subprocess is blocked"),
        "{runtime}: {cell}"
    );
    let pid = repl.child.id();
    assert!(repl.close().success());
    env.assert_clean(pid);
}

#[test]
fn pandas_and_matplotlib_in_a_session_runsc() {
    pandas_session("runsc");
}

#[test]
fn pandas_and_matplotlib_in_a_session_runc() {
    pandas_session("runc");
}

#[test]
fn pandas_wheels_from_pypi_work_on_runsc_and_runc() {
    let test = "pandas_wheels_from_pypi_work_on_runsc_and_runc";
    if !prerequisites(test, &["runsc", "runc"]) {
        return;
    }
    if !pip_present(test) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("rlm-test-rootfs-pip-")
        .tempdir()
        .expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    // Through the environment variable; a clause after a comma joins the
    // requirement before it.
    let out = rootfs_build_env(
        &["--output", rootfs.to_str().expect("utf-8 path"), "--json"],
        &[("RLM_ROOTFS_PIP", Some("pandas>=2.2,<2.3"))],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "build failed: {stderr}");
    let manifest: Value = serde_json::from_slice(&out.stdout).expect("--json prints the manifest");
    assert_eq!(manifest["pip_requirements"], json!(["pandas>=2.2,<2.3"]));
    let wheels = manifest["wheels"].as_array().expect("wheels");
    let names: Vec<&str> = wheels.iter().filter_map(|w| w["name"].as_str()).collect();
    for name in ["pandas", "numpy"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    for wheel in wheels {
        let file = wheel["file"].as_str().expect("file");
        assert!(
            file.ends_with(".whl") && (file.contains("-cp311-") || file.contains("-none-any")),
            "{file}"
        );
        assert_eq!(wheel["sha256"].as_str().map(str::len), Some(64), "{wheel}");
    }
    assert!(
        stderr.contains(
            "self-check: pandas: an inert subprocess for \
                         /usr/local/lib/python3.11/dist-packages/pandas/_config/localization.py:"
        ),
        "{stderr}"
    );
    let pip = PipRequirements::parse("pandas>=2.2,<2.3").expect("valid");
    let none = ExtraPackages::default();
    assert!(rootfs_builder::is_current_for(&rootfs, &none, &pip));
    assert!(!rootfs_builder::is_current(&rootfs));
    // The wheels' hashes are part of the id: other wheels, another rootfs.
    let listed: Vec<rootfs_builder::Wheel> =
        serde_json::from_value(manifest["wheels"].clone()).expect("wheels");
    let mut other = listed.clone();
    other[0].sha256 = "0".repeat(64);
    assert_eq!(
        manifest["content_id"].as_str(),
        Some(rootfs_builder::content_id_for(&none, &pip, &listed).as_str())
    );
    assert_ne!(
        rootfs_builder::content_id_for(&none, &pip, &listed),
        rootfs_builder::content_id_for(&none, &pip, &other)
    );
    assert!(rootfs_builder::verify(&rootfs).expect("verify"));
    assert_eq!(entries(dir.path()), ["rootfs"], "no staging left");

    for runtime in ["runsc", "runc"] {
        let env = Env::new(runtime);
        let (result, _) = env.run_json(
            b"import pandas as pd, sys\n\
              print(pd.__version__[:4], pd.__file__)\n\
              df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n\
              print(df.groupby('k')['v'].sum().to_json())\n\
              try:\n    import subprocess\nexcept ImportError as e:\n    print(e)\n\
              print('subprocess' in sys.modules)\n",
            &[
                "--rootfs",
                rootfs.to_str().expect("utf-8 path"),
                "--memory",
                "1g",
            ],
        );
        assert_eq!(result["status"], "ok", "{runtime}: {result}");
        assert_eq!(
            result["stdout"],
            "2.2. /usr/local/lib/python3.11/dist-packages/pandas/__init__.py\n\
             {\"a\":4,\"b\":2}\n\
             rlm-sandbox: subprocess is blocked: the sandbox runs no other programs\n\
             False\n",
            "{runtime}: {result}"
        );
    }
}

#[test]
fn a_requirement_without_a_wheel_is_refused_by_name() {
    let test = "a_requirement_without_a_wheel_is_refused_by_name";
    if !prerequisites(test, &[]) {
        return;
    }
    if !pip_present(test) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("rlm-test-rootfs-nowheel-")
        .tempdir()
        .expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    // docopt 0.6.2 is published as a source archive only.
    let out = rootfs_build(
        &[
            "--pip",
            "docopt==0.6.2",
            "--output",
            rootfs.to_str().expect("utf-8 path"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rlm-sandbox: error: PyPI has no binary wheel for \"docopt==0.6.2\""),
        "{stderr}"
    );
    assert!(stderr.contains("CPython 3.11, manylinux"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    assert!(!rootfs.exists(), "nothing is left at the output");
    assert!(entries(dir.path()).is_empty(), "no staging left");
}

#[test]
fn bad_requirement_lists_are_refused_before_building() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("rootfs");
    let output = output.to_str().expect("utf-8 path");
    for (args, var, needle) in [
        (
            vec![
                "--pip",
                "pandas @ https://example.invalid/p.whl",
                "--output",
                output,
            ],
            None,
            "\"pandas @ https://example.invalid/p.whl\" has something other than version clauses",
        ),
        (
            vec!["--output", output],
            Some("--index-url=http://127.0.0.1/"),
            "\"--index-url=http://127.0.0.1/\" does not start with a project name",
        ),
    ] {
        let out = rootfs_build_env(&args, &[("RLM_ROOTFS_PIP", var)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(stderr.contains("(--pip or RLM_ROOTFS_PIP)"), "{stderr}");
        assert!(
            stderr.contains("accepted: comma-separated PyPI requirements"),
            "{stderr}"
        );
        assert!(entries(dir.path()).is_empty());
    }
}
