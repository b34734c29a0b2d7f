"""JSON log lines carry the run context and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from orchestrator.telemetry import logs


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logs.configure_logging("DEBUG", stream=buffer, secrets_from_env=False)
    yield buffer
    logging.getLogger().removeHandler(handler)


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


SLACK_BOT = "xoxb-" + "2431-98765-AbCdEfGhIjKlMnOp"
SLACK_APP = "xapp-" + "1-A0123-4567-abcdef0123"
OPENAI = "sk-" + "proj-Ab12Cd34Ef56Gh78Ij90Kl"
DISCORD = "MTA1NjY3ODkwMTIzNDU2Nzg5MA" + ".GhIjKl." + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"token={SLACK_BOT}", "xoxb-[REDACTED]"),
        (f"socket mode {SLACK_APP}", "xapp-[REDACTED]"),
        (f"key {OPENAI} set", "sk-[REDACTED]"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "Bearer [REDACTED]"),
        (f"Authorization: Bot {DISCORD}", "Bot [REDACTED]"),
        ("postgresql+psycopg://switchboard:s3cretpw@db:5432/sb", "switchboard:[REDACTED]@db"),
    ],
)
def test_token_shapes_are_redacted(text: str, kept: str) -> None:
    out = logs.redact(text)
    assert kept in out
    for secret in (SLACK_BOT, SLACK_APP, OPENAI, DISCORD, "eyJhbGci", "s3cretpw"):
        assert secret not in out


def test_ordinary_text_is_left_alone() -> None:
    text = "scikit-learn sk-learn run 42 finished; Bot online; bearer tokens rotate"
    assert logs.redact(text) == text


def test_registered_secret_is_redacted_everywhere(stream: io.StringIO) -> None:
    logs.register_secret("correct-horse-battery")
    logs.register_secret("abc")  # too short to register: would redact ordinary words
    log = logging.getLogger("switchboard.test")
    log.warning("password is %s", "correct-horse-battery", extra={"note": "correct-horse-battery"})
    try:
        raise RuntimeError("connect failed with correct-horse-battery")
    except RuntimeError:
        log.exception("boom")
    log.info("abc stays")
    raw = stream.getvalue()
    assert "correct-horse-battery" not in raw
    first, second, third = _lines(stream)
    assert first["msg"] == "password is [REDACTED]"
    assert first["note"] == "[REDACTED]"
    assert "RuntimeError: connect failed with [REDACTED]" in second["exc"]
    assert third["msg"] == "abc stays"


def test_env_secrets_are_registered() -> None:
    logs.register_env_secrets({"SLACK_SIGNING_SECRET": "f00dfeedcafe1234", "TEAM": "research"})
    assert logs.redact("sig f00dfeedcafe1234") == "sig [REDACTED]"
    assert logs.redact("team research") == "team research"


def test_lines_carry_run_context(stream: io.StringIO) -> None:
    log = logging.getLogger("switchboard.engine")
    log.info("outside")
    with logs.log_context(run_id="run-7", team="research"):
        with logs.log_context(step=3):
            log.info("inside step")
        log.info("after step")
    outside, inside, after = _lines(stream)
    assert "run_id" not in outside
    assert inside["run_id"] == "run-7"
    assert inside["step"] == 3
    assert inside["team"] == "research"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "switchboard.engine"
    assert "step" not in after
    assert logs.current_log_context() == {}


def test_lines_carry_trace_ids(stream: io.StringIO) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("s") as span:
        logging.getLogger("x").info("traced")
    (line,) = _lines(stream)
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_text_format_is_redacted_too() -> None:
    buffer = io.StringIO()
    handler = logs.configure_logging("INFO", json=False, stream=buffer, secrets_from_env=False)
    try:
        with logs.log_context(run_id="run-9"):
            logging.getLogger("x").info("posting with %s", SLACK_BOT)
    finally:
        logging.getLogger().removeHandler(handler)
    out = buffer.getvalue()
    assert SLACK_BOT not in out
    assert "xoxb-[REDACTED]" in out
    assert "run_id=run-9" in out


def test_configure_logging_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    first = logs.configure_logging("INFO", stream=io.StringIO(), secrets_from_env=False)
    second = logs.configure_logging("INFO", stream=io.StringIO(), secrets_from_env=False)
    try:
        assert first not in root.handlers
        assert second in root.handlers
    finally:
        root.removeHandler(second)
