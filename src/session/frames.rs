//! The frames between the host and the agent (docs/PROTOCOL.md, "Agent
//! frames"): `u32` big-endian length, one type byte, the payload.
//!
//! Everything read here comes from the sandbox and is hostile: the length
//! is checked before anything is allocated, JSON must be one object with a
//! known `t` and typed fields, and any violation is an error that ends the
//! session (never the host).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::calls::CallKind;
use super::value::CellValue;

pub const JSON: u8 = b'J';
pub const STDOUT: u8 = b'1';
pub const STDERR: u8 = b'2';

/// Largest output chunk the agent sends.
pub const MAX_CHUNK: usize = 64 << 10;

/// Which bindings of a cell outlive it: the `exec` option `namespace`
/// (docs/PROTOCOL.md). `Session` keeps them all; `Rlms` keeps what rlms's
/// LocalREPL keeps, so an rlms environment needs no second cell per cell
/// to undo the rest: none of a cell that did not end `ok`, and none of
/// names starting with `_`. `Script` runs the cell as `python3 FILE` runs
/// a file, in a fresh `__main__` of its own, and reports its exit status
/// (a one-shot run drawn from a standby: [`super::Session::run_script`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CellNamespace {
    #[default]
    Session,
    Rlms,
    Script,
}

impl CellNamespace {
    /// The option's value in a request: absent or null is `session`.
    pub fn parse(value: Option<&serde_json::Value>) -> Result<Self, String> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(Self::Session),
            Some(serde_json::Value::String(s)) if s == "session" => Ok(Self::Session),
            Some(serde_json::Value::String(s)) if s == "rlms" => Ok(Self::Rlms),
            Some(serde_json::Value::String(s)) if s == "script" => Ok(Self::Script),
            Some(other) => Err(format!(
                "field \"namespace\" must be \"session\", \"rlms\" or \"script\", got {other}"
            )),
        }
    }

    /// Its name in the `exec` frame.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Rlms => "rlms",
            Self::Script => "script",
        }
    }
}

/// Most names one `exec` may keep or restore (a DSPy step's inputs are a
/// handful; the bound keeps a hostile request's frame small).
pub const MAX_KEPT_NAMES: usize = 1024;
/// Longest name in `keep` / `restore`, in bytes.
pub const MAX_KEPT_NAME_BYTES: usize = 256;

/// An `exec`'s options beside its code (docs/PROTOCOL.md, `exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellOptions {
    /// List the user's globals in the `done`.
    pub vars: bool,
    pub namespace: CellNamespace,
    /// Globals the agent keeps after the cell, when it ended `ok`.
    pub keep: Vec<String>,
    /// Globals bound to their kept values before the code runs: a step
    /// whose inputs did not change rebinds them in its own cell.
    pub restore: Vec<String>,
    /// Code run on its own before the code, in the same cell: the code
    /// runs only when it ended ok, and `keep` then keeps what it bound
    /// (a step's preparation and its code in one cell).
    pub setup: Option<String>,
}

impl CellOptions {
    /// `keep` or `restore` from a request: absent or null is none, else
    /// a list of at most [`MAX_KEPT_NAMES`] names, each a non-empty
    /// string of at most [`MAX_KEPT_NAME_BYTES`] bytes (the agent checks
    /// that each is a Python identifier).
    pub fn parse_names(
        field: &str,
        value: Option<&serde_json::Value>,
    ) -> Result<Vec<String>, String> {
        let items = match value {
            None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) if items.len() <= MAX_KEPT_NAMES => items,
            Some(other) => {
                return Err(format!(
                    "field \"{field}\" must be a list of at most {MAX_KEPT_NAMES} names, got {}",
                    shown(other)
                ))
            }
        };
        items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(s) if !s.is_empty() && s.len() <= MAX_KEPT_NAME_BYTES => {
                    Ok(s.clone())
                }
                other => Err(format!(
                    "field \"{field}\" must hold names (non-empty strings of at most \
                     {MAX_KEPT_NAME_BYTES} bytes), got {}",
                    shown(other)
                )),
            })
            .collect()
    }
}

