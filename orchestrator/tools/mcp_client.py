"""A connection to one MCP server, kept on the process's MCP loop.

One owner task per connection enters the SDK's `Client` and exits it again (anyio requires
the same task for both), keeps the tool listing current (re-listed on the server's
`notifications/tools/list_changed`, or its `subscriptions/listen` event on 2026-era
connections) and winds the connection down when it is closed or the server goes away. A
call that finds the connection gone reconnects first; a call during which it went away
returns an error saying the call may or may not have run, never a retry.

A stdio server runs with the SDK's minimal environment (HOME, LOGNAME, PATH, SHELL, TERM,
USER) plus exactly what its `env` names, in a session of its own (the SDK starts it with
`start_new_session`), so it never sees the worker's keys and a signal to the worker's
process group does not reach it. It runs under `mcp_keeper`, which lets a call in flight
finish when the worker dies. Its stderr is logged line by line and the last lines explain a
server that would not start.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx2
import mcp.types as mt
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from orchestrator.tools import mcp_keeper, mcp_results
from orchestrator.tools.mcp_config import McpServer, MissingVariable, resolve
from orchestrator.tools.mcp_loop import McpLoop

log = logging.getLogger(__name__)

KEEPER = mcp_keeper.__file__
MAX_LIST_PAGES = 100
RETRY_INTERVAL_S = 5.0  # a background reconnect is tried at most this often
STDERR_LINES = 20
Mode = Literal["auto", "legacy"]


class Unavailable(Exception):
    """The server cannot be reached now; str() is the one-line reason."""


@dataclass(frozen=True)
class Snapshot:
    """What is known of a server right now, readable from any thread."""

    tools: dict[str, mt.Tool]
    error: str | None  # None while connected
    connected: bool


class _StderrTail(asyncio.Protocol):
    """Reads a stdio server's stderr: each line to the log, the last few kept for errors."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.closed = asyncio.get_running_loop().create_future()
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            self._line(raw)
        if len(self._partial) > 8192:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if line:
            self.lines.append(line)
            log.info("mcp server %s stderr: %s", self.server, line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._line(self._partial)
        if not self.closed.done():
            self.closed.set_result(None)

    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None


class _WatchedReadStream:
    """The transport's read stream, reporting its end: a stdio server that exits while
    idle is noticed before the next call instead of during it."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    def __getattr__(self, name: str) -> Any:  # last_context and friends
        return getattr(self._inner, name)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _describe(exc: BaseException, secrets: list[str], where: str = "the server") -> str:
    """One line on why a connection failed, with resolved secrets masked."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        leaves = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (leaves or list(exc.exceptions))[0]
    if isinstance(exc, Unavailable | MissingVariable):
        text = str(exc)
    elif isinstance(exc, FileNotFoundError):
        text = f"command not found: {exc.filename or exc}"
    elif isinstance(exc, PermissionError):
        text = f"command not executable: {exc.filename or exc}"
    elif isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        text = "the server closed the connection"
    elif isinstance(exc, MCPError):
        text = f"the server answered with error {exc.code}: {exc.message}"
    elif isinstance(exc, httpx2.ConnectError | ConnectionError):
        text = f"cannot connect to {where}: {exc}"
    elif isinstance(exc, httpx2.HTTPStatusError):
        text = f"HTTP {exc.response.status_code}"
    elif isinstance(exc, TimeoutError | httpx2.TimeoutException):
        text = "no answer in time"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:500]


