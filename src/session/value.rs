//! A cell's value: the value of its trailing expression when that is not
//! None (as DSPy's interpreters and notebooks report it), carried by the
//! agent's `done` and the session's `cell`. It comes from the sandbox, so
//! it is read strictly and bounded, and it leaves only through the egress
//! filter, as output does.

use serde::{Deserialize, Serialize};

use crate::capture::CapturedStream;
use crate::egress::{ContextEchoIndex, EgressFilter, Finding, Policy, Stream};

/// Longest `repr` the agent may send (UTF-8 bytes); the agent cuts it there.
pub const MAX_VALUE_REPR: usize = 64 << 10;

/// What a value's repr becomes when only its JSON form showed a finding
/// (the two say the same thing, escaped differently).
pub const WITHHELD: &str = "[value withheld by the egress filter]";

/// A cell's value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CellValue {
    /// `repr()` of the value, at most [`MAX_VALUE_REPR`] bytes.
    pub repr: String,
    /// The repr was cut at [`MAX_VALUE_REPR`] (or shortened: a huge
    /// container's repr shows its first items).
    pub truncated: bool,
    /// Its JSON form (`json.dumps` with `allow_nan=False` succeeds), or
    /// null when it has none of at most 1 MiB, 64 levels deep, with only
    /// 64-bit integers.
    pub json: Option<serde_json::Value>,
}

impl CellValue {
    /// Checks what serde cannot: the repr's bound.
    pub fn check(&self) -> Result<(), String> {
        if self.repr.len() > MAX_VALUE_REPR {
            return Err(format!(
                "a value whose repr is {} bytes; the limit is {MAX_VALUE_REPR}",
                self.repr.len()
            ));
        }
        Ok(())
    }

    /// The value as it may leave: the repr filtered as output is (stream
    /// `value`); the JSON form released only when the filter acted on
    /// nothing in it (its text and each of its strings, raw, are scanned),
    /// else null, and the repr too is withheld if its own scan found
    /// nothing (the findings then have the span `[0, 0]`).
    pub fn filter(
        self,
        egress: &EgressFilter,
        extra: &[ContextEchoIndex],
    ) -> (CellValue, Vec<Finding>) {
        let scan = |text: String| {
            let captured = CapturedStream {
                head: text.into_bytes(),
                tail: Vec::new(),
                dropped: 0,
            };
            egress.filter_with_contexts(Stream::Value, captured, extra)
        };
        let acts = |findings: &[Finding]| findings.iter().any(|f| f.action != Policy::Warn);
        let repr = scan(self.repr);
        let mut findings = repr.findings;
        let mut json = self.json;
        let mut text = repr.text;
        if let Some(value) = &json {
            let mut strings = serde_json::to_string(value).unwrap_or_default();
            collect_strings(value, &mut strings);
            let found = scan(strings).findings;
            if acts(&found) {
                json = None;
                if !acts(&findings) {
                    text = WITHHELD.to_string();
                    findings.extend(found.into_iter().map(|f| Finding { span: [0, 0], ..f }));
                }
            }
        }
        let value = CellValue {
            repr: text,
            truncated: self.truncated,
            json,
        };
        (value, findings)
    }
}

/// Appends every string of `value` (keys too) to `out`, one per line,
/// unescaped: an echo of a multi-line context is seen as it would print.
fn collect_strings(value: &serde_json::Value, out: &mut String) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s) => {
                out.push('\n');
                out.push_str(s);
            }
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    out.push('\n');
                    out.push_str(key);
                    stack.push(item);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::egress::EgressConfig;
    use serde_json::json;

    fn filter() -> EgressFilter {
        EgressFilter::new(EgressConfig::default()).unwrap()
    }

    fn value(repr: &str, json: serde_json::Value) -> CellValue {
        CellValue {
            repr: repr.into(),
            truncated: false,
            json: Some(json),
        }
    }

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    #[test]
    fn a_clean_value_passes_whole() {
        let v = value("{'a': [1, 2]}", json!({"a": [1, 2]}));
        let (out, findings) = v.clone().filter(&filter(), &[]);
        assert_eq!((out, findings), (v, vec![]));
    }

    #[test]
    fn a_secret_is_redacted_in_the_repr_and_the_json_withheld() {
        let v = value(&format!("{{'key': '{KEY}'}}"), json!({"key": KEY}));
        let (out, findings) = v.filter(&filter(), &[]);
        assert_eq!(out.json, None);
        assert!(
            !out.repr.contains(KEY) && out.repr.contains("[REDACTED:"),
            "{}",
            out.repr
        );
        assert!(!findings.is_empty());
        assert!(findings
            .iter()
            .all(|f| f.stream == Stream::Value && f.span != [0, 0]));
    }

    #[test]
    fn a_finding_only_in_the_json_form_withholds_both() {
        // The JSON form holds a secret the repr does not show (a hostile
        // agent may send anything): nothing of the value leaves.
        let v = value("'harmless'", json!([KEY]));
        let (out, findings) = v.filter(&filter(), &[]);
        assert_eq!((out.repr.as_str(), out.json), (WITHHELD, None));
        assert!(!findings.is_empty() && findings.iter().all(|f| f.span == [0, 0]));
    }

    #[test]
    fn a_long_repr_is_refused() {
        let mut v = value("x", json!(null));
        assert!(v.check().is_ok());
        v.repr = "x".repeat(MAX_VALUE_REPR + 1);
        assert!(v.check().unwrap_err().contains("limit is 65536"));
    }
}
