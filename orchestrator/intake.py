"""What a person may hand the core: clean, bounded text and a bounded number of runs.

Every adapter funnels requests and thread replies through here before anything is stored,
so a NUL (which Postgres text cannot hold), undecodable bytes, terminal escape sequences or
a megabyte of text get one clear sentence back instead of a crash after the acknowledgement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from orchestrator.errors import UserError
from orchestrator.settings import get_settings
from orchestrator.store.models import Run, RunStatus

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte ESC sequences, then any C0
# control but tab and newline, DEL, and the C1 controls (U+0080-U+009F, which include the
# single-character CSI and OSC some terminals honour).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


@dataclass(frozen=True)
class Caps:
    """How much one request, one person and one channel may ask for (0 runs: no cap)."""

    request_chars: int = 8000
    runs_per_user: int = 5
    runs_per_channel: int = 20

    @classmethod
    def from_settings(cls) -> Caps:
        settings = get_settings()
        return cls(
            settings.max_request_chars, settings.max_runs_per_user, settings.max_runs_per_channel
        )


def strip_controls(text: str) -> str:
    """Text without terminal control and escape sequences; tabs and newlines stay, CR goes."""
    text = text.replace("\r\n", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def check_text(text: str, *, what: str = "request") -> None:
    """Refuse what cannot be stored or was never text; says what to do instead."""
    if "\x00" in text:
        raise UserError(
            f"The {what} contains a NUL character (\\0), which cannot be stored. "
            "Remove it and send it again."
        )
    if _SURROGATES.search(text):
        raise UserError(f"The {what} is not valid UTF-8 text; nothing was done. Send it as text.")


def clean_text(text: str, *, limit: int, what: str = "request") -> str:
    """The text as it will be stored: checked, stripped of control sequences, bounded."""
    check_text(text, what=what)
    cleaned = strip_controls(text).strip()
    if len(cleaned) > limit:
        raise UserError(
            f"The {what} is {len(cleaned):,} characters long; the limit is {limit:,}. "
            "Shorten it, or put the long text where the team can read it and give its address."
        )
    return cleaned


def _in_flight(session: Session, *conditions: ColumnElement[bool]) -> list[int]:
    return list(
        session.scalars(select(Run.id).where(Run.status.in_(ACTIVE), *conditions).order_by(Run.id))
    )


def check_capacity(
    session: Session, caps: Caps, *, platform: str, channel: str, requester: str
) -> None:
    """Refuse a new run when the requester or the channel already has its cap in flight.

    Runs waiting for approval count: they hold budget and come back to life on Approve.
    A cap of 0 means no cap. Counted in `session`: the store creates a run in the same
    transaction as this count, serialised per channel and person (Store.create_run), so
    simultaneous starts cannot all pass the same count.
    """
    per_user, per_channel = caps.runs_per_user, caps.runs_per_channel
    if per_user:
        mine = _in_flight(session, Run.platform == platform, Run.requester == requester)
        if len(mine) >= per_user:
            raise UserError(
                f"You already have {_runs(len(mine))} in flight (the limit is {per_user}): "
                f"{_ids(mine)}. Wait for one to finish, or abort one with /agent abort RUN_ID."
            )
    if per_channel:
        here = _in_flight(session, Run.platform == platform, Run.channel == channel)
        if len(here) >= per_channel:
            raise UserError(
                f"This channel already has {_runs(len(here))} in flight (the limit is "
                f"{per_channel}): {_ids(here)}. Wait for one to finish, or abort one with "
                "/agent abort RUN_ID."
            )


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _ids(ids: list[int], shown: int = 5) -> str:
    listed = ", ".join(f"#{i}" for i in ids[:shown])
    return listed + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
