//! Inert stand-ins for installed packages (docs/ROOTFS.md): the import
//! statements of the rootfs's packages that get one are listed at build
//! time, by the tree's own interpreter reading their sources, and written
//! into the stdlib as `_rlm_sandbox_standins.STAND_INS`, which the
//! interpreter layer (sitecustomize) reads at start-up.

use serde::{Deserialize, Serialize};

use std::path::Path;

use crate::command::{command, run};
use crate::tree::{resolve, write_file};
use crate::{Error, PYTHON};

const SCAN: &str = include_str!("../python/standins_scan.py");
/// Module name of the generated list in the stdlib.
pub(crate) const LIST_MODULE: &str = "_rlm_sandbox_standins";
/// Modules that a listed statement may import (the top-level name).
const STAND_IN_ROOTS: &[&str] = &["subprocess", "ctypes"];
/// Bounds on what the scan may report: it reads package sources.
const MAX_STAND_INS: usize = 10_000;
const MAX_PATH: usize = 4096;

/// One import statement of an installed package that is handed an inert
/// stand-in instead of ImportError: where it is, and the module it names
/// (`subprocess`, `ctypes`, `ctypes.util`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StandIn {
    pub file: String,
    pub line: u32,
    pub module: String,
}

/// The package directories of the tree (absolute paths inside it): where
/// Debian's packages (`--with`) and wheels (`--pip`) put their modules.
pub(crate) fn package_roots(tree: &Path, version: &str) -> Result<Vec<String>, Error> {
    let mut roots = Vec::new();
    for rel in [
        crate::compile::DIST_PACKAGES.to_string(),
        format!("usr/lib/python{version}/dist-packages"),
        crate::wheels::site_dir(version),
    ] {
        if resolve(tree, &rel)?.is_dir() {
            roots.push(format!("/{rel}"));
        }
    }
    Ok(roots)
}

/// Lists the statements of the tree's packages that get a stand-in and
/// writes them into the stdlib (an empty list without packages, so every
/// rootfs has the module sitecustomize reads).
pub(crate) fn write_list(tree: &Path, version: &str) -> Result<Vec<StandIn>, Error> {
    let roots = package_roots(tree, version)?;
    let found = if roots.is_empty() {
        Vec::new()
    } else {
        let out = run(command("chroot")
            .arg(tree)
            .args([PYTHON, "-I", "-B", "-c", SCAN])
            .args(&roots))?;
        parse_scan(&out, &roots)?
    };
    write_file(
        tree,
        &format!("usr/lib/python{version}/{LIST_MODULE}.py"),
        &module_text(&found),
        0o644,
    )?;
    Ok(found)
}

