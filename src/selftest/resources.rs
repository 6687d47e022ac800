//! The resource attacks: memory, tasks, CPU and disk. Their checks read
//! the cgroup's measurements as well as the attack's RESULT line.

use crate::result::Status;

use super::catalogue::{attack, line, value};
use super::{not_applicable, Attack, Fixture, Outcome, Verdict};

/// Four threads hashing 1 MiB buffers until the process has used `cpu_s`
/// seconds of CPU (20 s of wall time at most). hashlib releases the GIL
/// on buffers over 2 KiB, so the threads run in parallel: pure-Python
/// loops would hold the GIL and use one core with or without a quota.
fn spin_code(cpu_s: f64) -> String {
    format!(
        r#"import hashlib, threading, time
buf = bytes(1 << 20)
def spin():
    # Until the process has burnt its CPU: a busy host then stretches the
    # wall time instead of weakening the baseline.
    end = time.monotonic() + 20
    while time.process_time() < {cpu_s} and time.monotonic() < end:
        hashlib.sha256(buf).digest()
ts = [threading.Thread(target=spin) for _ in range(4)]
start = time.monotonic()
for t in ts:
    t.start()
for t in ts:
    t.join()
result(spun=True, guest_cpu_ms=int(time.process_time() * 1000),
       guest_wall_ms=int((time.monotonic() - start) * 1000))
"#
    )
}

/// The run's cgroup CPU time against its wall time: at most `max` x wall
/// (the quota), at least `min` x wall and `min_cpu_ms` (the work was done).
/// The wall time is the whole run's: the cgroup exists only within it.
fn cpu_ratio(o: &Outcome, min: f64, max: f64, min_cpu_ms: u64) -> Verdict {
    line(o)?;
    let wall = o.result.duration_ms;
    let Some(cpu) = o.result.usage.cpu_time_ms else {
        return Err(o.describe("the cgroup's CPU usage was not measured"));
    };
    let ratio = cpu as f64 / wall.max(1) as f64;
    let Some(idle) = o.host.host_idle_ms else {
        return Err(o.describe("the host's idle time was not measured"));
    };
    // What the sandbox could have had: what it used and what nothing used.
    let available = (cpu + idle) as f64 / wall.max(1) as f64;
    let observed = format!(
        "cpu_ms={cpu} wall_ms={wall} ratio={ratio:.2} cpus={} guest_cpu_ms={} \
         host_cpus_available={available:.2}",
        o.limits.cpus,
        value(o, "guest_cpu_ms")?
    );
    // Baseline: the host had spare CPU beyond the ceiling, so a run that
    // stays under it was held by the quota, not by a busy host.
    if ratio <= max && available < max + 0.2 {
        return not_applicable(&format!(
            "{observed}: the host was too busy to tell the quota from the load \
             (need {:.1} CPUs available)",
            max + 0.2
        ));
    }
    if cpu >= min_cpu_ms && ratio >= min && ratio <= max {
        Ok(observed)
    } else {
        Err(format!(
            "{observed} (want {min} <= ratio <= {max} and cpu_ms >= {min_cpu_ms})"
        ))
    }
}

