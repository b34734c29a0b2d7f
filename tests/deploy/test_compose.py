"""docker-compose.yml is valid and wires the services the way the design says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _config(compose: str, *profiles: str) -> dict:
    args = [compose, "-f", str(REPO / "docker-compose.yml")]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run(
        [*args, "config"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_config_is_valid(compose: str) -> None:
    result = subprocess.run(
        [compose, "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_default_services_and_profiles(compose: str) -> None:
    # `config` of docker-compose 1.x lists profiled services too, so read the profiles.
    services = _config(compose, "slack", "discord", "alerts")["services"]
    profiles = {name: tuple(s.get("profiles", ())) for name, s in services.items()}
    assert profiles == {
        "postgres": (),
        "redis": (),
        "migrate": (),
        "worker": (),
        "beat": (),
        "prometheus": (),
        "grafana": (),
        "alertmanager": (),
        "slack": ("slack",),
        "discord": ("discord",),
        "alerts": ("alerts",),
    }


@pytest.fixture(scope="module")
def services(compose: str) -> dict:
    return _config(compose, "slack", "discord", "alerts")["services"]


def test_every_long_running_service_has_a_healthcheck(services: dict) -> None:
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name == "migrate":  # one-shot: its exit status is the check
            assert check.get("disable") is True or check.get("test") == ["NONE"]
            continue
        assert check.get("test"), f"{name} has no healthcheck"


def test_commands_and_environment(services: dict) -> None:
    expected = {
        "migrate": ["db", "upgrade"],
        "worker": ["worker"],
        "beat": ["beat"],
        "slack": ["slack", "--port", "3000"],
        "discord": ["discord"],
        "alerts": ["alerts", "--port", "9095"],
    }
    for name, command in expected.items():
        service = services[name]
        assert service["command"] == command
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["BROKER_URL"] == "redis://redis:6379/0"
        assert env["METRICS_PORT"] == "9100"
    assert services["worker"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    for name in ("worker", "beat", "slack", "discord", "alerts"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"


def test_prometheus_and_grafana_mount_deploy(services: dict) -> None:
    def sources(name: str) -> set[str]:
        return {
            volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            for volume in services[name]["volumes"]
        }

    assert str(REPO / "deploy" / "prometheus.yml") in sources("prometheus")
    assert str(REPO / "deploy" / "alerts.yml") in sources("prometheus")
    assert str(REPO / "deploy" / "grafana" / "provisioning") in sources("grafana")
    assert str(REPO / "deploy" / "grafana" / "dashboards") in sources("grafana")


def test_scrape_jobs_cover_every_switchboard_process(services: dict) -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    scraped = {
        name
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert scraped == {"worker", "beat", "slack", "discord", "alerts"}
    assert scraped <= set(services)


def test_alertmanager_mounts_its_config_and_prometheus_points_at_it(services: dict) -> None:
    volumes = services["alertmanager"]["volumes"]
    sources = {v["source"] if isinstance(v, dict) else v.split(":")[0] for v in volumes}
    assert str(REPO / "deploy" / "alertmanager.yml") in sources
    # Secrets reach Alertmanager as files written at start, from the same .env variables the
    # intake reads; none is written into the compose file.
    command = " ".join(services["alertmanager"]["command"])
    assert "/run/alertmanager/switchboard-alerts-token" in command
    assert "SWITCHBOARD_ALERTS_TOKEN" in services["alerts"]["environment"]
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    routes = yaml.safe_load((REPO / "deploy" / "alertmanager.yml").read_text())
    hooks = [
        hook["url"]
        for receiver in routes["receivers"]
        for hook in receiver.get("webhook_configs", [])
    ]
    assert hooks and all(url == "http://alerts:9095/alerts" for url in hooks)
