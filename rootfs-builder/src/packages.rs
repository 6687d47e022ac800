//! The distribution's Python packages: resolve, download, unpack.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::manifest::PackageInfo;
use crate::{io_err, run, Error};

/// Packages in the closure that a Python sandbox does not need (perl, the
/// packaging tools themselves, mail helpers): skipped, never unpacked.
const SKIP: &[&str] = &[
    "perl",
    "perl-base",
    "perl-modules",
    "libperl",
    "dpkg",
    "tar",
    "install-info",
    "mailcap",
    "debconf",
    "debianutils",
    "base-files",
];

fn skipped(name: &str) -> bool {
    SKIP.iter()
        .any(|s| name == *s || (name.starts_with(s) && name[s.len()..].starts_with(['-', '5'])))
}

/// The Python version (e.g. "3.11") and the packages to install.
pub fn resolve() -> Result<(String, Vec<String>), Error> {
    let out = run(Command::new("apt-cache").args(["depends", "python3-minimal"]))?;
    let version = python_version(&out).ok_or_else(|| {
        Error::NoPython(format!(
            "python3-minimal depends on no python3.X-minimal: {out}"
        ))
    })?;
    let out = run(Command::new("apt-cache").args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        "--no-pre-depends",
        &format!("python{version}-minimal"),
        &format!("libpython{version}-stdlib"),
    ]))?;
    Ok((version, closure(&out)))
}

/// "3.11" from `apt-cache depends python3-minimal` output.
pub(crate) fn python_version(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let t = l.trim();
        let dep = t
            .strip_prefix("Depends: ")
            .or_else(|| t.strip_prefix("PreDepends: "))?;
        let v = dep.strip_prefix("python")?.strip_suffix("-minimal")?;
        (v.starts_with("3.") && v[2..].bytes().all(|b| b.is_ascii_digit()) && v.len() > 2)
            .then(|| v.to_string())
    })
}

/// Package names of a recursive `apt-cache depends`: the unindented lines,
/// without virtual packages (`<...>`), foreign architectures and skips.
pub(crate) fn closure(depends: &str) -> Vec<String> {
    let mut names: Vec<String> = depends
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .map(|l| l.trim().to_string())
        .filter(|n| !n.contains(':') && !skipped(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `apt-get download` into `dir`; the .deb paths, sorted.
pub fn download(names: &[String], dir: &Path) -> Result<Vec<PathBuf>, Error> {
    run(Command::new("apt-get")
        .arg("download")
        .arg("-q")
        .args(names)
        .current_dir(dir))?;
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err("cannot list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// Unpacks one .deb into `tree`; its name, version, architecture and hash
/// (from the file name apt gives it: `name_version_arch.deb`).
pub fn unpack(deb: &Path, tree: &Path) -> Result<PackageInfo, Error> {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(tree))?;
    let bytes = std::fs::read(deb).map_err(io_err("cannot read", deb))?;
    let file = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (name, version, architecture) = parse_deb_name(&file);
    Ok(PackageInfo {
        name,
        version,
        architecture,
        sha256: hex(&Sha256::digest(&bytes)),
    })
}

pub(crate) fn parse_deb_name(file: &str) -> (String, String, String) {
    let stem = file.strip_suffix(".deb").unwrap_or(file);
    let mut parts = stem.splitn(3, '_');
    let name = parts.next().unwrap_or_default().to_string();
    // apt escapes the epoch colon as %3a.
    let version = parts.next().unwrap_or_default().replace("%3a", ":");
    let arch = parts.next().unwrap_or_default().to_string();
    (name, version, arch)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_python_version() {
        let out = "python3-minimal\n  PreDepends: python3.11-minimal\n  Depends: python3.11-minimal\n  Depends: dpkg\n";
        assert_eq!(python_version(out).as_deref(), Some("3.11"));
        let ubuntu = "python3-minimal\n  Depends: python3.12-minimal\n";
        let debian12 = "python3-minimal\n  PreDepends: python3.11-minimal\n  Depends: dpkg\n";
        assert_eq!(python_version(debian12).as_deref(), Some("3.11"));
        assert_eq!(python_version(ubuntu).as_deref(), Some("3.12"));
        assert_eq!(python_version("python3-minimal\n  Depends: dpkg\n"), None);
    }

    #[test]
    fn closure_keeps_real_native_packages() {
        let out = "python3.11-minimal\n  Depends: libc6\nlibc6\n<debconf-2.0>\nperl-base\nlibperl5.36\nlibc6:i386\nzlib1g\nlibpython3.11-stdlib\nlibc6\n";
        assert_eq!(
            closure(out),
            [
                "libc6",
                "libpython3.11-stdlib",
                "python3.11-minimal",
                "zlib1g"
            ]
        );
    }

    #[test]
    fn deb_file_names() {
        assert_eq!(
            parse_deb_name("libc6_2.36-9+deb12u14_amd64.deb"),
            ("libc6".into(), "2.36-9+deb12u14".into(), "amd64".into())
        );
        assert_eq!(
            parse_deb_name("python3.11-minimal_3.11.2-6%3a1_amd64.deb").1,
            "3.11.2-6:1"
        );
    }
}