class McpConnection:
    """One configured MCP server: connect, list, re-list, call, reconnect.

    The blocking methods (`call`, `close`) are for threads other than the MCP loop; the
    `a…` coroutines run on it; `snapshot` and `poke` never block and are safe anywhere.
    """

    def __init__(
        self,
        name: str,
        config: McpServer,
        loop: McpLoop,
        *,
        mode: Mode = "auto",
        environ: dict[str, str] | None = None,
        known_tools: dict[str, mt.Tool] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._loop = loop
        self._mode = mode
        self._environ = environ
        self._state_lock = threading.Lock()
        self._tools: dict[str, mt.Tool] = dict(known_tools or {})  # the last listing seen
        self._error: str | None = "not connected yet"
        self._client: Client | None = None
        self._connect_lock = asyncio.Lock()
        self._wake: anyio.Event | None = None  # set to end the current connection
        self._relist_wanted: anyio.Event | None = None
        self._closing = False
        self._next_attempt = 0.0
        self._owner: asyncio.Task[None] | None = None
        self._secrets: list[str] = []
        self._generation = 0  # which owner task's connection the state describes
        self._http_error: int | None = None  # the last HTTP error status the server sent

    # --- any thread -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._state_lock:
            return Snapshot(dict(self._tools), self._error, self._error is None)

    def poke(self) -> None:
        """Try to reconnect in the background if the server is down and a retry is due."""
        with self._state_lock:
            due = self._error is not None and time.monotonic() >= self._next_attempt
            if due:
                self._next_attempt = time.monotonic() + RETRY_INTERVAL_S
        if due and not self._closing:
            self._loop.spawn(self.aconnect())

    # --- blocking, from other threads -------------------------------------------------

    def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call a tool; the JSON text of the tool message. Never raises for tool trouble."""
        budget = self.config.connect_timeout_s + self.config.timeout_s + 10
        try:
            return self._loop.run(self._call(tool, arguments), budget)
        except TimeoutError:
            return mcp_results.error(
                f"MCP server {self.name!r} did not answer {tool!r} within "
                f"{self.config.timeout_s:g} s; the call may or may not have run"
            )

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._loop.run(self.aclose(), timeout)
        except (TimeoutError, RuntimeError) as exc:
            log.warning("mcp server %s did not close cleanly: %s", self.name, exc)

    # --- on the MCP loop ----------------------------------------------------------------

    def _fail(self, reason: str, generation: int | None = None) -> str:
        """Record the server as unavailable, unless a newer connection has replaced the
        one this news is about."""
        with self._state_lock:
            if generation is None or generation == self._generation:
                self._error = reason
                self._client = None
                self._next_attempt = time.monotonic() + RETRY_INTERVAL_S
        return reason

    async def aconnect(self) -> str | None:
        """On the MCP loop: connect if not connected; the reason if that failed."""
        try:
            await self._ensure()
        except Unavailable as exc:
            return str(exc)
        return None

    async def _ensure(self) -> Client:
        async with self._connect_lock:
            client = self._client
            if client is not None and self._wake is not None and not self._wake.is_set():
                return client
            if self._closing:
                raise Unavailable("the connection is closed")
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            with self._state_lock:
                self._generation += 1
                generation = self._generation
            self._owner = asyncio.ensure_future(self._own(ready, generation))
            return await ready

    async def _own(self, ready: asyncio.Future[Client], generation: int) -> None:
        """The owner task: enters the client, serves until told to stop or the server goes
        away, and exits the client again, all in this one task."""
        wake = anyio.Event()
        relist = anyio.Event()
        stderr: _StderrTail | None = None
        connected = False
        lost_reason = "the connection to the server was lost"
        timeout = self.config.connect_timeout_s
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                async with AsyncExitStack() as stack:
                    transport, stderr = await self._transport(stack)
                    client = Client(
                        _watched(transport, wake.set),
                        mode=self._mode,
                        message_handler=self._on_message,
                        client_info=mt.Implementation(name="switchboard", version="0.1.0"),
                    )
                    await stack.enter_async_context(client)
                    tools = await self._list(client)
                    scope.deadline = math.inf
                    self._wake, self._relist_wanted = wake, relist
                    with self._state_lock:
                        self._tools, self._error, self._client = tools, None, client
                        self._generation = generation
                    connected = True
                    self._http_error = None  # e.g. a legacy server's 4xx to the era probe
                    log.info(
                        "mcp server %s connected (%s, protocol %s): %d tools",
                        self.name,
                        self.config.transport,
                        client.protocol_version,
                        len(tools),
                    )
                    ready.set_result(client)
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._relister, client, relist)
                        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                            group.start_soon(self._listener, client, relist)
                        await wake.wait()
                        group.cancel_scope.cancel()
            if scope.cancelled_caught and not connected:
                raise Unavailable(f"no answer within {timeout:g} s")
        except BaseException as exc:
            if not connected:
                reason = self._http_reason() or _describe(exc, self._secrets, self.config.where())
                if stderr is not None:
                    with anyio.move_on_after(0.5):
                        await stderr.closed
                    if stderr.last() and reason == "the server closed the connection":
                        reason = f"the server exited: {stderr.last()}"
                    elif stderr.last():
                        reason = f"{reason} (stderr: {stderr.last()})"
                self._fail(reason, generation)
                if not ready.done():
                    ready.set_exception(Unavailable(reason))
            else:
                lost_reason = _describe(exc, self._secrets, self.config.where())
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        finally:
            if not ready.done():
                reason = "the connection ended at once"
                ready.set_exception(Unavailable(self._fail(reason, generation)))
            if connected:
                self._fail("the connection is closed" if self._closing else lost_reason, generation)
                if not self._closing:
                    log.warning("mcp server %s: %s", self.name, lost_reason)

    @asynccontextmanager
    async def _stderr_pipe(self) -> Any:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        tail = _StderrTail(self.name)
        reader = os.fdopen(read_fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: tail, reader)
        writer = os.fdopen(write_fd, "w", encoding="utf-8")
        try:
            yield tail, writer
        finally:
            writer.close()

    async def _transport(self, stack: AsyncExitStack) -> tuple[Any, _StderrTail | None]:
        cfg = self.config
        env = os.environ if self._environ is None else self._environ
        if cfg.command is not None:
            server_env = {k: resolve(v, f"env {k}", env) for k, v in cfg.env.items()}
            self._secrets = [v for v in server_env.values() if len(v) >= 6]
            grace = f"{cfg.timeout_s + 5:g}"
            params = StdioServerParameters(
                command=sys.executable,
                args=["-I", KEEPER, "--grace", grace, "--", cfg.command, *cfg.args],
                env=server_env,
                cwd=cfg.cwd,
            )
            tail, writer = await stack.enter_async_context(self._stderr_pipe())
            return stdio_client(params, errlog=writer), tail
        headers = {k: resolve(v, f"header {k}", env) for k, v in cfg.headers.items()}
        self._secrets = [v for v in headers.values() if len(v) >= 6]
        self._http_error = None

        async def note_status(response: httpx2.Response) -> None:
            # The SDK turns an HTTP error into a generic JSON-RPC error; keep the status.
            if response.status_code >= 400:
                self._http_error = response.status_code

        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(cfg.connect_timeout_s, read=max(300.0, cfg.timeout_s + 30)),
            event_hooks={"response": [note_status]},
        )
        await stack.enter_async_context(http)
        return streamable_http_client(cfg.url or "", http_client=http), None

    async def _list(self, client: Client) -> dict[str, mt.Tool]:
        tools: dict[str, mt.Tool] = {}
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            for tool in page.tools:
                tools.setdefault(tool.name, tool)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _on_message(self, message: Any) -> None:
        changed = getattr(message, "method", None) == "notifications/tools/list_changed"
        if changed and self._relist_wanted is not None:
            self._relist_wanted.set()
        await anyio.lowlevel.checkpoint()

    async def _relister(self, client: Client, first: anyio.Event) -> None:
        event = first
        while True:
            await event.wait()
            event = anyio.Event()
            self._relist_wanted = event
            try:
                with anyio.fail_after(self.config.timeout_s):
                    tools = await self._list(client)
            except Exception as exc:
                log.warning(
                    "mcp server %s: re-listing tools failed: %s",
                    self.name,
                    _describe(exc, self._secrets, self.config.where()),
                )
                continue
            with self._state_lock:
                before = set(self._tools)
                self._tools = tools
            log.info(
                "mcp server %s changed its tools: +%s -%s",
                self.name,
                sorted(set(tools) - before),
                sorted(before - set(tools)),
            )

    async def _listener(self, client: Client, first: anyio.Event) -> None:
        """2026-era servers send list changes only on a `subscriptions/listen` stream."""
        caps = client.server_capabilities.tools
        if caps is None or not caps.list_changed:
            return
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    if self._relist_wanted is not None:
                        self._relist_wanted.set()
        except Exception as exc:
            log.info("mcp server %s: no tool change events: %s", self.name, _describe(exc, []))

    async def _call(self, tool: str, arguments: dict[str, Any]) -> str:
        try:
            client = await self._ensure()
        except Unavailable as exc:
            return mcp_results.error(f"MCP server {self.name!r} is unavailable: {exc}")
        generation = self._generation
        self._http_error = None
        try:
            result = await client.call_tool(
                tool, arguments, read_timeout_seconds=self.config.timeout_s
            )
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._lost("the server closed the connection during a call", generation)
                return mcp_results.error(
                    f"MCP server {self.name!r} went away during the call to {tool!r}; "
                    "it may or may not have run"
                )
            if exc.code == REQUEST_TIMEOUT:
                return mcp_results.error(
                    f"MCP server {self.name!r} did not answer {tool!r} within "
                    f"{self.config.timeout_s:g} s; the call may or may not have run"
                )
            refusal = self._http_reason() or exc.message
            return mcp_results.error(f"{self.name}.{tool} was refused: {refusal}")
        except ValidationError:
            return mcp_results.error(
                f"MCP server {self.name!r} answered {tool!r} with a malformed result"
            )
        except Exception as exc:
            reason = _describe(exc, self._secrets, self.config.where())
            self._lost(reason, generation)
            return mcp_results.error(
                f"MCP server {self.name!r} failed during the call to {tool!r} ({reason}); "
                "it may or may not have run"
            )
        return mcp_results.payload(result, self.name, tool)

    def _http_reason(self) -> str | None:
        """`HTTP 401 from <url>...` when the last failure was an HTTP error status."""
        status, self._http_error = self._http_error, None
        if status is None:
            return None
        hint = ""
        if status in (401, 403):
            hint = " (check the credentials in its headers)"
        return f"HTTP {status} from {self.config.where()}{hint}"

    def _lost(self, reason: str, generation: int) -> None:
        """End the connection a call went through; the next call reconnects."""
        if generation == self._generation and self._wake is not None:
            self._wake.set()
        self._fail(reason, generation)

    async def aclose(self) -> None:
        """End the connection for good (on the MCP loop); a stdio server sees its stdin
        close and exits."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        owner = self._owner
        if owner is not None and not owner.done():
            await asyncio.wait({owner}, timeout=8)


def _watched(transport: Any, on_end: Callable[[], None]) -> Any:
    """The transport with its read stream watched for the end of the connection."""

    @asynccontextmanager
    async def watched() -> Any:
        async with transport as (read_stream, write_stream):
            yield _WatchedReadStream(read_stream, on_end), write_stream

    return watched()
