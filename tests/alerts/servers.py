"""Real Prometheus and Alertmanager processes for tests, configured from the shipped files.

Configs are generated from deploy/prometheus.yml and deploy/alertmanager.yml with only
addresses, secret file paths and timings substituted, so a test exercises the routing,
grouping and receivers that production runs. Every process binds free loopback ports and
keeps its data in a temporary directory.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import require_tool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def alertmanager_binary() -> str:
    """Debian ships the server as prometheus-alertmanager; upstream as alertmanager."""
    require_tool("amtool")  # installs prometheus-alertmanager when missing, else skips
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("the alertmanager server is not installed (package prometheus-alertmanager)")
    raise AssertionError("unreachable")


def alertmanager_config(
    *,
    intake_url: str,
    slack_api_url: str,
    intake_token_file: Path,
    slack_token_file: Path,
    group_wait: str = "1s",
    group_interval: str = "2s",
    repeat_interval: str = "1h",
) -> dict[str, Any]:
    """deploy/alertmanager.yml with test addresses, secret files and short timings."""
    config = copy.deepcopy(yaml.safe_load((DEPLOY / "alertmanager.yml").read_text()))

    def timings(route: dict[str, Any]) -> None:
        route["group_wait"], route["group_interval"] = group_wait, group_interval
        route["repeat_interval"] = repeat_interval
        for child in route.get("routes", []):
            timings(child)

    timings(config["route"])
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            slack["api_url"] = slack_api_url
            slack["http_config"]["authorization"]["credentials_file"] = str(slack_token_file)
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = intake_url
            hook["http_config"]["authorization"]["credentials_file"] = str(intake_token_file)
    return config


class Alertmanager:
    """One Alertmanager replica without clustering (each sends its own notifications)."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        log = (self.workdir / "alertmanager.log").open("wb")
        self.process = subprocess.Popen(
            [
                alertmanager_binary(),
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",
                "--cluster.listen-address=",  # no gossip: replicas deliver independently
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(
            lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200,
            f"alertmanager on {self.port}",
        )
        return self

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a series on /metrics whose labels include `labels`."""
        text = urllib.request.urlopen(f"{self.url}/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Gauge:
    """A scrape target serving one gauge whose value the test sets (a real /metrics page)."""

    def __init__(self, name: str, value: float = 0.0) -> None:
        self.name = name
        self.value = value
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = (
                    f"# HELP {outer.name} Set by the test.\n# TYPE {outer.name} gauge\n"
                    f"{outer.name} {outer.value}\n"
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def prometheus_config(
    *, rule_file: Path, target: str, alertmanagers: list[str], interval: str = "1s"
) -> dict[str, Any]:
    """deploy/prometheus.yml (external labels, alerting) aimed at the test's target and rules."""
    config = copy.deepcopy(yaml.safe_load((DEPLOY / "prometheus.yml").read_text()))
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(rule_file)]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": alertmanagers}]
    config["scrape_configs"] = [
        {"job_name": "switchboard-test", "static_configs": [{"targets": [target]}]}
    ]
    return config


class Prometheus:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        binary = require_tool("prometheus")
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--rules.alert.resend-delay=1s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(
            lambda: urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200,
            "prometheus to be ready",
        )
        return self

    def alerts(self) -> list[dict[str, Any]]:
        return get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
