//! What a session's sandbox sends to the host besides its output and its
//! value (`value.rs`), through the egress filter as output is: a cell's
//! final answer and a `get`'s repr (stream `final_answer`, `get`: every
//! detector, the context echo check included, since either can carry the
//! whole context; an answer may repeat a context under 64 bytes), and a tool call's arguments (stream `tool_args`: the
//! secret detectors only, as a prompt; the callable is the host user's,
//! and giving it parts of the context is what it is for), and the names
//! and type names `vars` lists (stream `vars`: code chooses them too).

use serde_json::{Map, Value};

use super::frames::VarInfo;
use crate::capture::CapturedStream;
use crate::egress::{ContextEchoIndex, EgressFilter, Finding, Stream};

/// `text` filtered as output is, for `stream`, with `extra` contexts.
fn as_output(
    egress: &EgressFilter,
    extra: &[ContextEchoIndex],
    stream: Stream,
    text: String,
) -> (String, Vec<Finding>) {
    let captured = CapturedStream {
        head: text.into_bytes(),
        tail: Vec::new(),
        dropped: 0,
    };
    let out = egress.filter_with_contexts(stream, captured, extra);
    (out.text, out.findings)
}

/// A cell's final answer as it may leave: filtered as output, except
/// that an answer may repeat a context shorter than 64 bytes whole
/// ([`EgressFilter::filter_answer`]).
pub fn final_answer(
    egress: &EgressFilter,
    extra: &[ContextEchoIndex],
    answer: Option<String>,
) -> (Option<String>, Vec<Finding>) {
    match answer {
        None => (None, Vec::new()),
        Some(text) => {
            let out = egress.filter_answer(Stream::FinalAnswer, text, extra);
            (Some(out.text), out.findings)
        }
    }
}

/// A `get` reply as it may leave: only its `type` (a string), `repr` (a
/// string) and `truncated` (a boolean), anything else the agent added
/// dropped; the repr and the type name filtered (stream `get`), and the
/// findings added (`findings`; spans in the repr, or in the type name).
pub fn get_reply(
    egress: &EgressFilter,
    extra: &[ContextEchoIndex],
    mut reply: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut take_str = |field: &str| match reply.remove(field) {
        Some(Value::String(s)) => Ok(s),
        other => Err(format!(
            "the agent's get reply has {field} {}; a string was expected",
            other.map_or_else(|| "missing".to_string(), |v| kind_of(&v).to_string())
        )),
    };
    let (type_name, repr) = (take_str("type")?, take_str("repr")?);
    let truncated = match reply.remove("truncated") {
        Some(Value::Bool(b)) => b,
        other => {
            return Err(format!(
                "the agent's get reply has truncated {}; true or false was expected",
                other.map_or_else(|| "missing".to_string(), |v| kind_of(&v).to_string())
            ))
        }
    };
    let (repr, mut findings) = as_output(egress, extra, Stream::Get, repr);
    let (type_name, in_type) = as_output(egress, extra, Stream::Get, type_name);
    findings.extend(in_type);
    let mut out = Map::new();
    out.insert("type".into(), type_name.into());
    out.insert("repr".into(), repr.into());
    out.insert("truncated".into(), truncated.into());
    out.insert(
        "findings".into(),
        serde_json::to_value(findings).unwrap_or_default(),
    );
    Ok(out)
}

/// The user's globals as they may leave: each name and type name
/// filtered as output is (stream `vars`; spans in that string).
pub fn var_list(
    egress: &EgressFilter,
    extra: &[ContextEchoIndex],
    vars: Vec<VarInfo>,
) -> (Vec<VarInfo>, Vec<Finding>) {
    let mut findings = Vec::new();
    let mut scan = |text: String| {
        let (text, found) = as_output(egress, extra, Stream::Vars, text);
        findings.extend(found);
        text
    };
    let vars = vars
        .into_iter()
        .map(|v| VarInfo {
            name: scan(v.name),
            type_name: scan(v.type_name),
            size: v.size,
        })
        .collect();
    (vars, findings)
}

/// A `vars` reply's list, read strictly (`[{name, type, size}]`) and
/// filtered as [`var_list`].
pub fn vars_reply(
    egress: &EgressFilter,
    extra: &[ContextEchoIndex],
    vars: Option<Value>,
) -> Result<(Vec<VarInfo>, Vec<Finding>), String> {
    let vars: Vec<VarInfo> = serde_json::from_value(vars.unwrap_or(Value::Null)).map_err(|e| {
        format!("the agent's vars reply is not a list of {{name, type, size}}: {e}")
    })?;
    Ok(var_list(egress, extra, vars))
}

/// How a JSON value is named in an error ("a string", "an array", …).
pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A tool call's arguments as they may reach the host's callable: every
/// string in them, keys too, filtered for secrets (stream `tool_args`;
/// spans in that string). The structure stays: a redacted string is
/// replaced in place, so the arguments are still the JSON the tool takes.
pub fn tool_args(
    egress: &EgressFilter,
    args: Map<String, Value>,
) -> (Map<String, Value>, Vec<Finding>) {
    let mut findings = Vec::new();
    let args = filter_map(egress, args, &mut findings);
    (args, findings)
}

fn filter_string(egress: &EgressFilter, s: String, found: &mut Vec<Finding>) -> String {
    let out = egress.filter_secrets(Stream::ToolArgs, s);
    found.extend(out.findings);
    out.text
}

fn filter_map(
    egress: &EgressFilter,
    map: Map<String, Value>,
    found: &mut Vec<Finding>,
) -> Map<String, Value> {
    map.into_iter()
        .map(|(key, value)| {
            let key = filter_string(egress, key, found);
            (key, filter_value(egress, value, found))
        })
        .collect()
}

