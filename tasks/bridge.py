"""The one bridge between Celery's threads and asyncio.

Each worker process keeps one event loop in a background thread; step tasks submit their
coroutine to it and block their pool thread on the result. Many steps waiting on models
then share one loop, and litellm's cached async clients stay on the loop they were made on.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def _start() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=64, thread_name_prefix="switchboard-db")
    )
    thread = threading.Thread(target=loop.run_forever, name="switchboard-loop", daemon=True)
    thread.start()
    return loop


def loop() -> asyncio.AbstractEventLoop:
    """The process's loop, started lazily (and again after a fork)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():
            _loop, _pid = _start(), os.getpid()
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop()).result(timeout)
