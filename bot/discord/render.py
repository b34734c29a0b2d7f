"""Notices to Discord message specs: pure functions, no network and no discord.py state.

Discord caps message content at 2,000 characters. Text up to `MAX_CHUNKS` messages long is
split at line (else word) boundaries so that joining the chunks gives the text back; longer
text goes out as one preview message with the whole text attached as a file.

User text is sent as typed: role, channel and user mentions, custom emoji, timestamps and
message links reach Discord unchanged, and every message goes out with mentions disabled
(`AllowedMentions.none()`), so nothing pings. Only ids the core itself wrote (a requester,
the person who decided) are shown as `<@id>` mentions, which then render as names. The run's
progress is one embed edited in place (the living view of orchestrator/progress.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator import progress, wording
from orchestrator.notices import Action, Kind, Notice

MESSAGE_LIMIT = 2000
MAX_CHUNKS = 4
THREAD_NAME_LIMIT = 100
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FOOTER_LIMIT = 2048

# Discord markup and links: never rewritten, whatever digits they hold.
_MARKUP = re.compile(r"<[^<>\s]*>|https?://\S+")
_SNOWFLAKE = re.compile(r"\b\d{17,20}\b")
# Where the core writes a person's id: "requested by 1100…", "Approved by 1100…".
_PERSON = re.compile(r"(?i)(\bby )(\d{17,20})\b")
_THREAD_MARKUP = (
    (re.compile(r"<@!?(\d+)>"), "@user"),
    (re.compile(r"<@&(\d+)>"), "@role"),
    (re.compile(r"<#(\d+)>"), "#channel"),
    (re.compile(r"<a?(:\w+:)\d+>"), r"\1"),
    (re.compile(r"<t:-?\d+(?::[tTdDfFR])?>"), "(a time)"),
    (re.compile(r"</([\w -]+):\d+>"), r"/\1"),
)
_COLOURS = {
    progress.QUEUED: 0x95A5A6,
    progress.RUNNING: 0x3498DB,
    progress.PAUSED: 0xF1C40F,
    progress.FINISHED: 0x2ECC71,
    progress.ABORTED: 0x95A5A6,
    progress.ENDED_FAILED: 0xE74C3C,
}
_STATE_MARK = {
    progress.QUEUED: "⏳",
    progress.RUNNING: "⏳",
    progress.PAUSED: "⏸️",
    progress.FINISHED: "✅",
    progress.ABORTED: "⏹️",
    progress.ENDED_FAILED: "❌",
}
_ITEM_MARK = {
    progress.DONE: "✅",
    progress.WORKING: "⏳",
    progress.PENDING: "▫️",
    progress.FAILED: "❌",
}
_OUTCOME_MARK = {"finished": "✅", "aborted": "⏹️", "failed": "❌"}


@dataclass(frozen=True)
class Attachment:
    filename: str
    text: str


@dataclass(frozen=True)
class MessageSpec:
    """What one notice becomes: one or more messages, maybe a file, an embed, buttons."""

    chunks: tuple[str, ...]
    attachment: Attachment | None = None
    buttons: tuple[Action, ...] = ()
    clear_buttons: bool = False
    embed: dict[str, Any] | None = None  # Discord's embed object, as its JSON


def _outside_markup(text: str, replace: Any) -> str:
    """Apply `replace` (a str → str function) to the text between markup and links only."""
    out: list[str] = []
    last = 0
    for match in _MARKUP.finditer(text):
        out.append(replace(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(replace(text[last:]))
    return "".join(out)


def mention(text: str, ids: Iterable[str] = ()) -> str:
    """Show the people the core named in `text` as mentions, touching nothing else.

    With `ids`, exactly those user ids become `<@id>`; without, only an id right after "by"
    does (the core's "requested by", "Approved by", "aborted by"): callers that know the ids
    should pass them. Numbers in user text (an order id), role and channel mentions,
    custom emoji and message links stay as they are. Messages go out with mentions
    disabled, so a mention shows a name and pings no one.
    """
    wanted = {i for i in ids if _SNOWFLAKE.fullmatch(i or "")}

    def people(part: str) -> str:
        if wanted:
            return _SNOWFLAKE.sub(
                lambda m: f"<@{m.group(0)}>" if m.group(0) in wanted else m.group(0), part
            )
        return _PERSON.sub(lambda m: f"{m.group(1)}<@{m.group(2)}>", part)

    return _outside_markup(text, people)


def person(user: str | None) -> str:
    """A user id as a mention (a name on screen); anything else as it is."""
    if user and _SNOWFLAKE.fullmatch(user):
        return f"<@{user}>"
    return user or "someone"


def timestamp(at: float) -> str:
    """Discord's own time markup: every reader sees their local time."""
    return f"<t:{int(at)}:f>"


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


def _request_of(notice: Notice) -> str:
    if notice.request is not None:
        return notice.request
    return notice.title.split(": ", 1)[1] if ": " in notice.title else notice.title


def plain_title(text: str) -> str:
    """Text for places Discord shows raw (thread names): markup in words, one line."""
    for pattern, words in _THREAD_MARKUP:
        text = pattern.sub(words, text)
    return " ".join(text.split())


def thread_name(notice: Notice) -> str:
    """A thread title: run number and the start of the request, within Discord's 100."""
    name = f"Run {notice.run_id}: {plain_title(_request_of(notice))}"
    return name if len(name) <= THREAD_NAME_LIMIT else name[: THREAD_NAME_LIMIT - 1] + "…"


def view_embed(view: progress.View) -> dict[str, Any]:
    """The living progress view as one embed: checklist, state colour, totals."""
    lines = []
    if view.earlier:
        lines.append(f"*… {view.earlier} earlier steps*")
    for item in view.items:
        line = f"{_ITEM_MARK.get(item.status, '▫️')} {item.title}"
        figures = progress.item_figures(item)
        if figures:
            line += f" · *{figures}*"
        if item.detail:
            line += "\n" + "\n".join(f"> {part}" for part in item.detail.splitlines() if part)
        lines.append(line)
    description = "\n".join(lines)
    while len(description) > EMBED_DESCRIPTION_LIMIT and len(lines) > 1:
        lines = lines[1:]
        description = "\n".join(["*… earlier steps left out*", *lines])
    footer = progress.totals(view)
    if view.ended_by:
        footer = f"Aborted · {footer}"
    elif view.ended_reason:
        footer = f"{view.ended_reason} · {footer}"
    title = f"{_STATE_MARK.get(view.state, '⏳')} Run {view.run_id} · {progress.headline(view)}"
    embed: dict[str, Any] = {
        "type": "rich",
        "title": title[:EMBED_TITLE_LIMIT],
        "description": description[:EMBED_DESCRIPTION_LIMIT],
        "color": _COLOURS.get(view.state, 0x3498DB),
        "footer": {"text": footer[:EMBED_FOOTER_LIMIT]},
    }
    return embed


def _view(notice: Notice) -> MessageSpec:
    view = progress.View.from_json(notice.view or {})
    content = ""
    if view.ended_by:
        content = f"Aborted by {person(view.ended_by)}"
    return MessageSpec((content,), embed=view_embed(view))


def _opened(notice: Notice) -> MessageSpec:
    who = person(notice.requester)
    excerpt, _cut = wording.excerpt(_request_of(notice), wording.OPENING_CHARS)
    run = f"Run {notice.run_id}" if notice.run_id else "A run"
    team = notice.figures.get("team") or ""
    if notice.outcome:
        mark = _OUTCOME_MARK.get(notice.outcome, "■")
        status = f"{mark} {notice.outcome.capitalize()}"
        status += f" · team {team}" if team and team != "?" else ""
        status += " · the answer is in the thread"
    else:
        where = f"team {team}" if team and team != "routing" else "a router picks the team"
        status = f"⏳ Working ({where}); progress in the thread"
    head = f"**{run}** for {who}: {excerpt}\n{status}"
    return MessageSpec((split_text(head)[0],))


def _result(notice: Notice) -> MessageSpec:
    if notice.kind == Kind.ERROR:
        mark = "❌"
    else:
        mark = _OUTCOME_MARK.get(notice.outcome or "finished", "❌")
    body = notice.body
    if notice.actor:
        first, sep, rest = body.partition("\n")
        body = mention(first, (notice.actor,)) + sep + rest
    return _long(f"{mark} **{notice.title}**", body, run_id=notice.run_id, name="answer")


def _escalation(notice: Notice) -> MessageSpec:
    reason = notice.body.split("\n", 1)[0]
    title = notice.title
    if notice.guard:
        title = f"Run {notice.run_id} paused: {wording.pause_reason(notice.guard, reason)}"
    facts = _figures(notice)
    head = f"⏸️ **{title}**\n{notice.body}" + (f"\n`{facts}`" if facts else "")
    return MessageSpec(tuple(split_text(head)), buttons=notice.actions)


def decision_title(notice: Notice) -> str:
    outcome = (notice.outcome or "decided").lower()
    if notice.at is not None:
        when = timestamp(notice.at)
        if outcome == "expired":
            return f"Expired unanswered at {when}"
        if notice.actor:
            return f"{outcome.capitalize()} by {person(notice.actor)} at {when}"
    return mention(notice.title)


def _decision(notice: Notice) -> MessageSpec:
    facts = _figures(notice, ("steps", "tokens", "dollars", "elapsed"))
    head = f"⏸️ **Escalation #{notice.escalation_id}**: {notice.body}" + (
        f"\n`{facts}`" if facts else ""
    )
    tail = f"\n→ **{decision_title(notice)}**"
    if len(head) + len(tail) > MESSAGE_LIMIT:
        head = head[: MESSAGE_LIMIT - len(tail) - 1] + "…"
    return MessageSpec((head + tail,), clear_buttons=True)


def render(notice: Notice) -> MessageSpec:
    """Render one notice; an unknown kind fails loudly rather than posting nonsense."""
    if notice.kind == Kind.OPENED:
        return _opened(notice)
    if notice.kind == Kind.PROGRESS:
        if notice.view:
            return _view(notice)
        meta = _figures(notice, ("step", "tokens", "dollars"))
        line = f"⏳ {notice.title}" + (f"  `{meta}`" if meta else "")
        return MessageSpec((split_text(line)[0],))
    if notice.kind in (Kind.HIGHLIGHT, Kind.NOTE):
        return _long(f"» **{notice.title}**", notice.body, run_id=notice.run_id, name="highlight")
    if notice.kind in (Kind.RESULT, Kind.ERROR):
        return _result(notice)
    if notice.kind == Kind.ESCALATION:
        return _escalation(notice)
    if notice.kind == Kind.DECISION:
        return _decision(notice)
    if notice.kind == Kind.REQUEST:
        head = f"📝 **The whole request** from {person(notice.requester)}"
        return _long(head, notice.body, run_id=notice.run_id, name="request")
    raise ValueError(f"discord cannot render notice kind {notice.kind!r}")
