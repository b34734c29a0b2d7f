"""The bot's one bridge to Celery: send step tasks by name, with a deadline.

Tasks are sent by name (`send_task`) so the bot process needs no task code, and with
retry=False so a broker that is down fails the send instead of stalling Slack's 3-second ack.
"""

from __future__ import annotations

from typing import Any, Protocol

from celery import Celery


class Queue(Protocol):
    def start_run(self, **kwargs: Any) -> None: ...
    def advance(self, run_id: int, version: int) -> None: ...
    def notify(self, run_ids: list[int]) -> None: ...


class CeleryQueue:
    """Queue over a Celery app (the project's tasks.app by default)."""

    def __init__(self, app: Celery | None = None) -> None:
        if app is None:
            from tasks.app import app as default_app

            app = default_app
        self.app = app

    def _send(self, name: str, **options: Any) -> None:
        self.app.send_task(name, retry=False, queue=self.app.conf.task_default_queue, **options)

    def start_run(self, **kwargs: Any) -> None:
        self._send("switchboard.start_run", kwargs=kwargs)

    def advance(self, run_id: int, version: int) -> None:
        self._send("switchboard.advance", args=[run_id, version])

    def notify(self, run_ids: list[int]) -> None:
        self._send("switchboard.notify", args=["slack", run_ids])
