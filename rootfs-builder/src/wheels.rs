//! Binary wheels from PyPI added to a rootfs (`rootfs build --pip
//! 'pandas==2.2.*,numpy'`): the requirement list's validation, pip's
//! download of wheels for the rootfs's own Python (never the host's, never
//! a source build), their hashes, and their installation into the tree's
//! `/usr/local/lib/python3.X/dist-packages`.
//!
//! pip is the host's `/usr/bin/python3 -m pip`, Debian's `python3-pip`
//! (`apt-get install python3-pip`; a stock Debian 12 has no pip): it only
//! downloads and unpacks wheels here, for a target Python, platform and
//! ABI given explicitly, so which Python runs it does not matter.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{command, output, run, tail};
use crate::error::IoContext;
use crate::packages::hex;
use crate::{Error, PackageInfo};

/// What a requirement list accepts, for every error about one.
pub const PIP_ACCEPTED_FORM: &str = "comma-separated PyPI requirements: a project name \
     (letters, digits, '.', '_', '-'), optionally extras in [...] and version clauses \
     (==, !=, <=, >=, <, >, ~=, === followed by a version; a clause after a comma joins \
     the requirement before it), e.g. 'pandas==2.2.*,numpy' or 'pandas>=2,<3'; \
     no URLs, paths, markers or pip options";

/// Debian packages a rootfs with wheels gets besides the requested ones:
/// the libraries the manylinux policy lets wheels expect from the system
/// beyond glibc (numpy and pandas link libstdc++ and libgcc_s).
pub(crate) const MANYLINUX_SYSTEM_PACKAGES: &str = "libgcc-s1,libstdc++6";

/// Where wheels install inside the tree: Debian's site directory for
/// locally installed packages, first on `sys.path`.
pub(crate) fn site_dir(version: &str) -> String {
    format!("usr/local/lib/python{version}/dist-packages")
}

/// The requested PyPI requirements, each validated, sorted, without
/// duplicates. Empty for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PipRequirements(Vec<String>);

impl PipRequirements {
    /// Parses `pandas==2.2.*,numpy` (spaces around items allowed). A comma
    /// followed by a version clause continues the requirement before it:
    /// `pandas>=2,<3` is one requirement.
    pub fn parse(list: &str) -> Result<PipRequirements, Error> {
        if list.trim().is_empty() {
            return Ok(PipRequirements::default());
        }
        let bad = |problem: String| Error::PipList {
            list: list.to_string(),
            problem,
        };
        let mut items: Vec<String> = Vec::new();
        let mut depth = 0usize;
        let mut current = String::new();
        let mut pieces = Vec::new();
        for c in list.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    pieces.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        pieces.push(current);
        for piece in pieces {
            let piece = piece.trim();
            if piece.is_empty() {
                return Err(bad("an empty requirement".into()));
            }
            let clause = piece.starts_with(['=', '!', '<', '>', '~']);
            match (clause, items.last_mut()) {
                (true, Some(last)) => {
                    last.push(',');
                    last.push_str(piece);
                }
                (true, None) => {
                    return Err(bad(format!(
                        "{piece:?} is a version clause without a project"
                    )))
                }
                (false, _) => items.push(piece.to_string()),
            }
        }
        for item in &items {
            if let Some(problem) = requirement_problem(item) {
                return Err(bad(format!("{item:?} {problem}")));
            }
        }
        items.sort();
        items.dedup();
        Ok(PipRequirements(items))
    }

    pub fn items(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Both lists in one (`--pip a --pip b`).
    pub fn union(&self, other: &PipRequirements) -> PipRequirements {
        let mut all: Vec<String> = self.0.iter().chain(&other.0).cloned().collect();
        all.sort();
        all.dedup();
        PipRequirements(all)
    }

    /// The project names, normalized (PEP 503: lower case, runs of
    /// `-_.` as one `-`).
    pub(crate) fn names(&self) -> Vec<String> {
        self.0.iter().map(|r| normalize(project(r))).collect()
    }
}

impl FromStr for PipRequirements {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        PipRequirements::parse(s)
    }
}

impl fmt::Display for PipRequirements {
    /// `;`-joined: a requirement may hold commas (`pandas>=2,<3`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(";"))
    }
}

