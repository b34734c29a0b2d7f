"""A local OpenAI-compatible chat completions server for tests and benchmarks.

By default it answers like the offline scripted model (same policy, over real HTTP), after
an optional delay. Tests can queue canned failures (429 with Retry-After, 500) and read the
requests it received.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestrator.llm.scripted import ScriptedLLM


@dataclass
class Canned:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class OpenAIServer:
    def __init__(
        self, delay_s: float = 0.0, delay_fn: Callable[[dict[str, Any]], float] | None = None
    ) -> None:
        self.delay_s = delay_s
        self.delay_fn = delay_fn
        self.requests: list[dict[str, Any]] = []
        self.failures: deque[Canned] = deque()
        self._lock = threading.Lock()
        self._scripted = ScriptedLLM()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload, headers = outer._answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(
        self, status: int, retry_after: float | None = None, message: str = "fail"
    ) -> None:
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self.failures.append(
            Canned(status, {"error": {"message": message, "type": "test"}}, headers)
        )

    @property
    def completions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append(body)
            canned = self.failures.popleft() if self.failures else None
        if canned is not None:
            return canned.status, canned.body, canned.headers
        delay = self.delay_fn(body) if self.delay_fn else self.delay_s
        if delay:
            time.sleep(delay)
        params = {"tools": body["tools"]} if body.get("tools") else {}
        response = self._scripted._respond(
            body.get("model", "test"), body.get("messages", []), params
        )
        choice = response.choices[0]
        message = (
            choice.message.model_dump()
            if hasattr(choice.message, "model_dump")
            else dict(choice.message)
        )
        usage = response.usage
        return (
            200,
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "test"),
                "choices": [
                    {
                        "index": 0,
                        "message": {k: v for k, v in message.items() if v is not None},
                        "finish_reason": choice.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
            },
            {},
        )
