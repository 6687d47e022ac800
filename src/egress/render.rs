//! Applying the policy to a stream: redaction of the merged spans and the
//! notices that replace a withheld stream.

use super::{Finding, Hit, Stream};

/// Widens a hit to whole UTF-8 characters (echo spans are byte-granular).
pub(super) fn snap_to_chars(text: &str, hit: &mut Hit) {
    hit.end = hit.end.min(text.len());
    hit.start = hit.start.min(hit.end);
    while !text.is_char_boundary(hit.start) {
        hit.start -= 1;
    }
    while !text.is_char_boundary(hit.end) {
        hit.end += 1;
    }
}

/// Replaces the union of the hits' spans with `[REDACTED:<kind>]` (the
/// kind of the first hit of each merged region), leaving `keep` intact.
pub(super) fn redact(text: &str, sorted_hits: &[Hit], keep: Option<(usize, usize)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < sorted_hits.len() {
        let first = &sorted_hits[i];
        let mut end = first.end;
        i += 1;
        while i < sorted_hits.len() && sorted_hits[i].start <= end {
            end = end.max(sorted_hits[i].end);
            i += 1;
        }
        let start = first.start.max(copied);
        if end <= start {
            continue;
        }
        out.push_str(&text[copied..start]);
        let label = format!("[REDACTED:{}]", first.kind);
        match keep {
            Some((ks, ke)) if start <= ks && ke <= end => {
                if start < ks {
                    out.push_str(&label);
                }
                out.push_str(&text[ks..ke]);
                if ke < end {
                    out.push_str(&label);
                }
            }
            _ => out.push_str(&label),
        }
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

fn kinds_of(findings: &[Finding]) -> String {
    let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds.join(", ")
}

pub(super) fn block_notice(stream: Stream, findings: &[Finding]) -> String {
    format!(
        "[rlm-sandbox: {} withheld by the egress filter (policy block): {} finding(s): {}]\n",
        stream.name(),
        findings.len(),
        kinds_of(findings)
    )
}

pub(super) fn echo_notice(stream: Stream, echoed: usize) -> String {
    format!(
        "[rlm-sandbox: {} withheld: it reproduced about {echoed} bytes of the context verbatim. \
         The context is already loaded; search it (e.g. re.finditer, str.find) or slice it, \
         and print only the short parts or the results you need.]\n",
        stream.name()
    )
}