/// The project name at the start of a requirement.
fn project(requirement: &str) -> &str {
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(requirement.len());
    &requirement[..end]
}

/// PEP 503 normalization.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// What is wrong with one requirement, if anything: `name[extras]` then
/// version clauses separated by commas (PEP 508 without URLs or markers).
fn requirement_problem(item: &str) -> Option<&'static str> {
    let name = project(item);
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("does not start with a project name");
    }
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("has a project name ending in '.', '_' or '-'");
    }
    let mut rest = item[name.len()..].trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let Some((extras, tail)) = after.split_once(']') else {
            return Some("has an unclosed '['");
        };
        let ok = extras.split(',').all(|e| {
            let e = e.trim();
            !e.is_empty()
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !ok {
            return Some("has extras other than names in [...]");
        }
        rest = tail.trim_start();
    }
    if rest.is_empty() {
        return None;
    }
    for clause in rest.split(',') {
        let clause = clause.trim();
        let op_len = ["===", "==", "!=", "<=", ">=", "~=", "<", ">"]
            .iter()
            .find(|op| clause.starts_with(*op))
            .map(|op| op.len());
        let Some(op_len) = op_len else {
            return Some("has something other than version clauses after the name (no URLs, paths, markers or options)");
        };
        let version = clause[op_len..].trim();
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._*+!-".contains(&b))
        {
            return Some("has a version clause without a plain version");
        }
    }
    None
}

/// One downloaded wheel, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wheel {
    /// The project, as the wheel's file name spells it.
    pub name: String,
    pub version: String,
    pub file: String,
    /// sha256 of the wheel file.
    pub sha256: String,
}

/// `(name, version)` from a wheel file name
/// (`pandas-2.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl`).
pub(crate) fn parse_wheel_name(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some((parts[0].to_string(), parts[1].to_string()))
}

/// The target the wheels are for: the rootfs's Python and its C library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `3.11`
    pub python: String,
    /// The glibc minor version (`36` for 2.36).
    pub glibc_minor: u32,
    /// The machine as wheels name it (`x86_64`, `aarch64`).
    pub machine: String,
}

impl Target {
    /// From the tree's Python version and its libc6 package.
    pub fn new(python: &str, packages: &[PackageInfo]) -> Result<Target, Error> {
        let libc = packages
            .iter()
            .find(|p| p.name == "libc6")
            .ok_or_else(|| Error::NoWheelTarget("libc6 is not among the packages".into()))?;
        let glibc_minor = libc
            .version
            .strip_prefix("2.")
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::NoWheelTarget(format!("libc6 version {:?} is not 2.N", libc.version))
            })?;
        let machine = match libc.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "ppc64el" => "ppc64le",
            "s390x" => "s390x",
            "i386" => "i686",
            other => {
                return Err(Error::NoWheelTarget(format!(
                    "no manylinux wheels for the architecture {other:?}"
                )))
            }
        };
        Ok(Target {
            python: python.to_string(),
            glibc_minor,
            machine: machine.to_string(),
        })
    }

    /// pip's options selecting wheels for this target only.
    pub fn pip_args(&self) -> Vec<String> {
        let tag = format!("cp{}", self.python.replace('.', ""));
        let mut args = vec![
            "--only-binary=:all:".to_string(),
            format!("--python-version={}", self.python),
            "--implementation=cp".to_string(),
            format!("--abi={tag}"),
        ];
        let m = &self.machine;
        for minor in (5..=self.glibc_minor).rev() {
            args.push(format!("--platform=manylinux_2_{minor}_{m}"));
            let legacy = match minor {
                17 => Some("manylinux2014"),
                12 => Some("manylinux2010"),
                5 => Some("manylinux1"),
                _ => None,
            };
            if let Some(legacy) = legacy.filter(|_| self.glibc_minor >= minor) {
                args.push(format!("--platform={legacy}_{m}"));
            }
        }
        args
    }
}