/// A request value in an error message, cut to 80 characters.
fn shown(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// One frame from the agent.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Msg(AgentMsg),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// One user global, as `vars` lists it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VarInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `len()`, where the value has one.
    pub size: Option<u64>,
}

/// A `J` frame from the agent, by its `t`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum AgentMsg {
    /// The agent is up (every import and setup done) and waits for
    /// `hello`: sent once, first.
    Standby,
    Ready {
        python: String,
        #[serde(default)]
        names: Vec<String>,
    },
    Done {
        cell: u64,
        status: DoneStatus,
        final_answer: Option<String>,
        /// The user's globals after the cell, when the `exec` asked.
        #[serde(default)]
        vars: Option<Vec<VarInfo>>,
        /// The cell's trailing expression's value, when not None.
        #[serde(default)]
        value: Option<CellValue>,
        /// A script cell's exit status (0..=255).
        #[serde(default)]
        exit_code: Option<i32>,
        /// How the cell's setup ended, when it had one that ran.
        #[serde(default)]
        setup: Option<DoneStatus>,
    },
    Call(AgentCall),
    /// The cell's output passed the ceiling (`max_output_bytes`): the
    /// agent stopped keeping it; the host interrupts the cell.
    OutputLimit {
        cell: u64,
        #[serde(default)]
        bytes: u64,
    },
    Reply {
        req: u64,
        ok: bool,
        #[serde(default)]
        error: Option<String>,
        #[serde(flatten)]
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

/// A call as the agent sent it: queries carry `prompts`, tools `name` and
/// `args`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AgentCall {
    pub call: u64,
    pub kind: CallKind,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompts: Option<Vec<String>>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DoneStatus {
    Ok,
    Error,
    Interrupted,
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("the sandbox sent a frame of {len} bytes; the limit is {max}")]
    TooLong { len: u64, max: usize },
    #[error("the sandbox sent an empty frame")]
    Empty,
    #[error("the sandbox sent a frame of unknown type 0x{0:02x}")]
    UnknownType(u8),
    #[error("the sandbox sent a bad message: {0}")]
    BadMessage(String),
    #[error("the frame channel broke mid-frame: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame; `Ok(None)` at end of stream between frames.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    if !read_exact_or_eof(r, &mut len)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(len) as u64;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max as u64 {
        return Err(FrameError::TooLong { len, max });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    frame_of(body).map(Some)
}

/// A frame's body (its type byte, then the payload) as a frame.
fn frame_of(mut body: Vec<u8>) -> Result<Frame, FrameError> {
    let payload = body.split_off(1);
    match body[0] {
        JSON => parse_msg(&payload).map(Frame::Msg),
        STDOUT => Ok(Frame::Stdout(payload)),
        STDERR => Ok(Frame::Stderr(payload)),
        other => Err(FrameError::UnknownType(other)),
    }
}

/// Frames from bytes as they arrive (what a poll loop reads from a pipe):
/// checked as [`read_frame`] checks them, the length as soon as its four
/// bytes are in, before any of the body is kept. It holds at most one
/// partial frame beside what the last push brought.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    pos: usize,
    max: usize,
}

impl Decoder {
    /// Refuses frames above `max` bytes.
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            max,
        }
    }

    /// Adds bytes read from the channel.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame pushed, `Ok(None)` until one is complete.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = &self.buf[self.pos..];
        let Some(header) = rest.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max as u64 {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        let end = 4 + len as usize;
        let Some(body) = rest.get(4..end) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.pos += end;
        frame_of(body).map(Some)
    }

    /// Whether part of a frame is buffered (the channel ending now ends it
    /// inside a frame).
    pub fn in_frame(&self) -> bool {
        self.pos < self.buf.len()
    }
}

/// Most names the agent's `ready` may list (the scaffold's names, the
/// tools' and the contexts' among them).
pub const MAX_READY_NAMES: usize = 4096;

