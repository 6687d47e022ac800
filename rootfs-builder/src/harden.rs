//! Hardening of the unpacked tree: accounts, blocked modules, the audit
//! hook, and trimming what a sandbox never needs.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::tree::{make_dir, remove, resolve, write_file};
use crate::{Error, AGENT_MODULE, SANDBOX_GID, SANDBOX_UID};

const SITECUSTOMIZE: &str = include_str!("../python/sitecustomize.py");
const SUBPROCESS_SHIM: &str = include_str!("../python/subprocess_shim.py");
/// The stand-ins handed to installed packages (docs/ROOTFS.md).
const STANDIN: &str = include_str!("../python/standin.py");
const STANDIN_MODULE: &str = "_rlm_sandbox_standin";
/// The session agent (docs/PROTOCOL.md): the files of the package
/// [`crate::AGENT_MODULE`], installed into the stdlib and byte-compiled
/// with the rest of it.
pub(crate) const AGENT_FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../python/_rlm_agent/__init__.py"),
    ),
    (
        "__main__.py",
        include_str!("../python/_rlm_agent/__main__.py"),
    ),
    ("calls.py", include_str!("../python/_rlm_agent/calls.py")),
    ("cell.py", include_str!("../python/_rlm_agent/cell.py")),
    ("cjson.py", include_str!("../python/_rlm_agent/cjson.py")),
    (
        "contexts.py",
        include_str!("../python/_rlm_agent/contexts.py"),
    ),
    (
        "dispatch.py",
        include_str!("../python/_rlm_agent/dispatch.py"),
    ),
    (
        "interrupts.py",
        include_str!("../python/_rlm_agent/interrupts.py"),
    ),
    (
        "namespace.py",
        include_str!("../python/_rlm_agent/namespace.py"),
    ),
    ("output.py", include_str!("../python/_rlm_agent/output.py")),
    (
        "prelude.py",
        include_str!("../python/_rlm_agent/prelude.py"),
    ),
    (
        "scaffold.py",
        include_str!("../python/_rlm_agent/scaffold.py"),
    ),
    ("script.py", include_str!("../python/_rlm_agent/script.py")),
    (
        "sources.py",
        include_str!("../python/_rlm_agent/sources.py"),
    ),
    ("sync.py", include_str!("../python/_rlm_agent/sync.py")),
    ("wire.py", include_str!("../python/_rlm_agent/wire.py")),
];
/// Module name of [`SUBPROCESS_SHIM`] in the stdlib: not a blocked name.
const SUBPROCESS_SHIM_MODULE: &str = "_rlm_sandbox_subprocess";

/// stdlib parts a sandbox never needs (GUI, test suites, installers, docs).
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
    "ctypes/test",
    "sqlite3/test",
];
const SHARE_TRIM: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/info",
    "usr/share/bug",
    "usr/share/menu",
    // Debian's hook for its bug reporter; it would be imported at startup.
    "etc/python{v}/sitecustomize.py",
];

/// Modules that would start processes or call foreign code: replaced by a
/// stub raising ImportError, their C parts deleted (the audit hook in
/// sitecustomize refuses them too, and `_posixsubprocess`, which Debian
/// compiles into the interpreter).
pub(crate) const BLOCKED: &[(&str, &str)] = &[
    ("subprocess", "the sandbox runs no other programs"),
    ("multiprocessing", "the sandbox creates no processes"),
    ("ctypes", "the sandbox calls no foreign code"),
];
/// Prefixes of lib-dynload files deleted: the C halves of the blocked
/// modules, and CPython's own test extensions.
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
/// stdlib packages whose modules `import subprocess` at top level for its
/// constants; those lines are pointed at the shim.
const SUBPROCESS_IMPORTERS: &[&str] = &["asyncio"];

