//! Builds the hardened Python rootfs for rlm-sandbox from the distribution's
//! packages, without Docker: resolve the dependency closure of the Python
//! packages with apt, download the .deb files, unpack them with dpkg-deb,
//! harden the tree, precompile bytecode, and write a manifest. Extra
//! Debian packages (`--with python3-numpy`) join the closure with theirs;
//! the self-check imports their modules and refuses a package that needs
//! what the sandbox removes. The build
//! happens in a temporary sibling of the output and is renamed into place
//! only when complete, so a failed build leaves nothing behind.

mod alternatives;
mod command;
mod compile;
mod error;
mod extra;
mod harden;
mod identity;
mod manifest;
mod packages;
mod staging;
mod standins;
mod tree;
mod wheels;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use compile::Granted;
pub use error::{Error, Refusal, RefusalReason};
pub use extra::{ExtraPackages, ACCEPTED_FORM};
pub use identity::{
    content_id, content_id_for, content_id_with, is_current, is_current_for, is_current_with,
    SOURCE_ID,
};
pub use manifest::{read_manifest, verify, Manifest, PackageInfo, MANIFEST_PATH};
pub use standins::StandIn;
pub use wheels::{PipRequirements, Wheel, PIP_ACCEPTED_FORM};

/// The unprivileged user code runs as. In Debian's 65000–65533 range, which
/// is reserved and never allocated, so no host account owns the sandbox's
/// files or processes.
pub const SANDBOX_UID: u32 = 65432;
pub const SANDBOX_GID: u32 = 65432;
/// The interpreter, inside the rootfs.
pub const PYTHON: &str = "/usr/bin/python3";
/// The session agent, a module of the rootfs's stdlib (`python3 -m`).
pub const AGENT_MODULE: &str = "_rlm_agent";

/// Where the driver bind-mounts the run's input (code) read-only.
pub const INPUT_DIR: &str = "/rlm";
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub output: PathBuf,
    /// Debian packages to add (with their dependencies) beyond the
    /// default Python; none for the default rootfs.
    pub packages: ExtraPackages,
    /// PyPI requirements whose binary wheels (with their dependencies')
    /// are installed into /usr/local/lib/python3.X/dist-packages.
    pub pip: PipRequirements,
}

/// Steps of a build, one human line each.
#[derive(Debug, Clone)]
pub enum Progress {
    Resolving,
    ResolvingExtra {
        packages: ExtraPackages,
    },
    Downloading {
        packages: usize,
    },
    Unpacking {
        done: usize,
        total: usize,
    },
    Hardening,
    LinkedAlternatives {
        links: usize,
    },
    DownloadingWheels {
        requirements: PipRequirements,
    },
    InstalledWheels {
        wheels: Vec<String>,
    },
    ListedStandIns {
        statements: usize,
    },
    Compiling,
    Importing {
        modules: Vec<String>,
    },
    StandIn(Granted),
    Hashing,
    Done {
        path: PathBuf,
        bytes: u64,
        elapsed: Duration,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Resolving => write!(f, "resolving the Python packages' dependencies"),
            Progress::ResolvingExtra { packages } => {
                write!(f, "resolving the dependencies of {packages}")
            }
            Progress::Downloading { packages } => write!(f, "downloading {packages} packages"),
            Progress::Unpacking { done, total } => write!(f, "unpacked {done}/{total} packages"),
            Progress::Hardening => write!(f, "hardening (users, blocked modules, audit hook)"),
            Progress::LinkedAlternatives { links } => write!(
                f,
                "linked {links} shared-library alternatives (as the packages' maintainer scripts would)"
            ),
            Progress::Importing { modules } => write!(
                f,
                "self-check imports the added packages' modules: {}",
                modules.join(", ")
            ),
            Progress::DownloadingWheels { requirements } => write!(
                f,
                "downloading binary wheels from PyPI for {}",
                requirements.items().join(", ")
            ),
            Progress::InstalledWheels { wheels } => {
                write!(f, "installed wheels: {}", wheels.join(", "))
            }
            Progress::ListedStandIns { statements } => write!(
                f,
                "{statements} import statements of the packages get an inert stand-in for subprocess or ctypes"
            ),
            Progress::StandIn(granted) => write!(f, "self-check: {granted}"),
            Progress::Compiling => {
                write!(f, "precompiling bytecode, self-check as the sandbox user")
            }
            Progress::Hashing => write!(f, "hashing the tree for the manifest"),
            Progress::Done {
                path,
                bytes,
                elapsed,
            } => write!(
                f,
                "built {} ({} MB) in {:.1} s",
                path.display(),
                bytes / 1_000_000,
                elapsed.as_secs_f64()
            ),
        }
    }
}