/// Parses a `J` payload: one JSON object with a known `t`.
pub fn parse_msg(payload: &[u8]) -> Result<AgentMsg, FrameError> {
    let msg = serde_json::from_slice(payload).map_err(|e| FrameError::BadMessage(e.to_string()))?;
    if let AgentMsg::Ready { names, .. } = &msg {
        let bad = names
            .iter()
            .find(|n| n.is_empty() || n.len() > MAX_KEPT_NAME_BYTES);
        if names.len() > MAX_READY_NAMES || bad.is_some() {
            return Err(FrameError::BadMessage(format!(
                "ready's names must be at most {MAX_READY_NAMES} non-empty names of at most \
                 {MAX_KEPT_NAME_BYTES} bytes, got {} names{}",
                names.len(),
                bad.map(|n| format!(", one of {} bytes", n.len()))
                    .unwrap_or_default()
            )));
        }
    }
    if let AgentMsg::Done {
        value, exit_code, ..
    } = &msg
    {
        if let Some(value) = value {
            value.check().map_err(FrameError::BadMessage)?;
        }
        if let Some(code) = exit_code.filter(|c| !(0..=255).contains(c)) {
            return Err(FrameError::BadMessage(format!(
                "done's exit_code must be 0..=255, got {code}"
            )));
        }
    }
    Ok(msg)
}