/// Refuses to build when a host account already has the sandbox's id: the
/// sandbox's processes would be that account's to the host kernel.
pub fn check_ids_free(passwd: &Path, group: &Path) -> Result<(), Error> {
    for (file, id) in [(passwd, SANDBOX_UID), (group, SANDBOX_GID)] {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx("read", file),
        };
        if let Some(name) = id_owner(&text, id) {
            return Err(Error::IdTaken {
                file: file.to_path_buf(),
                name,
                id,
            });
        }
    }
    Ok(())
}

/// The account (passwd) or group (group) with numeric id `id`: the third
/// field in both formats.
pub(crate) fn id_owner(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let found: u32 = f.nth(1)?.trim().parse().ok()?;
        (found == id).then(|| name.to_string())
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

pub(crate) fn shadow() -> String {
    "root:*:19000:0:99999:7:::\nsandbox:!:19000::::::\n".to_string()
}

pub(crate) fn stub(module: &str, reason: &str) -> String {
    format!(
        "# rlm-sandbox: {module} is removed from the sandbox's Python.\n\
         raise ImportError(\"rlm-sandbox: {module} is blocked: {reason}\", name=\"{module}\")\n"
    )
}

/// `text` with each top-level `import subprocess` line pointed at the shim;
/// None when there is none.
pub(crate) fn redirect_subprocess_import(text: &str) -> Option<String> {
    let replacement = format!(
        "import {SUBPROCESS_SHIM_MODULE} as subprocess  # rlm-sandbox: subprocess is blocked"
    );
    let mut out = String::with_capacity(text.len() + replacement.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        // Only unindented lines: imports inside functions run on use.
        if line.trim_end() == "import subprocess" {
            out.push_str(&replacement);
            if line.ends_with('\n') {
                out.push('\n');
            }
            changed = true;
        } else {
            out.push_str(line);
        }
    }
    changed.then_some(out)
}

pub fn harden(tree: &Path, version: &str) -> Result<(), Error> {
    let python = resolve(tree, "usr/bin/python3")?;
    let versioned = format!("python{version}");
    if !resolve(tree, &format!("usr/bin/{versioned}"))?.is_file() {
        return Err(Error::Unexpected {
            path: tree.join("usr/bin").join(&versioned),
            expected: format!("the interpreter, from python{version}-minimal"),
        });
    }
    remove(tree, "usr/bin/python3")?;
    symlink(&versioned, &python).ctx("link", &python)?;

    for (dir, mode) in [
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        (crate::INPUT_DIR.trim_start_matches('/'), 0o755),
        ("etc/rlm-sandbox", 0o755),
    ] {
        make_dir(tree, dir, mode)?;
    }
    write_file(tree, "etc/passwd", &passwd(), 0o644)?;
    write_file(tree, "etc/group", &group(), 0o644)?;
    // Present and root's only: reading it as the sandbox user is EACCES.
    write_file(tree, "etc/shadow", &shadow(), 0o600)?;
    write_file(tree, "etc/hostname", "sandbox\n", 0o644)?;
    write_file(
        tree,
        "etc/hosts",
        "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n",
        0o644,
    )?;
    // Local files only: glibc never tries DNS or other services for names.
    write_file(
        tree,
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
        0o644,
    )?;

    for rel in SHARE_TRIM {
        remove(tree, &rel.replace("{v}", version))?;
    }
    // glibc's iconv modules (8 MB): Python's codecs are its own, and UTF-8
    // and ASCII conversions are built into glibc.
    for triplet in multiarch_dirs(tree)? {
        remove(tree, &format!("usr/lib/{triplet}/gconv"))?;
    }
    let stdlib_rel = format!("usr/lib/python{version}");
    let stdlib = resolve(tree, &stdlib_rel)?;
    if !stdlib.is_dir() {
        return Err(Error::Unexpected {
            path: stdlib,
            expected: format!("the standard library, from libpython{version}-stdlib"),
        });
    }
    for dir in STDLIB_TRIM {
        remove(tree, &format!("{stdlib_rel}/{dir}"))?;
    }
    for (module, reason) in BLOCKED {
        remove(tree, &format!("{stdlib_rel}/{module}"))?;
        write_file(
            tree,
            &format!("{stdlib_rel}/{module}.py"),
            &stub(module, reason),
            0o644,
        )?;
    }
    for name in blocked_extensions(&stdlib.join("lib-dynload"))? {
        remove(tree, &format!("{stdlib_rel}/lib-dynload/{name}"))?;
    }
    write_file(
        tree,
        &format!("{stdlib_rel}/{SUBPROCESS_SHIM_MODULE}.py"),
        SUBPROCESS_SHIM,
        0o644,
    )?;
    write_file(
        tree,
        &format!("{stdlib_rel}/{STANDIN_MODULE}.py"),
        STANDIN,
        0o644,
    )?;
    // Empty until the build lists the packages' statements (standins.rs).
    write_file(
        tree,
        &format!("{stdlib_rel}/{}.py", crate::standins::LIST_MODULE),
        &crate::standins::module_text(&[]),
        0o644,
    )?;
    for package in SUBPROCESS_IMPORTERS {
        redirect_package(tree, &format!("{stdlib_rel}/{package}"))?;
    }
    make_dir(
        tree,
        &format!("{stdlib_rel}/{}", crate::AGENT_MODULE),
        0o755,
    )?;
    for (name, text) in AGENT_FILES {
        write_file(
            tree,
            &format!("{stdlib_rel}/{}/{name}", crate::AGENT_MODULE),
            text,
            0o644,
        )?;
    }
    // Debian ships this as a link into /etc; write_file replaces the link.
    write_file(
        tree,
        &format!("{stdlib_rel}/sitecustomize.py"),
        SITECUSTOMIZE,
        0o644,
    )?;
    Ok(())
}

/// What the builder writes into every tree besides the packages, by name:
/// the embedded Python sources and the hardening lists. A change to any
/// of them changes [`crate::content_id`].
pub(crate) fn embedded_content() -> Vec<(&'static str, String)> {
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut content = vec![
        ("sitecustomize.py", SITECUSTOMIZE.to_string()),
        ("subprocess_shim.py", SUBPROCESS_SHIM.to_string()),
        ("standin.py", STANDIN.to_string()),
        (
            "standins_scan.py",
            crate::standins::scan_source().to_string(),
        ),
        ("agent module", AGENT_MODULE.to_string()),
        ("stdlib trim", STDLIB_TRIM.join("\n")),
        ("share trim", SHARE_TRIM.join("\n")),
        ("blocked", pairs(BLOCKED)),
        ("blocked extensions", BLOCKED_EXTENSIONS.join("\n")),
        ("subprocess importers", SUBPROCESS_IMPORTERS.join("\n")),
        ("passwd", passwd()),
        ("group", group()),
        ("shadow", shadow()),
    ];
    content.extend(
        AGENT_FILES
            .iter()
            .map(|(name, text)| (*name, text.to_string())),
    );
    content
}

/// The multiarch library directories (`x86_64-linux-gnu`) under usr/lib.
fn multiarch_dirs(tree: &Path) -> Result<Vec<String>, Error> {
    let lib = resolve(tree, "usr/lib")?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&lib).ctx("list", &lib)? {
        let name = entry
            .ctx("list", &lib)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.contains("-linux-") {
            names.push(name);
        }
    }
    Ok(names)
}

