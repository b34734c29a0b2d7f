"""Notices rendered as Block Kit messages, within Slack's limits.

Slack rejects a section whose text exceeds 3,000 characters, a message with more than 50
blocks, and a `text` over 40,000 characters; long answers are therefore cut into sections
(on line or word boundaries, never inside an escaped entity) and, past one message's worth,
into several messages posted in order.

Every field a person reads is escaped, the top-level `text` (Slack's notification text)
included: user and model text can never form `<!channel>`, `<!here>`, `<@U…>` or
`<!subteam^…>`. People are shown through a `People` function the port supplies: a display
name in a new message (a `<@U…>` there would ping), Slack's own `<@U…>` in an edit (Slack
shows the name and notifies nobody). Times use `<!date^…>`, so each reader sees local time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator import progress, wording
from orchestrator.notices import Action, Kind, Notice

SECTION_LIMIT = 3000
SECTION_CHARS = 2900  # escaped characters per section, with room for a continuation mark
MAX_BLOCKS = 50
SECTIONS_PER_MESSAGE = 12  # ~35k characters: far below the 40k text and 50-block limits
TEXT_LIMIT = 40000
NOTIFICATION_CHARS = 300  # the `text` people see in notifications: a glimpse, not the answer
HIGHLIGHT_CHARS = 1500  # highlights are glimpses; the answer carries the full text

People = Callable[[str], str]  # a user id → mrkdwn naming that person (already escaped)

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_DECIDER = re.compile(r" by (\S+) at ")
_OUTCOME_MARK = {
    "finished": ":white_check_mark:",
    "aborted": ":black_square_for_stop:",
    "failed": ":x:",
}
_STATE_MARK = {
    progress.QUEUED: ":hourglass:",
    progress.RUNNING: ":hourglass_flowing_sand:",
    progress.PAUSED: ":double_vertical_bar:",
    **_OUTCOME_MARK,
}
_ITEM_MARK = {
    progress.DONE: ":white_check_mark:",
    progress.WORKING: ":hourglass_flowing_sand:",
    progress.PENDING: ":white_circle:",
    progress.FAILED: ":x:",
}


@dataclass(frozen=True)
class Message:
    """One chat.postMessage / chat.update payload: fallback text and blocks."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def escape(text: str) -> str:
    """Slack mrkdwn control characters; user and model text must not form mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str) -> str:
    """For plain_text fields (buttons): Slack parses no markup there, and with a zero-width
    space after each `<` no text could ever read as a mention if it did."""
    return text.replace("\u200b", "").replace("<", "<\u200b")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def is_user_id(value: str | None) -> bool:
    return bool(value) and _USER_ID.fullmatch(value or "") is not None


def mention(user: str) -> str:
    """Slack's own formatting for a person: shows their current name (pings when posted).

    Anything that is not a Slack user id (a console user, "switchboard") is shown escaped.
    """
    return f"<@{user}>" if is_user_id(user) else escape(user)


def date(at: float) -> str:
    """A time every reader sees in their own time zone, with a UTC fallback for old clients."""
    moment = datetime.fromtimestamp(at, UTC)
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def people_text(text: str, ids: tuple[str, ...], people: People = mention) -> str:
    """Escape `text` and show each of the known user ids in it as a person.

    For replies the core words itself ("Already approved by U0123 at …"): only ids the caller
    knows (the actor, the requester) are replaced, never user-id-looking words in general.
    """
    text = escape(text)
    for user in ids:
        if is_user_id(user):
            text = re.sub(rf"\b{re.escape(user)}\b", lambda _m, u=user: people(u), text)
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
    return " · ".join(f"{escape(k)} {escape(str(v))}" for k, v in items)


def _notification(text: str) -> str:
    """Top-level `text`, from already escaped mrkdwn: short, and never cut inside an entity."""
    text = " ".join(text.split())
    if len(text) <= NOTIFICATION_CHARS:
        return text
    return split_text(text, NOTIFICATION_CHARS - 1)[0].rstrip() + "…"


def _long(head: list[dict[str, Any]], title: str, body: str) -> list[Message]:
    """The head blocks, then the escaped body in sections, over as many messages as needed."""
    sections = [_section(piece) for piece in split_text(body)] if body else []
    messages: list[Message] = []
    first = head + sections[:SECTIONS_PER_MESSAGE]
    messages.append(Message(_notification(title), first[:MAX_BLOCKS]))
    rest = sections[SECTIONS_PER_MESSAGE:]
    part = 2
    while rest:
        chunk, rest = rest[:SECTIONS_PER_MESSAGE], rest[SECTIONS_PER_MESSAGE:]
        messages.append(Message(_notification(f"{title} (part {part})"), chunk))
        part += 1
    return messages


def _request_of(notice: Notice) -> str:
    """The request as typed: the structured field, else what follows "Run for X: "."""
    if notice.request is not None:
        return notice.request
    return notice.title.split(": ", 1)[1] if ": " in notice.title else notice.title


def _opened(notice: Notice, people: People) -> list[Message]:
    who = people(notice.requester) if notice.requester else "someone"
    run = f"Run {notice.run_id}" if notice.run_id else "A run"
    excerpt, _cut = wording.excerpt(_request_of(notice), wording.OPENING_CHARS)
    request = escape(excerpt)
    team = escape(notice.figures.get("team") or "")
    if notice.outcome:
        mark = _OUTCOME_MARK.get(notice.outcome, ":x:")
        status = f"{mark} {escape(notice.outcome.capitalize())}"
        status += f" · team {team}" if team and team != "?" else ""
        status += " · the answer is in the thread"
    else:
        where = f"team {team}" if team and team != "routing" else "a router picks the team"
        status = f":hourglass_flowing_sand: Working ({where}); progress in the thread"
    blocks = [_section(f"*{run}* for {who}\n{request}"), _context(status)]
    return [Message(_notification(f"{run} for {who}: {request}"), blocks)]


def view_lines(view: progress.View) -> list[str]:
    """The checklist as mrkdwn lines, newest last."""
    lines = []
    if view.earlier:
        lines.append(f"_… {view.earlier} earlier step{'s' if view.earlier != 1 else ''}_")
    for item in view.items:
        line = f"{_ITEM_MARK.get(item.status, ':white_circle:')} {escape(item.title)}"
        figures = progress.item_figures(item)
        if figures:
            line += f"  _{escape(figures)}_"
        if item.detail:
            quoted = "\n".join(f">{escape(part)}" for part in item.detail.splitlines() if part)
            line += f"\n{quoted}"
        lines.append(line)
    return lines


def view_outcome(view: progress.View, people: People) -> str:
    """The view's last words once the run ended (who aborted it, or why it failed)."""
    if view.ended_by:
        return f"Aborted by {people(view.ended_by)}"
    if view.ended_reason:
        return escape(view.ended_reason)
    return ""


