//! The one maintainer-script step an extra package's shared libraries
//! need: `update-alternatives --install`. Debian's BLAS and LAPACK (and
//! OpenBLAS, BLIS, ATLAS) ship their libraries in subdirectories
//! (`/usr/lib/x86_64-linux-gnu/blas/libblas.so.3`) and link the name the
//! loader looks for (`/usr/lib/x86_64-linux-gnu/libblas.so.3`) from
//! postinst; without the link numpy cannot load. Maintainer scripts never
//! run here, so the builder reads their `update-alternatives --install`
//! lines and makes, for each alternative, the link to the highest-priority
//! choice (apt's automatic mode), directly instead of through
//! /etc/alternatives. Only links into /usr/lib and /lib: program
//! alternatives (/usr/bin/...) are of no use in a sandbox that runs no
//! other programs.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use crate::error::IoContext;
use crate::tree::{remove, resolve};
use crate::Error;

/// One `update-alternatives --install LINK NAME PATH PRIORITY [--slave
/// LINK NAME PATH]...` of a package's postinst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alternative {
    pub package: String,
    pub name: String,
    pub link: String,
    pub path: String,
    pub priority: i64,
    /// (link, path) of each `--slave`.
    pub slaves: Vec<(String, String)>,
}

/// Whether `p` is a literal absolute path into the library directories
/// (no shell variables or quotes the builder would have to expand).
fn library_path(p: &str) -> bool {
    (p.starts_with("/usr/lib/") || p.starts_with("/lib/"))
        && !p.contains(['$', '"', '\'', '`', '*'])
        && !p.split('/').any(|c| c == "..")
}

/// The `update-alternatives --install` commands of a postinst (`\`
/// continuations joined), keeping those whose link and path are
/// [`library_path`]s.
pub(crate) fn parse_postinst(package: &str, script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        // One command per `;`, `&&` or `||` piece of the line.
        for command in line.split([';', '&', '|']) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let Some(start) = words.iter().position(|w| *w == "update-alternatives") else {
                continue;
            };
            let words = &words[start + 1..];
            let Some(install) = words.iter().position(|w| *w == "--install") else {
                continue;
            };
            let [link, name, path, priority, rest @ ..] = &words[install + 1..] else {
                continue;
            };
            let Ok(priority) = priority.parse::<i64>() else {
                continue;
            };
            if !library_path(link) || !library_path(path) {
                continue;
            }
            let mut slaves = Vec::new();
            let mut rest = rest;
            while let ["--slave", slave_link, _name, slave_path, tail @ ..] = rest {
                if library_path(slave_link) && library_path(slave_path) {
                    slaves.push((slave_link.to_string(), slave_path.to_string()));
                }
                rest = tail;
            }
            found.push(Alternative {
                package: package.to_string(),
                name: name.to_string(),
                link: link.to_string(),
                path: path.to_string(),
                priority,
                slaves,
            });
        }
    }
    found
}

/// The choice per alternative name: the highest priority; on a tie, the
/// first package by name (the input order).
pub(crate) fn choose(alternatives: Vec<Alternative>) -> Vec<Alternative> {
    let mut best: BTreeMap<String, Alternative> = BTreeMap::new();
    for alt in alternatives {
        match best.get(&alt.name) {
            Some(b) if b.priority >= alt.priority => {}
            _ => {
                best.insert(alt.name.clone(), alt);
            }
        }
    }
    best.into_values().collect()
}

