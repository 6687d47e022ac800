//! The library `Pool` against the real runtimes: claims never see an
//! earlier claim's files, variables, threads or RNG state; the shelf
//! refills after claims (waited for on the pool's event); a claim of
//! another configuration starts cold with its own limits; dropping the
//! pool leaves nothing.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rlm_sandbox::config::{Config, RuntimeChoice};
use rlm_sandbox::egress::FilterSpec;
use rlm_sandbox::pool::{Pool, PoolSettings};
use rlm_sandbox::session::{Handler, SessionOptions};
use rlm_sandbox::supervise::Sandbox;

fn sandbox(env: &common::Env, memory: u64) -> Arc<Sandbox> {
    let mut config = Config {
        runtime: match env.runtime.as_str() {
            "runsc" => RuntimeChoice::Runsc,
            _ => RuntimeChoice::Runc,
        },
        state_dir: env.state.path().to_path_buf(),
        ..Config::default()
    };
    config.limits.memory_bytes = memory;
    let egress = FilterSpec::default().pending().unwrap();
    Arc::new(Sandbox::prepare(config, egress, &mut |_| {}).unwrap())
}

/// The runtimes' tests share this process's run prefix (`rlms-<pid>-`),
/// which "nothing left" checks: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn never() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

const PROBE: &str = "import os, random, threading\n\
print(os.path.exists('/tmp/marker'), 'marker' in globals(), threading.active_count())\n\
print(os.urandom(16).hex(), random.random(), hash('abc'))";

on_both_runtimes! {
    fn claims_are_fresh_the_shelf_refills_and_nothing_is_left(env) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let settings = PoolSettings { size: 2, ..PoolSettings::default() };
        let pool = Pool::new(settings);
        let sb = sandbox(env, 512 << 20);
        let key = pool.keep(&sb).expect("a pooled configuration");
        let full = pool.wait_for(&key, |s| s.refill_failures > 0).unwrap();
        assert_eq!((full.ready, full.refill_failures), (2, 0), "{full:?}");

        // Claim 1 leaves a file, a variable, a thread; records its RNG.
        let mut first = pool.claim(&sb, SessionOptions::default(), Handler::None, never()).unwrap();
        assert!(first.ready().standby, "a claim from a full shelf is a standby");
        let cell = first.exec(PROBE, None).unwrap();
        let mut seen = vec![cell.stdout.lines().nth(1).unwrap().to_string()];
        let baseline = cell.stdout.lines().next().unwrap().to_string();
        assert!(baseline.starts_with("False False "), "{}", cell.stdout);
        let cell = first.exec("import threading, time\nopen('/tmp/marker', 'w').write('x')\n\
            marker = 1\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()", None).unwrap();
        assert_eq!(cell.stderr, "");
        pool.release(first);

        // The next 20 claims see none of it, and their RNG state differs.
        for i in 0..20 {
            let mut s = pool.claim(&sb, SessionOptions::default(), Handler::None, never()).unwrap();
            let cell = s.exec(PROBE, None).unwrap();
            let mut lines = cell.stdout.lines();
            assert_eq!(lines.next().unwrap(), baseline, "claim {i}: {}", cell.stdout);
            let rng = lines.next().unwrap().to_string();
            for (part, earlier) in rng.split(' ').zip(seen.iter().map(|e| e.split(' ').collect::<Vec<_>>())) {
                assert!(!earlier.contains(&part), "claim {i} repeats {part}: {seen:?}");
            }
            seen.push(rng);
            pool.release(s);
        }
        let full = pool.wait_for(&key, |s| s.refill_failures > 0).unwrap();
        assert_eq!(full.ready, 2, "{full:?}");
        assert_eq!(full.claimed + full.cold, 21, "{full:?}");
        assert!(full.claimed >= 2, "{full:?}");

        // Another configuration (another memory limit) starts cold, with its limit.
        let other = sandbox(env, 256 << 20);
        let mut s = pool.claim(&other, SessionOptions::default(), Handler::None, never()).unwrap();
        assert!(!s.ready().standby);
        assert_eq!(s.ready().limits.memory_bytes, 256 << 20);
        let cell = s.exec("b = bytearray(400 << 20)", None).unwrap();
        assert_eq!(cell.status, rlm_sandbox::result::Status::Oom, "{cell:?}");
        pool.release(s);

        // A one-shot run from the pool: run's result.
        let r = pool.run(&sb, "import sys\nprint('hi')\nsys.exit(3)", never()).unwrap();
        assert_eq!((r.status.as_str(), r.exit_code, r.stdout.as_str()), ("error", Some(3), "hi\n"));

        drop(pool);
        common::assert_clean_runs(env.state.path(), &format!("rlms-{}-", std::process::id()));
    }
}
