"""One line that names which service is down and what it said, for people at a terminal.

A database or broker restart shows up as a driver exception with a traceback of a hundred
lines; a person needs to know only which service, and the driver's own first sentence.
"""

from __future__ import annotations

from orchestrator.telemetry.logs import redact


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0][:200]) if text else type(exc).__name__


def is_database(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError)


def is_broker(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError as KombuError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, KombuError | RedisConnectionError | RedisTimeoutError | ConnectionError)


def describe(exc: BaseException) -> str:
    """`the database is not answering (…)`, `the task queue is not answering (…)`, or the
    exception's type and first line."""
    if is_database(exc):
        orig = getattr(exc, "orig", None) or exc
        return f"the database is not answering ({_first_line(orig)})"
    if is_broker(exc):
        return f"the task queue is not answering ({_first_line(exc)})"
    return f"{type(exc).__name__}: {_first_line(exc)}"
