"""A stand-in for a hosted chat model behind an OpenAI-compatible API.

It answers the way current hosted models do, per OpenAI's documented Chat Completions API,
not the way our parser would like: tool calls with `content: null` (several in parallel),
tool calls next to a sentence of prose, JSON wrapped in ```json fences or in prose when it is
asked for JSON in text, Markdown answers with fenced code, refusals (`refusal` set, content
null), `finish_reason: "length"` with the text (or the tool arguments) cut at max_tokens when
the answer is longer than allowed, errors as `{"error": {...}}` with 401 / 403 / 429 +
Retry-After / 500 (and the 400 an older model gives when offered tools), and latency.

What it decides is its own business, as with any model: it sees which tools it is offered (by
their documented JSON-schema definitions), keeps a memory per conversation (keyed by the
system prompt and the opening of the first user message, like a session), and follows a
plan: the supervisor first assigns work, then reviews and assigns more, then finishes.
Tests pick the reply styles and failures; each style is one a hosted model really produces.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CODE_REPORT = """Here is a working implementation.

```python
def parse_duration(text: str) -> int:
    \"\"\"Seconds in strings like "1h30m" or "45s".\"\"\"
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        else:
            total += int(number) * units[char]
            number = ""
    return total
```

I ran it on `1h30m` (5400) and `45s` (45); both match.
"""

RESEARCH_REPORT = """## Findings

- Redis keeps queues in memory; a restart loses what was not persisted (AOF fixes that).
- Postgres queues (`SELECT … FOR UPDATE SKIP LOCKED`) are durable and transactional.
- Throughput: Redis is faster; Postgres is simpler to operate when it is already there.

Sources: the Redis persistence docs and the PostgreSQL `SELECT` reference.
"""

FINAL_ANSWER = """Here is the answer.

{summary}

```python
print("checked")
```

