//! The distribution's Python packages: resolve, download, unpack.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::command::{command, run};
use crate::error::IoContext;
use crate::manifest::PackageInfo;
use crate::Error;

/// Packages in the closure that a Python sandbox does not need: perl and
/// the packaging tools (dragged in by python3.X-minimal's maintainer
/// scripts, which never run here), mail helpers, and libffi (used only by
/// `_ctypes`, which is deleted). Skipped, never unpacked. A name matches
/// exactly or followed by `-` or a digit (`perl-base`, `libperl5.36`).
/// Each with the reason, for a `--with` that names one.
const SKIP: &[(&str, &str)] = &[
    ("perl", MAINTAINER_SCRIPTS),
    ("libperl", MAINTAINER_SCRIPTS),
    ("dpkg", MAINTAINER_SCRIPTS),
    ("tar", MAINTAINER_SCRIPTS),
    ("install-info", MAINTAINER_SCRIPTS),
    (
        "mailcap",
        "it maps file types to programs, and the sandbox runs no other programs",
    ),
    ("debconf", MAINTAINER_SCRIPTS),
    ("debianutils", MAINTAINER_SCRIPTS),
    ("base-files", MAINTAINER_SCRIPTS),
    (
        "libffi",
        "it calls foreign code for ctypes, which the sandbox removes",
    ),
];
const MAINTAINER_SCRIPTS: &str =
    "it serves the packages' maintainer scripts, which never run in the sandbox";

/// Why `name` is never unpacked, if it is one of [`SKIP`].
pub(crate) fn skip_reason(name: &str) -> Option<&'static str> {
    SKIP.iter().find_map(|(s, reason)| {
        name.strip_prefix(s)
            .is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            })
            .then_some(*reason)
    })
}

fn skipped(name: &str) -> bool {
    skip_reason(name).is_some()
}

/// The Python version (e.g. "3.11") and the packages to install.
pub fn resolve() -> Result<(String, Vec<String>), Error> {
    let out = run(command("apt-cache").args(["depends", "python3-minimal"]))?;
    let version = python_version(&out).ok_or_else(|| {
        Error::NoPython(format!(
            "`apt-cache depends python3-minimal` names no python3.X-minimal: {}",
            out.trim().replace('\n', " ")
        ))
    })?;
    let out = run(command("apt-cache")
        .args(["depends", "--recurse"])
        .args(closure_flags())
        .arg("--no-pre-depends")
        .args(base_roots(&version)))?;
    let names = closure(&out);
    for needed in base_roots(&version) {
        if !names.contains(&needed) {
            return Err(Error::NoPython(format!(
                "{needed} is not in the resolved packages"
            )));
        }
    }
    Ok((version, names))
}

/// The packages the default closure starts from.
pub(crate) fn base_roots(version: &str) -> [String; 2] {
    [
        format!("python{version}-minimal"),
        format!("libpython{version}-stdlib"),
    ]
}