/// Parses the scan's `FILE<TAB>LINE<TAB>MODULE` lines strictly: the file
/// under one of `roots`, a plain path (printable ASCII without quotes or
/// backslashes, so it is written into Python source as is), a positive
/// line, a module under a stand-in root.
pub(crate) fn parse_scan(out: &str, roots: &[String]) -> Result<Vec<StandIn>, Error> {
    let bad = |line: &str, why: &str| Error::StandInScan {
        line: line.chars().take(200).collect(),
        problem: why.to_string(),
    };
    let mut found = Vec::new();
    for text in out.lines().filter(|l| !l.is_empty()) {
        if found.len() == MAX_STAND_INS {
            return Err(bad(text, "more statements than the limit"));
        }
        let mut fields = text.split('\t');
        let (Some(file), Some(line), Some(module), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(text, "expected FILE<TAB>LINE<TAB>MODULE"));
        };
        let plain = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '\'';
        if file.len() > MAX_PATH
            || !file.chars().all(plain)
            || file.contains("/../")
            || !file.ends_with(".py")
            || !roots.iter().any(|r| file.starts_with(&format!("{r}/")))
        {
            return Err(bad(text, "not a .py file under a package directory"));
        }
        let line: u32 = match line.parse() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad(text, "the line is not a positive number")),
        };
        let identifiers = module.split('.').all(|p| {
            p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if !identifiers || !STAND_IN_ROOTS.contains(&module.split('.').next().unwrap_or("")) {
            return Err(bad(
                text,
                "not subprocess, ctypes or one of their submodules",
            ));
        }
        found.push(StandIn {
            file: file.to_string(),
            line,
            module: module.to_string(),
        });
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The generated module: a frozenset of (file, line, module) tuples.
pub(crate) fn module_text(found: &[StandIn]) -> String {
    let mut text = String::from(
        "# rlm-sandbox: generated by the rootfs builder (docs/ROOTFS.md): the import\n\
         # statements of installed packages that sitecustomize hands an inert stand-in.\n\
         STAND_INS = frozenset((\n",
    );
    for s in found {
        text.push_str(&format!(
            "    (\"{}\", {}, \"{}\"),\n",
            s.file, s.line, s.module
        ));
    }
    text.push_str("))\n");
    text
}

/// The scan's source, for [`crate::content_id`].
pub(crate) fn scan_source() -> &'static str {
    SCAN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Vec<String> {
        vec!["/usr/lib/python3/dist-packages".to_string()]
    }

    #[test]
    fn scan_lines_are_parsed_sorted_and_written_as_python() {
        let out = "/usr/lib/python3/dist-packages/pandas/errors/__init__.py\t6\tctypes\n\
                   /usr/lib/python3/dist-packages/pandas/_config/localization.py\t11\tsubprocess\n\
                   /usr/lib/python3/dist-packages/pandas/io/clipboard/__init__.py\t325\tctypes.wintypes\n";
        let found = parse_scan(out, &roots()).expect("valid");
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].module, "subprocess", "sorted by file: {found:?}");
        assert_eq!(
            module_text(&found[..1]),
            "# rlm-sandbox: generated by the rootfs builder (docs/ROOTFS.md): the import\n\
             # statements of installed packages that sitecustomize hands an inert stand-in.\n\
             STAND_INS = frozenset((\n    \
             (\"/usr/lib/python3/dist-packages/pandas/_config/localization.py\", 11, \"subprocess\"),\n\
             ))\n"
        );
        assert_eq!(
            module_text(&[]),
            "# rlm-sandbox: generated by the rootfs builder (docs/ROOTFS.md): the import\n\
             # statements of installed packages that sitecustomize hands an inert stand-in.\n\
             STAND_INS = frozenset((\n))\n"
        );
        assert!(parse_scan("", &roots()).expect("empty").is_empty());
    }

    #[test]
    fn scan_lines_outside_the_form_are_errors_naming_the_line() {
        for (line, problem) in [
            ("/usr/lib/python3/dist-packages/a.py\t1", "expected FILE"),
            (
                "/usr/lib/python3/dist-packages/a.py\t1\tctypes\tx",
                "expected FILE",
            ),
            (
                "/usr/lib/python3.11/json/a.py\t1\tctypes",
                "under a package directory",
            ),
            (
                "/usr/lib/python3/dist-packages/a\".py\t1\tctypes",
                "under a package directory",
            ),
            (
                "/usr/lib/python3/dist-packages/../x.py\t1\tctypes",
                "under a package directory",
            ),
            (
                "/usr/lib/python3/dist-packages/a.so\t1\tctypes",
                "under a package directory",
            ),
            (
                "/usr/lib/python3/dist-packages/a.py\t0\tctypes",
                "positive number",
            ),
            (
                "/usr/lib/python3/dist-packages/a.py\tx\tctypes",
                "positive number",
            ),
            (
                "/usr/lib/python3/dist-packages/a.py\t1\tos",
                "not subprocess, ctypes",
            ),
            (
                "/usr/lib/python3/dist-packages/a.py\t1\tctypes.\"x",
                "not subprocess, ctypes",
            ),
            (
                "/usr/lib/python3/dist-packages/a.py\t1\tsubprocessx",
                "not subprocess, ctypes",
            ),
        ] {
            let err = parse_scan(line, &roots()).expect_err(line).to_string();
            assert!(err.contains(problem), "{line}: {err}");
            assert!(err.contains(&line[..20]), "{line}: {err}");
        }
    }

    #[test]
    fn the_scan_lists_unguarded_import_time_statements_only() {
        // The scan runs in the new tree at build time; here the host's
        // Python runs it on a fixture package (skipped without one).
        let python = Path::new("/usr/bin/python3");
        if !python.exists() {
            eprintln!("SKIPPED: no /usr/bin/python3 to run the scan");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("dist-packages");
        std::fs::create_dir_all(root.join("pkg")).expect("mkdir");
        let source = "import os, subprocess\n\
                      from ctypes import (\n    c_int,\n)\n\
                      import ctypes.util as u\n\
                      try:\n    import ctypes\nexcept ImportError:\n    ctypes = None\n\
                      try:\n    import subprocess\nexcept (ModuleNotFoundError, OSError):\n    pass\n\
                      try:\n    import ctypes\nexcept Exception:\n    pass\nelse:\n    import subprocess\n\
                      if os.name == 'nt':\n    import ctypes.wintypes\n\
                      class C:\n    import subprocess\n\
                      def f():\n    import subprocess\n\
                      async def g():\n    import ctypes\n\
                      from . import subprocess\n\
                      import subprocessing\n";
        std::fs::write(root.join("pkg/__init__.py"), source).expect("write");
        std::fs::write(root.join("pkg/broken.py"), "import subprocess\ndef (:\n").expect("write");
        std::fs::write(root.join("pkg/other.py"), "import json\n").expect("write");
        let root = root.to_str().expect("utf-8").to_string();
        let out = run(command("/usr/bin/python3")
            .args(["-I", "-B", "-c", SCAN])
            .arg(&root))
        .expect("scan runs");
        let found = parse_scan(&out, std::slice::from_ref(&root)).expect("parses");
        let lines: Vec<(u32, &str)> = found.iter().map(|s| (s.line, s.module.as_str())).collect();
        // Line 1 (unguarded), 2 (multi-line from-import: its first line),
        // 5 (dotted, aliased), 11 (ModuleNotFoundError does not catch the
        // sandbox's ImportError), 19 (a try's else is not guarded), 21
        // (an if block runs at import), 23 (a class body too); not the
        // guarded ones, function bodies, relative imports, other names, or
        // a file that does not parse.
        assert_eq!(
            lines,
            [
                (1, "subprocess"),
                (2, "ctypes"),
                (5, "ctypes.util"),
                (11, "subprocess"),
                (19, "subprocess"),
                (21, "ctypes.wintypes"),
                (23, "subprocess")
            ],
            "{out}"
        );
        assert!(found
            .iter()
            .all(|s| s.file == format!("{root}/pkg/__init__.py")));
    }
}
