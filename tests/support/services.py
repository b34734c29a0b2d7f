"""Start the local services a test needs if they are installed but stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def ensure_postgres() -> None:
    if port_open("127.0.0.1", 5432):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (no /etc/postgresql)")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False
    )
    if not _wait("127.0.0.1", 5432, 30):
        raise RuntimeError("PostgreSQL did not come up on 127.0.0.1:5432")


def start_redis(port: int = 6379) -> None:
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=False,
    )
    if not _wait("127.0.0.1", port, 30):
        raise RuntimeError(f"Redis did not come up on 127.0.0.1:{port}")


def ensure_redis() -> None:
    if not port_open("127.0.0.1", 6379):
        start_redis()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_redis(port: int, directory: Path) -> list[str]:
    """A throw-away redis-server on `port`; returns the command line to start it again."""
    args = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "yes",
        "--logfile",
        str(directory / "redis.log"),
    ]
    subprocess.run(args, check=True)
    if not _wait("127.0.0.1", port, 20):
        raise RuntimeError(f"private Redis did not come up on {port}")
    return args
