"""The embedded queue: a Celery worker thread on kombu's memory transport.

Used when no BROKER_URL is set, so `switchboard chat` runs the real task code with no
services. Periodic tasks are sent by a timer thread instead of a separate beat process.
"""

from __future__ import annotations

import logging
import threading

from celery.worker import WorkController

from tasks.app import app

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(self, concurrency: int = 8, periodic_every_s: float = 10.0) -> None:
        self.concurrency = concurrency
        self.periodic_every_s = periodic_every_s
        self._stop = threading.Event()
        self._worker: WorkController | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        app.finalize()
        app.set_current()
        self._worker = WorkController(
            app=app,
            pool="threads",
            concurrency=self.concurrency,
            hostname="switchboard@embedded",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
            ready_callback=None,
        )
        worker_thread = threading.Thread(
            target=self._worker.start, name="switchboard-worker", daemon=True
        )
        timer = threading.Thread(target=self._periodic, name="switchboard-beat", daemon=True)
        self._threads = [worker_thread, timer]
        for thread in self._threads:
            thread.start()

    def _periodic(self) -> None:
        from tasks.periodic import expire_escalations, reap_stalled

        while not self._stop.wait(self.periodic_every_s):
            try:
                expire_escalations.delay()
                reap_stalled.delay()
            except Exception:  # the embedded queue should never fail; keep the timer alive
                log.exception("embedded beat tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.stop(in_sighandler=False)
