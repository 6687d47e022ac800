//! A cell's value: the value of its trailing expression when that is not
//! None (as DSPy's interpreters and notebooks report it), carried by the
//! agent's `done` and the session's `cell`. It comes from the sandbox, so
//! it is read strictly and bounded, and it leaves only through the egress
//! filter, as output does.

use serde::{Deserialize, Serialize};

use crate::capture::CapturedStream;
use crate::egress::{ContextEchoIndex, EgressFilter, FilteredStream, Finding, Policy, Stream};

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

    /// The value as it may leave. The repr is filtered as output is
    /// (stream `value`). The JSON form is scanned as its text and its
    /// strings as they would print (escaping hides an echo of multi-line
    /// text); when the filter acts on it, each string is filtered as text
    /// in place (a redaction stays valid JSON, as in printed output) and
    /// the form is withheld (null) if the filter still acts on the result
    /// (what spans several strings) or acted on a key. When the JSON form
    /// had a finding its repr did not show, the repr is withheld too;
    /// those findings have the span `[0, 0]`.
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
        let repr = scan(self.repr);
        let mut findings = repr.findings;
        let mut text = repr.text;
        let mut in_json = Vec::new();
        let json = self.json.and_then(|mut value| {
            let first = scan(printable(&value)).findings;
            if !acts(&first) {
                return Some(value);
            }
            let keys_clean = redact_strings(&mut value, &scan, &mut in_json);
            let again = scan(printable(&value)).findings;
            let release = keys_clean && !acts(&again);
            in_json.extend(first);
            release.then_some(value)
        });
        if acts(&in_json) && !acts(&findings) {
            text = WITHHELD.to_string();
            findings.extend(in_json.into_iter().map(|f| Finding { span: [0, 0], ..f }));
        }
        let value = CellValue {
            repr: text,
            truncated: self.truncated,
            json,
        };
        (value, findings)
    }
}

/// Strings shorter than this are not redacted one by one: the scan of
/// them all (`printable`) decides whether the JSON form may leave.
const MIN_SCANNED_STRING: usize = 16;

/// What the filter scans of a JSON form: its text, then each of its
/// strings (keys too), in order, on a line of its own, unescaped.
fn printable(value: &serde_json::Value) -> String {
    fn strings(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push('\n');
                out.push_str(s);
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    out.push('\n');
                    out.push_str(key);
                    strings(item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = serde_json::to_string(value).unwrap_or_default();
    strings(value, &mut out);
    out
}

/// Whether the filter acts on any of `findings` (under `warn` it only reports).
fn acts(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.action != Policy::Warn)
}

/// Filters every string value of `value` in place (the filtered text
/// replaces it), adding the findings to `found`; false when the filter
/// acts on a key (a key cannot be redacted in place).
fn redact_strings(
    value: &mut serde_json::Value,
    scan: &impl Fn(String) -> FilteredStream,
    found: &mut Vec<Finding>,
) -> bool {
    match value {
        serde_json::Value::String(s) if s.len() >= MIN_SCANNED_STRING => {
            let filtered = scan(std::mem::take(s));
            *s = filtered.text;
            found.extend(filtered.findings);
            true
        }
        serde_json::Value::Array(items) => {
            // Every item, even after a dirty one: each is redacted.
            let mut clean = true;
            for item in items {
                clean &= redact_strings(item, scan, found);
            }
            clean
        }
        serde_json::Value::Object(map) => {
            let mut clean = true;
            for (key, item) in map.iter_mut() {
                if key.len() >= MIN_SCANNED_STRING {
                    let filtered = scan(key.clone());
                    clean &= !acts(&filtered.findings);
                    found.extend(filtered.findings);
                }
                clean &= redact_strings(item, scan, found);
            }
            clean
        }
        _ => true,
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
    fn a_secret_is_redacted_in_the_repr_and_in_its_json_string() {
        let v = value(
            &format!("{{'key': 'id {KEY}'}}"),
            json!({"key": format!("id {KEY}")}),
        );
        let (out, findings) = v.filter(&filter(), &[]);
        assert_eq!(
            out.json,
            Some(json!({"key": "id [REDACTED:aws_access_key_id]"}))
        );
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
    fn a_finding_only_in_the_json_form_withholds_the_repr() {
        // The JSON form holds a secret the repr does not show (a hostile
        // agent may send anything): the repr does not leave.
        let v = value("'harmless'", json!([format!("key {KEY}")]));
        let (out, findings) = v.filter(&filter(), &[]);
        assert_eq!(out.repr, WITHHELD);
        assert_eq!(out.json, Some(json!(["key [REDACTED:aws_access_key_id]"])));
        assert!(!findings.is_empty() && findings.iter().all(|f| f.span == [0, 0]));
    }

    #[test]
    fn a_finding_in_a_key_withholds_the_json() {
        // A key cannot be redacted in place: the JSON form does not leave.
        let in_key = value("'x'", json!({ format!("key {KEY}"): 1 }));
        let (out, findings) = in_key.filter(&filter(), &[]);
        assert_eq!((out.json, out.repr.as_str()), (None, WITHHELD));
        assert!(!findings.is_empty());
    }

    #[test]
    fn an_echo_hidden_by_escaping_is_found_in_the_strings() {
        // Short lines: the escaped JSON text and the repr hide the echo
        // (`\n` between the lines); the strings as they print do not.
        let lines: Vec<String> = (0..300)
            .map(|i| {
                ["alpha beta", "gamma delta", "eps zeta", "eta theta"][i % 4].to_string()
                    + &i.to_string()
            })
            .collect();
        let context = lines.join("\n");
        let cfg = EgressConfig::default();
        let egress = EgressFilter::new(cfg.clone())
            .unwrap()
            .with_context(ContextEchoIndex::build(context.as_bytes(), &cfg.echo));
        let whole = value(&format!("{context:?}"), json!(context));
        let (out, findings) = whole.filter(&egress, &[]);
        assert!(!findings.is_empty());
        assert!(!out.json.unwrap().as_str().unwrap().contains("gamma delta1"));
        assert!(!out.repr.contains("gamma delta1"), "{}", out.repr);
        // The lines as a list: no string is an echo alone, all of them are.
        let list = value("[...]", json!(lines));
        let (out, _) = list.filter(&egress, &[]);
        assert_eq!((out.json, out.repr.as_str()), (None, WITHHELD));
    }

    #[test]
    fn a_long_repr_is_refused() {
        let mut v = value("x", json!(null));
        assert!(v.check().is_ok());
        v.repr = "x".repeat(MAX_VALUE_REPR + 1);
        assert!(v.check().unwrap_err().contains("limit is 65536"));
    }
}
