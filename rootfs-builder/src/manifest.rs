//! The manifest of a built rootfs: what it is made of, and a hash of the
//! whole tree to tell whether it was changed since.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::IoContext;
use crate::packages::hex;
use crate::standins::StandIn;
use crate::wheels::{PipRequirements, Wheel};
use crate::{Error, ExtraPackages, SANDBOX_GID, SANDBOX_UID};

/// Inside the rootfs; excluded from the tree hash.
pub const MANIFEST_PATH: &str = "etc/rlm-sandbox/manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// sha256 of the .deb file.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub builder_version: String,
    /// PRETTY_NAME of the host's /etc/os-release (the packages' source).
    pub distribution: String,
    pub python_version: String,
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    pub packages: Vec<PackageInfo>,
    /// The packages asked for beyond the default Python (`rootfs build
    /// --with`), sorted; their dependency closure is in `packages`. Absent
    /// from a default rootfs's manifest, whose bytes stay what they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_packages: Vec<String>,
    /// The PyPI requirements asked for (`rootfs build --pip`), sorted;
    /// absent without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip_requirements: Vec<String>,
    /// Every wheel installed for them (dependencies included), with its
    /// sha256; absent without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wheels: Vec<Wheel>,
    /// The import statements of installed packages that get an inert
    /// stand-in for subprocess or ctypes (docs/ROOTFS.md); absent when
    /// none do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stand_ins: Vec<StandIn>,
    pub files: u64,
    pub bytes: u64,
    /// sha256 over every entry's path, mode, owner and content (or link
    /// target), in path order.
    pub tree_sha256: String,
    /// [`crate::content_id_with`] the extra packages, of the builder that
    /// wrote the tree; empty in manifests from before the field.
    #[serde(default)]
    pub content_id: String,
    /// [`crate::SOURCE_ID`] of the builder that wrote the tree; absent in
    /// manifests from before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

/// What a build added beyond the default rootfs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Added {
    pub extra: ExtraPackages,
    pub pip: PipRequirements,
    pub wheels: Vec<Wheel>,
    pub stand_ins: Vec<StandIn>,
}

/// [`write_added`] with extra Debian packages only.
#[cfg(test)]
pub fn write(
    tree: &Path,
    python_version: &str,
    packages: Vec<PackageInfo>,
    extra: &ExtraPackages,
) -> Result<Manifest, Error> {
    let added = Added {
        extra: extra.clone(),
        ..Added::default()
    };
    write_added(tree, python_version, packages, added)
}

/// Hashes `tree` and writes its manifest into it (the last write of a
/// build: the manifest is the only entry outside the hash).
pub(crate) fn write_added(
    tree: &Path,
    python_version: &str,
    packages: Vec<PackageInfo>,
    added: Added,
) -> Result<Manifest, Error> {
    let extra = &added.extra;
    // The manifest's directory is part of the tree: it must exist when hashed.
    if let Some(dir) = Path::new(MANIFEST_PATH).parent().and_then(|d| d.to_str()) {
        crate::tree::make_dir(tree, dir, 0o755)?;
    }
    let (tree_sha256, files, bytes) = hash_tree(tree)?;
    let os_release = Path::new("/etc/os-release");
    let distribution = match fs::read_to_string(os_release) {
        Ok(text) => pretty_name(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).ctx("read", os_release),
    }
    .unwrap_or_else(|| "unknown".into());
    let manifest = Manifest {
        builder_version: env!("CARGO_PKG_VERSION").to_string(),
        distribution,
        python_version: python_version.to_string(),
        sandbox_uid: SANDBOX_UID,
        sandbox_gid: SANDBOX_GID,
        packages,
        extra_packages: extra.names().to_vec(),
        pip_requirements: added.pip.items().to_vec(),
        content_id: crate::content_id_for(extra, &added.pip, &added.wheels),
        source_id: Some(crate::SOURCE_ID.to_string()),
        wheels: added.wheels,
        stand_ins: added.stand_ins,
        files,
        bytes,
        tree_sha256,
    };
    let path = tree.join(MANIFEST_PATH);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Manifest {
        path: path.clone(),
        err: e.to_string(),
    })?;
    crate::tree::write_file(tree, MANIFEST_PATH, &(text + "\n"), 0o644)?;
    Ok(manifest)
}

/// PRETTY_NAME of an os-release file, unquoted.
pub(crate) fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?.trim();
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

pub fn read_manifest(rootfs: &Path) -> Result<Manifest, Error> {
    let path = rootfs.join(MANIFEST_PATH);
    let text = fs::read_to_string(&path).ctx("read", &path)?;
    serde_json::from_str(&text).map_err(|e| Error::Manifest {
        path,
        err: e.to_string(),
    })
}

/// Whether the tree still hashes to its manifest's `tree_sha256`.
pub fn verify(rootfs: &Path) -> Result<bool, Error> {
    let manifest = read_manifest(rootfs)?;
    Ok(hash_tree(rootfs)?.0 == manifest.tree_sha256)
}

