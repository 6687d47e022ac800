//! Writing into the tree being built without ever following a symbolic
//! link: packages ship absolute links (Debian's
//! `/usr/lib/python3.11/sitecustomize.py -> /etc/python3.11/sitecustomize.py`),
//! and writing through one from outside a chroot changes the host's file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::IoContext;
use crate::Error;

/// `tree/rel`, after checking that no directory on the way is a symbolic
/// link (the last component may be one: callers replace or remove it).
pub(crate) fn resolve(tree: &Path, rel: &str) -> Result<PathBuf, Error> {
    let rel = Path::new(rel);
    let mut path = tree.to_path_buf();
    let parts: Vec<Component> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(Error::Unexpected {
                path: tree.join(rel),
                expected: "a plain relative path inside the tree".into(),
            });
        };
        path.push(name);
        if i + 1 < parts.len() {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => return Err(Error::Symlink { path }),
                _ => {}
            }
        }
    }
    Ok(path)
}

/// Replaces `tree/rel` (a file or a link, never followed) with a new file.
pub(crate) fn write_file(tree: &Path, rel: &str, text: &str, mode: u32) -> Result<(), Error> {
    let path = resolve(tree, rel)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).ctx("create", parent)?;
    }
    remove_entry(&path)?;
    // create_new is O_EXCL: it fails rather than follow a link put there
    // since the removal.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .ctx("create", &path)?;
    file.write_all(text.as_bytes()).ctx("write", &path)?;
    // The umask may have cleared bits of `mode`.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).ctx("chmod", &path)
}

/// Creates the directory `tree/rel` with `mode` (an explicit chmod: a tmpfs
/// mounted on it takes this mode under runc).
pub(crate) fn make_dir(tree: &Path, rel: &str, mode: u32) -> Result<(), Error> {
    let path = resolve(tree, rel)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => remove_entry(&path)?,
        Err(_) => {}
    }
    fs::create_dir_all(&path).ctx("create", &path)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).ctx("chmod", &path)
}

/// Removes `tree/rel` (a directory with its contents, a file or a link);
/// nothing if it is not there.
pub(crate) fn remove(tree: &Path, rel: &str) -> Result<(), Error> {
    remove_entry(&resolve(tree, rel)?)
}

fn remove_entry(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        // remove_dir_all does not follow links inside the directory.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("remove", path),
        Ok(_) => fs::remove_file(path).ctx("remove", path),
    }
}

/// The mode an entry gets: no set-id or sticky bits, writable by its owner
/// (root) only. `/tmp` is the exception, the usual 1777.
pub(crate) fn normal_mode(rel: &Path, mode: u32) -> u32 {
    if rel == Path::new("tmp") {
        return 0o1777;
    }
    mode & 0o7777 & !0o7022
}

/// Makes every entry root's and writable by root only, so the sandbox user
/// (and any other uid) can change nothing, even on a writable mount.
pub(crate) fn normalize_ownership(tree: &Path) -> Result<(), Error> {
    lchown(tree, Some(0), Some(0)).ctx("chown", tree)?;
    fs::set_permissions(tree, fs::Permissions::from_mode(0o755)).ctx("chmod", tree)?;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
            lchown(&path, Some(0), Some(0)).ctx("chown", &path)?;
            if meta.file_type().is_symlink() {
                continue;
            }
            let rel = path.strip_prefix(tree).unwrap_or(&path);
            let mode = meta.permissions().mode();
            let wanted = normal_mode(rel, mode);
            if wanted != mode & 0o7777 {
                fs::set_permissions(&path, fs::Permissions::from_mode(wanted))
                    .ctx("chmod", &path)?;
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn write_file_replaces_a_link_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("host-file");
        fs::write(&outside, "host").expect("write");
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("usr/lib")).expect("mkdir");
        symlink(&outside, tree.join("usr/lib/sitecustomize.py")).expect("link");
        write_file(&tree, "usr/lib/sitecustomize.py", "ours", 0o644).expect("write");
        assert_eq!(fs::read_to_string(&outside).expect("read"), "host");
        let written = tree.join("usr/lib/sitecustomize.py");
        assert!(!fs::symlink_metadata(&written)
            .expect("stat")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(written).expect("read"), "ours");
    }

    #[test]
    fn a_linked_directory_on_the_way_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).expect("mkdir");
        symlink(dir.path(), tree.join("etc")).expect("link");
        let err = write_file(&tree, "etc/passwd", "x", 0o644).expect_err("through a link");
        assert!(matches!(err, Error::Symlink { .. }), "{err}");
        assert!(!dir.path().join("passwd").exists());
        assert!(matches!(remove(&tree, "etc/x"), Err(Error::Symlink { .. })));
        assert!(matches!(
            resolve(&tree, "../x"),
            Err(Error::Unexpected { .. })
        ));
    }

    #[test]
    fn modes_lose_group_other_write_and_set_id_bits() {
        assert_eq!(normal_mode(Path::new("usr/bin/x"), 0o4777), 0o755);
        assert_eq!(normal_mode(Path::new("etc/shadow"), 0o600), 0o600);
        assert_eq!(normal_mode(Path::new("var/tmp"), 0o1777), 0o755);
        assert_eq!(normal_mode(Path::new("tmp"), 0o755), 0o1777);
    }
}
