//! A connection's first line: what the client asks of the server, read
//! without taking a byte past its newline (what follows is the session
//! protocol, read by the session itself), and parsed strictly.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::session::serve::MAX_LINE;

/// The accepted forms, for errors.
pub const FORMS: &str = r#"{"op": "session", "args": [...]}, {"op": "run", "code": "...", "args": [...]} or {"op": "stats"}"#;

/// What a connection asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// A session: the session's flags (sandbox limits and the claim's).
    Session {
        args: Vec<String>,
    },
    /// A one-shot run of `code`, answered with run's result.
    Run {
        code: String,
        args: Vec<String>,
    },
    Stats,
}

/// Reads one line (without its newline), at most `MAX_LINE` bytes;
/// `Ok(None)` when the peer closed first. A read timeout set on `stream`
/// bounds a peer that sends nothing.
pub fn read_line(stream: &UnixStream) -> Result<Option<Vec<u8>>, String> {
    use nix::sys::socket::{recv, MsgFlags};
    let fd = stream.as_raw_fd();
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match recv(fd, &mut buf, MsgFlags::MSG_PEEK) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => return Err("the connection ended inside its first line".into()),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                return Err("no first line in time: a connection opens with one request".into())
            }
            Err(e) => return Err(format!("cannot read the first line: {e}")),
        };
        let (take, done) = match memchr::memchr(b'\n', &buf[..n]) {
            Some(i) => (i + 1, true),
            None => (n, false),
        };
        // Consumes exactly what was peeked up to the newline.
        let got = recv(fd, &mut buf[..take], MsgFlags::empty())
            .map_err(|e| format!("cannot read the first line: {e}"))?;
        let whole = got == take;
        line.extend_from_slice(&buf[..got]);
        if line.len() > MAX_LINE + 1 {
            return Err(format!("the first line is longer than {MAX_LINE} bytes"));
        }
        if done && whole {
            line.pop();
            return Ok(Some(line));
        }
    }
}

/// Parses the first line; the error names what is wrong and the forms.
pub fn parse(line: &[u8]) -> Result<Opening, String> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| format!("the first line is not JSON ({e}); expected {FORMS}"))?;
    let Value::Object(mut body) = value else {
        return Err(format!(
            "the first line must be a JSON object; expected {FORMS}"
        ));
    };
    let op = match body.remove("op") {
        Some(Value::String(op)) => op,
        _ => {
            return Err(format!(
                "the first line needs \"op\", a string; expected {FORMS}"
            ))
        }
    };
    let allowed: &[&str] = match op.as_str() {
        "session" => &["args"],
        "run" => &["args", "code"],
        "stats" => &[],
        other => return Err(format!("unknown op {other:?}; expected {FORMS}")),
    };
    if let Some(extra) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "op {op:?} has no field {extra:?}; expected {FORMS}"
        ));
    }
    let args = match body.remove("args") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(format!(
                    "\"args\" must be a list of strings; expected {FORMS}"
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "\"args\" must be a list of strings; expected {FORMS}"
            ))
        }
    };
    Ok(match op.as_str() {
        "session" => Opening::Session { args },
        "run" => match body.remove("code") {
            Some(Value::String(code)) => Opening::Run { code, args },
            _ => {
                return Err(format!(
                    "op \"run\" needs \"code\", a string; expected {FORMS}"
                ))
            }
        },
        _ => Opening::Stats,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn openings_are_parsed_strictly() {
        assert_eq!(
            parse(br#"{"op":"session","args":["--memory","1g"]}"#).unwrap(),
            Opening::Session {
                args: vec!["--memory".into(), "1g".into()]
            }
        );
        assert_eq!(
            parse(br#"{"op":"run","code":"print(1)"}"#).unwrap(),
            Opening::Run {
                code: "print(1)".into(),
                args: vec![]
            }
        );
        assert_eq!(parse(br#"{"op":"stats"}"#).unwrap(), Opening::Stats);
        for (line, want) in [
            ("x", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"args":[]}"#, "needs \"op\""),
            (r#"{"op":"exec"}"#, "unknown op \"exec\""),
            (r#"{"op":"run"}"#, "needs \"code\""),
            (r#"{"op":"session","args":"--x"}"#, "list of strings"),
            (r#"{"op":"session","args":[1]}"#, "list of strings"),
            (r#"{"op":"stats","id":1}"#, "no field \"id\""),
        ] {
            let e = parse(line.as_bytes()).unwrap_err();
            assert!(
                e.contains(want) && e.contains("\"op\": \"stats\""),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn the_first_line_is_read_and_nothing_after_it() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"op\":\"stats\"}\n{\"id\":1}\n").unwrap();
        assert_eq!(read_line(&a).unwrap().unwrap(), br#"{"op":"stats"}"#);
        assert_eq!(read_line(&a).unwrap().unwrap(), br#"{"id":1}"#);
        drop(b);
        assert_eq!(read_line(&a).unwrap(), None);
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"op\"").unwrap();
        drop(b);
        assert!(read_line(&a).unwrap_err().contains("ended inside"));
    }
}
