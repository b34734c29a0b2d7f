"""Bubblewrap backend: Linux namespaces for machines without a Docker engine.

Each run is `bwrap --unshare-all` (no network, own pid namespace, private /tmp, read-only
/usr, no host environment) started as uid 65534 when we are root, inside its own cgroup when
the host allows (pids, memory, CPU), with rlimits as a second line. The program is pid 2 of
its pid namespace under bwrap's init, so when the run ends - normally or killed at the wall
time - the kernel kills every process it left behind; the cgroup kill makes sure of it.

The program may not build namespaces of its own (a nested user namespace hands it a full
capability set over kernel code written for root): the run always gets its own user
namespace, `--disable-userns` where this bwrap has it (0.8.0 and later), and in any case the
seccomp filter of sandbox/seccomp.py (`--seccomp FD`), which refuses unshare, setns, clone
with namespace flags, mount, the keyring, bpf and the rest of the list.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO

from sandbox.base import (
    COMMAND,
    Language,
    Limits,
    OutputBuffer,
    RunResult,
    SandboxError,
    check_source,
    signal_exit_code,
)
from sandbox.cgroups import Cgroup
from sandbox.seccomp import bwrap_filter

WORK_DIR = "/work"
NOBODY = 65534
_ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_READ_CHUNK = 64 * 1024


class BwrapSandbox:
    """Sandbox on bubblewrap. Runs the host's /usr read-only, so python3 must be installed."""

    name = "bwrap"

    def __init__(
        self,
        bwrap: str | None = None,
        use_cgroups: bool = True,
        disable_userns: bool | None = None,
    ) -> None:
        """`disable_userns=None` uses `--disable-userns` when the installed bwrap offers it;
        False forces the seccomp-only fallback that older bwraps get (for tests)."""
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.use_cgroups = use_cgroups
        self._disable_userns = disable_userns

    @property
    def disable_userns(self) -> bool:
        """Whether runs use `--disable-userns` (asked of bwrap's --help once)."""
        if self._disable_userns is None:
            self._disable_userns = _supports(self.bwrap, "--disable-userns")
        return self._disable_userns

    @classmethod
    def available(cls) -> bool:
        """True when bubblewrap is installed and can really run a program here."""
        if shutil.which("bwrap") is None:
            return False
        try:
            result = cls().run("exit 0", "sh", Limits(wall_time_s=10))
        except (OSError, SandboxError):
            return False
        return result.exit_code == 0

    def run(
        self,
        code: str,
        language: Language,
        limits: Limits,
        files: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run the program in fresh namespaces; nothing it starts outlives the call."""
        sources = check_source(code, language, files)
        seccomp = bwrap_filter()
        group = Cgroup.create(limits) if self.use_cgroups and os.geteuid() == 0 else None
        try:
            with contextlib.ExitStack() as stack:
                argv: list[str] = []
                fds: list[int] = []
                program = stack.enter_context(tempfile.TemporaryFile())
                program.write(seccomp)
                program.seek(0)
                fds.append(program.fileno())
                argv += ["--seccomp", str(program.fileno())]
                for name, text in sources.items():
                    # bwrap copies each file from an fd into the sandbox's tmpfs work dir.
                    handle = stack.enter_context(tempfile.TemporaryFile())
                    handle.write(text.encode())
                    handle.seek(0)
                    fds.append(handle.fileno())
                    argv += ["--file", str(handle.fileno()), f"{WORK_DIR}/{name}"]
                command = self._command(argv, language, limits)
                return self._execute(command, fds, limits, group)
        finally:
            if group is not None:
                group.kill_all()
                group.remove()

    def _command(self, file_args: list[str], language: Language, limits: Limits) -> list[str]:
        """The full argv: optional uid drop, then bwrap with its mounts, then the program.

        `file_args` carries the --seccomp and --file fd arguments.
        """
        prefix: list[str] = []
        user_args = ["--unshare-user"]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv:
                # A real unprivileged host uid: RLIMIT_NPROC binds and files owned by root
                # are not "ours" even through a bind mount.
                prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            else:
                user_args += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
        if self.disable_userns:
            user_args += ["--disable-userns", "--assert-userns-disabled"]
        args = [self.bwrap, "--unshare-all", *user_args, "--die-with-parent", "--new-session"]
        if limits.network:
            args.append("--share-net")
        args += ["--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"]
        args += ["--setenv", "HOME", WORK_DIR, "--setenv", "LANG", "C.UTF-8"]
        args += ["--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
        for name in _ROOT_DIRS:
            host = f"/{name}"
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind", host, host]
        for etc in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"):
            args += ["--ro-bind-try", etc, etc]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", WORK_DIR]
        args += [*file_args, "--remount-ro", "/", "--chdir", WORK_DIR, "--cap-drop", "ALL", "--"]
        return prefix + args + list(COMMAND[language])

    def _execute(
        self, command: list[str], fds: list[int], limits: Limits, group: Cgroup | None
    ) -> RunResult:
        out, err = OutputBuffer(limits.output_bytes), OutputBuffer(limits.output_bytes)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=fds,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                preexec_fn=_child_setup(limits, group),
            )
        except OSError as exc:
            raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
        ]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            returncode = proc.wait(timeout=limits.wall_time_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc, group)
            returncode = proc.wait()
        duration = time.monotonic() - started
        if group is not None:  # anything the program daemonised dies with the run
            group.kill_all()
        for reader in readers:
            reader.join(timeout=5)
        exit_code = signal_exit_code(returncode)
        if group is not None:
            oom = group.oom_killed()
        else:  # rlimit fallback: the allocation failed instead of being killed
            oom = exit_code != 0 and "MemoryError" in err.text()[-2000:]
        return RunResult(
            stdout=out.text(),
            stderr=err.text(),
            exit_code=exit_code,
            duration_s=round(duration, 3),
            timed_out=timed_out,
            oom_killed=oom and not timed_out,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
        )


def _supports(bwrap: str, option: str) -> bool:
    """True when `bwrap --help` lists `option` (older releases do not know --disable-userns)."""
    try:
        out = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in out.stdout + out.stderr


def _child_setup(limits: Limits, group: Cgroup | None) -> Callable[[], None]:
    """Runs in the forked child before exec: join the cgroup, then cap with rlimits."""
    procs = group.procs_files() if group is not None else []
    cpu_s = math.ceil(limits.wall_time_s) + 1
    caps = [
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, limits.work_dir_bytes),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ]
    if group is None:  # no cgroup: the rlimits are the only caps on pids and memory
        # RLIMIT_NPROC counts every process of the uid on the host, so allow what that uid
        # already runs plus the run's own budget.
        uid = NOBODY if os.geteuid() == 0 and shutil.which("setpriv") else os.getuid()
        caps.append((resource.RLIMIT_NPROC, limits.pids + _count_processes(uid)))
        caps.append((resource.RLIMIT_AS, limits.memory_bytes))

    def setup() -> None:
        pid = str(os.getpid())
        for path in procs:
            with open(path, "w") as f:
                f.write(pid)
        for which, value in caps:
            resource.setrlimit(which, (value, value))

    return setup


def _count_processes(uid: int) -> int:
    """How many processes (threads count too, as for RLIMIT_NPROC) `uid` runs right now."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            if os.stat(entry.path).st_uid == uid:
                count += max(1, len(os.listdir(f"{entry.path}/task")))
    return count


def _drain(stream: IO[bytes], buf: OutputBuffer) -> None:
    """Read a pipe to EOF, keeping only what fits, so the program never blocks on a full pipe."""
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(_READ_CHUNK):  # type: ignore[attr-defined]
            buf.feed(chunk)
    stream.close()


def _kill(proc: subprocess.Popen[bytes], group: Cgroup | None) -> None:
    """Kill bwrap's process group (its pid namespace goes with it) and the cgroup's members.

    Only called before `proc` is reaped, so its pid cannot have been reused.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if group is not None:
        group.kill_all()
