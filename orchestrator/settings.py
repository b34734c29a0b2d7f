"""Operator configuration, read once from the environment.

Every knob has an embedded default so that `switchboard chat` runs with no services and no
keys, from any directory: SQLite in the user's state directory, an in-process queue, the
teams file from the user's config directory (written by `switchboard init`) or else the
packaged default with the offline scripted model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator import defaults

APP_NAME = "switchboard"


def state_dir() -> Path:
    """Where the embedded SQLite database lives ($XDG_STATE_HOME/switchboard on Linux)."""
    return platformdirs.user_state_path(APP_NAME, appauthor=False)


def config_dir() -> Path:
    """Where `switchboard init` writes the teams file ($XDG_CONFIG_HOME/switchboard)."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False)


def user_teams_file() -> Path:
    return config_dir() / "teams.yaml"


def default_teams_file() -> Path:
    """The user's own teams file once `switchboard init` wrote one, else the packaged one."""
    mine = user_teams_file()
    return mine if mine.exists() else defaults.teams_file()


def default_database_url() -> str:
    """SQLite in the state directory, created on first use (private to the user)."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return f"sqlite:///{directory / 'switchboard.db'}"


class Settings(BaseSettings):
    """Environment-driven settings; names are the variables README documents."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str = Field(default_factory=default_database_url, alias="DATABASE_URL")
    broker_url: str | None = Field(default=None, alias="BROKER_URL")
    teams_file: Path = Field(default_factory=default_teams_file, alias="SWITCHBOARD_TEAMS_FILE")
    escalation_ttl_s: int = Field(default=24 * 3600, alias="SWITCHBOARD_ESCALATION_TTL")
    step_lease_s: float = Field(default=30.0, alias="SWITCHBOARD_STEP_LEASE")
    beat_interval_s: float = Field(default=30.0, alias="SWITCHBOARD_BEAT_INTERVAL")
    stalled_after_s: int = Field(default=120, alias="SWITCHBOARD_STALLED_AFTER")
    # A worker holding a run goes straight on to its next step, up to this many steps or
    # seconds, before handing the run back to the queue (fairness between runs).
    slice_steps: int = Field(default=50, ge=1, le=100_000, alias="SWITCHBOARD_SLICE_STEPS")
    slice_s: float = Field(default=20.0, gt=0, le=3600, alias="SWITCHBOARD_SLICE_SECONDS")
    # A full checkpoint every this many versions; the versions between store only deltas.
    snapshot_every: int = Field(default=100, ge=1, le=100_000, alias="SWITCHBOARD_SNAPSHOT_EVERY")
    model_timeout_s: float = Field(default=60.0, alias="SWITCHBOARD_MODEL_TIMEOUT")
    model_retries: int = Field(default=4, alias="SWITCHBOARD_MODEL_RETRIES")
    # Model calls litellm can make without its per-call logging machinery (custom providers,
    # OpenAI-compatible HTTP, no litellm callbacks configured) skip it; off: every call
    # goes through litellm.acompletion.
    llm_direct: bool = Field(default=True, alias="SWITCHBOARD_LLM_DIRECT")
    inprocess_concurrency: int = Field(default=8, alias="SWITCHBOARD_INPROCESS_CONCURRENCY")
    # Caps on what one person or one channel may ask for (0: no cap on runs in flight).
    max_request_chars: int = Field(
        default=8000, ge=1, le=1_000_000, alias="SWITCHBOARD_MAX_REQUEST_CHARS"
    )
    max_runs_per_user: int = Field(default=5, ge=0, alias="SWITCHBOARD_MAX_RUNS_PER_USER")
    max_runs_per_channel: int = Field(default=20, ge=0, alias="SWITCHBOARD_MAX_RUNS_PER_CHANNEL")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_json: bool = Field(default=True, alias="LOG_JSON")
    metrics_port: int | None = Field(default=None, alias="METRICS_PORT")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Cached so every module sees one configuration per process."""
    return Settings()
