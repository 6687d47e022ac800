//! Debian packages added to a rootfs beyond the default Python (`rootfs
//! build --with python3-numpy`): the list's validation, their dependency
//! closure as apt would install it, and the Python modules each one adds
//! (which the self-check imports).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use crate::command::{command, run};
use crate::packages::{closure_flags, skip_reason};
use crate::Error;

/// What a package list accepts, for every error about one.
pub const ACCEPTED_FORM: &str = "comma-separated Debian package names (lower-case letters, \
     digits, '+', '-' and '.', at least two characters, starting with a letter or digit; \
     no version or architecture), e.g. python3-numpy,python3-scipy";

/// The requested extra packages: valid Debian names, sorted, without
/// duplicates. Empty for the default rootfs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ExtraPackages(Vec<String>);

impl ExtraPackages {
    /// Parses a comma-separated list (`python3-numpy,python3-pandas`;
    /// spaces around names are allowed). An empty or blank list is none.
    pub fn parse(list: &str) -> Result<ExtraPackages, Error> {
        if list.trim().is_empty() {
            return Ok(ExtraPackages::default());
        }
        let bad = |problem: String| Error::PackageList {
            list: list.to_string(),
            problem,
        };
        let mut names = Vec::new();
        for item in list.split(',') {
            let name = item.trim();
            if name.is_empty() {
                return Err(bad("an empty name".into()));
            }
            if let Some(problem) = name_problem(name) {
                return Err(bad(format!("{name:?} {problem}")));
            }
            names.push(name.to_string());
        }
        Ok(ExtraPackages::from_valid(names))
    }

    fn from_valid(mut names: Vec<String>) -> ExtraPackages {
        names.sort();
        names.dedup();
        ExtraPackages(names)
    }

    /// Both lists in one (`--with a --with b`).
    pub fn union(&self, other: &ExtraPackages) -> ExtraPackages {
        ExtraPackages::from_valid(self.0.iter().chain(&other.0).cloned().collect())
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for ExtraPackages {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ExtraPackages::parse(s)
    }
}

impl fmt::Display for ExtraPackages {
    /// The list in its accepted form: `python3-numpy,python3-pandas`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// What is wrong with `name` as a Debian package name (Debian Policy
/// 5.6.1), if anything.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.contains(['=', '<', '>', ' ']) {
        return Some("has a version or relation (name the package only)");
    }
    if name.contains(':') {
        return Some("has an architecture (the host's is used)");
    }
    if name.len() < 2 {
        return Some("is shorter than two characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some("does not start with a lower-case letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return Some("has a character other than a-z, 0-9, '+', '-' and '.'");
    }
    None
}

/// One alternative of a dependency: a package, or a virtual name with the
/// packages that provide it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alternative {
    name: String,
    is_virtual: bool,
    providers: Vec<String>,
}

/// A package's entry in `apt-cache depends --recurse` output: a real
/// package with its Depends/PreDepends (each a group of alternatives,
/// `a | b`), or a name with no installable version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Real(Vec<Vec<Alternative>>),
    Virtual,
}

/// Parses recursive `apt-cache depends` output: unindented lines name a
/// package (`<name>` when it has no version), `  Depends: x` and
/// ` |Depends: x` (or-ed with the next line) its dependencies, and lines
/// indented by four the providers of the dependency above.
fn parse_depends(out: &str) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut current: Option<String> = None;
    // Whether the last dependency line ended with `|` (the next one joins
    // its group), and whether provider lines belong to a kept dependency.
    let mut or_next = false;
    let mut kept = false;
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let name = line.trim();
            let entry = match name.strip_prefix('<').and_then(|n| n.strip_suffix('>')) {
                Some(inner) => {
                    entries.entry(inner.to_string()).or_insert(Entry::Virtual);
                    current = None;
                    continue;
                }
                None => Entry::Real(Vec::new()),
            };
            // A package is listed once; keep the first.
            entries.entry(name.to_string()).or_insert(entry);
            current = Some(name.to_string());
            or_next = false;
            kept = false;
            continue;
        }
        let Some(Entry::Real(groups)) = current.as_ref().and_then(|c| entries.get_mut(c)) else {
            continue;
        };
        if line.starts_with("    ") {
            if let (true, Some(alt)) = (kept, groups.last_mut().and_then(|g| g.last_mut())) {
                alt.providers.push(line.trim().to_string());
            }
            continue;
        }
        let is_or = line.as_bytes().get(1) == Some(&b'|');
        let Some((kind, target)) = line.trim().trim_start_matches('|').split_once(": ") else {
            continue;
        };
        kept = matches!(kind, "Depends" | "PreDepends");
        if !kept {
            or_next = false;
            continue;
        }
        let (name, is_virtual) = match target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
            Some(inner) => (inner.to_string(), true),
            None => (target.to_string(), false),
        };
        let alt = Alternative {
            name,
            is_virtual,
            providers: Vec::new(),
        };
        match (or_next, groups.last_mut()) {
            (true, Some(group)) => group.push(alt),
            _ => groups.push(vec![alt]),
        }
        or_next = is_or;
    }
    entries
}

