"""Notices to Discord message specs: pure functions, no network and no discord.py state.

Discord caps message content at 2,000 characters. Text up to `MAX_CHUNKS` messages long is
split at line (else word) boundaries so that joining the chunks gives the text back; longer
text goes out as one preview message with the whole text attached as a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.notices import Action, Kind, Notice

MESSAGE_LIMIT = 2000
MAX_CHUNKS = 4
THREAD_NAME_LIMIT = 100
_SNOWFLAKE = re.compile(r"(?<![<@\d])\b(\d{17,20})\b")


@dataclass(frozen=True)
class Attachment:
    filename: str
    text: str


@dataclass(frozen=True)
class MessageSpec:
    """What one notice becomes: one or more messages, maybe a file, maybe buttons."""

    chunks: tuple[str, ...]
    attachment: Attachment | None = None
    buttons: tuple[Action, ...] = ()
    clear_buttons: bool = False


def mention(text: str) -> str:
    """Show Discord user ids (our actor and requester names) as mentions.

    Messages are sent with mentions disabled, so this renders names without pinging anyone.
    """
    return _SNOWFLAKE.sub(r"<@\1>", text)


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split into chunks of at most `limit` characters; `"".join(chunks) == text`."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n") + 1 or window.rfind(" ") + 1
        if cut <= limit // 2:  # no good boundary: a hard cut beats tiny chunks
            cut = limit
        chunks.append(rest[:cut])
        rest = rest[cut:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def _figures(notice: Notice, keys: tuple[str, ...] | None = None) -> str:
    items = [(k, v) for k, v in notice.figures.items() if keys is None or k in keys]
    return " · ".join(f"{k} {v}" for k, v in items)


def _long(head: str, body: str, *, run_id: int, name: str) -> MessageSpec:
    text = f"{head}\n{body}" if body else head
    chunks = split_text(text)
    if len(chunks) <= MAX_CHUNKS:
        return MessageSpec(tuple(chunks))
    note = "\n… (the whole text is attached)"
    preview = split_text(text, MESSAGE_LIMIT - len(note))[0] + note
    return MessageSpec((preview,), Attachment(f"run-{run_id}-{name}.md", text))


def thread_name(notice: Notice) -> str:
    """A thread title: run number and the start of the request, within Discord's 100."""
    title = notice.title.split(": ", 1)[-1].replace("\n", " ")
    name = f"Run {notice.run_id}: {title}"
    return name if len(name) <= THREAD_NAME_LIMIT else name[: THREAD_NAME_LIMIT - 1] + "…"


def render(notice: Notice) -> MessageSpec:
    """Render one notice; an unknown kind fails loudly rather than posting nonsense."""
    if notice.kind == Kind.OPENED:
        marks = {"finished": "✅", "aborted": "⏹️", "failed": "❌"}
        if notice.outcome:
            head = f"{marks.get(notice.outcome, '■')} {mention(notice.title)} — {notice.outcome}"
        else:
            team = notice.figures.get("team", "routing")
            head = f"🧵 {mention(notice.title)} (team: {team})"
        return MessageSpec((split_text(head)[0],))
    if notice.kind == Kind.PROGRESS:
        meta = _figures(notice, ("step", "tokens", "dollars"))
        line = f"⏳ {notice.title}" + (f"  `{meta}`" if meta else "")
        return MessageSpec((split_text(line)[0],))
    if notice.kind == Kind.HIGHLIGHT:
        return _long(f"» **{notice.title}**", notice.body, run_id=notice.run_id, name="highlight")
    if notice.kind == Kind.RESULT:
        mark = "✅" if notice.outcome == "finished" else "⏹️"
        return _long(
            f"{mark} **{mention(notice.title)}**", notice.body, run_id=notice.run_id, name="answer"
        )
    if notice.kind == Kind.ERROR:
        return _long(f"❌ **{notice.title}**", notice.body, run_id=notice.run_id, name="error")
    if notice.kind == Kind.ESCALATION:
        facts = _figures(notice)
        head = f"⏸️ **{notice.title}**\n{notice.body}" + (f"\n`{facts}`" if facts else "")
        chunks = split_text(head)
        return MessageSpec(tuple(chunks), buttons=notice.actions)
    if notice.kind == Kind.DECISION:
        facts = _figures(notice)
        head = f"⏸️ **Escalation #{notice.escalation_id}**: {notice.body}" + (
            f"\n`{facts}`" if facts else ""
        )
        tail = f"\n→ **{mention(notice.title)}**"
        if len(head) + len(tail) > MESSAGE_LIMIT:
            head = head[: MESSAGE_LIMIT - len(tail) - 1] + "…"
        return MessageSpec((head + tail,), clear_buttons=True)
    raise ValueError(f"discord cannot render notice kind {notice.kind!r}")
