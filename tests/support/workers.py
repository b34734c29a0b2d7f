"""Real Celery worker processes for integration tests."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def _die_with_parent() -> None:
    """A test run that is killed must not leave workers consuming from the next run's queue."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class WorkerProcess:
    """`switchboard worker` in a subprocess; its log goes to a file the test can read."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        concurrency: int = 8,
        pool: str = "threads",
        name: str = "w1",
        command: list[str] | None = None,
        ready: str = " ready.",
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.concurrency = concurrency
        self.pool = pool
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.command = command or [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            "--loglevel=INFO",
            f"--hostname={name}@%h",
            "--processes=1",
        ]
        self.ready = ready
        self.restarts = 0
        self._stopping: threading.Event | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *self.command],
            env={**self.env, "CELERY_WORKER_NAME": self.name},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if self.ready in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("worker did not become ready")

    def supervise(self) -> WorkerProcess:
        """Restart the process whenever it exits on its own, as docker's `restart:` does."""
        self._stopping = threading.Event()

        def watch() -> None:
            while not self._stopping.wait(0.5):
                if self.proc is not None and self.proc.poll() is not None:
                    self.restarts += 1
                    try:
                        self.start()
                    except RuntimeError:  # exited again (its broker still down): keep trying
                        continue

        threading.Thread(target=watch, daemon=True).start()
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group, like an OOM kill or a pulled plug."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def beat_process(env: dict[str, str], tmp: Path) -> WorkerProcess:
    """`switchboard beat` with its own schedule file."""
    return WorkerProcess(
        env,
        tmp / "beat.log",
        command=["beat", "--loglevel=DEBUG", f"--schedule-file={tmp / 'beat-schedule'}"],
        ready="beat: Starting",
    )
