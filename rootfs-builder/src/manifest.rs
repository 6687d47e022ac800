//! The manifest of a built rootfs: what it is made of, and a hash of the
//! whole tree to tell whether it was changed since.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::packages::hex;
use crate::{io_err, Error, SANDBOX_GID, SANDBOX_UID};

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
    /// Seconds since the epoch.
    pub built_at: u64,
    /// PRETTY_NAME of the host's /etc/os-release (the packages' source).
    pub distribution: String,
    pub python_version: String,
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    pub packages: Vec<PackageInfo>,
    pub files: u64,
    pub bytes: u64,
    /// sha256 over every entry's path, mode, owner and content (or link
    /// target), in path order.
    pub tree_sha256: String,
}

pub fn write(
    tree: &Path,
    python_version: &str,
    packages: Vec<PackageInfo>,
) -> Result<Manifest, Error> {
    let (tree_sha256, files, bytes) = hash_tree(tree)?;
    let distribution = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let manifest = Manifest {
        builder_version: env!("CARGO_PKG_VERSION").to_string(),
        built_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        distribution,
        python_version: python_version.to_string(),
        sandbox_uid: SANDBOX_UID,
        sandbox_gid: SANDBOX_GID,
        packages,
        files,
        bytes,
        tree_sha256,
    };
    let path = tree.join(MANIFEST_PATH);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Manifest {
        path: path.clone(),
        err: e.to_string(),
    })?;
    std::fs::write(&path, text + "\n").map_err(io_err("cannot write", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .map_err(io_err("cannot chmod", &path))?;
    Ok(manifest)
}

pub fn read_manifest(rootfs: &Path) -> Result<Manifest, Error> {
    let path = rootfs.join(MANIFEST_PATH);
    let text = std::fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
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

/// (hash, regular files, bytes of regular files).
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
        let meta = std::fs::symlink_metadata(&path).map_err(io_err("cannot stat", &path))?;
        let content = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_err("cannot read link", &path))?;
            format!("link:{}", target.display())
        } else if meta.is_file() {
            files += 1;
            bytes += meta.len();
            let data = std::fs::read(&path).map_err(io_err("cannot read", &path))?;
            hex(&Sha256::digest(&data))
        } else {
            String::from("dir")
        };
        hasher.update(format!(
            "{}\0{:o}\0{}:{}\0{}\n",
            rel.display(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            content
        ));
    }
    Ok((hex(&hasher.finalize()), files, bytes))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let path = entry.path();
        if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_sees_content_mode_and_links_but_not_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::create_dir_all(t.join("etc/rlm-sandbox")).expect("mkdir");
        std::fs::write(t.join("etc/a"), "one").expect("write");
        std::os::unix::fs::symlink("a", t.join("etc/b")).expect("link");
        let (h1, files, bytes) = hash_tree(t).expect("hash");
        assert_eq!((files, bytes), (1, 3));
        std::fs::write(t.join(MANIFEST_PATH), "{}").expect("write");
        assert_eq!(hash_tree(t).expect("hash").0, h1, "manifest excluded");
        std::fs::write(t.join("etc/a"), "two").expect("write");
        let h2 = hash_tree(t).expect("hash").0;
        assert_ne!(h1, h2);
        std::fs::set_permissions(t.join("etc/a"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        assert_ne!(hash_tree(t).expect("hash").0, h2);
    }
}
