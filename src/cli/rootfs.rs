//! `rlm-sandbox rootfs build|show|verify`.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RootfsCommand {
    /// Build the default Python rootfs from the distribution's packages (no
    /// Docker): download, unpack, harden, precompile, write a manifest.
    Build {
        /// Where to build it (default: the cache directory used by `run`).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Print the manifest as JSON when done.
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

pub fn run(cmd: &RootfsCommand) -> anyhow::Result<i32> {
    match cmd {
        RootfsCommand::Build { output, json } => {
            let output = output
                .clone()
                .unwrap_or_else(rootfs_builder::default_rootfs_dir);
            let manifest = rootfs_builder::build(
                &rootfs_builder::BuildOptions { output },
                &mut super::print_progress,
            )?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            }
            Ok(0)
        }
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
