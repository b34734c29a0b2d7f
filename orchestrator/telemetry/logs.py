"""Structured logs: one JSON object per line, tagged with the run, with secrets scrubbed.

Log aggregators (Loki, CloudWatch, ELK) index JSON fields, so "everything about run 42"
is one query on ``run_id``. :func:`log_context` sets run_id/step/team for a block of code
(contextvars, so it is per task and per asyncio task), and every line inside carries them.

Agent runs handle tokens and keys and echo model output, so every line passes through
:func:`redact` before it leaves the process: exact values registered with
:func:`register_secret` (and, by default, those of secret-looking environment variables)
plus token shapes: Slack, ``sk-`` API keys, Bearer headers, Discord bot tokens, passwords
in URLs.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json as jsonlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, TextIO

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "current_log_context",
    "log_context",
    "redact",
    "register_env_secrets",
    "register_secret",
]

REDACTED = "[REDACTED]"
# Shorter values would redact ordinary words ("dev", "test") everywhere.
MIN_SECRET_LENGTH = 6
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|_KEY)$")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack bot/user/app/refresh/config tokens; keep the prefix so the kind stays visible.
    (re.compile(r"\b(xox[abeoprs])-[A-Za-z0-9-]{8,}"), r"\1-" + REDACTED),
    (re.compile(r"\b(xapp)-[A-Za-z0-9-]{8,}"), r"\1-" + REDACTED),
    # OpenAI / Anthropic style keys: sk-..., sk-proj-..., sk-ant-...
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-" + REDACTED),
    # Authorization headers.
    (re.compile(r"(?i)\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # Discord bot tokens: base64(user id) . base64(timestamp) . hmac.
    (
        re.compile(r"\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,40}\b"),
        REDACTED,
    ),
    # Credentials in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+):[^@/\s]+@"), r"\1:" + REDACTED + "@"),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secrets_pattern: re.Pattern[str] | None = None

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "switchboard_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_CONTEXT_KEYS = ("run_id", "step", "team")


def register_secret(value: str | None) -> None:
    """Never log ``value`` verbatim again, whatever logger or field it appears in."""
    global _secrets_pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret containing another is replaced whole.
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def register_env_secrets(environ: dict[str, str] | None = None) -> None:
    """Register values of environment variables whose names say they are secret."""
    for name, value in (os.environ if environ is None else environ).items():
        if _SECRET_ENV.search(name.upper()):
            register_secret(value)


def redact(text: str) -> str:
    """``text`` with registered secrets and known token shapes replaced by [REDACTED]."""
    pattern = _secrets_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Scrub the rendered message and traceback of each record before any formatter.

    Attached to handlers (not loggers) so records propagated from every library pass it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


@contextlib.contextmanager
def log_context(
    *,
    run_id: str | None = None,
    step: int | None = None,
    team: str | None = None,
    **fields: Any,
) -> Iterator[None]:
    """Tag every log line inside the block with run_id / step / team (nesting merges)."""
    given = {"run_id": run_id, "step": step, "team": team, **fields}
    merged = {**_context.get(), **{k: v for k, v in given.items() if v is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    """A copy of the fields :func:`log_context` has set for the current task."""
    return dict(_context.get())


def _trace_ids() -> dict[str, str]:
    # Imported lazily: logging must work where OpenTelemetry is not installed or wanted.
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def _json_default(value: object) -> str:
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get())
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        entry.update(_trace_ids())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Last pass over the whole line catches secrets in extras and context values.
        return redact(jsonlib.dumps(entry, default=_json_default, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the same context fields and redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**_context.get()}
        tags = " ".join(f"{k}={fields[k]}" for k in _CONTEXT_KEYS if k in fields)
        return redact(f"{line} [{tags}]" if tags else line)


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    stream: TextIO | None = None,
    secrets_from_env: bool = True,
) -> logging.Handler:
    """Route the root logger to one redacting handler (JSON lines by default).

    Idempotent: calling it again replaces the handler it installed before, so tests and
    CLI sub-commands can reconfigure. Returns the handler.
    """
    if secrets_from_env:
        register_env_secrets()
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_switchboard", False):
            root.removeHandler(existing)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._switchboard = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
