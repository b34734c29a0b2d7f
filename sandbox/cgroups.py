"""Per-run cgroups for the bubblewrap backend: the real pids, memory and CPU caps.

rlimits alone are weak (RLIMIT_NPROC never binds root and counts the whole uid; RLIMIT_AS
turns an allocation into MemoryError instead of a memory cap), so when the host lets us
write cgroups (root, v1 or v2) each run gets its own group, and killing it kills everything
the program left behind. `Cgroup.create` returns None where cgroups are not writable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

from sandbox.base import Limits

ROOT = Path("/sys/fs/cgroup")
PARENT = "switchboard-sandbox"


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class Cgroup:
    """One run's cgroup (v1: one directory per controller; v2: one directory)."""

    def __init__(self, dirs: dict[str, Path], v2: bool) -> None:
        self.dirs = dirs
        self.v2 = v2

    @classmethod
    def create(cls, limits: Limits, root: Path = ROOT) -> Cgroup | None:
        """Make a cgroup with `limits` applied, or None when this host does not allow it."""
        name = f"run-{uuid.uuid4().hex[:12]}"
        try:
            if (root / "cgroup.controllers").exists():
                group = cls._create_v2(root, name)
            else:
                group = cls._create_v1(root, name)
            if group is None:
                return None
            group._apply(limits)
            return group
        except OSError:
            return None

    @classmethod
    def _create_v1(cls, root: Path, name: str) -> Cgroup | None:
        dirs: dict[str, Path] = {}
        for ctrl in ("pids", "memory", "cpu"):
            base = root / ctrl
            if not (base / "cgroup.procs").exists():
                if ctrl == "cpu":
                    continue  # CPU quota is optional; pids and memory are not
                return None
            path = base / PARENT / name
            path.mkdir(parents=True)
            dirs[ctrl] = path
        return cls(dirs, v2=False)

    @classmethod
    def _create_v2(cls, root: Path, name: str) -> Cgroup | None:
        parent = root / PARENT
        parent.mkdir(exist_ok=True)
        wanted = {"pids", "memory"} | (
            {"cpu"} & set((root / "cgroup.controllers").read_text().split())
        )
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        path = parent / name
        path.mkdir()
        return cls({c: path for c in wanted}, v2=True)

    def _apply(self, limits: Limits) -> None:
        period = 100_000
        quota = max(1000, int(limits.cpus * period))
        if self.v2:
            path = self.dirs["pids"]
            _write(path / "pids.max", str(limits.pids))
            _write(path / "memory.max", str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                _write(path / "memory.swap.max", "0")
            if "cpu" in self.dirs:
                _write(path / "cpu.max", f"{quota} {period}")
            return
        _write(self.dirs["pids"] / "pids.max", str(limits.pids))
        mem = self.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # absent without swap accounting
            _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(period))
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))

    def procs_files(self) -> list[str]:
        """cgroup.procs paths to write a pid into; opened by the child before exec."""
        return sorted({str(p / "cgroup.procs") for p in self.dirs.values()})

    def pids(self) -> list[int]:
        """Processes still in the group."""
        text = (self.dirs["pids"] / "cgroup.procs").read_text()
        return [int(line) for line in text.split()]

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the group until it is empty; True when it is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                pids = self.pids()
            except OSError:
                return True
            if not pids:
                return True
            if self.v2 and (self.dirs["pids"] / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(self.dirs["pids"] / "cgroup.kill", "1")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        return False

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer fired inside this group."""
        mem = self.dirs["memory"]
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            for line in (mem / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def remove(self) -> None:
        """Delete the group's directories (they must be empty of processes)."""
        for path in set(self.dirs.values()):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