pub(super) fn attacks() -> Vec<Attack> {
    vec![
        attack(
            "memory_bomb",
            "memory bomb",
            "'a' * 10**9 is killed: status oom, exit 137",
            r#"result(started=True)
x = "a" * 10**9
print("ALLOCATED", len(x), flush=True)
"#,
            |o| {
                let r = o.result;
                let observed = format!(
                    "status={} exit={:?} oom_kills={:?}",
                    r.status.as_str(),
                    r.exit_code,
                    r.usage.oom_kills
                );
                let started = r.stdout.contains("RESULT started=True");
                if r.status == Status::Oom
                    && r.exit_code == Some(137)
                    && started
                    && !r.stdout.contains("ALLOCATED")
                {
                    Ok(observed)
                } else {
                    Err(o.describe(&observed))
                }
            },
        ),
        attack(
            "fork_bomb",
            "fork bomb",
            "os.fork() in a loop is refused; a thread loop stops below the pids limit \
             (RuntimeError); the run ends on its own with exit 0 (a runtime that dies at the \
             limit fails the row)",
            r#"import threading
forks = 0
try:
    while forks < 10000:
        if os.fork() == 0:
            os._exit(0)
        forks += 1
    fork = "OK"
except BaseException as e:
    fork = type(e).__name__
gate = threading.Event()
threads = 0
try:
    while threads < 10000:
        threading.Thread(target=gate.wait, daemon=True).start()
        threads += 1
    thread_error = "none"
except BaseException as e:
    thread_error = type(e).__name__
gate.set()
result(fork=fork, forks=forks, thread_error=thread_error, threads=threads)
"#,
            |o| {
                // The run must end by itself with its RESULT line on every
                // build: a Sentry that dies at the limit (runsc exits 2) is
                // a failure here, not a containment.
                let got = line(o)?.to_string();
                let threads: u32 = value(o, "threads")?
                    .parse()
                    .map_err(|_| o.describe("threads= is not a number"))?;
                let shape = value(o, "fork")? == "PermissionError"
                    && value(o, "forks")? == "0"
                    && value(o, "thread_error")? == "RuntimeError";
                // At least a few threads (the baseline: threads work), and
                // fewer than the pids limit (the limit holds).
                if shape && (8..o.limits.pids).contains(&threads) {
                    Ok(got)
                } else {
                    Err(format!(
                        "{got} (want fork=PermissionError forks=0 thread_error=RuntimeError \
                         and 8 <= threads < {})",
                        o.limits.pids
                    ))
                }
            },
        ),
        Attack {
            limits: |l| l.cpus = 0.5,
            fixture: Fixture::HostCpu,
            ..attack(
                "cpu_quota_half",
                "CPU mining",
                "with --cpus 0.5, 4 hashing threads (which release the GIL) use about half a \
                 CPU: cgroup CPU time <= 0.6 x wall time, and >= 0.3 x (they did work)",
                &spin_code(1.0),
                |o| cpu_ratio(o, 0.3, 0.6, 500),
            )
        },
        Attack {
            fixture: Fixture::HostCpu,
            ..attack(
            "cpu_mining",
            "CPU mining",
            "4 hashing threads (hashlib releases the GIL: without a quota they use every core) \
             burning 3 s of CPU (as the guest counts it; gVisor's guest clock runs ahead of the host's, so at least 1.5 s on the host) use at most 1.1 x wall time of CPU (quota: 1 CPU), as the \
             run's cgroup counts it",
            &spin_code(3.0),
            |o| cpu_ratio(o, 0.0, 1.1, 1500),
        )},
        attack(
            "disk_fill",
            "disk fill",
            "writing /tmp until it fails stops with ENOSPC at the tmpfs size; the bytes are \
             charged to the sandbox's memory",
            r#"mib = 0
try:
    with open("/tmp/fill", "wb") as f:
        while mib < 100000:
            f.write(b"x" * (1 << 20))
            f.flush()
            mib += 1
    error = "none"
except OSError as e:
    error = "%s/%s" % (type(e).__name__, errno.errorcode.get(e.errno))
st = os.statvfs("/tmp")
result(error=error, mib=mib, tmp_mib=st.f_blocks * st.f_frsize >> 20)
"#,
            |o| {
                let got = line(o)?.to_string();
                let tmp_mib = o.limits.tmp_bytes >> 20;
                let mib: u64 = value(o, "mib")?
                    .parse()
                    .map_err(|_| o.describe("mib= is not a number"))?;
                let peak = o.result.usage.memory_peak_bytes;
                let ok = value(o, "error")? == "OSError/ENOSPC"
                    && value(o, "tmp_mib")? == tmp_mib.to_string()
                    && (tmp_mib.saturating_sub(2)..=tmp_mib).contains(&mib)
                    && peak.is_some_and(|p| p >= (mib << 20));
                let observed = format!("{got} memory_peak_bytes={peak:?}");
                if ok {
                    Ok(observed)
                } else {
                    Err(format!(
                        "{observed} (want error=OSError/ENOSPC at {tmp_mib} MiB, \
                         charged to memory)"
                    ))
                }
            },
        ),
    ]
}
