//! The server's log for operators: one JSON line per event on stdout
//! (`serve --json`), or one human line each on stderr.

use std::io::Write;

use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub json: bool,
}

impl Log {
    /// Logs `event` (an object with an `event` field).
    pub fn event(&self, event: Value) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, &event);
            let _ = writeln!(out);
            let _ = out.flush();
            return;
        }
        let name = event["event"].as_str().unwrap_or("event");
        let fields: Vec<String> = event
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "event")
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        eprintln!("rlm-sandbox serve: {name} {}", fields.join(" "));
    }
}
