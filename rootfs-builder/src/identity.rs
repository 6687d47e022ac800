//! A rootfs's identity: what this builder puts into a tree besides the
//! packages ([`content_id`]), and whether a tree on disk is current for
//! this build ([`is_current_for`]).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{harden, packages, read_manifest, ExtraPackages, PipRequirements, Wheel};

/// Bumped when a build's output changes in a way [`content_id`] cannot see
/// from the embedded sources and lists (the package set, the steps).
/// 2: bytecode is unchecked-hash (was timestamp), the manifest has no
/// `built_at`: two builds of one id are the same tree, byte for byte.
const CONTENT_VERSION: u32 = 2;
/// Bumped when what a build does for extra packages changes (their
/// closure, library alternatives, module discovery); a default rootfs's
/// id does not include it.
const EXTRA_CONTENT_VERSION: u32 = 1;
/// Bumped when what a build does with PyPI wheels changes.
const PIP_CONTENT_VERSION: u32 = 1;

/// An id of what this builder puts into a rootfs besides the packages:
/// sha256 (hex) over [`CONTENT_VERSION`], the embedded Python sources
/// (sitecustomize, the subprocess shim, the agent) and the hardening
/// lists. Written into the manifest; a rootfs whose id differs was built
/// by another version of the builder (an older agent, say). The id of
/// the default rootfs: [`content_id_with`] no extra packages.
pub fn content_id() -> String {
    content_id_with(&ExtraPackages::default())
}

/// [`content_id`] of a rootfs with `extra` packages: the same hash, then
/// (only when there are extras) [`EXTRA_CONTENT_VERSION`] and the list, so
/// a numpy rootfs is never taken for the default one or another set, and
/// the default id stays what it was before extras existed.
pub fn content_id_with(extra: &ExtraPackages) -> String {
    content_id_for(extra, &PipRequirements::default(), &[])
}

/// [`content_id_with`] the extra packages, then (only when there are
/// PyPI requirements) the requirements and every installed wheel's file
/// name and sha256: the same requirement resolving to other wheels later
/// is another rootfs.
pub fn content_id_for(extra: &ExtraPackages, pip: &PipRequirements, wheels: &[Wheel]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("rlm-sandbox rootfs content {CONTENT_VERSION}\n"));
    for (name, text) in harden::embedded_content() {
        // Lengths make the encoding unambiguous.
        hasher.update(format!("{name}\0{}\0", text.len()));
        hasher.update(text.as_bytes());
    }
    if !extra.is_empty() {
        hasher.update(format!(
            "extra packages {EXTRA_CONTENT_VERSION}\0{}\0{extra}\0",
            extra.to_string().len()
        ));
    }
    if !pip.is_empty() {
        hasher.update(format!(
            "pip {PIP_CONTENT_VERSION}\0{}\0{pip}\0",
            pip.to_string().len()
        ));
        for wheel in wheels {
            hasher.update(format!("{}\0{}\0", wheel.file, wheel.sha256));
        }
    }
    packages::hex(&hasher.finalize())
}

/// Whether the rootfs at `rootfs` has a manifest written by a builder with
/// this [`content_id`] (false when unreadable, or from before the field).
/// Says nothing about later changes to the tree: that is [`verify`].
/// A rootfs with extra packages is not current: see [`is_current_with`].
pub fn is_current(rootfs: &Path) -> bool {
    is_current_with(rootfs, &ExtraPackages::default())
}

/// Whether the rootfs at `rootfs` was written by this builder with exactly
/// the `extra` packages.
pub fn is_current_with(rootfs: &Path, extra: &ExtraPackages) -> bool {
    is_current_for(rootfs, extra, &PipRequirements::default())
}

/// Whether the rootfs at `rootfs` was written by this builder with exactly
/// the `extra` packages and the `pip` requirements (its id recomputed with
/// the wheels its manifest lists, unless the manifest carries this build's
/// [`SOURCE_ID`]: the same sources wrote the same content).
pub fn is_current_for(rootfs: &Path, extra: &ExtraPackages, pip: &PipRequirements) -> bool {
    read_manifest(rootfs).is_ok_and(|m| {
        m.extra_packages == extra.names()
            && m.pip_requirements == pip.items()
            && (m.source_id.as_deref() == Some(SOURCE_ID)
                || m.content_id == content_id_for(extra, pip, &m.wheels))
    })
}

