//! `rlm-sandbox rootfs build|image|show|verify` (image: rootfs_image.rs).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rlm_sandbox::image::Format;
use rootfs_builder::{ExtraPackages, PipRequirements};

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum RootfsCommand {
    /// Build the Python rootfs from the distribution's packages (no Docker):
    /// download, unpack, harden, precompile, self-check, write a manifest.
    /// Without --with or --pip, the default rootfs `run` uses
    /// (docs/ROOTFS.md). Prints the built rootfs's directory on stdout
    /// (progress goes to stderr): `RLM_ROOTFS=$(rlm-sandbox rootfs build
    /// --with python3-pandas)`.
    Build {
        /// Where to build it (default: the cache directory used by `run`;
        /// with --with, its sibling rootfs-with-<hash of the list>).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        #[command(flatten)]
        selection: Selection,
        /// Print the manifest as JSON when done (instead of the directory).
        #[arg(long)]
        json: bool,
    },
    /// Write a rootfs as an OCI image (no daemon, no registry): one layer
    /// holding the tree, a config running the session agent as the
    /// sandbox user, named localhost/rlm-sandbox-rootfs:<content id>.
    /// The same rootfs always gives the same digest. Without --rootfs,
    /// the cache's rootfs for --with/--pip (the default one without),
    /// built when missing. Prints the output path and `name:tag@digest`
    /// on stdout (progress on stderr); load it with `podman load -i` or
    /// `skopeo copy` (docs/ROOTFS.md, "As an OCI image").
    Image {
        /// Where to write it: a directory (oci-layout) or a file
        /// (oci-archive); an existing one is replaced only if it is an
        /// image (or an empty directory).
        #[arg(long, value_name = "PATH")]
        output: PathBuf,
        /// oci-layout (a directory: `oci:PATH`) or oci-archive (a tar of
        /// one: `oci-archive:PATH`, `podman load -i PATH`).
        #[arg(long, value_name = "FORMAT", default_value = "oci-layout", value_parser = parse_format)]
        format: Format,
        /// A rootfs directory instead of the cache's (it must hold the
        /// session agent and match its manifest).
        #[arg(long, value_name = "DIR", env = "RLM_ROOTFS", conflicts_with_all = ["with", "pip"])]
        rootfs: Option<PathBuf>,
        #[command(flatten)]
        selection: Selection,
        /// Print what was written as JSON (path, reference, digest,
        /// layer) instead of the two lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest of a rootfs (default: the cache one, or RLM_ROOTFS).
    Show {
        #[arg(long, value_name = "DIR", env = "RLM_ROOTFS")]
        rootfs: Option<PathBuf>,
    },
    /// Recompute the tree hash and compare it with the manifest.
    Verify {
        #[arg(long, value_name = "DIR", env = "RLM_ROOTFS")]
        rootfs: Option<PathBuf>,
    },
}

/// Which rootfs: the default one, or one with extra packages (its
/// identity, docs/ROOTFS.md).
#[derive(Debug, Args)]
pub struct Selection {
    /// Add Debian packages and their dependencies, e.g.
    /// `--with python3-numpy,python3-scipy` (comma-separated, may be
    /// repeated). Their Python modules (in /usr/lib/python3/dist-packages)
    /// are imported by the build's self-check as the sandbox user; a
    /// package whose import needs what the sandbox removes (subprocess,
    /// multiprocessing, ctypes, libffi) or refuses (os.system, fork...)
    /// is refused with the reason. The list is recorded in the manifest
    /// (`extra_packages`) and is part of the rootfs's identity: `run` and
    /// `session` use such a rootfs only when pointed at it with --rootfs
    /// DIR or RLM_ROOTFS=DIR.
    #[arg(
        long = "with",
        value_name = "PACKAGE[,PACKAGE...]",
        env = "RLM_ROOTFS_PACKAGES",
        value_parser = parse_packages
    )]
    with: Vec<ExtraPackages>,
    /// Add binary wheels from PyPI for the rootfs's own Python (CPython
    /// 3.X, manylinux for its glibc), with their dependencies', e.g.
    /// `--pip 'pandas==2.2.*,numpy'` (comma-separated requirements; a
    /// version clause after a comma joins the one before; may be
    /// repeated). Never builds from source: a requirement without a
    /// wheel is refused by name. Installed into
    /// /usr/local/lib/python3.X/dist-packages, with the wheels' sha256
    /// in the manifest and the rootfs's identity; hardened and
    /// self-checked like --with. Needs pip on the host (apt-get install
    /// python3-pip).
    #[arg(
        long = "pip",
        value_name = "REQUIREMENT[,REQUIREMENT...]",
        env = "RLM_ROOTFS_PIP",
        value_parser = parse_requirements
    )]
    pip: Vec<PipRequirements>,
}

