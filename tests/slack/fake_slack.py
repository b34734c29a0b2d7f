"""A local Slack Web API for tests: records calls, answers like Slack, fails on request.

It speaks the methods the adapter uses (auth.test, chat.postMessage, chat.update,
chat.postEphemeral, conversations.info, usergroups.list, users.info), can answer the next
call of a method with HTTP 429 + Retry-After or with a Slack error such as `not_in_channel`,
and binds port 0. Point a WebClient at `.url` (SLACK_API_URL). It also takes POSTs to the
`response_url` of slash commands and actions (`.response_url()` makes one): a JSON message
answered with 200 and the body `ok`, recorded as method "response_url".

The AI-app methods answer as Slack documents them: `chat.startStream` needs a `thread_ts`
and, in a channel, `recipient_user_id` and `recipient_team_id` (`missing_recipient_…`);
`chat.appendStream` / `chat.stopStream` on a message that is not streaming answer
`message_not_in_streaming_state`; `chat.update` of a message still streaming answers
`streaming_state_conflict`. A test makes a workspace lack them with `refuse_ai(error)`
(`not_allowed_token_type`, `feature_not_enabled`, `unknown_method`): every streaming and
status call then answers that error.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_USER = "UBOTSWITCH"
TEAM = "T0TESTTEAM"
# users.info answers for these; any other id is `user_not_found`, as in Slack.
PEOPLE = {
    "UREQUEST1": "Riley Requester",
    "UREQUEST3": "Quinn Requester",
    "UAPPROVER1": "Avery Approver",
    "UGROUPIE1": "Gale Groupmember",
    "USTRANGER1": "Sam Stranger",
}
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
STATUS_METHOD = "assistant.threads.setStatus"


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    error: str | None = None

    @property
    def channel(self) -> str | None:
        return self.params.get("channel") or self.params.get("channel_id")

    def texts(self) -> list[str]:
        """Text of every section block, in order (the fallback text when there are none)."""
        blocks = self.params.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        texts = [b["text"]["text"] for b in blocks if b.get("type") == "section" and "text" in b]
        return texts or [self.params.get("text") or ""]

    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.params.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else blocks


@dataclass
class _Failure:
    status: int
    error: str
    retry_after: float | None = None
    channel: str | None = None


@dataclass
class FakeSlack:
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    not_member: set[str] = field(default_factory=set)
    people: dict[str, str] = field(default_factory=lambda: dict(PEOPLE))
    ai_refusal: str | None = None  # None: streaming and thread status work

    def __post_init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}  # ts → what the message shows
        self.statuses: dict[tuple[str, str], str] = {}  # (channel, thread) → status
        self._failures: dict[str, deque[_Failure]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._triggers: dict[str, float] = {}  # trigger_id → when Slack issued it
        self.views: list[dict[str, Any]] = []  # modals opened with views.open
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("content-type") or ""):
                    params = json.loads(raw or "{}")
                else:
                    params = dict(parse_qsl(raw))
                path, _, query = self.path.partition("?")
                params = {**dict(parse_qsl(query)), **params}
                if path.startswith("/hooks/"):
                    outer._hook(path, params)
                    self.send_response(200)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    return
                method = path.rsplit("/", 1)[-1]
                status, body, headers = outer._answer(method, params)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- test controls -----------------------------------------------------------------------

    def trigger(self) -> str:
        """A trigger_id as Slack puts in an interaction payload: usable once, for 3 s."""
        trigger = f"{next(self._ts)}.{int(time.time())}.{uuid.uuid4().hex[:32]}"
        with self._lock:
            self._triggers[trigger] = time.monotonic()
        return trigger

    def fail_next(
        self,
        method: str,
        status: int = 429,
        *,
        error: str = "ratelimited",
        retry_after: float = 1,
        channel: str | None = None,
    ) -> None:
        """The next call of `method` (in `channel`, if given) fails: 429 with Retry-After, or
        200 with ok=false and `error`."""
        self._failures[method].append(_Failure(status, error, retry_after, channel))

    def refuse_ai(self, error: str | None) -> None:
        """Streaming and thread-status calls answer `error` from now on (None: allow them)."""
        with self._lock:
            self.ai_refusal = error

    def end_stream(self, ts: str) -> None:
        """Slack ended a stream by itself (it does after a while): it takes no more appends."""
        with self._lock:
            self.messages[ts]["streaming"] = False

    def calls_to(self, method: str, channel: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == method
                and (channel is None or c.channel == channel)
                and c.error is None
            ]

    def all_calls(self, channel: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if channel is None or c.channel == channel]

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "calls") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; calls: {self.calls[-20:]}")

    def response_url(self, name: str) -> str:
        """A response_url that lands here (Slack's are https://hooks.slack.com/commands/...)."""
        return self.url.removesuffix("api/") + f"hooks/commands/{TEAM}/{name}"

    def responses(self, name: str) -> list[Call]:
        """Messages posted to the response_url made by `response_url(name)`."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == "response_url" and c.params["path"].endswith(f"/{name}")
            ]

    def _view_refusal(self, params: dict[str, Any]) -> str | None:
        """views.open's documented errors: a trigger is good once, for 3 seconds; a modal
        needs a title of at most 24 characters and at most 100 blocks."""
        trigger = str(params.get("trigger_id") or "")
        issued = self._triggers.get(trigger)
        if issued is None:
            return "invalid_trigger_id"
        if issued < 0:
            return "exchanged_trigger_id"
        if time.monotonic() - issued > 3:
            return "expired_trigger_id"
        self._triggers[trigger] = -1.0
        try:
            view = (
                params["view"] if isinstance(params["view"], dict) else json.loads(params["view"])
            )
        except (KeyError, ValueError):
            return "invalid_arguments"
        title = (view.get("title") or {}).get("text") or ""
        if view.get("type") != "modal" or not title or len(title) > 24:
            return "invalid_arguments"
        if len(view.get("blocks") or []) > 100:
            return "invalid_arguments"
        return None

    def _hook(self, path: str, params: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(Call("response_url", {**params, "path": path}, time.monotonic()))

    # --- the API -------------------------------------------------------------------------------

    def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict]:
        now = time.monotonic()
        with self._lock:
            channel = params.get("channel")
            failure = next(
                (f for f in self._failures[method] if f.channel in (None, channel)), None
            )
            if failure is not None:
                self._failures[method].remove(failure)
                self.calls.append(Call(method, params, now, failure.status, failure.error))
                headers = {}
                if failure.status == 429:
                    headers["Retry-After"] = str(int(failure.retry_after or 1))
                return failure.status, {"ok": False, "error": failure.error}, headers
            if method in ("chat.postMessage", "chat.update", *STREAM_METHODS) and (
                channel in self.not_member
            ):
                self.calls.append(Call(method, params, now, 200, "not_in_channel"))
                return 200, {"ok": False, "error": "not_in_channel"}, {}
            refusal = self._refusal(method, params)
            if refusal is not None:
                self.calls.append(Call(method, params, now, 200, refusal))
                return 200, {"ok": False, "error": refusal}, {}
            self.calls.append(Call(method, params, now))
            ts = f"1700000000.{next(self._ts):06d}"
            self._keep(method, params, ts)
        if method == "auth.test":
            return (
                200,
                {
                    "ok": True,
                    "url": "https://test.slack.com/",
                    "team": "Test",
                    "user": "switchboard",
                    "team_id": TEAM,
                    "user_id": BOT_USER,
                    "bot_id": "BBOTSWITCH",
                    "is_enterprise_install": False,
                },
                {},
            )
        if method == "chat.postMessage":
            message = {"ts": ts, "text": params.get("text"), "thread_ts": params.get("thread_ts")}
            return 200, {"ok": True, "channel": channel, "ts": ts, "message": message}, {}
        if method == "chat.update":
            return 200, {"ok": True, "channel": channel, "ts": params.get("ts")}, {}
        if method == "chat.startStream":
            return 200, {"ok": True, "channel": channel, "ts": ts}, {}
        if method in ("chat.appendStream", "chat.stopStream"):
            return 200, {"ok": True, "channel": channel, "ts": params.get("ts")}, {}
        if method == STATUS_METHOD:
            return 200, {"ok": True}, {}
        if method == "views.open":
            view = (
                params["view"] if isinstance(params["view"], dict) else json.loads(params["view"])
            )
            opened = {**view, "id": f"V{next(self._ts):08d}", "team_id": TEAM, "state":
                      {"values": {}}, "hash": uuid.uuid4().hex[:16]}  # fmt: skip
            with self._lock:
                self.views.append(opened)
            return 200, {"ok": True, "view": opened}, {}
        if method == "users.info":
            user = params.get("user") or ""
            if user not in self.people:
                return 200, {"ok": False, "error": "user_not_found"}, {}
            name = self.people[user]
            profile = {"display_name": name, "real_name": name}
            body = {"id": user, "team_id": TEAM, "name": name.lower().replace(" ", "."),
                    "real_name": name, "profile": profile}  # fmt: skip
            return 200, {"ok": True, "user": body}, {}
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": ts}, {}
        if method == "conversations.info":
            member = channel not in self.not_member
            return 200, {"ok": True, "channel": {"id": channel, "is_member": member}}, {}
        if method == "usergroups.list":
            groups = [{"id": g, "users": users} for g, users in self.usergroups.items()]
            return 200, {"ok": True, "usergroups": groups}, {}
        return 200, {"ok": False, "error": "unknown_method"}, {}

    # --- what messages show, and the AI-app methods' rules ---------------------------------

    def _refusal(self, method: str, params: dict[str, Any]) -> str | None:
        """The error Slack answers for this call, or None (called with the lock held)."""
        if method == "views.open":
            return self._view_refusal(params)
        if method in (*STREAM_METHODS, STATUS_METHOD) and self.ai_refusal:
            return self.ai_refusal
        channel = str(params.get("channel") or params.get("channel_id") or "")
        if method == STATUS_METHOD:
            if not channel:
                return "channel_not_found"
            if not params.get("thread_ts"):
                return "invalid_thread_ts"
            if "status" not in params:
                return "invalid_arguments"
            return None
        if method == "chat.startStream":
            if not params.get("thread_ts"):
                return "invalid_arguments"
            if not channel.startswith("D"):  # streaming into a channel names its recipient
                if not params.get("recipient_user_id"):
                    return "missing_recipient_user_id"
                if not params.get("recipient_team_id"):
                    return "missing_recipient_team_id"
            return None
        if method in ("chat.appendStream", "chat.stopStream", "chat.update"):
            message = self.messages.get(str(params.get("ts")))
            if message is None or message["channel"] != channel:
                return "message_not_found" if method != "chat.update" else None
            if method == "chat.update" and message["streaming"]:
                return "streaming_state_conflict"
            if method != "chat.update" and not message["streaming"]:
                return "message_not_in_streaming_state"
        return None

    def _keep(self, method: str, params: dict[str, Any], ts: str) -> None:
        channel = params.get("channel") or params.get("channel_id")
        if method in ("chat.postMessage", "chat.startStream"):
            self.messages[ts] = {
                "channel": channel,
                "thread_ts": params.get("thread_ts"),
                "text": params.get("text") or params.get("markdown_text") or "",
                "blocks": _blocks(params),
                "chunks": list(params.get("chunks") or []),
                "streaming": method == "chat.startStream",
                "edits": 0,
            }
        elif method == "chat.update":
            message = self.messages.get(str(params.get("ts")))
            if message is not None:
                message.update(text=params.get("text") or "", blocks=_blocks(params))
                message["edits"] += 1
        elif method in ("chat.appendStream", "chat.stopStream"):
            message = self.messages[str(params["ts"])]
            message["chunks"] += list(params.get("chunks") or [])
            if params.get("markdown_text"):
                message["chunks"].append({"type": "markdown_text", "text": params["markdown_text"]})
            if method == "chat.stopStream":
                message["streaming"] = False
                if params.get("blocks"):
                    message["blocks"] = _blocks(params)
        elif method == STATUS_METHOD:
            self.statuses[(str(channel), str(params.get("thread_ts")))] = str(params["status"])


def _blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = params.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)