/// `target` as seen from the directory of `link` (both absolute):
/// `/usr/lib/x/libblas.so.3` → `/usr/lib/x/blas/libblas.so.3` is
/// `blas/libblas.so.3`. A relative link stays inside the tree whoever
/// follows it.
pub(crate) fn relative_target(link: &str, target: &str) -> PathBuf {
    let parts = |p: &str| -> Vec<String> {
        Path::new(p)
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let mut dir = parts(link);
    dir.pop();
    let target = parts(target);
    let common = dir.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..dir.len() {
        rel.push("..");
    }
    for part in &target[common..] {
        rel.push(part);
    }
    rel
}

/// Makes the links of the chosen alternatives in `tree`; the (link,
/// target) pairs made. A link whose target is not in the tree is not made
/// (as update-alternatives would not); an existing regular file at a link
/// is left alone, an existing link is replaced.
pub(crate) fn link(
    tree: &Path,
    alternatives: Vec<Alternative>,
) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut made = Vec::new();
    for alt in choose(alternatives) {
        for (link, path) in std::iter::once((alt.link, alt.path)).chain(alt.slaves) {
            let link_rel = link.trim_start_matches('/');
            let target_present = resolve(tree, path.trim_start_matches('/'))
                .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok());
            if !target_present {
                continue;
            }
            let at = resolve(tree, link_rel)?;
            match std::fs::symlink_metadata(&at) {
                Ok(m) if !m.file_type().is_symlink() => continue,
                Ok(_) => remove(tree, link_rel)?,
                Err(_) => {}
            }
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent).ctx("create", parent)?;
            }
            let target = relative_target(&link, &path);
            symlink(&target, &at).ctx("link", &at)?;
            made.push((link, target));
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Debian 12's liblapack3 and libopenblas0-pthread postinst, verbatim
    // in their update-alternatives lines.
    const LAPACK: &str = "#!/bin/sh\n\nset -e\n\n\
        update-alternatives --install /usr/lib/x86_64-linux-gnu/liblapack.so.3 \\\n\
        \x20                   liblapack.so.3-x86_64-linux-gnu \\\n\
        \t            /usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3 10\n\n\nexit 0\n";
    const OPENBLAS: &str = "#! /bin/sh\nset -e\n\n\
        update-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 \\\n\
        \x20                   libblas.so.3-x86_64-linux-gnu \\\n\
        \t            /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 100\n\n\
        update-alternatives --install /usr/lib/x86_64-linux-gnu/liblapack.so.3 \\\n\
        \x20                   liblapack.so.3-x86_64-linux-gnu \\\n\
        \t            /usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3 100\n\nexit 0\n";

    #[test]
    fn postinst_lines_are_parsed_with_continuations() {
        assert_eq!(
            parse_postinst("liblapack3", LAPACK),
            [Alternative {
                package: "liblapack3".into(),
                name: "liblapack.so.3-x86_64-linux-gnu".into(),
                link: "/usr/lib/x86_64-linux-gnu/liblapack.so.3".into(),
                path: "/usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3".into(),
                priority: 10,
                slaves: vec![],
            }]
        );
        assert_eq!(parse_postinst("libopenblas0-pthread", OPENBLAS).len(), 2);
    }

    #[test]
    fn only_literal_library_links_are_kept() {
        let script = "update-alternatives --install /usr/bin/editor editor /bin/nano 40 \
                        --slave /usr/share/man/man1/editor.1.gz editor.1.gz /x\n\
                      update-alternatives --install /usr/lib/$ARCH/libx.so.1 x /usr/lib/$ARCH/x/libx.so.1 5\n\
                      [ -x /usr/bin/x ] && update-alternatives --install /usr/lib/a/liby.so.1 y /usr/lib/a/y/liby.so.1 7 \
                        --slave /usr/lib/a/libz.so.1 z /usr/lib/a/y/libz.so.1\n\
                      update-alternatives --remove y /usr/lib/a/y/liby.so.1\n";
        let found = parse_postinst("p", script);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].link, "/usr/lib/a/liby.so.1");
        assert_eq!(
            found[0].slaves,
            [(
                "/usr/lib/a/libz.so.1".to_string(),
                "/usr/lib/a/y/libz.so.1".to_string()
            )]
        );
    }

    #[test]
    fn the_highest_priority_wins() {
        let mut all = parse_postinst("libblas3", &LAPACK.replace("lapack", "blas"));
        all.extend(parse_postinst("libopenblas0-pthread", OPENBLAS));
        let chosen = choose(all);
        let blas = chosen
            .iter()
            .find(|a| a.name == "libblas.so.3-x86_64-linux-gnu")
            .expect("blas");
        assert_eq!(blas.package, "libopenblas0-pthread");
        assert_eq!(chosen.len(), 2);
    }

    #[test]
    fn relative_targets() {
        assert_eq!(
            relative_target("/usr/lib/x/libblas.so.3", "/usr/lib/x/blas/libblas.so.3"),
            Path::new("blas/libblas.so.3")
        );
        assert_eq!(
            relative_target("/lib/x/liba.so", "/usr/lib/x/a/liba.so"),
            Path::new("../../usr/lib/x/a/liba.so")
        );
    }

    #[test]
    fn links_are_made_inside_the_tree_only_to_present_targets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path();
        let lib = tree.join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(lib.join("lapack")).expect("mkdir");
        std::fs::write(lib.join("lapack/liblapack.so.3"), "elf").expect("write");
        // A file a package ships at a link's place is left alone.
        std::fs::create_dir_all(lib.join("openblas-pthread")).expect("mkdir");
        let mut all = parse_postinst("liblapack3", LAPACK);
        all.extend(parse_postinst(
            "libblas3",
            &LAPACK.replace("lapack", "blas"),
        ));
        let made = link(tree, all).expect("link");
        assert_eq!(
            made,
            [(
                "/usr/lib/x86_64-linux-gnu/liblapack.so.3".to_string(),
                PathBuf::from("lapack/liblapack.so.3")
            )],
            "no link to the absent blas"
        );
        assert_eq!(
            std::fs::read_to_string(lib.join("liblapack.so.3")).expect("through the link"),
            "elf"
        );
        assert!(!lib.join("libblas.so.3").exists());
        // Linking again replaces the link; a regular file stays.
        std::fs::write(lib.join("libblas.so.3"), "real").expect("write");
        std::fs::create_dir_all(lib.join("blas")).expect("mkdir");
        std::fs::write(lib.join("blas/libblas.so.3"), "elf").expect("write");
        let mut all = parse_postinst("liblapack3", LAPACK);
        all.extend(parse_postinst(
            "libblas3",
            &LAPACK.replace("lapack", "blas"),
        ));
        assert_eq!(link(tree, all).expect("link").len(), 1);
        assert_eq!(
            std::fs::read_to_string(lib.join("libblas.so.3")).expect("read"),
            "real"
        );
    }
}