/// (hash, regular files, bytes of regular files). The hash is sha256 over
/// one line per entry, in path order:
/// `path NUL kind NUL mode NUL uid:gid NUL sha256-of-content | link-target`.
pub(crate) fn hash_tree(tree: &Path) -> Result<(String, u64, u64), Error> {
    let mut entries = Vec::new();
    walk(tree, tree, &mut entries)?;
    entries.sort();
    let mut hasher = Sha256::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for rel in entries {
        if rel == Path::new(MANIFEST_PATH) {
            continue;
        }
        let path = tree.join(&rel);
        let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
        let kind = meta.file_type();
        let (kind, content) = if kind.is_symlink() {
            let target = fs::read_link(&path).ctx("read link", &path)?;
            ("link", target.display().to_string())
        } else if kind.is_file() {
            files += 1;
            bytes += meta.len();
            let mut file_hasher = Sha256::new();
            let mut file = File::open(&path).ctx("open", &path)?;
            std::io::copy(&mut file, &mut file_hasher).ctx("read", &path)?;
            ("file", hex(&file_hasher.finalize()))
        } else if kind.is_dir() {
            ("dir", String::new())
        } else {
            ("other", String::new())
        };
        hasher.update(format!(
            "{}\0{kind}\0{:o}\0{}:{}\0{content}\n",
            rel.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
        ));
    }
    Ok((hex(&hasher.finalize()), files, bytes))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let path = entry.path();
        if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
        // file_type() does not follow links: a linked directory is a link.
        if entry.file_type().ctx("stat", &path)?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tree_hash_sees_content_mode_and_links_but_not_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        fs::create_dir_all(t.join("etc/rlm-sandbox")).expect("mkdir");
        fs::write(t.join("etc/a"), "one").expect("write");
        std::os::unix::fs::symlink("a", t.join("etc/b")).expect("link");
        let (h1, files, bytes) = hash_tree(t).expect("hash");
        assert_eq!((files, bytes), (1, 3));
        fs::write(t.join(MANIFEST_PATH), "{}").expect("write");
        assert_eq!(hash_tree(t).expect("hash").0, h1, "manifest excluded");
        fs::write(t.join("etc/a"), "two").expect("write");
        let h2 = hash_tree(t).expect("hash").0;
        assert_ne!(h1, h2, "content");
        fs::set_permissions(t.join("etc/a"), fs::Permissions::from_mode(0o600)).expect("chmod");
        let h3 = hash_tree(t).expect("hash").0;
        assert_ne!(h3, h2, "mode");
        fs::remove_file(t.join("etc/b")).expect("rm");
        std::os::unix::fs::symlink("c", t.join("etc/b")).expect("link");
        let h4 = hash_tree(t).expect("hash").0;
        assert_ne!(h4, h3, "link target");
        fs::create_dir(t.join("etc/empty")).expect("mkdir");
        assert_ne!(hash_tree(t).expect("hash").0, h4, "new empty directory");
    }

    #[test]
    fn tree_hash_is_a_known_value_for_a_known_tree() {
        // Pins the line format: changing it changes every manifest.
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        fs::write(t.join("a"), "one").expect("write");
        fs::set_permissions(t.join("a"), fs::Permissions::from_mode(0o644)).expect("chmod");
        let meta = fs::metadata(t.join("a")).expect("stat");
        let line = format!(
            "a\0file\0644\0{}:{}\0{}\n",
            meta.uid(),
            meta.gid(),
            hex(&Sha256::digest(b"one"))
        );
        assert_eq!(hash_tree(t).expect("hash").0, hex(&Sha256::digest(line)));
    }

    #[test]
    fn written_manifest_reads_back_and_verifies_until_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        fs::write(t.join("a"), "one").expect("write");
        let pkg = PackageInfo {
            name: "libc6".into(),
            version: "2.36".into(),
            architecture: "amd64".into(),
            sha256: "00".into(),
        };
        let written = write(t, "3.11", vec![pkg], &ExtraPackages::default()).expect("manifest");
        let read = read_manifest(t).expect("read");
        assert_eq!(read, written);
        // A default rootfs's manifest has no extra_packages key at all,
        // nor any of pip's or the stand-ins'.
        let text = fs::read_to_string(t.join(MANIFEST_PATH)).expect("read");
        for key in ["extra_packages", "pip_requirements", "wheels", "stand_ins"] {
            assert!(!text.contains(key), "{key}: {text}");
        }
        assert_eq!(
            (read.sandbox_uid, read.python_version.as_str()),
            (65432, "3.11")
        );
        assert!(verify(t).expect("verify"));
        fs::write(t.join("a"), "changed").expect("write");
        assert!(!verify(t).expect("verify"));
    }

    #[test]
    fn extra_packages_are_recorded_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        let extra = ExtraPackages::parse("python3-numpy").expect("valid");
        let written = write(t, "3.11", Vec::new(), &extra).expect("manifest");
        assert_eq!(written.extra_packages, ["python3-numpy"]);
        assert_eq!(written.content_id, crate::content_id_with(&extra));
        assert_ne!(written.content_id, crate::content_id());
        assert_eq!(read_manifest(t).expect("read"), written);
    }

    #[test]
    fn os_release_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("ID=x\n"), None);
    }
}
