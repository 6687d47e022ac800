//! The rootfs as one layer: a tar whose bytes depend only on the tree
//! (paths in sorted order, numeric owners, modes, contents, link targets)
//! and never on the host that writes it or the build that made the tree
//! (no user names, no access or change times, one fixed modification time).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::ImageError;

/// The modification time of every entry (the Unix epoch: no clock reaches
/// the layer). Python sources too: the builder's bytecode is hash-based
/// and unchecked (rootfs-builder's compile.rs), so Python never compares
/// a source's time with its `.pyc`.
pub const FIXED_MTIME: u64 = 0;

/// What a layer holds, for the progress line and the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Writes `tree` as a tar into `out` and returns `out` (the tar's end
/// written) with what went in. Refuses what a layer cannot carry
/// faithfully: devices, sockets and fifos (a rootfs has none), and names
/// an engine would take for whiteouts (`.wh.*`), which would hide files.
pub fn write<W: Write>(tree: &Path, out: W) -> Result<(W, LayerStats), ImageError> {
    let mut entries = Vec::new();
    walk(tree, Path::new(""), &mut entries)?;
    // Path order compares components, so a directory precedes its contents.
    entries.sort();
    let mut builder = Builder::new(out);
    let mut stats = LayerStats::default();
    for rel in &entries {
        append(&mut builder, tree, rel, &mut stats)?;
    }
    let out = builder
        .into_inner()
        .map_err(|err| ImageError::io("finish the layer of", tree, err))?;
    Ok((out, stats))
}

/// The relative paths under `tree/rel`, without following links.
fn walk(tree: &Path, rel: &Path, entries: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let dir = tree.join(rel);
    for entry in fs::read_dir(&dir).map_err(|err| ImageError::io("list", &dir, err))? {
        let entry = entry.map_err(|err| ImageError::io("list", &dir, err))?;
        let child = rel.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .map_err(|err| ImageError::io("stat", &entry.path(), err))?
            .is_dir();
        entries.push(child.clone());
        if is_dir {
            walk(tree, &child, entries)?;
        }
    }
    Ok(())
}

/// The header every entry starts from: GNU (long names and link targets
/// get its extension records), owner ids and mode from the tree, no names.
fn header(meta: &fs::Metadata, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(FIXED_MTIME);
    header.set_size(0);
    header
}

fn append<W: Write>(
    builder: &mut Builder<W>,
    tree: &Path,
    rel: &Path,
    stats: &mut LayerStats,
) -> Result<(), ImageError> {
    let path = tree.join(rel);
    check_name(tree, rel)?;
    let meta = fs::symlink_metadata(&path).map_err(|err| ImageError::io("stat", &path, err))?;
    let kind = meta.file_type();
    let written = if kind.is_dir() {
        let mut h = header(&meta, EntryType::Directory);
        builder.append_data(&mut h, rel, io::empty())
    } else if kind.is_symlink() {
        let target = fs::read_link(&path).map_err(|err| ImageError::io("read link", &path, err))?;
        let mut h = header(&meta, EntryType::Symlink);
        builder.append_link(&mut h, rel, &target)
    } else if kind.is_file() {
        let size = meta.len();
        // O_NOFOLLOW: the entry was a file when listed; a link put there
        // since is refused, never followed out of the tree.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|err| ImageError::io("open", &path, err))?;
        let mut h = header(&meta, EntryType::Regular);
        h.set_size(size);
        stats.file_bytes += size;
        builder.append_data(&mut h, rel, Exact::new(file, size))
    } else {
        return Err(ImageError::Unsupported {
            path,
            what: "a device, socket or fifo",
        });
    };
    written.map_err(|err| ImageError::io("add to the layer", &path, err))?;
    stats.entries += 1;
    Ok(())
}