/// A sha256 over this crate's sources (build.rs), which determine all it
/// writes into a rootfs of itself: a manifest with this id needs no
/// [`content_id`] recomputed (a hash of all the embedded content, ~130 KB,
/// on every run that checks its rootfs).
pub const SOURCE_ID: &str = env!("RLM_ROOTFS_SOURCE_ID");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{manifest, rootfs_dir_for, MANIFEST_PATH};
    use std::path::PathBuf;

    #[test]
    fn content_id_is_a_stable_hash_of_the_embedded_content() {
        let id = content_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, content_id());
        let names: Vec<_> = harden::embedded_content()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.contains(&"__main__.py") && names.contains(&"sitecustomize.py"));
    }

    #[test]
    fn is_current_compares_the_manifests_content_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        assert!(!is_current(t), "no manifest");
        std::fs::write(t.join("a"), "one").expect("write");
        manifest::write(t, "3.11", Vec::new(), &ExtraPackages::default()).expect("manifest");
        assert!(is_current(t));
        let path = t.join(MANIFEST_PATH);
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(old["source_id"], SOURCE_ID);
        let rewrite = |value: &serde_json::Value| {
            std::fs::write(&path, value.to_string()).expect("write");
        };
        // Another build of the same content: its id is recomputed, and equal.
        old["source_id"] = "f".repeat(64).into();
        rewrite(&old);
        assert!(is_current(t));
        // This build's source id is enough: the content id is not looked at.
        old["source_id"] = SOURCE_ID.into();
        old["content_id"] = "0".repeat(64).into();
        rewrite(&old);
        assert!(is_current(t));
        // Another build with other content is not current.
        old["source_id"] = "f".repeat(64).into();
        rewrite(&old);
        assert!(!is_current(t));
        // Nor is a manifest from before the fields.
        let fields = old.as_object_mut().expect("object");
        fields.remove("content_id");
        fields.remove("source_id");
        rewrite(&old);
        let manifest = read_manifest(t).expect("old manifest reads");
        assert_eq!(
            (manifest.content_id.as_str(), manifest.source_id),
            ("", None)
        );
        assert!(!is_current(t));
    }

    #[test]
    fn extra_packages_are_part_of_a_rootfs_identity() {
        let none = ExtraPackages::default();
        let numpy = ExtraPackages::parse("python3-numpy").expect("valid");
        let both = ExtraPackages::parse("python3-scipy,python3-numpy").expect("valid");
        assert_eq!(content_id_with(&none), content_id());
        assert_ne!(content_id_with(&numpy), content_id());
        assert_ne!(content_id_with(&numpy), content_id_with(&both));
        assert_eq!(
            content_id_with(&both),
            content_id_with(&ExtraPackages::parse("python3-numpy, python3-scipy").expect("valid"))
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::write(t.join("a"), "one").expect("write");
        manifest::write(t, "3.11", Vec::new(), &numpy).expect("manifest");
        assert!(!is_current(t), "a numpy rootfs is not the default one");
        assert!(is_current_with(t, &numpy));
        assert!(!is_current_with(t, &both));
        manifest::write(t, "3.11", Vec::new(), &none).expect("manifest");
        assert!(is_current(t));
        assert!(
            !is_current_with(t, &numpy),
            "the default one is not a numpy rootfs"
        );
    }

    #[test]
    fn pip_requirements_and_their_wheels_are_part_of_a_rootfs_identity() {
        let none = ExtraPackages::default();
        let no_pip = PipRequirements::default();
        let pandas = PipRequirements::parse("pandas==2.2.*").expect("valid");
        let wheel = |sha: &str| Wheel {
            name: "pandas".into(),
            version: "2.2.3".into(),
            file: "pandas-2.2.3-cp311-cp311-manylinux2014_x86_64.whl".into(),
            sha256: sha.repeat(64),
        };
        assert_eq!(content_id_for(&none, &no_pip, &[]), content_id());
        let id = content_id_for(&none, &pandas, &[wheel("a")]);
        assert_ne!(id, content_id());
        assert_ne!(
            id,
            content_id_for(&none, &pandas, &[wheel("b")]),
            "hashes count"
        );
        assert_ne!(
            id,
            content_id_for(
                &ExtraPackages::parse("python3-numpy").expect("valid"),
                &pandas,
                &[wheel("a")]
            )
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::write(t.join("a"), "one").expect("write");
        let added = manifest::Added {
            pip: pandas.clone(),
            wheels: vec![wheel("a")],
            ..manifest::Added::default()
        };
        let written = manifest::write_added(t, "3.11", Vec::new(), added).expect("manifest");
        assert_eq!(written.content_id, id);
        assert_eq!(written.pip_requirements, ["pandas==2.2.*"]);
        assert_eq!(read_manifest(t).expect("read"), written);
        assert!(is_current_for(t, &none, &pandas));
        assert!(!is_current(t), "a pip rootfs is not the default one");
        assert!(!is_current_for(
            t,
            &none,
            &PipRequirements::parse("pandas").expect("valid")
        ));
        // Its own directory: --with alone keeps the one it had.
        let default = PathBuf::from("/c/rootfs");
        assert_ne!(
            rootfs_dir_for(default.clone(), &none, &pandas),
            rootfs_dir_for(default.clone(), &none, &no_pip)
        );
    }
}