fn blocked_extensions(dynload: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dynload).ctx("list", dynload)? {
        let name = entry
            .ctx("list", dynload)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if BLOCKED_EXTENSIONS.iter().any(|p| name.starts_with(p)) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Points each `import subprocess` line of the package's modules at the shim.
fn redirect_package(tree: &Path, package_rel: &str) -> Result<Vec<PathBuf>, Error> {
    let dir = resolve(tree, package_rel)?;
    let mut changed = Vec::new();
    for entry in std::fs::read_dir(&dir).ctx("list", &dir)? {
        let name = entry.ctx("list", &dir)?.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".py") {
            continue;
        }
        let rel = format!("{package_rel}/{name}");
        let path = resolve(tree, &rel)?;
        let text = std::fs::read_to_string(&path).ctx("read", &path)?;
        if let Some(patched) = redirect_subprocess_import(&text) {
            write_file(tree, &rel, &patched, 0o644)?;
            changed.push(path);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_files_list_every_module_of_the_package() {
        // A module missing from AGENT_FILES would be missing from the rootfs.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/_rlm_agent");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("the agent's source directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = AGENT_FILES.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk);
    }

    #[test]
    fn id_owner_reads_passwd_and_group() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbob:x:65432:100::/home/bob:/bin/sh\n";
        assert_eq!(id_owner(text, 65432).as_deref(), Some("bob"));
        assert_eq!(id_owner(text, 1000), None);
        assert_eq!(
            id_owner("root:x:0:\nnogroup:x:65534:\n", 65534).as_deref(),
            Some("nogroup")
        );
        assert_eq!(id_owner("# comment\n\nbroken\n", 0), None);
    }

    #[test]
    fn check_ids_free_names_the_account_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").expect("write");
        std::fs::write(&group, "root:x:0:\n").expect("write");
        check_ids_free(&passwd, &group).expect("free");
        std::fs::write(&group, "root:x:0:\nlp:x:65432:\n").expect("write");
        let err = check_ids_free(&passwd, &group).expect_err("taken");
        assert!(err.to_string().contains("\"lp\""), "{err}");
        assert!(err.to_string().contains("65432"), "{err}");
        check_ids_free(&dir.path().join("none"), &dir.path().join("none")).expect("missing");
    }

    #[test]
    fn accounts_files_are_exact() {
        assert_eq!(
            passwd(),
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             sandbox:x:65432:65432:rlm-sandbox:/tmp:/usr/sbin/nologin\n"
        );
        assert_eq!(group(), "root:x:0:\nsandbox:x:65432:\n");
        assert!(shadow().starts_with("root:*:"));
    }

    #[test]
    fn stubs_raise_import_error_with_the_reason() {
        assert_eq!(
            stub("subprocess", "the sandbox runs no other programs"),
            "# rlm-sandbox: subprocess is removed from the sandbox's Python.\n\
             raise ImportError(\"rlm-sandbox: subprocess is blocked: the sandbox runs no other programs\", name=\"subprocess\")\n"
        );
    }

    #[test]
    fn only_top_level_subprocess_imports_are_redirected() {
        let src =
            "import os\nimport subprocess\nimport subprocessing\ndef f():\n    import subprocess\n";
        assert_eq!(
            redirect_subprocess_import(src).as_deref(),
            Some(
                "import os\nimport _rlm_sandbox_subprocess as subprocess  # rlm-sandbox: subprocess is blocked\n\
                 import subprocessing\ndef f():\n    import subprocess\n"
            )
        );
        assert_eq!(redirect_subprocess_import("import os\n"), None);
    }

    #[test]
    fn python_sources_are_embedded() {
        assert!(SITECUSTOMIZE.contains("sys.addaudithook("));
        for event in [
            "os.system",
            "os.exec",
            "os.posix_spawn",
            "os.fork",
            "os.forkpty",
            "os.spawn",
            "subprocess.Popen",
            "pty.spawn",
            "os.startfile",
        ] {
            assert!(
                SITECUSTOMIZE.contains(&format!("(\"{event}\", ")),
                "{event}"
            );
        }
        assert!(SUBPROCESS_SHIM.contains("PIPE = -1"));
        // The agent: run as `-m`, standard library only, nothing blocked.
        let main = AGENT_FILES
            .iter()
            .find(|(n, _)| *n == "__main__.py")
            .expect("__main__.py");
        assert!(main
            .1
            .contains("\nif __name__ == \"__main__\":\n    main()\n"));
        for (name, text) in AGENT_FILES {
            for blocked in ["subprocess", "multiprocessing", "ctypes"] {
                assert!(
                    !text.contains(&format!("import {blocked}")),
                    "{name}: {blocked}"
                );
            }
        }
    }
}
