//! The builder's source id: sha256 over this crate's own sources (the
//! Rust and Python files in src/ and python/), from which comes all the
//! builder writes into a rootfs of itself (the embedded content that
//! `content_id` hashes). A manifest carrying this build's source id was
//! written by a builder with the same content, so a run need not hash that
//! content again to know its rootfs is current (`is_current_for`).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let mut files = Vec::new();
    for dir in ["src", "python"] {
        println!("cargo:rerun-if-changed={dir}");
        collect(Path::new(dir), &mut files);
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let bytes =
            std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        // Lengths make the encoding unambiguous.
        hasher.update(format!("{}\0{}\0", file.display(), bytes.len()));
        hasher.update(&bytes);
    }
    let id: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=RLM_ROOTFS_SOURCE_ID={id}");
}

/// Every Rust and Python source below `dir`: what tools leave beside
/// them (`__pycache__`, `.mypy_cache`) is not the builder's.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            collect(&path, out);
        } else if name.ends_with(".rs") || name.ends_with(".py") {
            out.push(path);
        }
    }
}