/// A package name as apt-get download takes it: `python3:any` is
/// `python3`; a foreign architecture (`libc6:i386`) is none.
fn native(name: &str) -> Option<&str> {
    match name.split_once(':') {
        None => Some(name),
        Some((n, "any")) => Some(n),
        Some(_) => None,
    }
}

/// The packages to add for `requested` on top of `base` (the default
/// closure), as apt chooses them: every Depends and PreDepends, the first
/// alternative of `a | b` unless one is already there, a virtual name's
/// first provider; skipped packages ([`crate::packages`] SKIP) are left
/// out with what only they need. Sorted, without the base packages.
fn select(
    entries: &BTreeMap<String, Entry>,
    requested: &ExtraPackages,
    base: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    for name in requested.names() {
        match entries.get(name) {
            None => return Err(Error::UnknownPackage(name.clone())),
            Some(Entry::Virtual) => return Err(Error::VirtualPackage(name.clone())),
            Some(Entry::Real(_)) => {}
        }
        if let Some(reason) = skip_reason(name) {
            return Err(Error::SkippedPackage {
                name: name.clone(),
                reason,
            });
        }
    }
    let mut chosen = BTreeSet::new();
    // Everything chosen or queued: a dependency it satisfies is met.
    let mut present: BTreeSet<String> = base.clone();
    present.extend(requested.names().iter().cloned());
    let mut queue: VecDeque<String> = requested.names().iter().cloned().collect();
    while let Some(package) = queue.pop_front() {
        if base.contains(&package) || skip_reason(&package).is_some() {
            continue;
        }
        if !chosen.insert(package.clone()) {
            continue;
        }
        let Some(Entry::Real(groups)) = entries.get(&package) else {
            continue;
        };
        for group in groups {
            let satisfies = |n: &String| native(n).is_some_and(|n| present.contains(n));
            let met = group.iter().any(|a| {
                (!a.is_virtual && satisfies(&a.name)) || a.providers.iter().any(satisfies)
            });
            if met {
                continue;
            }
            let pick = group.iter().find_map(|a| {
                let real = native(&a.name)
                    .filter(|n| !a.is_virtual && matches!(entries.get(*n), Some(Entry::Real(_))));
                real.or_else(|| a.providers.iter().find_map(|p| native(p)))
            });
            let Some(pick) = pick else {
                return Err(Error::Unresolvable {
                    package: package.clone(),
                    dependency: group
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" | "),
                });
            };
            present.insert(pick.to_string());
            queue.push_back(pick.to_string());
        }
    }
    Ok(chosen.into_iter().collect())
}

/// The packages `requested` adds to the default closure `base`, from one
/// recursive `apt-cache depends` (the base's own roots are asked too, so
/// apt answers even when no requested name is known to it).
pub fn resolve(
    requested: &ExtraPackages,
    base_roots: &[String],
    base: &[String],
) -> Result<Vec<String>, Error> {
    let out = run(command("apt-cache")
        .args(["depends", "--recurse"])
        .args(closure_flags())
        .args(base_roots)
        .args(requested.names()))?;
    let base: BTreeSet<String> = base.iter().cloned().collect();
    select(&parse_depends(&out), requested, &base)
}

/// Whether `name` can be a Python module name (ASCII identifiers only:
/// what Debian ships).
fn identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name != "__pycache__"
}

