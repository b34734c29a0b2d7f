"""Notices rendered as Block Kit messages, within Slack's limits.

Slack rejects a section whose text exceeds 3,000 characters, a message with more than 50
blocks, and a `text` over 40,000 characters; long answers are therefore cut into sections
(on line or word boundaries, never inside an escaped entity) and, past one message's worth,
into several messages posted in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.notices import Kind, Notice

SECTION_LIMIT = 3000
SECTION_CHARS = 2900  # escaped characters per section, with room for a continuation mark
MAX_BLOCKS = 50
SECTIONS_PER_MESSAGE = 12  # ~35k characters: far below the 40k text and 50-block limits
TEXT_LIMIT = 40000
HIGHLIGHT_CHARS = 1500  # highlights are glimpses; the answer carries the full text

_DECIDER = re.compile(r" by (\S+) at ")
_OUTCOME_MARK = {"finished": ":white_check_mark:", "aborted": ":black_square_for_stop:"}


@dataclass(frozen=True)
class Message:
    """One chat.postMessage / chat.update payload: fallback text and blocks."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def escape(text: str) -> str:
    """Slack mrkdwn control characters; user and model text must not form mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mention(text: str, user: str | None) -> str:
    """Escape, then turn the one known user id in the text into a mention."""
    text = escape(text)
    if user and re.fullmatch(r"[UW][A-Z0-9]+", user):
        text = re.sub(rf"\b{user}\b", f"<@{user}>", text, count=1)
    return text


def split_text(text: str, limit: int = SECTION_CHARS) -> list[str]:
    """Cut already escaped text into pieces of at most `limit` characters.

    Prefers a newline, then a space, in the second half of the window; never cuts an
    `&amp;`-style entity in two. Concatenating the pieces gives back the text exactly.
    """
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n", limit // 2)
        if cut <= 0:
            cut = window.rfind(" ", limit // 2)
        cut = limit if cut <= 0 else cut + 1
        amp = rest.rfind("&", max(0, cut - 5), cut)
        if amp != -1 and ";" not in rest[amp:cut]:
            cut = amp
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT]}]}


def _figures(figures: dict[str, str], keys: tuple[str, ...] | None = None) -> str:
    items = [(k, v) for k, v in figures.items() if keys is None or k in keys]
    return " · ".join(f"{k} {escape(str(v))}" for k, v in items)


def _fallback(text: str) -> str:
    return text[: TEXT_LIMIT - 1]


def _long(head: list[dict[str, Any]], title: str, body: str) -> list[Message]:
    """The head blocks, then the body in sections, spread over as many messages as needed."""
    sections = [_section(piece) for piece in split_text(escape(body))] if body else []
    messages: list[Message] = []
    first = head + sections[:SECTIONS_PER_MESSAGE]
    messages.append(Message(_fallback(title), first[:MAX_BLOCKS]))
    rest = sections[SECTIONS_PER_MESSAGE:]
    part = 2
    while rest:
        chunk, rest = rest[:SECTIONS_PER_MESSAGE], rest[SECTIONS_PER_MESSAGE:]
        messages.append(Message(_fallback(f"{title} (part {part})"), chunk))
        part += 1
    return messages


def _opened_title(notice: Notice) -> str:
    title = notice.title
    if title.startswith("Run for ") and notice.run_id:
        title = f"Run {notice.run_id} for " + title[len("Run for ") :]
    return title


def render(notice: Notice) -> list[Message]:
    """Every message a notice needs, in posting order (usually exactly one)."""
    figures = notice.figures
    if notice.kind == Kind.OPENED:
        title = _opened_title(notice)
        team = escape(figures.get("team", "routing"))
        if notice.outcome:
            mark = _OUTCOME_MARK.get(notice.outcome, ":x:")
            status = f"{mark} {escape(notice.outcome.capitalize())} · team {team} · see thread"
        else:
            status = f":hourglass_flowing_sand: team {team} · working; progress in the thread"
        blocks = [_section(f"*{mention(title, notice.requester)}*"), _context(status)]
        return [Message(_fallback(title), blocks)]
    if notice.kind == Kind.PROGRESS:
        meta = _figures(figures, ("step", "team", "tokens", "dollars"))
        text = f":gear: {escape(notice.title)}"
        blocks = [_section(text)] + ([_context(meta)] if meta else [])
        return [Message(_fallback(notice.title), blocks)]
    if notice.kind == Kind.HIGHLIGHT:
        body = notice.body
        if len(body) > HIGHLIGHT_CHARS:
            body = body[:HIGHLIGHT_CHARS] + " …"
        blocks = [_section(f"*{escape(notice.title)}*")]
        blocks += [_section(piece) for piece in split_text(escape(body))] if body else []
        return [Message(_fallback(notice.title), blocks)]
    if notice.kind == Kind.RESULT:
        mark = _OUTCOME_MARK.get(notice.outcome or "finished", ":x:")
        head = [_section(f"{mark} *{escape(notice.title)}*")]
        meta = _figures(figures, ("step", "tokens", "dollars"))
        if meta:
            head.append(_context(meta))
        return _long(head, notice.title, notice.body)
    if notice.kind == Kind.ERROR:
        head = [_section(f":x: *{escape(notice.title)}*")]
        return _long(head, f"{notice.title}: {notice.body[:200]}", notice.body)
    if notice.kind == Kind.ESCALATION:
        blocks = [
            _section(f":double_vertical_bar: *{escape(notice.title)}*"),
            *[_section(piece) for piece in split_text(escape(notice.body))][:3],
        ]
        fields = [
            {"type": "mrkdwn", "text": f"*{escape(k)}*\n{escape(str(v))}"[:2000]}
            for k, v in list(figures.items())[:10]
        ]
        if fields:
            blocks.append({"type": "section", "fields": fields})
        if notice.actions:
            blocks.append({"type": "actions", "elements": [_button(a) for a in notice.actions]})
        return [Message(_fallback(notice.title), blocks)]
    if notice.kind == Kind.DECISION:
        mark = {"approved": ":white_check_mark:", "aborted": ":black_square_for_stop:"}.get(
            notice.outcome or "", ":hourglass:"
        )
        decider = _DECIDER.search(notice.title)
        title = mention(notice.title, decider.group(1) if decider else None)
        blocks = [_section(f"{mark} *Escalation {notice.escalation_id}: {title}*")]
        if notice.body:
            blocks.append(_context(escape(notice.body)))
        meta = _figures(figures)
        if meta:
            blocks.append(_context(meta))
        return [Message(_fallback(notice.title), blocks)]
    raise ValueError(f"slack cannot render notice kind {notice.kind!r}")


def _button(action: Any) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action.action_id,
        "text": {"type": "plain_text", "text": action.label[:75]},
        "value": action.value,
    }
    if action.style in ("primary", "danger"):
        button["style"] = action.style
    if action.confirm:
        button["confirm"] = {
            "title": {"type": "plain_text", "text": "Are you sure?"},
            "text": {"type": "plain_text", "text": action.confirm[:300]},
            "confirm": {"type": "plain_text", "text": action.label[:30]},
            "deny": {"type": "plain_text", "text": "Cancel"},
            **({"style": action.style} if action.style in ("primary", "danger") else {}),
        }
    return button