impl Selection {
    /// Every --with list and every --pip list, each merged into one.
    fn merged(&self) -> (ExtraPackages, PipRequirements) {
        let packages = self
            .with
            .iter()
            .fold(ExtraPackages::default(), |all, list| all.union(list));
        let pip = self
            .pip
            .iter()
            .fold(PipRequirements::default(), |all, list| all.union(list));
        (packages, pip)
    }
}

/// clap's parser for `--with` / RLM_ROOTFS_PACKAGES: the builder's
/// validation, its error naming the value and the accepted form.
fn parse_packages(list: &str) -> Result<ExtraPackages, String> {
    ExtraPackages::parse(list).map_err(|e| format!("{e} (--with or RLM_ROOTFS_PACKAGES)"))
}

/// clap's parser for `--format`.
fn parse_format(name: &str) -> Result<Format, String> {
    name.parse()
}

/// clap's parser for `--pip` / RLM_ROOTFS_PIP.
fn parse_requirements(list: &str) -> Result<PipRequirements, String> {
    PipRequirements::parse(list).map_err(|e| format!("{e} (--pip or RLM_ROOTFS_PIP)"))
}

pub fn run(cmd: &RootfsCommand) -> anyhow::Result<i32> {
    match cmd {
        RootfsCommand::Build {
            output,
            selection,
            json,
        } => {
            let (packages, pip) = selection.merged();
            let output = output
                .clone()
                .unwrap_or_else(|| rootfs_builder::default_rootfs_dir_with_pip(&packages, &pip));
            let manifest = rootfs_builder::build(
                &rootfs_builder::BuildOptions {
                    output: output.clone(),
                    packages: packages.clone(),
                    pip: pip.clone(),
                },
                &mut super::print_progress,
            )?;
            if !packages.is_empty() || !pip.is_empty() {
                let added: Vec<String> = packages
                    .names()
                    .iter()
                    .chain(pip.items())
                    .cloned()
                    .collect();
                eprintln!(
                    "rlm-sandbox: rootfs: with {}; use it with `--rootfs {dir}` or \
                     RLM_ROOTFS={dir} (without, run and session use the default rootfs)",
                    added.join(", "),
                    dir = output.display()
                );
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                // The one line on stdout: RLM_ROOTFS=$(rlm-sandbox rootfs build ...).
                let dir = std::fs::canonicalize(&output).unwrap_or(output);
                println!("{}", dir.display());
            }
            Ok(0)
        }
        RootfsCommand::Image {
            output,
            format,
            rootfs,
            selection,
            json,
        } => super::rootfs_image::run(
            output,
            *format,
            rootfs.as_deref(),
            selection.merged(),
            *json,
        ),
        RootfsCommand::Show { rootfs } => {
            let dir = rootfs
                .clone()
                .unwrap_or_else(rootfs_builder::default_rootfs_dir);
            let manifest = rootfs_builder::read_manifest(&dir)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(0)
        }
        RootfsCommand::Verify { rootfs } => {
            let dir = rootfs
                .clone()
                .unwrap_or_else(rootfs_builder::default_rootfs_dir);
            if rootfs_builder::verify(&dir)? {
                println!("{}: tree matches its manifest", dir.display());
                Ok(0)
            } else {
                eprintln!(
                    "rlm-sandbox: {}: tree differs from its manifest",
                    dir.display()
                );
                Ok(1)
            }
        }
    }
}