/// The top-level modules among a package's paths (from
/// [`crate::packages::contents`]): `<mod>/` and `<mod>.py` and extension
/// modules (`<mod>.cpython-311-x86_64-linux-gnu.so`, `<mod>.abi3.so`)
/// directly in dist-packages or the versioned stdlib directory (and its
/// lib-dynload). Metadata (`*.dist-info`, `*.egg-info`), `.pth` files and
/// the like are not modules. Sorted, without duplicates.
pub(crate) fn python_modules(paths: &[String], python_version: &str) -> Vec<String> {
    let stdlib = format!("usr/lib/python{python_version}/");
    let roots = [
        "usr/lib/python3/dist-packages/".to_string(),
        format!("{}/", crate::wheels::site_dir(python_version)),
        format!("{stdlib}dist-packages/"),
        format!("{stdlib}lib-dynload/"),
        stdlib.clone(),
    ];
    let mut modules = BTreeSet::new();
    for path in paths {
        // The most specific root first: lib-dynload's files are modules,
        // lib-dynload (not an identifier anyway) is not.
        let Some(rest) = roots.iter().find_map(|r| path.strip_prefix(r.as_str())) else {
            continue;
        };
        let (first, inside) = match rest.split_once('/') {
            Some((first, _)) => (first, true),
            None => (rest, false),
        };
        let module = if inside {
            Some(first)
        } else if let Some(stem) = first.strip_suffix(".py") {
            Some(stem)
        } else if first.ends_with(".so") {
            first.split('.').next()
        } else {
            None
        };
        if let Some(m) = module.filter(|m| identifier(m)) {
            modules.insert(m.to_string());
        }
    }
    modules.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        ExtraPackages::parse(list).expect("valid").names().to_vec()
    }

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        assert_eq!(
            names("python3-pandas, python3-numpy,python3-pandas"),
            ["python3-numpy", "python3-pandas"]
        );
        assert_eq!(
            names("libstdc++6,g++-12,python3.11"),
            ["g++-12", "libstdc++6", "python3.11"]
        );
        assert!(names("").is_empty());
        assert!(names("  ").is_empty());
        let a = ExtraPackages::parse("bb,aa").expect("valid");
        let b = ExtraPackages::parse("cc,aa").expect("valid");
        assert_eq!(a.union(&b).to_string(), "aa,bb,cc");
        assert_eq!(
            "x1,x0".parse::<ExtraPackages>().expect("valid").to_string(),
            "x0,x1"
        );
    }

    #[test]
    fn bad_lists_name_the_value_and_the_accepted_form() {
        for (list, problem) in [
            (
                "Python3-NumPy",
                "\"Python3-NumPy\" does not start with a lower-case letter",
            ),
            (
                "python3-NumPy",
                "\"python3-NumPy\" has a character other than",
            ),
            ("python3-numpy,,python3-scipy", "an empty name"),
            ("python3-numpy,", "an empty name"),
            ("python3-numpy=1.24", "\"python3-numpy=1.24\" has a version"),
            (
                "python3-numpy:amd64",
                "\"python3-numpy:amd64\" has an architecture",
            ),
            ("x", "\"x\" is shorter than two characters"),
            ("-numpy", "\"-numpy\" does not start with"),
            ("numpy_1", "\"numpy_1\" has a character other than"),
            ("python3-numpy python3-scipy", "has a version or relation"),
        ] {
            let err = ExtraPackages::parse(list).expect_err(list).to_string();
            assert!(err.contains(problem), "{list}: {err}");
            assert!(err.contains(&format!("{list:?}")), "{list}: {err}");
            assert!(err.contains(ACCEPTED_FORM), "{list}: {err}");
        }
    }

    // Trimmed `apt-cache depends --recurse` output for python3-numpy on
    // Debian 12 (the BLAS providers cut to two).
    const NUMPY: &str = "python3-numpy
  Depends: python3-pkg-resources
  Depends: python3
  Depends: <python3.11:any>
    python3.11
  Depends: <python3:any>
    python3
 |Depends: libblas3
  Depends: <libblas.so.3>
    libatlas3-base
    libblas3
  Depends: libc6
 |Depends: liblapack3
  Depends: <liblapack.so.3>
    libatlas3-base
    liblapack3
  Conflicts: <python-numpy>
python3-pkg-resources
  Depends: <python3:any>
    python3
python3
  PreDepends: python3-minimal
  Depends: python3.11
  Depends: libpython3-stdlib
python3-minimal
  Depends: python3.11-minimal
  Depends: dpkg
python3.11
  Depends: python3.11-minimal
  Depends: mailcap
libpython3-stdlib
  Depends: libpython3.11-stdlib
libblas3
  Depends: libc6
liblapack3
  Depends: libgfortran5
 |Depends: libblas3
  Depends: <libblas.so.3>
    libatlas3-base
    libblas3
libatlas3-base
  Depends: libgfortran5
libgfortran5
  Depends: libquadmath0
  Depends: libc6
libquadmath0
  Depends: libc6
<libblas.so.3>
<liblapack.so.3>
<python-numpy>
dpkg
  Depends: tar
tar
mailcap
  Depends: perl
perl
python3.11-minimal
  Depends: libc6
libc6
libpython3.11-stdlib
  Depends: libc6
