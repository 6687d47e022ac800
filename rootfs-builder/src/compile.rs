//! Steps that run the new tree's own interpreter in a chroot: bytecode
//! precompilation, and the self-check as the sandbox user.

use std::path::Path;

use crate::command::{command, run};
use crate::{Error, PYTHON, SANDBOX_GID, SANDBOX_UID};

const SELFCHECK: &str = include_str!("../python/selfcheck.py");
const SELFCHECK_OK: &str = "rlm-sandbox self-check ok";

/// Precompiles the stdlib with the tree's own interpreter (the exact
/// version that will load it), so runs on the read-only root never need to
/// write bytecode. One process: `compileall -j` needs multiprocessing (gone
/// by now) and POSIX semaphores in /dev/shm (absent in a bare chroot); the
/// whole stdlib takes about a second anyway.
pub fn compile_bytecode(tree: &Path, version: &str) -> Result<(), Error> {
    let stdlib = format!("/usr/lib/python{version}");
    run(command("chroot")
        .arg(tree)
        .args([PYTHON, "-I", "-m", "compileall", "-q", &stdlib]))?;
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

/// Runs the embedded self-check in the new tree as the sandbox user:
/// common modules import from precompiled bytecode, blocked modules and
/// process creation are refused with rlm-sandbox's message, /etc/shadow
/// and the stdlib are out of the user's reach, threads, /tmp and asyncio
/// work.
pub fn self_check(tree: &Path) -> Result<(), Error> {
    let out = run(&mut sandbox_python(tree, &["-c", SELFCHECK])).map_err(|e| match e {
        Error::Command { stderr, .. } => Error::SelfCheck {
            path: tree.to_path_buf(),
            detail: stderr,
        },
        other => other,
    })?;
    if out.trim() != SELFCHECK_OK {
        return Err(Error::SelfCheck {
            path: tree.to_path_buf(),
            detail: format!("expected {SELFCHECK_OK:?}, got {:?}", out.trim()),
        });
    }
    Ok(())
}
