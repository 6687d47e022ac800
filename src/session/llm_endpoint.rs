//! `--llm-endpoint`: answer each prompt with an OpenAI-compatible
//! chat-completions endpoint (vLLM, llama.cpp, Ollama, LiteLLM, ...).
//!
//! One `POST {base}/chat/completions` per prompt, with the prompt as the
//! only user message; the answer is `choices[0].message.content`. This
//! build speaks plain HTTP only (no TLS): use a local server, or a local
//! proxy in front of an `https://` service.

use std::io::Read;
use std::time::Instant;

use serde_json::Value;

use super::calls::PromptHandler;
use super::llm_command::round_ms;

/// The most of an error response's body kept for the message.
const ERROR_EXCERPT_BYTES: usize = 512;

/// The response body may be this much larger than the answer: JSON
/// escaping (up to 6 bytes per byte for `\uXXXX`) plus the envelope.
const ENVELOPE_BYTES: usize = 64 * 1024;

/// Answers prompts with an OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct EndpointHandler {
    /// The full chat-completions URL.
    url: String,
    /// The model when the call names none.
    model: Option<String>,
    api_key: Option<String>,
    max_answer_bytes: usize,
    agent: ureq::Agent,
}

impl EndpointHandler {
    /// `url` is the API base (`http://127.0.0.1:8000/v1`); `/chat/completions`
    /// is appended unless already there. `model` is used when a call names
    /// none; `api_key` is sent as `Authorization: Bearer`.
    pub fn new(
        url: &str,
        model: Option<String>,
        api_key: Option<String>,
        max_answer_bytes: usize,
    ) -> Self {
        let base = url.trim().trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A POST is not replayed on a redirect anyway.
            .max_redirects(0);
        if is_loopback(&url) {
            // A proxy from the environment cannot reach our loopback.
            config = config.proxy(None);
        }
        EndpointHandler {
            url,
            model: model.filter(|m| !m.is_empty()),
            api_key: api_key.filter(|k| !k.is_empty()),
            max_answer_bytes,
            agent: config.build().new_agent(),
        }
    }

    /// The chat-completions URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn response_limit(&self) -> u64 {
        let limit = self
            .max_answer_bytes
            .saturating_mul(6)
            .saturating_add(ENVELOPE_BYTES);
        u64::try_from(limit).unwrap_or(u64::MAX)
    }
}

impl PromptHandler for EndpointHandler {
    fn answer(
        &self,
        model: Option<&str>,
        prompt: &str,
        deadline: Instant,
    ) -> Result<String, String> {
        let Some(model) = model.filter(|m| !m.is_empty()).or(self.model.as_deref()) else {
            return Err(
                "no model for the LLM endpoint: pass --llm-model or set RLM_LLM_MODEL".into(),
            );
        };
        let has_scheme = |scheme: &str| {
            self.url
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        };
        if !has_scheme("http://") && !has_scheme("https://") {
            return Err(format!(
                "invalid LLM endpoint URL `{}`: expected http://HOST[:PORT]/PATH",
                self.url
            ));
        }
        if has_scheme("https://") {
            return Err(format!(
                "cannot reach {}: this build has no TLS; use an http:// endpoint \
                 (a local server or proxy)",
                self.url
            ));
        }
        let budget = deadline.saturating_duration_since(Instant::now());
        let timed_out = || format!("timed out after {} ms", round_ms(budget));
        if budget.is_zero() {
            return Err(timed_out());
        }
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string();

        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let request = request.config().timeout_global(Some(budget)).build();
        let failed = |err: ureq::Error| -> String {
            match err {
                ureq::Error::Timeout(_) => timed_out(),
                _ if Instant::now() >= deadline => timed_out(),
                err => format!("request to {} failed: {err}", self.url),
            }
        };
        let mut response = request.send(body).map_err(failed)?;

        let status = response.status();
        if !status.is_success() {
            let mut excerpt = Vec::new();
            let _ = response
                .body_mut()
                .as_reader()
                .take(ERROR_EXCERPT_BYTES as u64)
                .read_to_end(&mut excerpt);
            let excerpt = String::from_utf8_lossy(&excerpt);
            let excerpt = excerpt.trim();
            return Err(if excerpt.is_empty() {
                format!("endpoint returned HTTP {}", status.as_u16())
            } else {
                format!("endpoint returned HTTP {}: {excerpt}", status.as_u16())
            });
        }

        let limit = self.response_limit();
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|err| match err {
                ureq::Error::BodyExceedsLimit(_) => {
                    format!("endpoint response larger than the limit of {limit} bytes")
                }
                err => failed(err),
            })?;
        let content = parse_content(&body)?;
        if content.len() > self.max_answer_bytes {
            return Err(format!(
                "answer larger than the limit of {} bytes",
                self.max_answer_bytes
            ));
        }
        Ok(content)
    }
}