Let me know if you need more detail."""


@dataclass
class Failure:
    status: int
    body: dict[str, Any] | str  # a string is an HTML page from something in front of the API
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


RATE_LIMITED = (
    429,
    _error(
        429,
        "Rate limit reached for requests. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
)
SERVER_ERROR = (
    500,
    _error(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
    ),
)
# OpenAI's 429 for an account out of credit: waiting does not help.
QUOTA_EXCEEDED = (
    429,
    _error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
)
# OpenAI's documented 503: "The engine is currently overloaded, please try again later".
OVERLOADED = (
    503,
    _error(503, "The engine is currently overloaded, please try again later.", "server_error"),
)
# Anthropic's "overloaded_error", status 529, as an OpenAI-compatible proxy passes it on.
ANTHROPIC_OVERLOADED = (
    529,
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
)
# A load balancer in front of the API answers 502 with its own HTML page.
BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
FORBIDDEN = (
    403,
    _error(
        403,
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
)
# What an older model answers when offered tools (OpenAI's wording).
TOOLS_UNSUPPORTED = (
    400,
    _error(
        400,
        "tools is not supported in this model. For a list of supported models, refer to "
        "https://platform.openai.com/docs/guides/function-calling#models-supporting-function-calling.",
        "invalid_request_error",
    ),
)
BAD_KEY = (
    401,
    _error(
        401,
        "Incorrect API key provided: sk-test-****. You can find your API key at your "
        "provider's dashboard.",
        "invalid_request_error",
        "invalid_api_key",
    ),
)


# A refusal as OpenAI's Chat Completions returns it: `content` null, the words in `refusal`.
REFUSAL: dict[str, Any] = {
    "role": "assistant",
    "content": None,
    "refusal": "I'm sorry, but I can't help with that.",
}


# What Azure OpenAI returns when its content filter withholds the completion.
FILTERED: dict[str, Any] = {"role": "assistant", "content": None}
FILTER_RESULTS = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": True, "severity": "medium"},
}


@dataclass
class Styles:
    """How the model phrases things. Each is a probability or a choice, drawn per reply."""

    parallel: float = 0.5  # assign several workers in one reply
    prose_with_tool_calls: float = 0.3  # a sentence of content next to the tool calls
    text_wrapping: tuple[str, ...] = ("fenced", "prose", "bare")  # JSON in text mode
    finish_with_report: float = 0.5  # hand over a report instead of writing the answer
    capitalised_names: float = 0.3  # "Research", "Writer"
    tool_calls_as_text: float = 0.0  # offered tools, writes the calls out as JSON text instead
    fenced_arguments: float = 0.0  # a tool call's arguments fenced, as some open models do
    refuse_first: bool = False  # the first supervisor reply of a run is a refusal
    refuse_always: bool = False  # every supervisor reply is a refusal
    worker_refuses: bool = False  # a worker's reply is a refusal instead of a report
    # Azure OpenAI's content filter: the reply withheld, finish_reason "content_filter".
    supervisor_filtered: bool = False
    worker_filtered: bool = False
    # Tools a worker calls when offered them (matched by the end of the offered name), one per
    # reply in order, or all in one reply when parallel_tools; the report quotes the results.
    tool_plan: tuple[tuple[str, dict[str, Any]], ...] = ()
    parallel_tools: bool = False
    report_tokens: int = 300  # natural length of a worker's report, in tokens
    answer_tokens: int = 200


class HostedModel:
    def __init__(
        self,
        *,
        styles: Styles | None = None,
        seed: int = 7,
        api_key: str | None = None,
        latency: Callable[[], float] = lambda: 0.0,
        route: Callable[[str, list[str]], str] | None = None,
    ) -> None:
        self.styles = styles or Styles()
        self.api_key = api_key
        self.latency = latency
        self.route = route or _route_by_words
        self.rng = random.Random(seed)
        self.requests: list[dict[str, Any]] = []
        self.failures: deque[Failure] = deque()
        self.always_fail: tuple[int, dict[str, Any]] | None = None
        self.refuses_tools = False  # an older model: a request offering tools gets a 400
        self.headers: list[dict[str, str]] = []  # each request's HTTP headers, as received
        self.memory: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, payload, headers = outer._handle(
                    self.path, body, self.headers.get("authorization", "")
                )
                html = isinstance(payload, str)
                data = payload.encode() if html else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "text/html" if html else "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # a hosted API takes many connections at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HostedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- test controls -----------------------------------------------------------------

    def fail_next(
        self, status: int, times: int = 1, retry_after: float | None = None, quota: bool = False
    ) -> None:
        """The next `times` requests fail as the API fails with `status`; `quota`: the 429 of
        an account out of credit."""
        body: dict[str, Any] | str = (
            BAD_GATEWAY_HTML
            if status == 502
            else QUOTA_EXCEEDED[1]
            if quota
            else {
                429: RATE_LIMITED,
                500: SERVER_ERROR,
                503: OVERLOADED,
                529: ANTHROPIC_OVERLOADED,
                401: BAD_KEY,
                403: FORBIDDEN,
            }[status][1]
        )
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        for _ in range(times):
            self.failures.append(Failure(status, body, headers))

    def fail_always(self, status: int | None) -> None:
        self.always_fail = None if status is None else {500: SERVER_ERROR, 401: BAD_KEY}[status]

    @property
    def completions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    # --- the API ---------------------------------------------------------------------

    def _handle(
        self, path: str, body: dict[str, Any], authorization: str
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        if not path.rstrip("/").endswith("/chat/completions"):
            return (
                404,
                _error(404, f"Unknown request URL: POST {path}", "invalid_request_error"),
                {},
            )
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return BAD_KEY[0], BAD_KEY[1], {}
        with self._lock:
            self.requests.append(body)
            failure = self.failures.popleft() if self.failures else None
            always = self.always_fail
        if failure is not None:
            return failure.status, failure.body, failure.headers
        if always is not None:
            return always[0], always[1], {}
        if self.refuses_tools and body.get("tools"):
            return TOOLS_UNSUPPORTED[0], TOOLS_UNSUPPORTED[1], {}
        delay = self.latency()
        if delay:
            time.sleep(delay)
        with self._lock:
            message, finish = self._reply(body)
        return 200, self._completion(body, message, finish), {}

    def _completion(
        self, body: dict[str, Any], message: dict[str, Any], finish: str
    ) -> dict[str, Any]:
        prompt = sum(len(json.dumps(m)) for m in body.get("messages", [])) // 4
        produced = len(json.dumps(message.get("tool_calls") or message.get("content") or "")) // 4
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "gpt-test"),
            "system_fingerprint": "fp_test",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                    **(
                        {"content_filter_results": FILTER_RESULTS}
                        if finish == "content_filter"
                        else {}
                    ),
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": max(1, produced),
                "total_tokens": prompt + max(1, produced),
            },
        }

    # --- the model's mind ----------------------------------------------------------------

    def _reply(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        messages = body.get("messages", [])
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or []}
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        system = " ".join(str(m.get("content") or "") for m in messages if m["role"] == "system")
        first_user = next(
            (str(m.get("content") or "") for m in messages if m["role"] == "user"), ""
        )
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        corrected = any(m["role"] in ("assistant", "tool") for m in messages)
        if "route" in tools or _wants(schema, system, "team"):
            names = _enum(tools.get("route"), schema, "team") or _named_in(first_user)
            team = self.route(first_user, names)
            if self.rng.random() < self.styles.capitalised_names:
                team = team.capitalize()
            return self._decide([("route", {"team": team})], tools, schema, limit)
        if "assign" in tools or _wants(schema, system, "action"):
            return self._supervise(messages, tools, schema, system, first_user, limit, corrected)
        return self._work(messages, tools, first_user, limit)

    def _supervise(
        self,
        messages: list[dict[str, Any]],
        tools: dict[str, Any],
        schema: dict[str, Any] | None,
        system: str,
        first_user: str,
        limit: int | None,
        corrected: bool,
    ) -> tuple[dict[str, Any], str]:
        workers = _enum(tools.get("assign"), schema, "worker") or _roster(first_user)
        key = hashlib.sha256((system + first_user.split("\n\n")[0]).encode()).hexdigest()
        turn = self.memory[key]
        if self.styles.refuse_always:
            return REFUSAL, "stop"
        if self.styles.supervisor_filtered:
            return FILTERED, "content_filter"
        if not corrected:
            self.memory[key] = turn + 1
            if turn == 0 and self.styles.refuse_first:
                return REFUSAL, "stop"
        else:
            turn = max(0, turn - 1)
        name = self._name
        if turn == 0:
            if len(workers) > 1 and self.rng.random() < self.styles.parallel:
                calls = [
                    ("assign", {"worker": name(w), "instruction": f"Your part: {w} work"})
                    for w in workers
                ]
            else:
                calls = [
                    (
                        "assign",
                        {"worker": name(workers[0]), "instruction": "Investigate and report back."},
                    )
                ]
        elif turn == 1 and len(workers) > 1:
            calls = [
                (
                    "review",
                    {
                        "worker": name(workers[0]),
                        "accepted": self.rng.choice([True, "true", False, "false"]),
                        "feedback": "Tighten the wording.",
                    },
                ),
                (
                    "assign",
                    {
                        "worker": name(workers[-1]),
                        "instruction": "Turn the findings into the final answer.",
                    },
                ),
            ]
        else:
            last = workers[-1]
            review = ("review", {"worker": name(last), "accepted": True})
            if self.rng.random() < self.styles.finish_with_report:
                calls = [review, ("finish_with_report", {"worker": name(last)})]
            else:
                summary = "The team checked the request and the work is done. " * (
                    max(1, self.styles.answer_tokens // 12)
                )
                calls = [review, ("finish", {"answer": FINAL_ANSWER.format(summary=summary)})]
        return self._decide(calls, tools, schema, limit)

    def _name(self, name: str) -> str:
        return name.capitalize() if self.rng.random() < self.styles.capitalised_names else name

    def _decide(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        tools: dict[str, Any],
        schema: dict[str, Any] | None,
        limit: int | None,
    ) -> tuple[dict[str, Any], str]:
        if tools and self.rng.random() < self.styles.tool_calls_as_text:
            # Weaker tool users (Llama 3.x and friends) write the call out instead of making it.
            lines = "\n".join(
                json.dumps({"name": name, "parameters": args}) for name, args in calls
            )
            text = f"I'll use the tools for this.\n\n```json\n{lines}\n```"
            return self._cut({"role": "assistant", "content": text}, limit)
        if tools:
            tool_calls = [
                {
                    "id": f"call_{self.rng.getrandbits(48):012x}",
                    "type": "function",
                    "function": {"name": name, "arguments": self._arguments(args)},
                }
                for name, args in calls
            ]
            content = None
            if self.rng.random() < self.styles.prose_with_tool_calls:
                content = "I'll take care of that now."
            text_tokens = len(json.dumps(tool_calls)) // 4
            if limit is not None and text_tokens > limit:
                # Cut inside the arguments, as a provider does at max_tokens.
                cut = tool_calls[-1]["function"]
                cut["arguments"] = cut["arguments"][: max(1, len(cut["arguments"]) // 2)]
                return {"role": "assistant", "content": content, "tool_calls": tool_calls}, "length"
            return {"role": "assistant", "content": content, "tool_calls": tool_calls}, "tool_calls"
        data = _as_json(calls)
        text = json.dumps(data, indent=2)
        if schema is None:
            wrapping = self.rng.choice(self.styles.text_wrapping)
            if wrapping == "fenced":
                text = f"```json\n{text}\n```"
            elif wrapping == "prose":
                text = f"Sure! Here is my decision:\n\n{text}\n\nLet me know if you need more."
        return self._cut({"role": "assistant", "content": text}, limit)

    def _arguments(self, args: dict[str, Any]) -> str:
        text = json.dumps(args)
        # Drawn only when the style is on, so other tests' replies stay as they were.
        if self.styles.fenced_arguments and self.rng.random() < self.styles.fenced_arguments:
            return f"```json\n{text}\n```"
        return text

    def _work(
        self,
        messages: list[dict[str, Any]],
        tools: dict[str, Any],
        first_user: str,
        limit: int | None,
    ) -> tuple[dict[str, Any], str]:
        if self.styles.worker_refuses:
            return REFUSAL, "stop"
        if self.styles.worker_filtered:
            return FILTERED, "content_filter"
        results = [m for m in messages if m["role"] == "tool"]
        planned = [
            (offered, args)
            for wanted, args in self.styles.tool_plan
            for offered in tools
            if offered == wanted or offered.endswith(f"__{wanted}")
        ]
        if planned and len(results) < len(planned):
            todo = (
                planned[len(results) :] if self.styles.parallel_tools else [planned[len(results)]]
            )
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{self.rng.getrandbits(48):012x}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                    for name, args in todo
                ],
            }, "tool_calls"
        if planned:
            said = "\n".join(f"- {m['content'][:300]}" for m in results)
            return {"role": "assistant", "content": f"Done. The tools answered:\n{said}"}, "stop"
        if "run_code" in tools and not results:
            code = 'print(sum(int(c) for c in "2024"))'
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{self.rng.getrandbits(48):012x}",
                        "type": "function",
                        "function": {
                            "name": "run_code",
                            "arguments": json.dumps({"language": "python", "code": code}),
                        },
                    }
                ],
            }, "tool_calls"
        report = (
            CODE_REPORT
            if re.search(r"code|script|bug|function", first_user, re.I)
            else (RESEARCH_REPORT)
        )
        if results:
            report += f"\nThe sandbox printed: {json.loads(results[-1]['content']).get('stdout')}"
        padding = max(0, self.styles.report_tokens * 4 - len(report))
        report += "\n\n" + ("Further detail follows in the same vein. " * (padding // 42 + 1))
        return self._cut({"role": "assistant", "content": report.strip()}, limit)

    @staticmethod
    def _cut(message: dict[str, Any], limit: int | None) -> tuple[dict[str, Any], str]:
        text = message["content"]
        if limit is not None and len(text) // 4 > limit:
            return {**message, "content": text[: limit * 4]}, "length"
        return message, "stop"


def _wants(schema: dict[str, Any] | None, system: str, key: str) -> bool:
    """Asked for JSON with this key: by a response-format schema or by the instructions."""
    if schema is not None:
        return key in (schema.get("properties") or {})
    return f'"{key}"' in system


def _enum(tool: dict[str, Any] | None, schema: dict[str, Any] | None, key: str) -> list[str]:
    source = (tool or {}).get("parameters") or schema or {}
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name == key and isinstance(value, dict) and value.get("enum"):
                    found.extend(v for v in value["enum"] if v not in found)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(source)
    return found


def _roster(text: str) -> list[str]:
    """Worker names from a roster in the prompt ("- name: role" lines), as a reader sees them."""
    return re.findall(r"^- ([a-z][a-z0-9_-]*): ", text, re.MULTILINE)


def _named_in(text: str) -> list[str]:
    return _roster(text)


def _route_by_words(request: str, teams: list[str]) -> str:
    code = re.search(r"code|script|bug|function|test", request.split("\n")[0], re.I)
    preferred = "engineering" if code else "research"
    return preferred if preferred in teams else teams[0]


def _as_json(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A decision written out as the JSON the instructions describe."""
    if calls[0][0] == "route":
        return dict(calls[0][1])
    data: dict[str, Any] = {}
    for name, args in calls:
        if name == "review":
            data["review"] = args
        elif name == "assign":
            data["action"] = "assign"
            data.setdefault("assignments", []).append(args)
        else:
            data["action"] = name
            data.update(args)
    return data
