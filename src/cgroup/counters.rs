//! Parsers for cgroup control files (pure). Each returns `None` when the
//! value is absent or malformed: a counter that cannot be read is unknown,
//! never zero.

/// The value of `key` in a flat-keyed file (`key value` per line), as in
/// v2 `memory.events`, v2 `cpu.stat` and v1 `memory.oom_control`.
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// v2 `memory.events`: the `oom_kill` count (hierarchical unless the
/// hierarchy is mounted with `memory_localevents`).
pub fn parse_memory_events(text: &str) -> Option<u64> {
    parse_keyed(text, "oom_kill")
}

/// v1 `memory.oom_control`: the `oom_kill` line (Linux ≥ 4.13; older
/// kernels only have `oom_kill_disable` and `under_oom`). Counts kills of
/// tasks in this very cgroup only: v1 does not propagate it to ancestors.
pub fn parse_oom_control(text: &str) -> Option<u64> {
    parse_keyed(text, "oom_kill")
}

/// v2 `cpu.stat`: `usage_usec`, in nanoseconds.
pub fn parse_cpu_stat_ns(text: &str) -> Option<u64> {
    parse_keyed(text, "usage_usec")?.checked_mul(1000)
}

/// A file holding one number: v1 `cpuacct.usage` (ns),
/// `memory.max_usage_in_bytes`, v2 `memory.peak`.
pub fn parse_single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($p:literal) => {
            include_str!(concat!("../../tests/fixtures/cgroup/", $p))
        };
    }

    #[test]
    fn v2_memory_events() {
        assert_eq!(parse_memory_events(fixture!("v2/memory.events")), Some(2));
        // "oom" (OOM situations) must not be mistaken for "oom_kill".
        assert_eq!(parse_memory_events("low 0\noom 5\n"), None);
        assert_eq!(parse_memory_events("oom_kill x\n"), None);
        assert_eq!(parse_memory_events(""), None);
    }

    #[test]
    fn v1_oom_control() {
        assert_eq!(
            parse_oom_control(fixture!("v1/memory.oom_control")),
            Some(1)
        );
        assert_eq!(
            parse_oom_control(fixture!("v1/memory.oom_control-pre-4.13")),
            None
        );
    }

    #[test]
    fn v2_cpu_stat() {
        assert_eq!(
            parse_cpu_stat_ns(fixture!("v2/cpu.stat")),
            Some(395_737_000)
        );
        assert_eq!(parse_cpu_stat_ns("user_usec 5\n"), None);
        assert_eq!(
            parse_cpu_stat_ns(&format!("usage_usec {}\n", u64::MAX)),
            None
        );
    }

    #[test]
    fn single_values() {
        assert_eq!(
            parse_single(fixture!("v1/cpuacct.usage")),
            Some(197_026_339)
        );
        assert_eq!(
            parse_single(fixture!("v1/memory.max_usage_in_bytes")),
            Some(268_697_600)
        );
        assert_eq!(parse_single(fixture!("v2/memory.peak")), Some(268_697_600));
        assert_eq!(parse_single("max\n"), None);
    }
}