/// `choices[0].message.content` of a chat-completions response, which
/// must be a string.
fn parse_content(body: &[u8]) -> Result<String, String> {
    let bad = |why: &str| {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(ERROR_EXCERPT_BYTES)]);
        format!("endpoint response {why}: {}", excerpt.trim())
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|err| bad(&format!("is not JSON ({err})")))?;
    let message = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .and_then(|choice| choice.get("message"))
        .ok_or_else(|| bad("has no choices[0].message"))?;
    match message.get("content") {
        Some(Value::String(content)) => Ok(content.clone()),
        _ => Err(bad("has no string choices[0].message.content")),
    }
}

/// Whether `url`'s host is a loopback name or address.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// The fixture server (tests/fixtures/openai_server.py), killed on drop.
    struct Server {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Server {
        fn start(args: &[&str]) -> Server {
            let dir = tempfile::tempdir().expect("tempdir");
            let port_file = dir.path().join("port");
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai_server.py");
            let mut child = Command::new("python3")
                .arg(&script)
                .args(["--port", "0", "--port-file"])
                .arg(&port_file)
                .arg("--log")
                .arg(dir.path().join("log"))
                .args(args)
                .stdin(Stdio::null())
                .spawn()
                .expect("python3 runs");
            let start = Instant::now();
            let port = loop {
                if let Ok(text) = std::fs::read_to_string(&port_file) {
                    if let Ok(port) = text.trim().parse() {
                        break port;
                    }
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("fixture server exited: {status}");
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("fixture server did not start");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            Server { child, port, dir }
        }

        fn base(&self) -> String {
            format!("http://127.0.0.1:{}/v1", self.port)
        }

        /// The request bodies the server received, in order.
        fn log(&self) -> Vec<Value> {
            std::fs::read_to_string(self.dir.path().join("log"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("log line is JSON"))
                .collect()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn in_ms(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn url_gets_chat_completions() {
        let h = |u| EndpointHandler::new(u, None, None, 10);
        assert_eq!(h("http://h:1/v1").url(), "http://h:1/v1/chat/completions");
        assert_eq!(h("http://h:1/v1/").url(), "http://h:1/v1/chat/completions");
        assert_eq!(
            h("http://h:1/v1/chat/completions").url(),
            "http://h:1/v1/chat/completions"
        );
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1:8000/v1",
            "http://localhost/v1",
            "http://u:p@[::1]:80/v1",
            "http://127.1.2.3",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://example.com/v1",
            "http://10.0.0.1:80",
            "http://[::2]/",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn strict_content() {
        assert_eq!(
            parse_content(br#"{"choices":[{"message":{"content":"hi"}}]}"#),
            Ok("hi".into())
        );
        for bad in [
            &br#"{"choices":[]}"#[..],
            br#"{"choices":[{"message":{"content":null}}]}"#,
            br#"{"choices":[{"text":"hi"}]}"#,
            br#"{"content":"hi"}"#,
            b"not json",
        ] {
            let err = parse_content(bad).expect_err("rejected");
            assert!(err.starts_with("endpoint response "), "{err}");
        }
    }

    #[test]
    fn answers_with_call_model_or_default() {
        let server = Server::start(&[]);
        let h = EndpointHandler::new(&server.base(), Some("default-m".into()), None, 1 << 20);
        assert_eq!(
            h.answer(Some("m1"), "hello", in_ms(5000)),
            Ok("echo:m1:hello".into())
        );
        assert_eq!(
            h.answer(None, "bye\n", in_ms(5000)),
            Ok("echo:default-m:bye\n".into())
        );
        let log = server.log();
        assert_eq!(log.len(), 2);
        assert_eq!(
            log[0],
            serde_json::json!({"model": "m1", "messages": [{"role": "user", "content": "hello"}]})
        );
        assert_eq!(log[1]["model"], "default-m");
    }

    #[test]
    fn no_model_anywhere() {
        let h = EndpointHandler::new("http://127.0.0.1:9/v1", None, None, 1024);
        let err = h.answer(None, "x", in_ms(5000)).expect_err("no model");
        assert!(
            err.contains("--llm-model") && err.contains("RLM_LLM_MODEL"),
            "{err}"
        );
    }

    #[test]
    fn api_key_sent_and_required() {
        let server = Server::start(&["--require-key", "sekrit"]);
        let with = EndpointHandler::new(
            &server.base(),
            Some("m".into()),
            Some("sekrit".into()),
            1024,
        );
        assert_eq!(with.answer(None, "p", in_ms(5000)), Ok("echo:m:p".into()));
        let without = EndpointHandler::new(&server.base(), Some("m".into()), None, 1024);
        let err = without.answer(None, "p", in_ms(5000)).expect_err("401");
        assert!(err.starts_with("endpoint returned HTTP 401: "), "{err}");
        let wrong =
            EndpointHandler::new(&server.base(), Some("m".into()), Some("nope".into()), 1024);
        let err = wrong.answer(None, "p", in_ms(5000)).expect_err("401");
        assert!(err.starts_with("endpoint returned HTTP 401"), "{err}");
        assert!(!err.contains("nope"), "{err}");
    }

    #[test]
    fn delay_past_deadline_times_out() {
        let server = Server::start(&["--delay-ms", "30000"]);
        let h = EndpointHandler::new(&server.base(), Some("m".into()), None, 1024);
        let start = Instant::now();
        let got = h.answer(None, "p", in_ms(400));
        let took = start.elapsed();
        assert_eq!(got, Err("timed out after 400 ms".into()));
        // At the deadline, not when the server would answer (30 s): bounds
        // that hold on any machine, however loaded.
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }

    #[test]
    fn answer_too_large() {
        let server = Server::start(&[]);
        let h = EndpointHandler::new(&server.base(), Some("m".into()), None, 20);
        assert_eq!(
            h.answer(None, "short", in_ms(5000)),
            Ok("echo:m:short".into())
        );
        let err = h
            .answer(None, &"x".repeat(100), in_ms(5000))
            .expect_err("too large");
        assert_eq!(err, "answer larger than the limit of 20 bytes");
        // A response far larger than the answer could be stops being read.
        let h = EndpointHandler::new(&server.base(), Some("m".into()), None, 0);
        let err = h
            .answer(None, &"x".repeat(200_000), in_ms(5000))
            .expect_err("too large");
        assert_eq!(
            err,
            format!("endpoint response larger than the limit of {ENVELOPE_BYTES} bytes")
        );
    }

    #[test]
    fn bad_urls() {
        let h = EndpointHandler::new("not a url", Some("m".into()), None, 1024);
        let err = h.answer(None, "p", in_ms(5000)).expect_err("bad url");
        assert_eq!(
            err,
            "invalid LLM endpoint URL `not a url/chat/completions`: expected http://HOST[:PORT]/PATH"
        );
        let h = EndpointHandler::new("http://bad host/v1", Some("m".into()), None, 1024);
        let err = h.answer(None, "p", in_ms(5000)).expect_err("bad url");
        assert!(
            err.starts_with("request to http://bad host/v1/chat/completions failed: "),
            "{err}"
        );

        // Nothing listens on a port we just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let h = EndpointHandler::new(
            &format!("http://127.0.0.1:{port}/v1"),
            Some("m".into()),
            None,
            1024,
        );
        let err = h.answer(None, "p", in_ms(5000)).expect_err("refused");
        assert!(
            err.starts_with(&format!(
                "request to http://127.0.0.1:{port}/v1/chat/completions failed: "
            )),
            "{err}"
        );

        let h = EndpointHandler::new("https://api.example.com/v1", Some("m".into()), None, 1024);
        let err = h.answer(None, "p", in_ms(5000)).expect_err("no tls");
        assert!(err.contains("no TLS"), "{err}");

        // A server that is not chat-completions (404).
        let server = Server::start(&[]);
        let h = EndpointHandler::new(
            &format!("http://127.0.0.1:{}/nope", server.port),
            Some("m".into()),
            None,
            1024,
        );
        let err = h.answer(None, "p", in_ms(5000)).expect_err("404");
        assert!(err.starts_with("endpoint returned HTTP 404"), "{err}");
    }
}