";

    #[test]
    fn numpy_takes_the_first_alternative_and_leaves_out_skips_and_the_base() {
        let entries = parse_depends(NUMPY);
        let base: BTreeSet<String> = ["libc6", "python3.11-minimal", "libpython3.11-stdlib"]
            .map(String::from)
            .into();
        let requested = ExtraPackages::parse("python3-numpy").expect("valid");
        assert_eq!(
            select(&entries, &requested, &base).expect("resolves"),
            [
                "libblas3",
                "libgfortran5",
                "liblapack3",
                "libpython3-stdlib",
                "libquadmath0",
                "python3",
                "python3-minimal",
                "python3-numpy",
                "python3-pkg-resources",
                "python3.11"
            ]
        );
    }

    #[test]
    fn an_alternative_already_chosen_satisfies_the_group() {
        // libatlas3-base first in the or-group, but asked for explicitly:
        // neither libblas3 nor liblapack3 is added.
        let out = "python3-foo\n |Depends: libblas3\n  Depends: <libblas.so.3>\n    libatlas3-base\n    libblas3\n\
                   libatlas3-base\nlibblas3\n<libblas.so.3>\n";
        let entries = parse_depends(out);
        let requested = ExtraPackages::parse("python3-foo,libatlas3-base").expect("valid");
        assert_eq!(
            select(&entries, &requested, &BTreeSet::new()).expect("resolves"),
            ["libatlas3-base", "python3-foo"]
        );
    }

    #[test]
    fn parsed_entries_keep_groups_and_providers() {
        let entries = parse_depends(NUMPY);
        let Some(Entry::Real(groups)) = entries.get("python3-numpy") else {
            panic!("python3-numpy is real: {entries:?}");
        };
        assert_eq!(groups.len(), 7, "{groups:?}");
        assert_eq!(groups[4][0].name, "libblas3");
        assert_eq!(groups[4][1].name, "libblas.so.3");
        assert!(groups[4][1].is_virtual);
        assert_eq!(groups[4][1].providers, ["libatlas3-base", "libblas3"]);
        assert_eq!(entries.get("libblas.so.3"), Some(&Entry::Virtual));
        assert_eq!(entries.get("python-numpy"), Some(&Entry::Virtual));
    }

    #[test]
    fn unknown_virtual_and_skipped_requests_are_refused_by_name() {
        let entries = parse_depends(NUMPY);
        let none = BTreeSet::new();
        let refuse = |list: &str| {
            select(&entries, &ExtraPackages::parse(list).expect("valid"), &none)
                .expect_err(list)
                .to_string()
        };
        assert!(
            refuse("python3-nump").contains("apt-cache knows no package \"python3-nump\""),
            "{}",
            refuse("python3-nump")
        );
        assert!(refuse("libblas.so.3").contains("\"libblas.so.3\" has no installable version"));
        let perl = refuse("perl");
        assert!(
            perl.contains("\"perl\"") && perl.contains("maintainer scripts"),
            "{perl}"
        );
    }

    #[test]
    fn a_dependency_nothing_provides_is_an_error() {
        let entries =
            parse_depends("python3-foo\n  Depends: <libmissing.so.1>\n<libmissing.so.1>\n");
        let err = select(
            &entries,
            &ExtraPackages::parse("python3-foo").expect("valid"),
            &BTreeSet::new(),
        )
        .expect_err("unresolvable")
        .to_string();
        assert!(
            err.contains("python3-foo") && err.contains("libmissing.so.1"),
            "{err}"
        );
    }

    #[test]
    fn python_modules_of_a_package() {
        let paths: Vec<String> = [
            "usr/",
            "usr/lib/python3/dist-packages/",
            "usr/lib/python3/dist-packages/numpy/",
            "usr/lib/python3/dist-packages/numpy/__init__.py",
            "usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
            "usr/lib/python3/dist-packages/numpy-1.24.2.egg-info/PKG-INFO",
            "usr/lib/python3/dist-packages/six.py",
            "usr/lib/python3/dist-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so",
            "usr/lib/python3/dist-packages/yaml_ext.abi3.so",
            "usr/lib/python3/dist-packages/distutils-precedence.pth",
            "usr/lib/python3/dist-packages/__pycache__/six.cpython-311.pyc",
            "usr/lib/python3.11/tkinter/__init__.py",
            "usr/lib/python3.11/lib-dynload/_tkinter.cpython-311-x86_64-linux-gnu.so",
            "usr/lib/python3.11/lib-dynload/",
            "usr/lib/python3.11/dist-packages/",
            "usr/lib/python3.12/other.py",
            "usr/bin/f2py",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            python_modules(&paths, "3.11"),
            [
                "_cffi_backend",
                "_tkinter",
                "numpy",
                "six",
                "tkinter",
                "yaml_ext"
            ]
        );
        assert!(
            python_modules(&["usr/lib/x86_64-linux-gnu/libblas.so.3".into()], "3.11").is_empty()
        );
    }
}