/// Refuses a name an engine unpacking the layer would act on rather than
/// create: `.wh.` marks a whiteout (deletes the named file from lower
/// layers, or with `.wh..wh..opq` a whole directory's contents).
fn check_name(tree: &Path, rel: &Path) -> Result<(), ImageError> {
    let whiteout = rel.components().any(|c| match c {
        Component::Normal(name) => name.to_string_lossy().starts_with(".wh."),
        _ => true,
    });
    if whiteout {
        return Err(ImageError::Unsupported {
            path: tree.join(rel),
            what: "a name starting with .wh. (a whiteout to image engines)",
        });
    }
    Ok(())
}

/// A file's first `size` bytes, and an error if it has fewer: the header
/// already promised `size`, and a short entry would corrupt the tar.
struct Exact {
    file: io::Take<File>,
    left: u64,
}

impl Exact {
    fn new(file: File, size: u64) -> Exact {
        Exact {
            file: file.take(size),
            left: size,
        }
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && self.left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank while read ({} bytes missing)", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("usr/lib/python3.11/json")).unwrap();
        fs::write(t.join("usr/lib/python3.11/json/__init__.py"), "x = 1\n").unwrap();
        fs::write(t.join("usr/lib/python3.11/json/data.bin"), [0u8; 700]).unwrap();
        fs::create_dir_all(t.join("etc")).unwrap();
        fs::write(t.join("etc/shadow"), "root:*:1::::::\n").unwrap();
        fs::set_permissions(t.join("etc/shadow"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("python3.11", t.join("usr/lib/python3")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(t.join("usr/share").join(&long)).unwrap();
        fs::write(t.join("usr/share").join(&long).join("f"), "long").unwrap();
        dir
    }

    fn layer(t: &Path) -> Vec<u8> {
        write(t, Vec::new()).unwrap().0
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_whatever_its_clock() {
        let dir = tree();
        let t = dir.path();
        let first = layer(t);
        // A file, a Python source and a directory get newer times: the
        // layer must not change.
        set_mtime_an_hour_ahead(&t.join("etc/shadow"));
        set_mtime_an_hour_ahead(&t.join("usr/lib/python3.11/json/__init__.py"));
        fs::write(t.join("usr/share/x"), "").unwrap();
        fs::remove_file(t.join("usr/share/x")).unwrap();
        assert_eq!(first, layer(t));
        // A content does change it.
        fs::write(t.join("usr/lib/python3.11/json/__init__.py"), "x = 2\n").unwrap();
        assert_ne!(first, layer(t));
    }

    fn set_mtime_an_hour_ahead(path: &Path) {
        let file = File::options().write(true).open(path).unwrap();
        let when = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        file.set_times(fs::FileTimes::new().set_modified(when))
            .unwrap();
    }

    #[test]
    fn entries_are_sorted_with_owners_modes_and_one_time() {
        let dir = tree();
        let t = dir.path();
        let bytes = layer(t);
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let h = entry.header();
            assert_eq!(h.mtime().unwrap(), FIXED_MTIME, "{}", path.display());
            if path == Path::new("etc/shadow") {
                assert_eq!(h.mode().unwrap(), 0o600);
            }
            if path == Path::new("usr/lib/python3") {
                assert_eq!(h.entry_type(), EntryType::Symlink);
                assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("python3.11"));
            }
            assert_eq!(h.username().unwrap(), Some(""), "no user names");
            assert_eq!(
                h.uid().unwrap(),
                u64::from(fs::symlink_metadata(t.join(&path)).unwrap().uid())
            );
            seen.push(path);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(
            seen.iter().any(|p| p.to_string_lossy().len() > 100),
            "a long name survives"
        );
        assert_eq!(seen.len(), 12);
    }

    #[test]
    fn whiteout_names_and_fifos_are_refused() {
        let dir = tree();
        let t = dir.path();
        fs::write(t.join("etc/.wh.passwd"), "").unwrap();
        let err = write(t, Vec::new()).unwrap_err();
        assert!(err.to_string().contains(".wh."), "{err}");
        fs::remove_file(t.join("etc/.wh.passwd")).unwrap();
        nix::unistd::mkfifo(&t.join("etc/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = write(t, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("etc/fifo"), "{err}");
    }
}
