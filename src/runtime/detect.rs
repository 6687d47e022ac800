//! Finding runtime binaries and their versions.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directories searched after PATH: where distributions install runtimes,
/// so a driver started with an empty PATH (e.g. from an orchestrator) still
/// finds them.
const FALLBACK_DIRS: [&str; 4] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"];

/// The configured path if it is an executable file, else `name` in PATH or
/// the usual directories.
pub fn find_binary(name: &str, configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return is_executable(path).then(|| path.to_path_buf());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first line of `<binary> --version` (e.g. "runc version 1.1.5"), or
/// None when it cannot be run.
pub fn version_of(binary: &Path) -> Option<String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_path_must_be_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("runsc");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        assert_eq!(find_binary("runsc", Some(&file)), None);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(find_binary("runsc", Some(&file)), Some(file.clone()));
        assert_eq!(find_binary("runsc", Some(&dir.path().join("nope"))), None);
    }

    #[test]
    fn finds_sh_and_its_version_fails_cleanly_for_missing() {
        assert!(find_binary("sh", None).is_some());
        assert_eq!(version_of(Path::new("/nonexistent/runc")), None);
    }
}
