"""Step enqueues that wait out a broker outage instead of ending the console session.

When the task queue does not answer, the run is already saved (status queued); its first
step is held here and sent again every few seconds, in order, until the queue takes it.
Beat would restart such a run too, but only after SWITCHBOARD_STALLED_AFTER and only if a
beat is running; a person at the console should hear at once, and again when it is sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from bot import outage

Send = Callable[[int, int], None]


class HeldSteps:
    """An enqueue callable that holds steps while the broker is down and retries them."""

    def __init__(self, send: Send, say: Callable[[str], None], *, every_s: float = 2.0) -> None:
        self._send = send
        self._say = say
        self.every_s = every_s
        self._held: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, run_id: int, version: int) -> None:
        with self._lock:
            if self._held:  # keep order, and do not wait out another timeout per step
                self._held.append((run_id, version))
                self._say(f"[run {run_id}] saved; it starts when the task queue is back.")
                return
            try:
                self._send(run_id, version)
                return
            except Exception as exc:
                if not outage.is_broker(exc):
                    raise
                self._held.append((run_id, version))
                reason = outage.describe(exc)
        self._say(
            f"[run {run_id}] saved, but {reason}; it starts when the queue is back "
            f"(trying every {self.every_s:.0f}s)."
        )
        self._start()

    def held(self) -> list[int]:
        with self._lock:
            return [run_id for run_id, _ in self._held]

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._retry, name="held-steps", daemon=True)
            self._thread.start()

    def _retry(self) -> None:
        while not self._stop.wait(self.every_s):
            with self._lock:
                sent: list[int] = []
                try:
                    while self._held:
                        run_id, version = self._held[0]
                        self._send(run_id, version)
                        self._held.pop(0)
                        sent.append(run_id)
                except Exception as exc:
                    if not outage.is_broker(exc):
                        self._say(f"(cannot queue held steps: {outage.describe(exc)})")
                done = not self._held
            for run_id in sent:
                self._say(f"[run {run_id}] queued: the task queue answers again.")
            if done:
                return

    def close(self) -> None:
        self._stop.set()