def _view(notice: Notice, people: People) -> list[Message]:
    view = progress.View.from_json(notice.view or {})
    mark = _STATE_MARK.get(view.state, ":gear:")
    head = f"{mark} *{escape(progress.headline(view))}*"
    lines = view_lines(view)
    body = "\n".join(lines)
    while len(body) > SECTION_CHARS and len(lines) > 1:  # keep the newest lines
        lines = lines[1:]
        body = "\n".join(["_… earlier steps left out_", *lines])
    blocks = [_section(head)]
    if body:
        blocks.append(_section(body))
    footer = escape(progress.totals(view))
    outcome = view_outcome(view, people)
    if outcome:
        footer = f"{outcome} · {footer}"
    blocks.append(_context(footer))
    return [Message(_notification(f"Run {view.run_id}: {escape(progress.headline(view))}"), blocks)]


def _progress(notice: Notice) -> list[Message]:
    """A progress notice that carries no view (an older row): its title and figures."""
    meta = _figures(notice.figures, ("step", "team", "tokens", "dollars"))
    blocks = [_section(f":gear: {escape(notice.title)}")] + ([_context(meta)] if meta else [])
    return [Message(_notification(escape(notice.title)), blocks)]


def _result(notice: Notice, people: People) -> list[Message]:
    if notice.kind == Kind.ERROR:
        mark = ":x:"
    else:
        mark = _OUTCOME_MARK.get(notice.outcome or "finished", ":x:")
    title = escape(notice.title)
    body = escape(notice.body)
    if notice.actor and is_user_id(notice.actor):
        first, sep, rest = body.partition("\n")
        first = re.sub(rf"\b{re.escape(notice.actor)}\b", people(notice.actor), first)
        body = first + sep + rest
    head = [_section(f"{mark} *{title}*")]
    glimpse = body.split("\n", 1)[0]
    return _long(head, f"{title}: {glimpse}" if glimpse else title, body)