/// `python3 -m pip` with options that keep it quiet and self-contained.
fn pip(subcommand: &str) -> std::process::Command {
    let mut cmd = command("python3");
    cmd.args(["-m", "pip", subcommand])
        .args([
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar=off",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Refuses early when the host has no pip, with what to install.
pub(crate) fn check_pip() -> Result<(), Error> {
    let out = output(command("python3").args(["-m", "pip", "--version"]))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::NoPip(tail(&String::from_utf8_lossy(&out.stderr), 2)))
}

/// Downloads the wheels of `requirements` and their dependencies for
/// `target` into `dir`; a requirement with no wheel is refused by name.
pub(crate) fn download(
    requirements: &PipRequirements,
    target: &Target,
    dir: &Path,
) -> Result<Vec<Wheel>, Error> {
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    let out = output(
        pip("download")
            .args(target.pip_args())
            .arg("--dest")
            .arg(dir)
            .arg("--")
            .args(requirements.items()),
    )?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(requirement) = no_wheel(&stderr) {
            return Err(Error::NoWheel {
                requirement,
                target: format!(
                    "CPython {}, manylinux (glibc 2.{}) {}",
                    target.python, target.glibc_minor, target.machine
                ),
            });
        }
        return Err(Error::Command {
            command: format!("pip download {}", requirements.items().join(" ")),
            status: out.status.to_string(),
            stderr: tail(&stderr, 8),
        });
    }
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let path = entry.ctx("list", dir)?.path();
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((name, version)) = parse_wheel_name(&file) else {
            // --only-binary makes pip fetch nothing else; refuse if it did.
            return Err(Error::Unexpected {
                path,
                expected: "only wheel files (*.whl) from pip download".into(),
            });
        };
        let bytes = std::fs::read(&path).ctx("read", &path)?;
        wheels.push(Wheel {
            name,
            version,
            file,
            sha256: hex(&Sha256::digest(&bytes)),
        });
    }
    wheels.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(wheels)
}

/// The requirement pip found no wheel for: its "No matching distribution
/// found for X" line.
pub(crate) fn no_wheel(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.split("No matching distribution found for ").nth(1)?;
        Some(rest.trim().to_string())
    })
}

/// Installs the downloaded wheel files into the tree's site directory
/// (pip unpacks them, refusing paths outside it; nothing is built and no
/// package code runs), then removes the scripts directory: the sandbox
/// runs no programs.
pub(crate) fn install(
    wheels: &[Wheel],
    dir: &Path,
    target: &Target,
    tree: &Path,
) -> Result<(), Error> {
    let site = site_dir(&target.python);
    crate::tree::make_dir(tree, &site, 0o755)?;
    let site_path = crate::tree::resolve(tree, &site)?;
    let files: Vec<PathBuf> = wheels.iter().map(|w| dir.join(&w.file)).collect();
    run(pip("install")
        .args(target.pip_args())
        .args([
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-warn-script-location",
            "--root-user-action=ignore",
        ])
        .arg("--target")
        .arg(&site_path)
        .arg("--")
        .args(&files))?;
    crate::tree::remove(tree, &format!("{site}/bin"))?;
    Ok(())
}

