//! `oci-archive`: a layout directory as one tar (what `podman save
//! --format oci-archive` writes and `podman load`, `skopeo copy
//! oci-archive:` and `ctr images import` read), with fixed owners, modes
//! and times, so equal layouts give equal archives.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::layer::FIXED_MTIME;
use super::ImageError;

/// Writes the layout at `layout` into `out` as a tar of its entries,
/// `oci-layout` first (so a reader can tell what it holds from the first
/// header), then the rest in path order.
pub fn write<W: Write>(layout: &Path, out: W) -> Result<W, ImageError> {
    let mut entries = Vec::new();
    walk(layout, Path::new(""), &mut entries)?;
    entries.sort_by_key(|rel| (rel != Path::new("oci-layout"), rel.clone()));
    let mut builder = Builder::new(out);
    for rel in &entries {
        let path = layout.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(|err| ImageError::io("stat", &path, err))?;
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_MTIME);
        let written = if meta.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, rel, io::empty())
        } else {
            let file = File::open(&path).map_err(|err| ImageError::io("open", &path, err))?;
            header.set_entry_type(EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(meta.len());
            builder.append_data(&mut header, rel, file.take(meta.len()))
        };
        written.map_err(|err| ImageError::io("add to the archive", &path, err))?;
    }
    builder
        .into_inner()
        .map_err(|err| ImageError::io("finish the archive of", layout, err))
}

fn walk(root: &Path, rel: &Path, entries: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).map_err(|err| ImageError::io("list", &dir, err))? {
        let entry = entry.map_err(|err| ImageError::io("list", &dir, err))?;
        let child = rel.join(entry.file_name());
        entries.push(child.clone());
        if entry.path().is_dir() {
            walk(root, &child, entries)?;
        }
    }
    Ok(())
}

/// Whether the file at `path` is a tar whose first entry is `oci-layout`
/// (an archive this module wrote, or one laid out the same way).
pub fn is_oci_archive(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(file);
    let Ok(mut entries) = archive.entries() else {
        return false;
    };
    matches!(
        entries.next(),
        Some(Ok(e)) if e.path().is_ok_and(|p| p == Path::new("oci-layout"))
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn archives_start_with_the_marker_and_are_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("l");
        fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        fs::write(layout.join("index.json"), "{}").unwrap();
        fs::write(layout.join("oci-layout"), "{}").unwrap();
        fs::write(layout.join("blobs/sha256/ab"), "blob").unwrap();
        let first = write(&layout, Vec::new()).unwrap();
        let path = dir.path().join("a.tar");
        fs::write(&path, &first).unwrap();
        assert!(is_oci_archive(&path));
        assert!(!is_oci_archive(&layout.join("index.json")));
        let names: Vec<_> = tar::Archive::new(first.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "oci-layout",
                "blobs",
                "blobs/sha256",
                "blobs/sha256/ab",
                "index.json"
            ]
        );
        fs::write(layout.join("blobs/sha256/ab"), "blob").unwrap();
        assert_eq!(first, write(&layout, Vec::new()).unwrap());
    }
}