def _escalation(notice: Notice) -> list[Message]:
    reason = notice.body.split("\n", 1)[0]
    if notice.guard:
        title = f"Run {notice.run_id} paused: {wording.pause_reason(notice.guard, reason)}"
    else:
        title = notice.title
    blocks = [
        _section(f":double_vertical_bar: *{escape(title)}*"),
        *[_section(piece) for piece in split_text(escape(notice.body))][:3],
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{escape(k)}*\n{escape(str(v))}"[:2000]}
        for k, v in list(notice.figures.items())[:10]
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if notice.actions:
        blocks.append({"type": "actions", "elements": [_button(a) for a in notice.actions]})
    return [Message(_notification(escape(title)), blocks)]


def decision_title(notice: Notice, people: People) -> str:
    """ "Approved by <person> at <local time>", from structured facts when the notice has them."""
    outcome = (notice.outcome or "decided").lower()
    if notice.at is not None:
        when = date(notice.at)
        if outcome == "expired":
            return f"Expired unanswered at {when}"
        if notice.actor:
            return f"{escape(outcome.capitalize())} by {people(notice.actor)} at {when}"
    decider = _DECIDER.search(notice.title)
    user = decider.group(1) if decider else ""
    return people_text(notice.title, (user,), people)


def _decision(notice: Notice, people: People) -> list[Message]:
    mark = {"approved": ":white_check_mark:", "aborted": ":black_square_for_stop:"}.get(
        notice.outcome or "", ":hourglass:"
    )
    title = decision_title(notice, people)
    head = f"Escalation {notice.escalation_id}" if notice.escalation_id else "Escalation"
    blocks = [_section(f"{mark} *{head}: {title}*")]
    if notice.body:
        blocks.append(_context(escape(notice.body)))
    meta = _figures({k: v for k, v in notice.figures.items() if k != "repeated"})
    if meta:
        blocks.append(_context(meta))
    return [Message(_notification(f"{head}: {title}"), blocks)]


def _highlight(notice: Notice) -> list[Message]:
    body = notice.body
    if len(body) > HIGHLIGHT_CHARS:
        body = body[:HIGHLIGHT_CHARS] + " …"
    blocks = [_section(f"*{escape(notice.title)}*")]
    blocks += [_section(piece) for piece in split_text(escape(body))] if body else []
    return [Message(_notification(escape(notice.title)), blocks)]


def _request(notice: Notice, people: People) -> list[Message]:
    who = people(notice.requester) if notice.requester else "someone"
    head = [_section(f"*The whole request* from {who}")]
    return _long(head, f"The whole request from {who}", escape(notice.body))


def render(notice: Notice, people: People = mention) -> list[Message]:
    """Every message a notice needs, in posting order (usually exactly one)."""
    if notice.kind == Kind.OPENED:
        return _opened(notice, people)
    if notice.kind == Kind.PROGRESS:
        return _view(notice, people) if notice.view else _progress(notice)
    if notice.kind in (Kind.HIGHLIGHT, Kind.NOTE):
        return _highlight(notice)
    if notice.kind in (Kind.RESULT, Kind.ERROR):
        return _result(notice, people)
    if notice.kind == Kind.ESCALATION:
        return _escalation(notice)
    if notice.kind == Kind.DECISION:
        return _decision(notice, people)
    if notice.kind == Kind.REQUEST:
        return _request(notice, people)
    raise ValueError(f"slack cannot render notice kind {notice.kind!r}")


def _button(action: Action) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action.action_id,
        "text": {"type": "plain_text", "text": plain(action.label[:75])},
        "value": action.value,
    }
    if action.style in ("primary", "danger"):
        button["style"] = action.style
    if action.confirm:
        button["confirm"] = {
            "title": {"type": "plain_text", "text": "Are you sure?"},
            "text": {"type": "plain_text", "text": plain(action.confirm[:300])},
            "confirm": {"type": "plain_text", "text": plain(action.label[:30])},
            "deny": {"type": "plain_text", "text": "Cancel"},
            **({"style": action.style} if action.style in ("primary", "danger") else {}),
        }
    return button
