"""Keeps a stdio MCP server's calls in flight alive when the worker that started it dies.

The SDK starts a stdio server in a session of its own, so a signal to the worker's process
group does not reach it. But a stdio server ends when its stdin closes, and a killed worker
closes it mid-call: servers written with the Python SDK cancel the call in flight then. So
a stdio server runs under this small relay (`python mcp_keeper.py --grace S -- command
args`): it copies lines both ways unchanged and notes which request ids are still
unanswered. When its stdin ends it closes the server's stdin at once if nothing is in
flight (a normal shutdown), otherwise only after the server has answered every request or
`--grace` seconds have passed. Answers that arrive after the worker died are read and
dropped so the server never blocks on a full pipe.

It only reads the `id` and `method` of each line; it does not speak the protocol. A
`subscriptions/listen` request is a stream that is answered only when it closes, so it is
not waited for. Standard library only: it runs under `python -I` in the server's minimal
environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

STREAMS = frozenset({"subscriptions/listen"})


class InFlight:
    """Request ids sent to the server and not yet answered."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._changed = threading.Condition()

    @staticmethod
    def _messages(line: bytes) -> list[dict[str, Any]]:
        try:
            value = json.loads(line)
        except ValueError:
            return []
        items = value if isinstance(value, list) else [value]
        return [item for item in items if isinstance(item, dict)]

    def sent(self, line: bytes) -> None:
        for message in self._messages(line):
            if "id" in message and "method" in message and message["method"] not in STREAMS:
                with self._changed:
                    self._ids.add(json.dumps(message["id"]))

    def received(self, line: bytes) -> None:
        for message in self._messages(line):
            if "id" in message and "method" not in message:
                with self._changed:
                    self._ids.discard(json.dumps(message["id"]))
                    self._changed.notify_all()

    def wait_empty(self, timeout: float, alive: Any) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._ids and alive() and time.monotonic() < deadline:
                self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            return not self._ids


def _copy_out(source: BinaryIO, target: BinaryIO, on_line: Any = None) -> None:
    """Copy lines until the source ends; once the target is gone, keep draining."""
    target_alive = True
    for line in iter(source.readline, b""):
        if on_line is not None:
            on_line(line)
        if target_alive:
            try:
                target.write(line)
                target.flush()
            except OSError:
                target_alive = False


def main(argv: list[str]) -> int:
    grace = 60.0
    if len(argv) >= 2 and argv[0] == "--grace":
        grace, argv = float(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: mcp_keeper.py [--grace SECONDS] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        print(f"command not found: {argv[0]}", file=sys.stderr, flush=True)
        return 127
    except PermissionError:
        print(f"command not executable: {argv[0]}", file=sys.stderr, flush=True)
        return 126
    assert child.stdin and child.stdout and child.stderr
    in_flight = InFlight()
    stdout = sys.stdout.buffer

    def downstream() -> None:
        _copy_out(child.stdout, stdout, in_flight.received)  # type: ignore[arg-type]
        # The server is gone: let the worker see the end, and end with the server's status.
        code = child.wait()
        errors.join(2)
        with contextlib.suppress(OSError):
            stdout.close()
        os._exit(code if code >= 0 else 128 - code)

    errors = threading.Thread(target=_copy_out, args=(child.stderr, sys.stderr.buffer), daemon=True)
    errors.start()
    threading.Thread(target=downstream, daemon=True).start()

    for line in iter(sys.stdin.buffer.readline, b""):
        in_flight.sent(line)
        try:
            child.stdin.write(line)
            child.stdin.flush()
        except OSError:
            break
    # The worker closed our stdin: shut down normally, or after the calls still in flight.
    in_flight.wait_empty(grace, lambda: child.poll() is None)
    with contextlib.suppress(OSError):
        child.stdin.close()
    code = child.wait()
    errors.join(2)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
