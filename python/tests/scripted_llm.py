"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, so
the real `openai` clients of rlms and DSPy can be pointed at it: each
model name gets a function from the request's messages to the reply."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List

Reply = Callable[[List[Dict[str, Any]]], str]


class ScriptedLLM:
    """`with ScriptedLLM({"root": fn, "sub": fn}) as llm:` serves
    `llm.base_url`; `llm.requests` lists (model, messages) as received."""

    def __init__(self, replies: Dict[str, Reply]) -> None:
        self.replies = replies
        self.requests: List[tuple] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model, messages = body.get("model"), body.get("messages", [])
                with server._lock:
                    server.requests.append((model, messages))
                reply = server.replies.get(model)
                if reply is None:
                    self._send(404, {"error": {"message": f"no model {model!r}"}})
                    return
                text = reply(messages)
                self._send(200, {
                    "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def models(self) -> List[str]:
        with self._lock:
            return [m for m, _ in self.requests]

    def __enter__(self) -> "ScriptedLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


def user_text(messages: List[Dict[str, Any]]) -> str:
    """The last user message's text."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""
