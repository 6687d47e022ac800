//! Hardening of the unpacked tree: accounts, blocked modules, the audit
//! hook, trimmed size, bytecode.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::{io_err, run, Error, SANDBOX_GID, SANDBOX_UID};

const SITECUSTOMIZE: &str = include_str!("../python/sitecustomize.py");

/// stdlib parts a sandbox never needs (GUI, tests, installers, docs).
const STDLIB_TRIM: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "unittest/test",
    "distutils/tests",
];
const SHARE_TRIM: &[&str] = &["doc", "man", "locale", "lintian", "info", "bug", "menu"];

/// Modules that would start processes or call foreign code: replaced by a
/// stub raising ImportError, their C parts deleted. (The audit hook in
/// sitecustomize also refuses them, including `_posixsubprocess`, which
/// Debian compiles into the interpreter.)
const BLOCKED: &[(&str, &str)] = &[
    ("subprocess", "the sandbox runs no other programs"),
    ("multiprocessing", "the sandbox creates no processes"),
    ("ctypes", "the sandbox calls no foreign code"),
];
const BLOCKED_EXTENSIONS: &[&str] = &[
    "_ctypes.",
    "_ctypes_test.",
    "_multiprocessing.",
    "_posixshmem.",
    "_posixsubprocess.",
    "_test",
    "xxlimited",
    "_xxtestfuzz.",
    "_xxsubinterpreters.",
];

/// Refuses to build when a host account already has the sandbox's uid.
pub fn check_uid_free(passwd: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    match uid_owner(&text, SANDBOX_UID) {
        Some(name) => Err(Error::UidTaken {
            name,
            uid: SANDBOX_UID,
        }),
        None => Ok(()),
    }
}

pub(crate) fn uid_owner(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let found: u32 = f.nth(1)?.parse().ok()?;
        (found == uid).then(|| name.to_string())
    })
}

pub(crate) fn passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:rlm-sandbox:/tmp:/usr/sbin/nologin\n"
    )
}

pub(crate) fn group() -> String {
    format!("root:x:0:\nsandbox:x:{SANDBOX_GID}:\n")
}

pub(crate) fn stub(module: &str, reason: &str) -> String {
    format!(
        "# rlm-sandbox: {module} is removed from the sandbox's Python.\n\
         raise ImportError(\"rlm-sandbox: {module} is blocked: {reason}\", name=\"{module}\")\n"
    )
}

/// Replaces whatever is at `path` with a regular file. Never writes
/// through a symlink: packages ship absolute links (Debian's
/// sitecustomize.py -> /etc/python3.11/...), which would point at the host.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    remove(path)?;
    std::fs::write(path, text).map_err(io_err("cannot write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot chmod", path))
}

fn remove(path: &Path) -> Result<(), Error> {
    let result = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.map_err(io_err("cannot remove", path))
}

pub fn harden(tree: &Path, version: &str) -> Result<(), Error> {
    let python = tree.join("usr/bin/python3");
    if std::fs::symlink_metadata(&python).is_err() {
        symlink(format!("python{version}"), &python).map_err(io_err("cannot link", &python))?;
    }
    for (dir, mode) in [
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("rlm", 0o755),
        ("etc/rlm-sandbox", 0o755),
    ] {
        let path = tree.join(dir);
        std::fs::create_dir_all(&path).map_err(io_err("cannot create", &path))?;
        // An explicit chmod: a tmpfs mounted here takes this mode under runc.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot chmod", &path))?;
    }
    let etc = tree.join("etc");
    write(&etc.join("passwd"), &passwd(), 0o644)?;
    write(&etc.join("group"), &group(), 0o644)?;
    // Present and root-only: reading it as the sandbox user is EACCES.
    write(
        &etc.join("shadow"),
        "root:*:19000:0:99999:7:::\nsandbox:!:19000::::::\n",
        0o600,
    )?;
    write(&etc.join("hostname"), "sandbox\n", 0o644)?;
    write(
        &etc.join("hosts"),
        "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n",
        0o644,
    )?;

    for dir in SHARE_TRIM {
        remove(&tree.join("usr/share").join(dir))?;
    }
    let stdlib = tree.join(format!("usr/lib/python{version}"));
    for dir in STDLIB_TRIM {
        remove(&stdlib.join(dir))?;
    }
    for (module, reason) in BLOCKED {
        remove(&stdlib.join(module))?;
        remove(&stdlib.join(format!("{module}.py")))?;
        write(
            &stdlib.join(format!("{module}.py")),
            &stub(module, reason),
            0o644,
        )?;
    }
    let dynload = stdlib.join("lib-dynload");
    if let Ok(entries) = std::fs::read_dir(&dynload) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if BLOCKED_EXTENSIONS.iter().any(|p| name.starts_with(p)) {
                remove(&entry.path())?;
            }
        }
    }
    write(&stdlib.join("sitecustomize.py"), SITECUSTOMIZE, 0o644)?;
    Ok(())
}

/// Precompiles the stdlib with the rootfs's own interpreter (so runs on a
/// read-only root never need to write bytecode). One process: `-j` would
/// need multiprocessing, which is gone by now.
pub fn compile_bytecode(tree: &Path, version: &str) -> Result<(), Error> {
    let stdlib = format!("/usr/lib/python{version}");
    run(Command::new("chroot").arg(tree).args([
        "/usr/bin/python3",
        "-I",
        "-m",
        "compileall",
        "-q",
        &stdlib,
    ]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_owner_reads_passwd() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbob:x:65432:100::/home/bob:/bin/sh\n";
        assert_eq!(uid_owner(text, 65432).as_deref(), Some("bob"));
        assert_eq!(uid_owner(text, 1000), None);
    }

    #[test]
    fn accounts_have_the_sandbox_user() {
        assert!(passwd().contains("sandbox:x:65432:65432:"));
        assert!(group().contains("sandbox:x:65432:"));
    }

    #[test]
    fn stubs_raise_import_error_with_the_reason() {
        let s = stub("subprocess", "the sandbox runs no other programs");
        assert!(s.contains("raise ImportError(\"rlm-sandbox: subprocess is blocked: the sandbox runs no other programs\""));
    }
}
