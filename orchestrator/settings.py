"""Operator configuration, read once from the environment.

Every knob has an embedded default so that `switchboard chat` runs with no services and no
keys: SQLite, an in-process queue and the offline scripted model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TEAMS_FILE = Path(__file__).resolve().parent.parent / "teams" / "default.yaml"


class Settings(BaseSettings):
    """Environment-driven settings; names are the variables README documents."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str = Field(default="sqlite:///switchboard.db", alias="DATABASE_URL")
    broker_url: str | None = Field(default=None, alias="BROKER_URL")
    teams_file: Path = Field(default=DEFAULT_TEAMS_FILE, alias="SWITCHBOARD_TEAMS_FILE")
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
    inprocess_concurrency: int = Field(default=8, alias="SWITCHBOARD_INPROCESS_CONCURRENCY")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_json: bool = Field(default=True, alias="LOG_JSON")
    metrics_port: int | None = Field(default=None, alias="METRICS_PORT")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Cached so every module sees one configuration per process."""
    return Settings()