/// Fills `buf`, or returns false when the stream ends before its first
/// byte; an end inside it is an error.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes `msg` as one `J` frame (unflushed).
pub fn write_msg(w: &mut impl Write, msg: &serde_json::Value) -> io::Result<()> {
    let payload = serde_json::to_vec(msg)?;
    let len = u32::try_from(payload.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame above 4 GiB"))?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(JSON);
    frame.extend_from_slice(&payload);
    w.write_all(&frame)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_option_is_parsed_strictly() {
        use serde_json::json;
        assert_eq!(CellNamespace::parse(None), Ok(CellNamespace::Session));
        assert_eq!(
            CellNamespace::parse(Some(&json!(null))),
            Ok(CellNamespace::Session)
        );
        assert_eq!(
            CellNamespace::parse(Some(&json!("session"))),
            Ok(CellNamespace::Session)
        );
        assert_eq!(
            CellNamespace::parse(Some(&json!("rlms"))),
            Ok(CellNamespace::Rlms)
        );
        assert_eq!(
            CellNamespace::parse(Some(&json!("script"))),
            Ok(CellNamespace::Script)
        );
        for bad in [json!("RLMS"), json!(true), json!(1), json!(["rlms"])] {
            let err = CellNamespace::parse(Some(&bad)).unwrap_err();
            assert!(err.contains("\"session\", \"rlms\" or \"script\""), "{err}");
        }
        assert_eq!(CellNamespace::Rlms.as_str(), "rlms");
        assert_eq!(CellNamespace::Script.as_str(), "script");
    }

    #[test]
    fn keep_and_restore_are_parsed_strictly() {
        use serde_json::json;
        assert_eq!(CellOptions::parse_names("keep", None), Ok(vec![]));
        assert_eq!(
            CellOptions::parse_names("keep", Some(&json!(null))),
            Ok(vec![])
        );
        assert_eq!(
            CellOptions::parse_names("restore", Some(&json!(["a", "b_2"]))),
            Ok(vec!["a".to_string(), "b_2".to_string()])
        );
        let long = "x".repeat(MAX_KEPT_NAME_BYTES + 1);
        let many = vec![json!("a"); MAX_KEPT_NAMES + 1];
        for bad in [
            json!("a"),
            json!([1]),
            json!([""]),
            json!([long]),
            json!(many),
            json!({"a": 1}),
        ] {
            let err = CellOptions::parse_names("keep", Some(&bad)).unwrap_err();
            assert!(err.starts_with("field \"keep\" must"), "{err}");
        }
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    fn read(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        read_frame(&mut &bytes[..], 1024)
    }

    #[test]
    fn a_scripts_exit_code_is_a_byte() {
        let done = |code: &str| {
            let json = format!(
                r#"{{"t":"done","cell":1,"status":"error","final_answer":null,"exit_code":{code}}}"#
            );
            read(&frame(JSON, json.as_bytes()))
        };
        for ok in [0, 3, 255] {
            match done(&ok.to_string()).unwrap() {
                Some(Frame::Msg(AgentMsg::Done { exit_code, .. })) => {
                    assert_eq!(exit_code, Some(ok))
                }
                other => panic!("{other:?}"),
            }
        }
        for bad in ["-1", "256", "1.5", "\"1\"", "4294967296"] {
            assert!(done(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_of_each_type_are_read() {
        assert_eq!(
            read(&frame(STDOUT, b"hi\n")).unwrap(),
            Some(Frame::Stdout(b"hi\n".to_vec()))
        );
        assert_eq!(
            read(&frame(STDERR, b"")).unwrap(),
            Some(Frame::Stderr(Vec::new()))
        );
        let done = frame(
            JSON,
            br#"{"t":"done","cell":3,"status":"ok","final_answer":null}"#,
        );
        assert_eq!(
            read(&done).unwrap(),
            Some(Frame::Msg(AgentMsg::Done {
                cell: 3,
                status: DoneStatus::Ok,
                final_answer: None,
                vars: None,
                value: None,
                exit_code: None,
                setup: None,
            }))
        );
        let call = frame(
            JSON,
            br#"{"t":"call","call":1,"kind":"llm_query","model":null,"prompts":["a"]}"#,
        );
        assert!(matches!(
            read(&call).unwrap(),
            Some(Frame::Msg(AgentMsg::Call(AgentCall {
                call: 1,
                kind: CallKind::LlmQuery,
                ..
            })))
        ));
        let reply = frame(JSON, br#"{"t":"reply","req":2,"ok":true,"vars":[]}"#);
        match read(&reply).unwrap() {
            Some(Frame::Msg(AgentMsg::Reply {
                req, ok, fields, ..
            })) => {
                assert_eq!((req, ok), (2, true));
                assert_eq!(fields["vars"], serde_json::json!([]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            read(&frame(JSON, br#"{"t":"standby"}"#)).unwrap(),
            Some(Frame::Msg(AgentMsg::Standby))
        );
        assert!(read(&[]).unwrap().is_none());
    }

    #[test]
    fn hostile_frames_are_refused_before_allocation() {
        let huge = u32::MAX.to_be_bytes();
        assert!(
            matches!(read(&huge), Err(FrameError::TooLong { len, .. }) if len == u32::MAX as u64)
        );
        assert!(matches!(read(&[0, 0, 0, 0]), Err(FrameError::Empty)));
        assert!(matches!(
            read(&frame(b'X', b"")),
            Err(FrameError::UnknownType(b'X'))
        ));
        assert!(matches!(read(&[0, 0]), Err(FrameError::Io(_))));
        assert!(matches!(read(&[0, 0, 0, 9, b'1']), Err(FrameError::Io(_))));
        for bad in [
            &b"[1]"[..],
            b"not json",
            br#"{"t":"nope"}"#,
            br#"{"t":"done","cell":"x","status":"ok","final_answer":null}"#,
            br#"{"t":"done","cell":1,"status":"maybe","final_answer":null}"#,
            br#"{"t":"call","call":1,"kind":"shell"}"#,
            br#"{"cell":1}"#,
            br#"{"t":"done","cell":1,"status":"ok","final_answer":null,"value":{"repr":"1","truncated":false,"json":1,"type":"int"}}"#,
            br#"{"t":"done","cell":1,"status":"ok","final_answer":null,"value":{"json":1,"truncated":false}}"#,
            br#"{"t":"done","cell":1,"status":"ok","final_answer":null,"value":"42"}"#,
        ] {
            assert!(
                matches!(read(&frame(JSON, bad)), Err(FrameError::BadMessage(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_cells_value_is_read_and_its_repr_bounded() {
        let done = br#"{"t":"done","cell":2,"status":"ok","final_answer":null,"value":{"repr":"[1, 2]","truncated":false,"json":[1,2]}}"#;
        match parse_msg(done).unwrap() {
            AgentMsg::Done {
                value: Some(value), ..
            } => {
                assert_eq!(value.repr, "[1, 2]");
                assert_eq!(value.json, Some(serde_json::json!([1, 2])));
            }
            other => panic!("{other:?}"),
        }
        let long = serde_json::json!({"t": "done", "cell": 2, "status": "ok", "final_answer": null,
            "value": {"repr": "x".repeat(super::super::value::MAX_VALUE_REPR + 1), "truncated": true, "json": null}});
        let err = parse_msg(&serde_json::to_vec(&long).unwrap()).unwrap_err();
        assert!(err.to_string().contains("the limit is 65536"), "{err}");
    }

    #[test]
    fn the_decoder_takes_frames_in_any_pieces_and_checks_them_as_read_frame_does() {
        let mut stream = frame(STDOUT, b"hi\n");
        stream.extend(frame(
            JSON,
            br#"{"t":"done","cell":3,"status":"ok","final_answer":null}"#,
        ));
        stream.extend(frame(STDERR, b""));
        for piece in [1, 2, 3, 5, 7, stream.len()] {
            let mut decoder = Decoder::new(1024);
            let mut frames = Vec::new();
            for chunk in stream.chunks(piece) {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert!(!decoder.in_frame(), "piece {piece}");
            assert_eq!(frames.len(), 3, "piece {piece}");
            assert_eq!(frames[0], Frame::Stdout(b"hi\n".to_vec()));
            assert!(matches!(
                frames[1],
                Frame::Msg(AgentMsg::Done { cell: 3, .. })
            ));
            assert_eq!(frames[2], Frame::Stderr(Vec::new()));
        }
        let mut partial = Decoder::new(1024);
        partial.push(&frame(STDOUT, b"abc")[..6]);
        assert!(partial.next_frame().unwrap().is_none());
        assert!(partial.in_frame());
        // The hostile cases of read_frame, refused the same way; a length
        // is refused from its header alone, before any body arrives.
        let refused = |bytes: &[u8]| {
            let mut decoder = Decoder::new(1024);
            decoder.push(bytes);
            decoder.next_frame().unwrap_err()
        };
        assert!(
            matches!(refused(&u32::MAX.to_be_bytes()), FrameError::TooLong { len, .. } if len == u32::MAX as u64)
        );
        assert!(matches!(refused(&[0, 0, 0, 0]), FrameError::Empty));
        assert!(matches!(
            refused(&frame(b'X', b"")),
            FrameError::UnknownType(b'X')
        ));
        assert!(matches!(
            refused(&frame(JSON, br#"{"t":"nope"}"#)),
            FrameError::BadMessage(_)
        ));
    }

    #[test]
    fn a_setups_end_is_read_and_readys_names_are_bounded() {
        let done =
            br#"{"t":"done","cell":2,"status":"error","final_answer":null,"setup":"interrupted"}"#;
        assert!(matches!(
            parse_msg(done).unwrap(),
            AgentMsg::Done {
                setup: Some(DoneStatus::Interrupted),
                ..
            }
        ));
        let bad = br#"{"t":"done","cell":2,"status":"ok","final_answer":null,"setup":"maybe"}"#;
        assert!(matches!(parse_msg(bad), Err(FrameError::BadMessage(_))));
        let ready = |names: Vec<String>| {
            parse_msg(
                &serde_json::to_vec(
                    &serde_json::json!({"t": "ready", "python": "3.11", "names": names}),
                )
                .unwrap(),
            )
        };
        assert!(matches!(ready(vec!["answer".into(), "llm_query".into()]),
            Ok(AgentMsg::Ready { names, .. }) if names == ["answer", "llm_query"]));
        let many = ready(vec!["n".into(); MAX_READY_NAMES + 1]).unwrap_err();
        assert!(many.to_string().contains("got 4097 names"), "{many}");
        let long = ready(vec!["x".repeat(MAX_KEPT_NAME_BYTES + 1)]).unwrap_err();
        assert!(long.to_string().contains("one of 257 bytes"), "{long}");
        let empty = ready(vec![String::new()]).unwrap_err();
        assert!(empty.to_string().contains("one of 0 bytes"), "{empty}");
    }

    #[test]
    fn written_messages_read_back_as_frames() {
        let mut out = Vec::new();
        write_msg(
            &mut out,
            &serde_json::json!({"t": "ready", "python": "3.11"}),
        )
        .unwrap();
        assert_eq!(&out[..4], &((out.len() - 4) as u32).to_be_bytes());
        assert_eq!(
            read(&out).unwrap(),
            Some(Frame::Msg(AgentMsg::Ready {
                python: "3.11".into(),
                names: vec![]
            }))
        );
    }
}
