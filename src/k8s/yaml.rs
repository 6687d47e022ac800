//! YAML for manifests: a block-style writer for what `k8s render` prints,
//! and a strict reader for what `k8s check` is given.
//!
//! Writing needs no YAML library: every string is double-quoted with
//! JSON-compatible escapes (so `"true"` stays a string for every YAML
//! version and parser), keys are plain only when no YAML reads them as
//! anything but a string. Reading uses yaml-rust2 (serde_yaml and its fork
//! serde_yml are unmaintained; yaml-rust2 is the maintained YAML 1.2
//! parser), turned into `serde_json::Value` with every ambiguity refused:
//! duplicate keys (yaml-rust2 refuses them), non-string keys, values YAML
//! cannot represent in JSON. A hand-edit the API server would read
//! differently (a YAML 1.1 `yes`) stays a string here, so it fails the
//! policy instead of passing it.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Documents as a multi-document YAML stream (`---` before each).
pub fn to_stream(documents: &[Value]) -> String {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        write_value(doc, &mut out);
    }
    out
}

/// One value as a YAML document body.
pub fn write_value(value: &Value, out: &mut String) {
    if is_inline(value) {
        out.push_str(&inline(value));
        out.push('\n');
    } else {
        block(value, 0, out);
    }
}

fn is_inline(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A non-empty mapping or sequence, each line indented by `indent`.
fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                out.push_str(&pad);
                out.push_str(&key_text(key));
                out.push(':');
                if is_inline(value) {
                    out.push(' ');
                    out.push_str(&inline(value));
                    out.push('\n');
                } else {
                    out.push('\n');
                    block(value, indent + 2, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                if is_inline(item) {
                    out.push(' ');
                    out.push_str(&inline(item));
                    out.push('\n');
                } else {
                    // The nested block at indent + 2, its first line's
                    // indentation taken by "- ".
                    let mut nested = String::new();
                    block(item, indent + 2, &mut nested);
                    out.push(' ');
                    out.push_str(&nested[indent + 2..]);
                }
            }
        }
        _ => {
            out.push_str(&pad);
            out.push_str(&inline(v));
            out.push('\n');
        }
    }
}

/// A key, plain when it is a simple identifier no YAML version reads as a
/// boolean, null or number; quoted otherwise.
fn key_text(key: &str) -> String {
    const SPECIAL: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let simple = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        && !SPECIAL.contains(&key.to_ascii_lowercase().as_str());
    if simple {
        key.to_string()
    } else {
        quote(key)
    }
}

/// A YAML double-quoted scalar: `"` and `\` escaped, every character YAML
/// does not allow raw (C0 and C1 controls, DEL, U+2028/9, BOM, U+FFFE/F)
/// as `\uXXXX`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("not YAML (or JSON): {0}")]
    Syntax(String),
    #[error("at {path}: {problem}; accepted: mappings with string keys, sequences, strings, numbers, booleans, null")]
    Shape { path: String, problem: String },
}

/// Every document of a YAML (or JSON, which is YAML) stream; empty
/// documents (a trailing `---`) are skipped.
pub fn parse_stream(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    docs.iter()
        .filter(|d| !matches!(d, Yaml::Null))
        .map(|d| to_json(d, "(document)"))
        .collect()
}

fn to_json(y: &Yaml, path: &str) -> Result<Value, YamlError> {
    let shape = |problem: String| YamlError::Shape {
        path: path.to_string(),
        problem,
    };
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(text) => {
            let f: f64 = text
                .parse()
                .map_err(|_| shape(format!("{text:?} is not a finite number")))?;
            Value::Number(
                Number::from_f64(f).ok_or_else(|| shape(format!("{text:?} is not finite")))?,
            )
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (key, value) in hash {
                let Yaml::String(key) = key else {
                    return Err(shape(format!("the key {key:?} is not a string")));
                };
                let child = if path == "(document)" {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                map.insert(key.clone(), to_json(value, &child)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(shape(
                "an unresolved alias or an invalid tagged value".into(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: &Value) -> Value {
        let text = to_stream(std::slice::from_ref(v));
        let mut docs = parse_stream(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(docs.len(), 1, "{text}");
        docs.remove(0)
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let tricky = [
            "",
            "true",
            "yes",
            "on",
            "~",
            "null",
            "1",
            "0x10",
            "1e3",
            "- a",
            "a: b",
            "#x",
            "{x}",
            "[x]",
            "'",
            "\"",
            "\\",
            "line\nbreak",
            "tab\there",
            "\u{7f}",
            "\u{85}",
            "\u{1}",
            "\u{2028}",
            "é ü 🦀",
            " leading",
            "trailing ",
            "*alias",
            "&anchor",
            "!tag",
            "%directive",
            "@at",
            "`tick",
            "|",
            ">",
            "---",
            "...",
        ];
        let strings: Vec<Value> = tricky.iter().map(|s| json!(s)).collect();
        let keys: Map<String, Value> = tricky.iter().map(|s| (s.to_string(), json!(s))).collect();
        let v = json!({
            "apiVersion": "v1",
            "strings": strings,
            "keys": keys,
            "numbers": [0, -1, 536870912u64, 0.5, 1e-3],
            "flags": [true, false, null],
            "empty": {"map": {}, "list": []},
            "nested": [[1, [2, {"a": [3]}]], {"b": {"c": [{"d": 1, "e": [{}]}]}}],
            "dev.gvisor.flag.oci-seccomp": "true",
        });
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn strings_that_look_like_other_types_stay_strings() {
        let text = to_stream(&[json!({"a": "true", "b": "512", "yes": "no"})]);
        assert!(text.contains("a: \"true\""), "{text}");
        assert!(text.contains("\"yes\": \"no\""), "{text}");
    }

    #[test]
    fn several_documents_and_json_are_read() {
        let docs = parse_stream("---\na: 1\n---\n{\"b\": [true]}\n---\n").expect("parses");
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": [true]})]);
    }

    #[test]
    fn ambiguous_yaml_is_refused() {
        for (text, why) in [
            ("a: 1\na: 2\n", "duplicated key"),
            ("? [1]\n: x\n", "not a string"),
            ("1: x\n", "not a string"),
            ("a: [\n", "not YAML"),
            ("a: .inf\n", "finite"),
        ] {
            let err = parse_stream(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