/// The top-level modules a requested project installed, from its
/// `*.dist-info/RECORD` (paths relative to the site directory), for the
/// self-check to import.
pub(crate) fn modules_of(tree: &Path, version: &str, project: &str) -> Result<Vec<String>, Error> {
    let site = site_dir(version);
    let dir = crate::tree::resolve(tree, &site)?;
    let wanted = normalize(project);
    for entry in std::fs::read_dir(&dir).ctx("list", &dir)? {
        let name = entry.ctx("list", &dir)?.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".dist-info") else {
            continue;
        };
        let dist = stem.rsplit_once('-').map_or(stem, |(n, _)| n);
        if normalize(dist) != wanted {
            continue;
        }
        let record = dir.join(name.as_ref()).join("RECORD");
        let text = std::fs::read_to_string(&record).ctx("read", &record)?;
        let paths: Vec<String> = text
            .lines()
            .filter_map(|l| l.split(',').next())
            .map(|p| format!("{site}/{p}"))
            .collect();
        return Ok(crate::extra::python_modules(&paths, version));
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &str) -> Vec<String> {
        PipRequirements::parse(list).expect(list).items().to_vec()
    }

    #[test]
    fn requirement_lists_join_version_clauses_and_sort() {
        assert_eq!(items("pandas==2.2.*,numpy"), ["numpy", "pandas==2.2.*"]);
        assert_eq!(items("pandas>=2,<3, numpy"), ["numpy", "pandas>=2,<3"]);
        assert_eq!(
            items("requests[socks,security]>=2"),
            ["requests[socks,security]>=2"]
        );
        assert_eq!(items("a,a,b"), ["a", "b"]);
        assert!(items(" ").is_empty());
        let both = PipRequirements::parse("b")
            .expect("b")
            .union(&PipRequirements::parse("a>=1,<2").expect("a"));
        assert_eq!(both.to_string(), "a>=1,<2;b");
        assert_eq!(both.names(), ["a", "b"]);
        assert_eq!(
            PipRequirements::parse("Scikit_Learn.X>=1")
                .expect("valid")
                .names(),
            ["scikit-learn-x"]
        );
    }

    #[test]
    fn bad_requirements_name_the_value_and_the_accepted_form() {
        for (list, problem) in [
            ("pandas,,numpy", "an empty requirement"),
            (">=2", "\">=2\" is a version clause without a project"),
            ("--index-url=http://x", "does not start with a project name"),
            ("-e .", "does not start with a project name"),
            (
                "pandas @ https://x/p.whl",
                "something other than version clauses",
            ),
            (
                "pandas; python_version<'4'",
                "something other than version clauses",
            ),
            ("./pandas", "does not start with a project name"),
            ("pandas==", "without a plain version"),
            ("pandas==2 3", "without a plain version"),
            ("pandas[x", "unclosed"),
            ("pandas[x y]", "extras other than names"),
            ("pandas-", "ending in"),
        ] {
            let err = PipRequirements::parse(list).expect_err(list).to_string();
            assert!(err.contains(problem), "{list}: {err}");
            assert!(err.contains(PIP_ACCEPTED_FORM), "{list}: {err}");
        }
    }

    #[test]
    fn wheel_names() {
        assert_eq!(
            parse_wheel_name(
                "pandas-2.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
            ),
            Some(("pandas".into(), "2.2.3".into()))
        );
        assert_eq!(
            parse_wheel_name("six-1.16.0-py2.py3-none-any.whl"),
            Some(("six".into(), "1.16.0".into()))
        );
        assert_eq!(parse_wheel_name("x-1.tar.gz"), None);
        assert_eq!(parse_wheel_name("x-1-py3.whl"), None);
    }

    #[test]
    fn the_target_selects_cpython_abi_and_every_manylinux_the_glibc_runs() {
        let libc = PackageInfo {
            name: "libc6".into(),
            version: "2.36-9+deb12u9".into(),
            architecture: "amd64".into(),
            sha256: String::new(),
        };
        let target = Target::new("3.11", std::slice::from_ref(&libc)).expect("target");
        assert_eq!(target.glibc_minor, 36);
        let args = target.pip_args();
        assert_eq!(
            args[..4],
            [
                "--only-binary=:all:",
                "--python-version=3.11",
                "--implementation=cp",
                "--abi=cp311"
            ]
        );
        for platform in [
            "--platform=manylinux_2_36_x86_64",
            "--platform=manylinux_2_17_x86_64",
            "--platform=manylinux2014_x86_64",
            "--platform=manylinux2010_x86_64",
            "--platform=manylinux1_x86_64",
            "--platform=manylinux_2_5_x86_64",
        ] {
            assert!(args.iter().any(|a| a == platform), "{platform}: {args:?}");
        }
        assert!(!args
            .iter()
            .any(|a| a.contains("2_37") || a.contains("linux_x86_64\"")));
        let odd = PackageInfo {
            architecture: "mipsel".into(),
            ..libc
        };
        let err = Target::new("3.11", &[odd]).expect_err("mipsel").to_string();
        assert!(err.contains("\"mipsel\""), "{err}");
        assert!(Target::new("3.11", &[]).is_err());
    }

    #[test]
    fn pips_no_wheel_line_names_the_requirement() {
        let stderr = "ERROR: Could not find a version that satisfies the requirement docopt (from versions: none)\n\
                      ERROR: No matching distribution found for docopt\n";
        assert_eq!(no_wheel(stderr).as_deref(), Some("docopt"));
        assert_eq!(no_wheel("ERROR: other\n"), None);
    }
}
