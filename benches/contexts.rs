//! The cost of placing a 1 GiB context into a live sandbox's drop directory
//! (docs/BENCHMARKS.md, "Adding a context"): a read-only bind mount (what
//! `add_context` does for a file the sandbox user may read) and a copy (a
//! file it may not read), side by side in one run, with a hard link of the
//! file into a plain directory of its filesystem as the reference (no link
//! can be made into the drop directory, a mount point of its own), and the
//! ratio of each to the bind mount.
//!
//! The drop directory is made a shared mount point as for a session, and a
//! process in a mount namespace of its own holds a slave copy of it (as a
//! runc container or runsc's gofer does): a bind mount pays its propagation.
//! Only the placement is timed (`contexts::place`); the session's echo index
//! of the context, built on every `add_context`, is not.
//!
//! As root: `scripts/bench_context [MOUNTS] [COPIES]`.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rlm_sandbox::bundle::spec::CONTEXTS_SUBDIR;
use rlm_sandbox::session::contexts::{self, Placement};
use rlm_sandbox::supervise::drop_dir;

const GIB: u64 = 1 << 30;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let fast: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let copies: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let base = std::env::var_os("RLM_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/rlm-sandbox"));
    std::fs::create_dir_all(&base).expect("state dir");
    let work = tempfile::Builder::new()
        .prefix("bench-context-")
        .tempdir_in(&base)
        .expect("work dir");
    let input = work.path().join("input");
    let drop = input.join(CONTEXTS_SUBDIR);
    std::fs::create_dir_all(&drop).expect("drop dir");
    drop_dir::make_shared(&drop).expect("a shared drop directory");
    // The sandbox's side: a mount namespace holding a slave copy.
    let slave = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "sleep", "600"])
        .spawn()
        .expect("unshare");
    let other_fs = work.path().join("other-fs");
    std::fs::create_dir(&other_fs).expect("dir");
    // Whatever happens below, nothing stays mounted or running.
    let _cleanup = Cleanup {
        slave,
        root: work.path().to_path_buf(),
    };
    nix::mount::mount(
        Some("tmpfs"),
        &other_fs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=16m"),
    )
    .expect("a tmpfs for the other filesystem");

    let same_fs = sparse(&work.path().join("same-fs.txt"), 0o644);
    let other = sparse(&other_fs.join("other-fs.txt"), 0o644);
    // Dense: a copy writes every byte (a sparse one could skip the holes).
    let private = dense(&work.path().join("private.txt"), 0o600);
    let mut index = 0;
    let mut measure = |path: &Path, n: usize, want: Placement| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let source = contexts::Source::Path(path.to_path_buf());
                let mut ctx =
                    contexts::describe(index, &source, None, Placement::Mount).expect("describe");
                let start = Instant::now();
                contexts::place(&input, &mut ctx, &source).expect("place");
                let took = start.elapsed();
                assert_eq!(ctx.placed, want, "{}", path.display());
                contexts::unplace(&input, index).expect("unplace");
                index += 1;
                took
            })
            .collect()
    };
    let links = work.path().join("links");
    std::fs::create_dir(&links).expect("dir");
    let link: Vec<Duration> = (0..fast)
        .map(|i| {
            let target = links.join(i.to_string());
            let start = Instant::now();
            std::fs::hard_link(&same_fs, &target).expect("hard link");
            let took = start.elapsed();
            std::fs::remove_file(&target).expect("remove");
            took
        })
        .collect();
    let mount_same = measure(&same_fs, fast, Placement::Mount);
    let mount = measure(&other, fast, Placement::Mount);
    let copy = measure(&private, copies, Placement::Copy);

    let base_p50 = p(&mount, 50.0);
    println!("placing a 1 GiB context into a live sandbox's drop directory (contexts::place)");
    println!(
        "{:<36} {:>6} {:>12} {:>12} {:>14}",
        "placement", "n", "p50 ms", "p99 ms", "p50 / mount"
    );
    for (name, v) in [
        ("hard link (reference, not a drop)", &link),
        ("bind mount, read-only (same fs)", &mount_same),
        ("bind mount, read-only (other fs)", &mount),
        ("copy (not readable by sandbox)", &copy),
    ] {
        println!(
            "{name:<36} {:>6} {:>12.3} {:>12.3} {:>13.2}x",
            v.len(),
            ms(p(v, 50.0)),
            ms(p(v, 99.0)),
            p(v, 50.0).as_secs_f64() / base_p50.as_secs_f64()
        );
    }
}

struct Cleanup {
    slave: std::process::Child,
    root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.slave.kill();
        let _ = self.slave.wait();
        if let Err(e) = drop_dir::unmount_under(&self.root) {
            eprintln!("unmount under {}: {e}", self.root.display());
        }
    }
}

/// A sparse 1 GiB file with a marker at its end, of `mode`.
fn sparse(path: &Path, mode: u32) -> PathBuf {
    let f = std::fs::File::create(path).expect("create");
    f.set_len(GIB).expect("set_len");
    f.write_all_at(b"end-of-the-context-marker-1gib\n", GIB - 31)
        .expect("marker");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_path_buf()
}

/// A 1 GiB file of written bytes, of `mode`.
fn dense(path: &Path, mode: u32) -> PathBuf {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let chunk: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    for _ in 0..GIB / (1 << 20) {
        f.write_all(&chunk).expect("write");
    }
    f.flush().expect("flush");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_path_buf()
}

/// The q-th percentile by nearest rank.
fn p(values: &[Duration], q: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    let rank = ((q / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