/// The effective uid, from /proc/self/status (std has no geteuid).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Where `rlm-sandbox run` keeps the default rootfs: `$RLM_CACHE_DIR/rootfs`,
/// else `/var/cache/rlm-sandbox/rootfs` for root, else
/// `$XDG_CACHE_HOME/rlm-sandbox/rootfs` or `~/.cache/rlm-sandbox/rootfs`.
pub fn default_rootfs_dir() -> PathBuf {
    default_rootfs_dir_with(
        std::env::var_os("RLM_CACHE_DIR").map(PathBuf::from),
        effective_uid() == Some(0),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// Where `rootfs build --with` keeps a rootfs with `extra` packages when
/// given no `--output`: [`default_rootfs_dir`] itself for none, else its
/// sibling `rootfs-with-<16 hex of the list's sha256>`, so the default
/// rootfs `run` uses is never replaced by one with extras (or the reverse).
pub fn default_rootfs_dir_for(extra: &ExtraPackages) -> PathBuf {
    rootfs_dir_for(default_rootfs_dir(), extra, &PipRequirements::default())
}

/// [`default_rootfs_dir_for`] extra packages and PyPI requirements.
pub fn default_rootfs_dir_with_pip(extra: &ExtraPackages, pip: &PipRequirements) -> PathBuf {
    rootfs_dir_for(default_rootfs_dir(), extra, pip)
}

fn rootfs_dir_for(default: PathBuf, extra: &ExtraPackages, pip: &PipRequirements) -> PathBuf {
    if extra.is_empty() && pip.is_empty() {
        return default;
    }
    let mut list = extra.to_string();
    if !pip.is_empty() {
        // Only with requirements, so --with alone keeps its directory.
        list.push_str(&format!("\0pip\0{pip}"));
    }
    let id = packages::hex(&Sha256::digest(list));
    let name = default
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rootfs".into());
    default.with_file_name(format!("{name}-with-{}", &id[..16]))
}

fn default_rootfs_dir_with(
    cache_dir: Option<PathBuf>,
    is_root: bool,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    let nonempty = |p: &PathBuf| !p.as_os_str().is_empty();
    if let Some(dir) = cache_dir.filter(nonempty) {
        return dir.join("rootfs");
    }
    if is_root {
        return PathBuf::from("/var/cache/rlm-sandbox/rootfs");
    }
    xdg_cache_home
        .filter(nonempty)
        .or_else(|| home.filter(nonempty).map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("rlm-sandbox/rootfs")
}

/// Builds the rootfs at `opts.output`, replacing what is there only on
/// success. Needs root and apt (Debian or Ubuntu); takes a few seconds.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&Progress)) -> Result<Manifest, Error> {
    let start = Instant::now();
    let euid = effective_uid().unwrap_or(u32::MAX);
    if euid != 0 {
        return Err(Error::NotRoot(euid));
    }
    harden::check_ids_free(Path::new("/etc/passwd"), Path::new("/etc/group"))?;
    if !opts.pip.is_empty() {
        wheels::check_pip()?;
    }
    let output = &opts.output;
    staging::check_replaceable(output)?;
    // Removed on every early return (drop); renamed into place at the end.
    let staging = staging::Staging::new(output)?;
    let tree = &staging.tree;

    progress(&Progress::Resolving);
    let (python_version, mut names) = packages::resolve()?;
    let extra = &opts.packages;
    // Wheels expect the C++ runtime from the system (the manylinux policy).
    let resolved = if opts.pip.is_empty() {
        extra.clone()
    } else {
        extra.union(&ExtraPackages::parse(wheels::MANYLINUX_SYSTEM_PACKAGES)?)
    };
    // The packages the extras add to the default closure (none without).
    let mut added = Vec::new();
    if !resolved.is_empty() {
        progress(&Progress::ResolvingExtra {
            packages: resolved.clone(),
        });
        added = extra::resolve(&resolved, &packages::base_roots(&python_version), &names)?;
        names.extend(added.iter().cloned());
        names.sort();
        names.dedup();
    }
    progress(&Progress::Downloading {
        packages: names.len(),
    });
    let debs = packages::download(&names, &staging.debs)?;
    let total = debs.len();
    let mut infos = Vec::with_capacity(total);
    let mut imports = Vec::new();
    let mut library_alternatives = Vec::new();
    for (i, deb) in debs.iter().enumerate() {
        let info = packages::unpack(deb, tree)?;
        if added.contains(&info.name) {
            if extra.names().contains(&info.name) {
                let paths = packages::contents(deb)?;
                for module in extra::python_modules(&paths, &python_version) {
                    imports.push(compile::Import {
                        package: info.name.clone(),
                        module,
                    });
                }
            }
            let scratch = staging.debs.join(".control");
            if let Some(script) = packages::control_file(deb, "postinst", &scratch)? {
                library_alternatives.extend(alternatives::parse_postinst(&info.name, &script));
            }
        }
        infos.push(info);
        if (i + 1) % 10 == 0 || i + 1 == total {
            progress(&Progress::Unpacking { done: i + 1, total });
        }
    }
    let pip = &opts.pip;
    let mut wheels = Vec::new();
    if !pip.is_empty() {
        progress(&Progress::DownloadingWheels {
            requirements: pip.clone(),
        });
        let target = wheels::Target::new(&python_version, &infos)?;
        let dir = staging.debs.join(".wheels");
        wheels = wheels::download(pip, &target, &dir)?;
        wheels::install(&wheels, &dir, &target, tree)?;
        progress(&Progress::InstalledWheels {
            wheels: wheels
                .iter()
                .map(|w| format!("{} {}", w.name, w.version))
                .collect(),
        });
        for project in pip.names() {
            for module in wheels::modules_of(tree, &python_version, &project)? {
                imports.push(compile::Import {
                    package: project.clone(),
                    module,
                });
            }
        }
    }
    progress(&Progress::Hardening);
    harden::harden(tree, &python_version)?;
    if !library_alternatives.is_empty() {
        let links = alternatives::link(tree, library_alternatives)?;
        progress(&Progress::LinkedAlternatives { links: links.len() });
    }
    let stand_ins = standins::write_list(tree, &python_version)?;
    if !stand_ins.is_empty() {
        progress(&Progress::ListedStandIns {
            statements: stand_ins.len(),
        });
    }
    progress(&Progress::Compiling);
    compile::compile_bytecode(tree, &python_version)?;
    tree::normalize_ownership(tree)?;
    if !imports.is_empty() {
        progress(&Progress::Importing {
            modules: imports.iter().map(|i| i.module.clone()).collect(),
        });
    }
    for granted in compile::self_check(tree, &imports)? {
        progress(&Progress::StandIn(granted));
    }
    progress(&Progress::Hashing);
    let added = manifest::Added {
        extra: extra.clone(),
        pip: pip.clone(),
        wheels,
        stand_ins,
    };
    let manifest = manifest::write_added(tree, &python_version, infos, added)?;
    staging.commit(output)?;
    progress(&Progress::Done {
        path: output.clone(),
        bytes: manifest.bytes,
        elapsed: start.elapsed(),
    });
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rootfs_dir_precedence() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            default_rootfs_dir_with(p("/c"), /*is_root*/ true, p("/x"), p("/h")),
            PathBuf::from("/c/rootfs")
        );
        assert_eq!(
            default_rootfs_dir_with(None, /*is_root*/ true, p("/x"), p("/h")),
            PathBuf::from("/var/cache/rlm-sandbox/rootfs")
        );
        assert_eq!(
            default_rootfs_dir_with(p(""), /*is_root*/ false, p("/x"), p("/h")),
            PathBuf::from("/x/rlm-sandbox/rootfs")
        );
        assert_eq!(
            default_rootfs_dir_with(None, /*is_root*/ false, None, p("/h")),
            PathBuf::from("/h/.cache/rlm-sandbox/rootfs")
        );
    }

    #[test]
    fn rootfs_dirs_with_extras_are_siblings_of_the_default() {
        let default = PathBuf::from("/var/cache/rlm-sandbox/rootfs");
        assert_eq!(
            rootfs_dir_for(
                default.clone(),
                &ExtraPackages::default(),
                &PipRequirements::default()
            ),
            default
        );
        let numpy = ExtraPackages::parse("python3-numpy").expect("valid");
        let dir = rootfs_dir_for(default.clone(), &numpy, &PipRequirements::default());
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(dir.parent(), default.parent());
        assert!(
            name.starts_with("rootfs-with-") && name.len() == "rootfs-with-".len() + 16,
            "{name}"
        );
        assert_eq!(
            dir,
            rootfs_dir_for(default.clone(), &numpy, &PipRequirements::default()),
            "stable"
        );
        assert_ne!(
            dir,
            rootfs_dir_for(
                default.clone(),
                &ExtraPackages::parse("python3-scipy").expect("valid"),
                &PipRequirements::default()
            )
        );
    }

    #[test]
    fn effective_uid_is_read() {
        assert!(effective_uid().is_some());
    }

    #[test]
    fn progress_lines() {
        let done = Progress::Done {
            path: PathBuf::from("/r"),
            bytes: 48_000_000,
            elapsed: Duration::from_millis(2500),
        };
        assert_eq!(done.to_string(), "built /r (48 MB) in 2.5 s");
        assert_eq!(
            Progress::Unpacking {
                done: 10,
                total: 38
            }
            .to_string(),
            "unpacked 10/38 packages"
        );
        assert_eq!(
            Progress::ResolvingExtra {
                packages: ExtraPackages::parse("python3-scipy,python3-numpy").expect("valid")
            }
            .to_string(),
            "resolving the dependencies of python3-numpy,python3-scipy"
        );
        assert_eq!(
            Progress::StandIn(Granted {
                package: "python3-pandas".into(),
                place: "/usr/lib/python3/dist-packages/pandas/errors/__init__.py:6".into(),
                module: "ctypes".into(),
            })
            .to_string(),
            "self-check: python3-pandas: an inert ctypes for \
             /usr/lib/python3/dist-packages/pandas/errors/__init__.py:6"
        );
        assert_eq!(
            Progress::DownloadingWheels {
                requirements: PipRequirements::parse("pandas>=2,<3,numpy").expect("valid")
            }
            .to_string(),
            "downloading binary wheels from PyPI for numpy, pandas>=2,<3"
        );
    }
}
