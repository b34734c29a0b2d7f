"""Escape suite: the same attacks against every real backend, asserting containment.

Each test checks both that the attack failed (as seen from the host where possible) and
that the result flags report what happened.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from sandbox.base import KIB, MIB, Limits, Sandbox

pytestmark = pytest.mark.timeout(60)


def _marker() -> str:
    return f"sbx-marker-{uuid.uuid4().hex}"


def _host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (the host sees every container process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_gone(marker: str, within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := _host_processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outbound address
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    server = socket.create_server(("0.0.0.0", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    code = f"""
import socket
for host, port in [({_host_ip()!r}, {port}), ("127.0.0.1", {port}), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("CONNECTED", host)
    except OSError as exc:
        print("blocked", host, type(exc).__name__)
try:
    socket.getaddrinfo("deb.debian.org", 80)
    print("RESOLVED")
except OSError as exc:
    print("no dns", type(exc).__name__)
"""
    try:
        result = sandbox.run(code, "python", Limits())
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host's listener
    finally:
        server.close()
    assert result.exit_code == 0, result
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout
    assert result.stdout.count("blocked") == 3


def test_writes_outside_the_work_dir_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"escape-{uuid.uuid4().hex}"
    targets = [f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/bin/{name}", str(tmp_path / name)]
    code = f"""
for path in {targets!r}:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("denied", path, type(exc).__name__)
open("/work/ok.txt", "w").write("fine")
print("work dir ok", open("/work/ok.txt").read())
"""
    result = sandbox.run(code, "python", Limits())
    assert result.exit_code == 0, result
    assert "WROTE" not in result.stdout
    assert "work dir ok fine" in result.stdout
    for target in targets:
        assert not os.path.exists(target)


def test_host_secrets_are_invisible(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SWITCHBOARD_TEST_SECRET", secret)
    code = f"""
import os
print(dict(os.environ))
for path in ["/etc/shadow", "/proc/1/environ", "/proc/self/environ", "/proc/{os.getpid()}/environ"]:
    try:
        print(path, open(path, "rb").read())
    except OSError as exc:
        print("unreadable", path, type(exc).__name__)
"""
    result = sandbox.run(code, "python", Limits())
    assert result.exit_code == 0, result
    assert secret not in result.stdout + result.stderr
    assert "SWITCHBOARD_TEST_SECRET" not in result.stdout
    assert "unreadable /etc/shadow" in result.stdout


def test_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    marker = _marker()
    limits = Limits(wall_time_s=3, pids=64)
    code = f"""
import os
n = 0
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 60", {marker!r}])
        finally:
            os._exit(0)
    n += 1
print("forked", n, flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    started = time.monotonic()
    result = sandbox.run(code, "python", limits)
    elapsed = time.monotonic() - started
    forked = int(result.stdout.split()[1])
    assert 0 < forked < limits.pids, result.stdout
    assert result.timed_out and not result.oom_killed
    assert elapsed < limits.wall_time_s + 5
    assert _wait_gone(marker) == []
    assert subprocess.run(["true"], timeout=5).returncode == 0  # the host can still fork


def test_memory_cap_kills_big_allocation(sandbox: Sandbox) -> None:
    code = 'data = b"\\x01" * (1024 * 1024 * 1024)\nprint("ALLOCATED", len(data))\n'
    result = sandbox.run(code, "python", Limits(memory_bytes=256 * MIB))
    assert "ALLOCATED" not in result.stdout
    assert result.oom_killed, result
    assert not result.timed_out and result.exit_code != 0


def test_infinite_loop_is_killed_at_wall_time(sandbox: Sandbox) -> None:
    marker = _marker()
    limits = Limits(wall_time_s=2)
    code = f"marker = {marker!r}\nwhile True:\n    pass\n"
    started = time.monotonic()
    result = sandbox.run(code, "python", limits)
    elapsed = time.monotonic() - started
    assert result.timed_out and not result.oom_killed
    assert result.exit_code != 0
    assert elapsed < limits.wall_time_s + 2, elapsed


def test_huge_output_is_truncated_and_marked(sandbox: Sandbox) -> None:
    code = (
        'import sys\nsys.stdout.write("x" * (10 * 1024 * 1024))\nprint("tail", file=sys.stderr)\n'
    )
    limits = Limits(output_bytes=64 * KIB)
    result = sandbox.run(code, "python", limits)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_truncated
    assert len(result.stdout) == limits.output_bytes and set(result.stdout) == {"x"}
    assert result.stderr == "tail\n" and not result.stderr_truncated


def test_nothing_survives_the_run(sandbox: Sandbox) -> None:
    marker = _marker()
    code = f"""
import os, time
if os.fork() == 0:  # a daemon: double fork, new session, outlives its parent
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 60", {marker!r}])
    os._exit(0)
if os.fork() == 0:  # a zombie: exits and is never reaped
    os._exit(0)
time.sleep(0.5)
print("parent exits")
"""
    result = sandbox.run(code, "python", Limits())
    assert result.exit_code == 0, result
    assert "parent exits" in result.stdout
    assert _wait_gone(marker) == [], "a process started in the sandbox outlived the run"
