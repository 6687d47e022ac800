//! Steps that run the new tree's own interpreter in a chroot: bytecode
//! precompilation, and the self-check as the sandbox user.

use std::path::Path;

use crate::command::{command, output, run, tail};
use crate::error::{Refusal, RefusalReason};
use crate::{Error, PYTHON, SANDBOX_GID, SANDBOX_UID};

const SELFCHECK: &str = include_str!("../python/selfcheck.py");
const SELFCHECK_OK: &str = "rlm-sandbox self-check ok";
/// Where Debian's Python packages install their modules.
pub(crate) const DIST_PACKAGES: &str = "usr/lib/python3/dist-packages";
/// `compileall --invalidation-mode`: see [`compile_bytecode`].
pub(crate) const INVALIDATION_MODE: &str = "unchecked-hash";

/// Precompiles the stdlib (and dist-packages, where extra packages put
/// theirs) with the tree's own interpreter (the exact version that will
/// load it), so runs on the read-only root never need to write bytecode.
/// One process: `compileall -j` needs multiprocessing (gone by now) and
/// POSIX semaphores in /dev/shm (absent in a bare chroot); the whole
/// stdlib takes about a second anyway.
///
/// The bytecode is hash-based and unchecked ([`INVALIDATION_MODE`]): a
/// `.pyc` records a hash of its source, not the source's modification
/// time, so two builds write the same bytes whatever their clocks, and an
/// image may give every file one fixed time (src/image/layer.rs). Python
/// loads an unchecked `.pyc` without reading its source (only
/// `--check-hash-based-pycs always` would), which is right for a root
/// that is read-only and verified against its manifest as a whole.
pub fn compile_bytecode(tree: &Path, version: &str) -> Result<(), Error> {
    let mut dirs = vec![format!("/usr/lib/python{version}")];
    // Absent from the default rootfs: its command stays what it was.
    dirs.extend(crate::standins::package_roots(tree, version)?);
    run(command("chroot")
        .arg(tree)
        // -B: the interpreter's own start-up imports (sitecustomize, the
        // stand-in list) would otherwise write timestamp bytecode, which
        // compileall takes as current; -f recompiles whatever is there.
        .args([PYTHON, "-I", "-B", "-m", "compileall", "-q", "-f"])
        .args(["--invalidation-mode", INVALIDATION_MODE])
        .args(&dirs))?;
    Ok(())
}

/// `chroot --userspec` as the sandbox user, into `tree`, running the
/// sandbox's entry point (`python3 -I`) with `args`.
pub(crate) fn sandbox_python(tree: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = command("chroot");
    cmd.arg(format!("--userspec={SANDBOX_UID}:{SANDBOX_GID}"))
        .arg(format!("--groups={SANDBOX_GID}"))
        .arg(tree)
        .args([PYTHON, "-I"])
        .args(args)
        .current_dir("/");
    cmd
}

/// A module the self-check imports for the extra package that added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Import {
    pub package: String,
    pub module: String,
}

/// Runs the embedded self-check in the new tree as the sandbox user:
/// the extra packages' modules import (else [`Error::Refused`] says why),
/// common modules import from precompiled bytecode, blocked modules and
/// process creation are refused with rlm-sandbox's message, /etc/shadow
/// and the stdlib are out of the user's reach, threads, /tmp and asyncio
/// work.
/// A stand-in the self-check saw handed out while importing a package's
/// modules, and proved inert: `python3-pandas` got `subprocess` at
/// `.../pandas/_config/localization.py:11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub package: String,
    pub place: String,
    pub module: String,
}

impl std::fmt::Display for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: an inert {} for {}",
            self.package, self.module, self.place
        )
    }
}

