"""`switchboard worker --processes N`: N Celery worker processes under one command.

One Python process is CPU-bound at roughly a hundred model calls a second (litellm's call
path), so a machine's cores are used by several processes, each a full worker with its own
hostname (Celery needs distinct node names). This parent only starts, watches and stops
them: a signal is passed on to every child; a child that stops unasked stops the rest and
the parent exits 1, so a supervisor (`restart: on-failure`) restarts the set. Children
share PROMETHEUS_MULTIPROC_DIR and the parent serves the aggregated /metrics, so
METRICS_PORT is bound once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence


def child_hostname(hostname: str | None, index: int) -> str:
    """worker1@%h → worker1-2@%h; no hostname → celery-2@%h."""
    name, _, host = (hostname or "celery@%h").partition("@")
    return f"{name}-{index}@{host or '%h'}"


def run(count: int, child_args: Sequence[str], hostname: str | None) -> int:
    """Start `count` workers (`bot.cli worker --processes 1 <child_args> --hostname …`),
    wait, and return the exit code for the parent."""
    env = dict(os.environ)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="switchboard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"]
    port = env.pop("METRICS_PORT", None)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "worker",
                "--processes",
                "1",
                *child_args,
                "--hostname",
                child_hostname(hostname, index),
            ],
            env=env,
        )
        for index in range(1, count + 1)
    ]
    if port:
        from orchestrator.telemetry import metrics

        metrics.serve_metrics(int(port))
    asked = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal asked
        asked = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        codes = [child.poll() for child in children]
        if all(code is not None for code in codes):
            return max(code or 0 for code in codes) if asked else 1
        if not asked and any(code is not None for code in codes):
            stopped = next(c for c in codes if c is not None)
            print(
                f"switchboard: a worker process stopped unasked (exit {stopped}); "
                "stopping the others and exiting 1 so that a supervisor restarts them",
                file=sys.stderr,
            )
            forward(signal.SIGTERM, None)
            asked = False  # the exit code stays 1: this stop was not asked for
            for child in children:
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
            return 1
        time.sleep(0.5)