fn filter_value(egress: &EgressFilter, value: Value, found: &mut Vec<Finding>) -> Value {
    match value {
        Value::String(s) => Value::String(filter_string(egress, s, found)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| filter_value(egress, item, found))
                .collect(),
        ),
        Value::Object(map) => Value::Object(filter_map(egress, map, found)),
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::egress::{EgressConfig, Policy};
    use serde_json::json;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    fn filter(policy: Policy) -> EgressFilter {
        EgressFilter::new(EgressConfig {
            policy,
            ..EgressConfig::default()
        })
        .unwrap()
    }

    fn context_filter(context: &str) -> EgressFilter {
        let cfg = EgressConfig::default();
        EgressFilter::new(cfg.clone())
            .unwrap()
            .with_context(ContextEchoIndex::build(context.as_bytes(), &cfg.echo))
    }

    fn ledger() -> String {
        (0..40)
            .map(|i| {
                format!(
                    "Line {i}: account {} holds {} crowns.",
                    i * 7919,
                    i * 104_729
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_final_answer_is_filtered_as_output_with_the_echo_check() {
        let f = filter(Policy::Redact);
        let (answer, findings) = final_answer(&f, &[], Some(format!("key {KEY}")));
        assert_eq!(answer.as_deref(), Some("key [REDACTED:aws_access_key_id]"));
        assert_eq!(findings[0].stream, Stream::FinalAnswer);
        assert_eq!(final_answer(&f, &[], None), (None, vec![]));
        let context = ledger();
        let f = context_filter(&context);
        let quote = context.lines().nth(5).unwrap().to_string();
        assert_eq!(
            final_answer(&f, &[], Some(quote.clone())),
            (Some(quote), vec![])
        );
        let (answer, findings) = final_answer(&f, &[], Some(context.clone()));
        assert!(!answer.unwrap().contains("account 7919"));
        assert_eq!(findings[0].kind, "context_echo");
        // A one-line context repeated whole passes in an answer (it is an
        // echo in output); one of 64 bytes or more does not.
        let short = "The fruit is a kiwi.";
        let f = context_filter(short);
        let answer = format!("SUB(Name the fruit in: {short})");
        assert_eq!(
            final_answer(&f, &[], Some(answer.clone())),
            (Some(answer), vec![])
        );
        let out = f.filter_text(Stream::Stdout, short.as_bytes());
        assert_eq!(out.findings[0].kind, "context_echo");
        let longer = "The fruit is a kiwi, picked in the orchard north of the river at dawn.";
        let f = context_filter(longer);
        let (answer, findings) = final_answer(&f, &[], Some(longer.into()));
        assert_eq!(answer.as_deref(), Some("[REDACTED:context_echo]"));
        assert_eq!(findings[0].kind, "context_echo");
        // Under warn it passes, reported.
        let (answer, findings) = final_answer(&filter(Policy::Warn), &[], Some(KEY.into()));
        assert_eq!(
            (answer.as_deref(), findings[0].action),
            (Some(KEY), Policy::Warn)
        );
    }

    #[test]
    fn a_get_reply_is_filtered_and_read_strictly() {
        let f = filter(Policy::Redact);
        let reply = |v: Value| v.as_object().unwrap().clone();
        let out = get_reply(
            &f,
            &[],
            reply(
                json!({"type": "str", "repr": format!("'{KEY}'"), "truncated": false, "leak": KEY}),
            ),
        )
        .unwrap();
        assert_eq!(out["repr"], "'[REDACTED:aws_access_key_id]'");
        assert_eq!(out["findings"][0]["stream"], "get");
        assert!(!out.contains_key("leak"), "unknown fields are dropped");
        let out = get_reply(
            &f,
            &[],
            reply(json!({"type": KEY, "repr": "1", "truncated": true})),
        )
        .unwrap();
        assert_eq!(out["type"], "[REDACTED:aws_access_key_id]");
        for bad in [
            json!({"repr": "1", "truncated": false}),
            json!({"type": "int", "repr": 1, "truncated": false}),
            json!({"type": "int", "repr": "1", "truncated": "no"}),
        ] {
            let err = get_reply(&f, &[], reply(bad.clone())).unwrap_err();
            assert!(err.contains("was expected"), "{bad}: {err}");
        }
    }

    #[test]
    fn var_names_and_types_are_filtered_and_the_reply_read_strictly() {
        let f = filter(Policy::Redact);
        let reply = json!([{"name": KEY, "type": "int", "size": null}, {"name": "x", "type": KEY, "size": 3}]);
        let (vars, findings) = vars_reply(&f, &[], Some(reply)).unwrap();
        assert_eq!(vars[0].name, "[REDACTED:aws_access_key_id]");
        assert_eq!((vars[1].name.as_str(), vars[1].size), ("x", Some(3)));
        assert_eq!(vars[1].type_name, "[REDACTED:aws_access_key_id]");
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.stream == Stream::Vars));
        for bad in [
            json!("x"),
            json!([{"name": "x", "type": "int", "size": null, "leak": KEY}]),
        ] {
            assert!(vars_reply(&f, &[], Some(bad)).is_err());
        }
    }

    #[test]
    fn tool_args_are_filtered_in_place_for_secrets_only() {
        let f = context_filter(&ledger());
        let args =
            json!({"q": ["id", {"k": format!("key {KEY}")}], KEY: 1, "n": 2, "doc": ledger()});
        let (out, findings) = tool_args(&f, args.as_object().unwrap().clone());
        assert_eq!(
            Value::Object(out),
            json!({"q": ["id", {"k": "key [REDACTED:aws_access_key_id]"}],
                   "[REDACTED:aws_access_key_id]": 1, "n": 2, "doc": ledger()})
        );
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.stream == Stream::ToolArgs));
    }
}