pub(crate) fn self_check(tree: &Path, imports: &[Import]) -> Result<Vec<Granted>, Error> {
    let pairs: Vec<String> = imports
        .iter()
        .map(|i| format!("{}={}", i.package, i.module))
        .collect();
    let mut args = vec!["-c", SELFCHECK];
    args.extend(pairs.iter().map(String::as_str));
    let out = output(&mut sandbox_python(tree, &args))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let refusals = refusals(&stdout);
    if !refusals.is_empty() {
        return Err(Error::Refused(refusals));
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::SelfCheck {
            path: tree.to_path_buf(),
            detail: tail(&stderr, 8),
        });
    }
    match granted(&stdout) {
        Some(granted) => Ok(granted),
        None => Err(Error::SelfCheck {
            path: tree.to_path_buf(),
            detail: format!(
                "expected `standin` lines then {SELFCHECK_OK:?}, got {:?}",
                tail(&stdout, 3)
            ),
        }),
    }
}

/// The stand-in lines (`standin\tPACKAGE\tFILE:LINE\tMODULE`) of a
/// passed self-check, whose last line is [`SELFCHECK_OK`]; None for any
/// other output.
pub(crate) fn granted(stdout: &str) -> Option<Vec<Granted>> {
    let mut lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    if lines.pop()? != SELFCHECK_OK {
        return None;
    }
    lines
        .into_iter()
        .map(|line| {
            let mut f = line.split('\t');
            match (f.next(), f.next(), f.next(), f.next(), f.next()) {
                (Some("standin"), Some(package), Some(place), Some(module), None) => {
                    Some(Granted {
                        package: package.to_string(),
                        place: place.to_string(),
                        module: module.to_string(),
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// The self-check's refusal lines: `refuse\tPACKAGE\tMODULE\tBLOCKED` and
/// `importfail\tPACKAGE\tMODULE\tTYPE: MESSAGE`.
pub(crate) fn refusals(stdout: &str) -> Vec<Refusal> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(4, '\t');
            let (kind, package, module, what) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let reason = match kind {
                "refuse" => RefusalReason::Blocked(what.to_string()),
                "importfail" => RefusalReason::Failed(what.to_string()),
                _ => return None,
            };
            Some(Refusal {
                package: package.to_string(),
                module: module.to_string(),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_become_messages_naming_package_module_and_cause() {
        let stdout = "refuse\tpython3-distro\tdistro\tsubprocess\n\
                      refuse\tpython3-foo\tfoo\tos.system\n\
                      importfail\tpython3-cffi-backend\t_cffi_backend\tImportError: libffi.so.8: cannot open shared object file\n\
                      rlm-sandbox self-check ok\n";
        let found = refusals(stdout);
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "python3-distro: `import distro` needs subprocess, which the sandbox removes; leave it out",
                "python3-foo: `import foo` calls os.system, which the sandbox refuses; leave it out",
                "python3-cffi-backend: `import _cffi_backend` fails in the sandbox \
                 (ImportError: libffi.so.8: cannot open shared object file); leave it out",
            ]
        );
        assert_eq!(
            Error::Refused(found[..2].to_vec()).to_string(),
            "python3-distro: `import distro` needs subprocess, which the sandbox removes; leave it out; \
             python3-foo: `import foo` calls os.system, which the sandbox refuses; leave it out"
        );
        assert!(refusals("FAIL import json\nrlm-sandbox self-check ok\n").is_empty());
    }

    #[test]
    fn granted_stand_ins_are_read_from_a_passed_self_check() {
        let out = "standin\tpython3-pandas\t/usr/lib/python3/dist-packages/pandas/errors/__init__.py:6\tctypes\n\
                   rlm-sandbox self-check ok\n";
        let found = granted(out).expect("passed");
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["python3-pandas: an inert ctypes for /usr/lib/python3/dist-packages/pandas/errors/__init__.py:6"]
        );
        assert_eq!(granted("rlm-sandbox self-check ok\n"), Some(Vec::new()));
        assert_eq!(granted("standin\tx\ty\tz\n"), None, "no final line");
        assert_eq!(granted("junk\nrlm-sandbox self-check ok\n"), None);
        assert_eq!(granted(""), None);
    }

    #[test]
    fn the_selfcheck_reads_its_imports_from_argv() {
        assert!(SELFCHECK.contains("sys.argv[1:]"));
        assert!(SELFCHECK.contains("\"refuse\\t"));
        assert!(SELFCHECK.contains("\"importfail\\t"));
    }
}
