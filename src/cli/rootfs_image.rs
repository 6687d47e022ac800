//! `rlm-sandbox rootfs image`: picks the rootfs (checked: it holds the
//! agent and still matches its manifest, whose content id becomes the
//! tag), then writes it as an OCI image (src/image).

use std::path::Path;

use anyhow::{bail, Context};
use rlm_sandbox::image::{self, Format, ImageOptions};
use rlm_sandbox::rootfs;
use rootfs_builder::{ExtraPackages, PipRequirements};

pub fn run(
    output: &Path,
    format: Format,
    rootfs_dir: Option<&Path>,
    (packages, pip): (ExtraPackages, PipRequirements),
    json: bool,
) -> anyhow::Result<i32> {
    let dir = match rootfs_dir {
        Some(dir) => rootfs::resolve(Some(dir), &mut super::print_progress)?,
        None => rootfs::resolve_selected(&packages, &pip, &mut super::print_progress)?,
    };
    if !rootfs::has_agent(&dir) {
        bail!(
            "rootfs {} has no session agent (the {} package of its Python); rebuild it with \
             `rlm-sandbox rootfs build --output {}`",
            dir.display(),
            rootfs_builder::AGENT_MODULE,
            dir.display()
        );
    }
    let manifest = rootfs_builder::read_manifest(&dir)?;
    if manifest.content_id.is_empty() {
        bail!(
            "rootfs {}'s manifest has no content_id (a builder from before the field); \
             rebuild it with `rlm-sandbox rootfs build --output {}`",
            dir.display(),
            dir.display()
        );
    }
    eprintln!(
        "rlm-sandbox: image: checking {} against its manifest",
        dir.display()
    );
    if !rootfs_builder::verify(&dir)? {
        bail!(
            "rootfs {} differs from its manifest (`rlm-sandbox rootfs verify`): an image \
             tagged with its content id would misname it; rebuild it",
            dir.display()
        );
    }
    let written = image::write(
        &ImageOptions {
            rootfs: &dir,
            content_id: &manifest.content_id,
            output,
            format,
        },
        &mut |p| eprintln!("rlm-sandbox: image: {p}"),
    )
    .with_context(|| format!("writing the image of {}", dir.display()))?;
    eprintln!(
        "rlm-sandbox: image: wrote {} ({} MB) in {:.1} s",
        written.path.display(),
        written.bytes / 1_000_000,
        written.elapsed_s
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&written)?);
    } else {
        println!("{}", written.path.display());
        println!("{}@{}", written.reference, written.digest);
    }
    Ok(0)
}
