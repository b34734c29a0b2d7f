"""One event loop in one thread per process, where every MCP session lives.

MCP sessions are anyio task groups: each must be entered and exited by the same task, and
they must not share a loop with step coroutines that could block it. The engine calls tools
from worker threads and asks for specs from its own loop, so the sessions get a loop of their
own; callers submit coroutines to it and wait with a timeout. A forked child (Celery's
prefork pool) notices the pid changed and starts its own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class McpLoop:
    """A daemon thread running an asyncio loop; `run` blocks a caller, `spawn` does not."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="mcp-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop and return at once."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop and wait for it; TimeoutError after `timeout` seconds (the
        coroutine is cancelled then). Never call this from the loop's own thread."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("McpLoop.run called from the MCP loop itself")
        future = self.spawn(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


_lock = threading.Lock()
_shared: tuple[int, McpLoop] | None = None


def shared_loop() -> McpLoop:
    """The process's MCP loop, started on first use (and again in a forked child)."""
    global _shared
    with _lock:
        if _shared is None or _shared[0] != os.getpid():
            _shared = (os.getpid(), McpLoop())
        return _shared[1]
