"""A ChatPort double that records what would have been posted."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from orchestrator.notices import Notice
from orchestrator.ports import Target


@dataclass(frozen=True)
class Call:
    method: str
    target: Target
    notice: Notice
    ref: str


class RecordingPort:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def post(self, target: Target, notice: Notice) -> str:
        with self._lock:
            ref = f"m{next(self._ids)}"
            self.calls.append(Call("post", target, notice, ref))
            return ref

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        with self._lock:
            self.calls.append(Call("update", target, notice, ref))

    def kinds(self) -> list[str]:
        return [f"{c.method}:{c.notice.kind}" for c in self.calls]
