"""The sandbox seam: limits, results and the protocol every backend implements.

Agent-generated code never runs on the host (DESIGN principle 7). Everything the caller can
choose per run is in `run()`'s arguments; everything that keeps the host safe (image, network,
caps) is in `Limits` and the backend's constructor, which only operators configure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Language = Literal["python", "sh"]
LANGUAGES: tuple[str, ...] = ("python", "sh")

# Name of the program file written into the work dir, per language.
MAIN_FILE: dict[str, str] = {"python": "main.py", "sh": "main.sh"}
# Argv run inside the sandbox (cwd is the work dir).
COMMAND: dict[str, tuple[str, ...]] = {
    "python": ("python3", "-E", "-s", "-B", "main.py"),
    "sh": ("/bin/sh", "main.sh"),
}

KIB = 1024
MIB = 1024 * KIB
# Code and extra files travel on the command line into a container (base64, one argument per
# file); keep well below the kernel's 128 KiB per-argument limit.
MAX_SOURCE_BYTES = 64 * KIB


class SandboxError(RuntimeError):
    """The backend itself failed (engine gone, image missing): not the program's fault."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource caps for one run. Operator configuration; never taken from model output."""

    wall_time_s: float = 10.0
    memory_bytes: int = 256 * MIB
    cpus: float = 1.0
    pids: int = 64
    output_bytes: int = 64 * KIB
    network: bool = False
    work_dir_bytes: int = 16 * MIB

    def __post_init__(self) -> None:
        if self.wall_time_s <= 0 or self.memory_bytes <= 0 or self.cpus <= 0:
            raise ValueError("limits must be positive")
        if self.pids < 8 or self.output_bytes <= 0 or self.work_dir_bytes <= 0:
            raise ValueError("pids must be >= 8 and sizes positive")


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced. `exit_code` follows the shell convention (128+signal if killed)."""

    stdout: str
    stderr: str
    exit_code: int
    duration_s: float
    timed_out: bool = False
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when the program ran to completion and exited 0."""
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    @property
    def outcome(self) -> str:
        """One label for metrics: ok, error, timeout or oom."""
        if self.timed_out:
            return "timeout"
        if self.oom_killed:
            return "oom"
        return "ok" if self.exit_code == 0 else "error"


@runtime_checkable
class Sandbox(Protocol):
    """Runs untrusted code somewhere that is not the host, within `limits`."""

    name: str

    def run(
        self,
        code: str,
        language: Language,
        limits: Limits,
        files: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run `code` (plus optional extra `files` in the work dir) and return its result."""
        ...


def check_source(code: str, language: str, files: Mapping[str, str] | None) -> dict[str, str]:
    """Validate the program and return every file to place in the work dir, by name.

    File names are plain names (no directories), so nothing can be written outside the
    work dir by naming tricks, and the total stays small enough to pass on a command line.
    """
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; use one of {', '.join(LANGUAGES)}")
    out: dict[str, str] = {}
    for name, text in (files or {}).items():
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise ValueError(f"bad file name {name!r}")
        out[name] = text
    out[MAIN_FILE[language]] = code
    size = sum(len(n.encode()) + len(t.encode()) for n, t in out.items())
    if size > MAX_SOURCE_BYTES:
        raise ValueError(f"source too large: {size} bytes > {MAX_SOURCE_BYTES}")
    return out


class OutputBuffer:
    """Keeps the first `cap` bytes of a stream and remembers whether more arrived."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False

    def feed(self, chunk: bytes) -> bool:
        """Add a chunk; return False once the cap is reached (caller may stop reading)."""
        room = self.cap - self._kept
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:room]
        if chunk:
            self._chunks.append(chunk)
            self._kept += len(chunk)
        return not self.truncated

    def text(self) -> str:
        """The kept bytes as text; a multi-byte character cut at the cap becomes U+FFFD."""
        return b"".join(self._chunks).decode("utf-8", errors="replace")


def signal_exit_code(returncode: int) -> int:
    """Map subprocess' negative 'killed by signal N' to the shell's 128+N, like Docker does."""
    return 128 - returncode if returncode < 0 else returncode