/// `apt-cache depends` flags leaving out what apt would not install:
/// recommended and suggested packages, and relations that install nothing.
/// (The default closure also passes `--no-pre-depends`, as it always has,
/// so its package set stays what it was; extra packages keep PreDepends,
/// which apt would install: see [`crate::extra`].)
pub(crate) fn closure_flags() -> [&'static str; 6] {
    [
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
    ]
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
    // The staging directory is root's 0700: apt's `_apt` download user could
    // not write there, so apt is told up front instead of warning.
    run(command("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
        .args(names)
        .current_dir(dir))?;
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ctx("list", dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    let got: Vec<String> = debs
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| parse_deb_name(&n.to_string_lossy()).0)
        .collect();
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !got.contains(n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() || debs.len() != names.len() {
        return Err(Error::Download {
            dir: dir.to_path_buf(),
            expected: names.len(),
            got: debs.len(),
            missing: missing.join(", "),
        });
    }
    Ok(debs)
}

/// Unpacks one .deb into `tree`; its name, version, architecture and hash
/// (from the file name apt gives it: `name_version_arch.deb`).
pub fn unpack(deb: &Path, tree: &Path) -> Result<PackageInfo, Error> {
    run(command("dpkg-deb").arg("-x").arg(deb).arg(tree))?;
    let mut hasher = Sha256::new();
    let mut file = File::open(deb).ctx("open", deb)?;
    std::io::copy(&mut file, &mut hasher).ctx("read", deb)?;
    let file = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (name, version, architecture) = parse_deb_name(&file);
    Ok(PackageInfo {
        name,
        version,
        architecture,
        sha256: hex(&hasher.finalize()),
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

/// The paths a .deb installs (`dpkg-deb -c`), relative (`usr/lib/...`);
/// directories end with `/`, a link's target is left out.
pub(crate) fn contents(deb: &Path) -> Result<Vec<String>, Error> {
    let out = run(command("dpkg-deb").arg("-c").arg(deb))?;
    Ok(listed_paths(&out))
}

/// Paths from `dpkg-deb -c` lines (`-rw-r--r-- root/root 12 2023-01-01
/// 00:00 ./usr/lib/x.py`, links with ` -> target`).
pub(crate) fn listed_paths(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let path = &l[l.find(" ./")? + 3..];
            let path = path.split_once(" -> ").map_or(path, |(p, _)| p);
            (!path.is_empty()).then(|| path.to_string())
        })
        .collect()
}

/// A maintainer script of a .deb (`postinst`), or None when it has none.
/// Extracted with `dpkg-deb -e` into `scratch` (created, then removed).
pub(crate) fn control_file(
    deb: &Path,
    name: &str,
    scratch: &Path,
) -> Result<Option<String>, Error> {
    run(command("dpkg-deb").arg("-e").arg(deb).arg(scratch))?;
    let path = scratch.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).ctx("read", &path),
    };
    std::fs::remove_dir_all(scratch).ctx("remove", scratch)?;
    Ok(text)
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
        let out =
            "python3.11-minimal\n  Depends: libc6\n  PreDepends: <awk>\nlibc6\n<debconf-2.0>\n\
                   perl-base\nperl\nlibperl5.36\nperl-modules-5.36\nlibffi8\ntar\nlibc6:i386\n\
                   zlib1g\nlibpython3.11-stdlib\nlibc6\nmedia-types\nlibtirpc3\n";
        assert_eq!(
            closure(out),
            [
                "libc6",
                "libpython3.11-stdlib",
                "libtirpc3",
                "media-types",
                "python3.11-minimal",
                "zlib1g"
            ]
        );
    }

    #[test]
    fn skips_match_whole_or_versioned_names_only() {
        for name in ["perl", "perl-base", "libperl5.36", "libffi8", "dpkg", "tar"] {
            assert!(skipped(name), "{name}");
        }
        for name in ["libtirpc3", "target", "tarfile", "perlish", "libc6"] {
            assert!(!skipped(name), "{name}");
        }
    }

    #[test]
    fn skipped_packages_say_why() {
        assert!(skip_reason("libffi8").is_some_and(|r| r.contains("ctypes")));
        assert!(skip_reason("perl-base").is_some_and(|r| r.contains("maintainer scripts")));
        assert_eq!(skip_reason("python3-numpy"), None);
    }

    #[test]
    fn listed_paths_of_dpkg_deb_contents() {
        let listing = "drwxr-xr-x root/root         0 2023-02-07 15:39 ./\n\
            drwxr-xr-x root/root         0 2023-02-07 15:39 ./usr/lib/python3/dist-packages/numpy/\n\
            -rw-r--r-- root/root      8024 2023-02-07 15:39 ./usr/lib/python3/dist-packages/six.py\n\
            lrwxrwxrwx root/root         0 2023-02-07 15:39 ./usr/bin/f2py -> f2py3.11\n";
        assert_eq!(
            listed_paths(listing),
            [
                "usr/lib/python3/dist-packages/numpy/",
                "usr/lib/python3/dist-packages/six.py",
                "usr/bin/f2py"
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
