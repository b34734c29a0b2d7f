"""The console adapter: `switchboard chat`. It doubles as the end-to-end test harness.

It speaks the same /agent grammar as Slack, renders notices as indented lines under their
run, and drains its own outbox rows (platform "console", channel = this session), so it
works the same with the embedded queue and with a separate worker on Redis. A run this
session approved but did not start is followed from the database to its end. On a
terminal, input has line editing and history (readline), and lines printed while you type
leave your half-typed line intact. Nothing printed carries terminal control sequences.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select

from bot import commands, outage
from orchestrator import progress, reports, service, wording
from orchestrator.intake import Caps
from orchestrator.notices import ABORT, APPROVE, REJECT, Kind, Notice, escalation_actions
from orchestrator.outbox import OutboxSender
from orchestrator.ports import Target
from orchestrator.store import progress as store_progress
from orchestrator.store.models import OutboxItem, OutboxStatus, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig

PLATFORM = "console"
PROMPT = "switchboard> "
NO_WORKER_AFTER_S = 10.0
Enqueue = Callable[[int, int], None]

# Terminal control that must never reach the screen from user or model text: CSI and OSC
# sequences (cursor moves, clear screen, window titles), other escapes, C0 and C1 controls.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI … final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC … BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC … ST
    r"|\x1b[@-_]?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]"  # C0 (but tab and newline), DEL, C1
)


def clean(text: str) -> str:
    """Text safe to print on a terminal: escape sequences and control characters removed."""
    return _ESCAPES.sub("", text.replace("\r\n", "\n"))


_ANSWER_WORDS = {APPROVE: "approve", REJECT: "reject", ABORT: "abort"}  # no button for notes


def _answers(notice: Notice) -> str:
    """What to type for each button of an escalation ("approve 3 [guidance]" …)."""
    ask = notice.escalation_id
    extra = {APPROVE: " [guidance]", REJECT: " [reason]", ABORT: ""}
    answers = []
    for action in notice.actions or escalation_actions(ask or 0, "continue"):
        word = _ANSWER_WORDS.get(action.action_id)
        if word is None:
            continue
        label = f" ({action.label})" if action.label.split(" ")[0].lower() != word else ""
        answers.append(f"{word} {ask}{extra[action.action_id]}{label}")
    return "  |  ".join(answers)


def _indent(text: str, prefix: str = "    ") -> str:
    """Indent every line; blank lines stay (Markdown paragraphs and lists need them)."""
    lines = text.strip("\n").splitlines()
    return "\n".join(prefix + line if line.strip() else "" for line in lines)


class ConsolePort:
    """ChatPort for a terminal: posting prints; updating prints what changed.

    The progress view becomes one line per finished step (with that step's own tokens,
    dollars and time) and a glimpse of each worker's report; the run's final line carries
    the totals. Lines are tagged `[run N]` whenever more than one run is active.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._refs = itertools.count(1)
        self._printed: dict[int, set[str]] = {}  # run → step ids already shown
        self._views: dict[int, progress.View] = {}
        self._active: set[int] = set()
        self._tagged: set[int] = set()
        self._lock = threading.Lock()

    def post(self, target: Target, notice: Notice) -> str:
        self._show(notice)
        return f"console-{next(self._refs)}"

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        # A terminal scrolls: an update prints only what is new.
        self._show(notice)

    def active(self) -> set[int]:
        with self._lock:
            return set(self._active)

    def follow(self, run_id: int, shown: list[str]) -> None:
        """A run started elsewhere: its steps so far (`shown`) are not repeated."""
        with self._lock:
            self._active.add(run_id)
            self._printed.setdefault(run_id, set()).update(shown)

    # --- rendering ----------------------------------------------------------------------------

    def _tag(self, run_id: int) -> str:
        """`[run N] ` once the run has shared the screen with another, until it ends."""
        with self._lock:
            if len(self._active) > 1:
                self._tagged |= self._active
            return f"[run {run_id}] " if run_id in self._tagged else ""

    def _show(self, notice: Notice) -> None:
        text = self.render(notice)
        if text:
            self._write(text)

    def render(self, notice: Notice) -> str:
        run = notice.run_id
        if notice.kind == Kind.OPENED:
            if notice.outcome:
                return ""  # the final line says it; one line per outcome
            with self._lock:
                self._active.add(run)
            return self._opened(notice)
        if notice.kind == Kind.PROGRESS:
            return self._progress(notice)
        if notice.kind in (Kind.HIGHLIGHT, Kind.NOTE):
            tag = self._tag(run)
            return f"{tag}    » {notice.title}\n{_indent(notice.body[:600], '      ')}"
        if notice.kind in (Kind.RESULT, Kind.ERROR):
            return self._final(notice)
        if notice.kind == Kind.ESCALATION:
            reason = notice.body.split("\n", 1)[0]
            title = notice.title
            if notice.guard:
                title = f"Run {run} paused: {wording.pause_reason(notice.guard, reason)}"
            facts = ", ".join(f"{k} {v}" for k, v in notice.figures.items() if k != "repeated")
            return (
                f"[run {run}] ⏸ {title}\n{_indent(notice.body)}\n    ({facts})\n"
                f"    → answer: {_answers(notice)}"
            )
        if notice.kind == Kind.DECISION:
            return f"[run {run}] escalation #{notice.escalation_id}: {_decision(notice)}"
        if notice.kind == Kind.REQUEST:
            return ""  # the person typed it here; the opening line shows its start
        raise ValueError(f"console cannot render notice kind {notice.kind!r}")

    def _opened(self, notice: Notice) -> str:
        request = notice.request if notice.request is not None else notice.title
        if notice.request is None and ": " in request:
            request = request.split(": ", 1)[1]
        excerpt, _cut = wording.excerpt(" ".join(request.split()), wording.OPENING_CHARS)
        team = notice.figures.get("team")
        on = f" (team {team})" if team and team not in ("routing", "?") else ""
        return f"[run {notice.run_id}] Run for {notice.requester or 'you'}: {excerpt}{on}"

    def _progress(self, notice: Notice) -> str:
        if not notice.view:
            meta = " · ".join(
                f"{k} {v}" for k, v in notice.figures.items() if k in ("step", "tokens", "dollars")
            )
            return f"{self._tag(notice.run_id)}    · {notice.title}" + (
                f"  [{meta}]" if meta else ""
            )
        view = progress.View.from_json(notice.view)
        with self._lock:
            self._views[view.run_id] = view
            printed = self._printed.setdefault(view.run_id, set())
            fresh = [i for i in view.items if i.status != progress.WORKING and i.id not in printed]
            printed.update(i.id for i in fresh)
        tag = self._tag(view.run_id)
        lines = []
        for item in fresh:
            figures = progress.item_figures(item)
            mark = "✖" if item.status == progress.FAILED else "·"
            lines.append(f"{tag}    {mark} {item.title}" + (f"  [{figures}]" if figures else ""))
            if item.detail:
                lines.append(_indent(item.detail, f"{tag}      "))
        return "\n".join(lines)

    def _final(self, notice: Notice) -> str:
        run = notice.run_id
        with self._lock:
            view = self._views.pop(run, None)
            self._printed.pop(run, None)
            self._active.discard(run)
            self._tagged.discard(run)
        if notice.kind == Kind.ERROR:
            head = f"[run {run}] ✖ {notice.title}"
        else:
            head = f"[run {run}] {'✔' if notice.outcome == 'finished' else '■'} {notice.title}"
        if view is not None:
            head += f" · {progress.totals(view)}"
        body = notice.body
        return f"{head}\n{_indent(body)}" if body.strip() else head


def _decision(notice: Notice) -> str:
    """ "Approved by alice at 14:03" in this machine's local time."""
    outcome = (notice.outcome or "decided").capitalize()
    if notice.at is not None:
        when = time.strftime("%H:%M", time.localtime(notice.at))
        if notice.outcome == "expired":
            return f"Expired unanswered at {when}"
        if notice.actor:
            return f"{outcome} by {notice.actor} at {when}"
    return notice.title


def render(notice: Notice) -> str:
    """One notice as console text, with no memory of earlier ones (tests, tools)."""
    return ConsolePort(lambda _text: None).render(notice)


class ConsoleSession:
    def __init__(
        self,
        store: Store,
        config: TeamsConfig,
        enqueue: Enqueue,
        *,
        user: str | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self.store = store
        self.config = config
        self.enqueue = enqueue
        self.user = user or os.environ.get("USER") or "console"
        self.channel = f"console-{uuid.uuid4().hex[:12]}"
        self.out = out
        self.runs: list[int] = []
        self.followed: list[int] = []  # runs this session approved but did not start
        self._print_lock = threading.Lock()
        self._port = ConsolePort(self.say)
        self._sender = OutboxSender(
            store, self._port, PLATFORM, progress_interval_s=0.0, view_items=10_000
        )
        self._started_at: dict[int, float] = {}
        self._warned: set[int] = set()
        self._broker = _uses_broker()
        self._editing: Any = None  # the readline module, when input is a terminal
        self._prompting = False
        self._seen: set[tuple[str, int]] = set()
        self._watch_lock = threading.Lock()
        self._stop = threading.Event()
        self._drainer = threading.Thread(
            target=self._drain_forever, name="console-outbox", daemon=True
        )

    def say(self, text: str) -> None:
        text = clean(text)
        with self._print_lock:
            try:
                if self._prompting and self._editing is not None:
                    # Print above the prompt, then draw the prompt and the half-typed line again.
                    self.out.write("\r\x1b[K" + text + "\n")
                    self.out.write(PROMPT + self._editing.get_line_buffer())
                    self.out.flush()
                else:
                    print(text, file=self.out, flush=True)
            except BrokenPipeError:
                # The reader went away (`| head`); runs are durable and resume on next start.
                os._exit(0)

    def start(self) -> None:
        if sys.stdin.isatty():
            self._editing = line_editing()
            if self._editing is not None:
                self._editing.set_pre_input_hook(self._reading)
        self._drainer.start()

    def _reading(self) -> None:
        """readline calls this once the prompt is on screen and input is being read."""
        self._prompting = True

    def close(self) -> None:
        self._stop.set()
        self._drainer.join(timeout=5)
        self.drain()
        if self._editing is not None:
            save_history(self._editing)

    def drain(self) -> None:
        if self.runs:
            self._sender.drain(channel=self.channel)
        with self._watch_lock:  # the drainer thread and wait() both come here
            for run_id in list(self.followed):
                self._follow(run_id)
            if self._broker:
                self._check_worker()

    def _check_worker(self) -> None:
        """With a broker, say so when no worker has taken a new run's first step."""
        moment = time.monotonic()
        due = [
            run_id
            for run_id, since in self._started_at.items()
            if run_id not in self._warned and moment - since >= NO_WORKER_AFTER_S
        ]
        if not due:
            return
        for run in self.store.runs(due):
            self._warned.add(run.id)
            if run.status == RunStatus.QUEUED and run.version == 0:
                self.say(
                    f"[run {run.id}] no worker has picked up run {run.id} after "
                    f"{NO_WORKER_AFTER_S:.0f} s — is `switchboard worker` running?"
                )

    def _follow(self, run_id: int) -> None:
        """Print a followed run's new steps from the database, and its end."""
        facts = store_progress.run_facts(self.store, run_id)
        if facts is None:
            self.followed.remove(run_id)
            return
        view = progress.build(facts, max_items=10_000)
        target = Target(PLATFORM, self.channel)
        self._port.update(target, "", Notice(Kind.PROGRESS, run_id, "", view=view.to_json()))
        if view.state == progress.PAUSED and facts.pause is not None:
            pause = facts.pause
            if ("pause", pause.escalation_id) not in self._seen:
                self._seen.add(("pause", pause.escalation_id))
                reason = wording.pause_reason(pause.guard, pause.reason)
                self.say(
                    f"[run {run_id}] ⏸ paused again: {reason}\n"
                    f"    → answer: approve {pause.escalation_id}  |  abort {pause.escalation_id}"
                )
        if not view.ended:
            return
        self.followed.remove(run_id)
        run = facts.run
        title = {"finished": "Finished", "aborted": "Aborted"}.get(view.state, "Failed")
        body = run.answer or run.error or ""
        kind = Kind.ERROR if view.state == progress.ENDED_FAILED else Kind.RESULT
        self._port.post(target, Notice(kind, run_id, title, body=body, outcome=view.state))

    def _drain_forever(self) -> None:
        failing = False
        while not self._stop.wait(0.1):
            try:
                self.drain()
            except Exception as exc:  # keep the session alive; say what happened once
                if not failing:
                    self.say(f"(cannot deliver notices: {outage.describe(exc)}; retrying)")
                failing = True
                time.sleep(1)
                continue
            if failing:
                self.say("(delivering notices again)")
            failing = False

    @property
    def actor(self) -> service.Actor:
        return service.Actor(user=self.user, platform=PLATFORM, channel=self.channel)

    # --- input --------------------------------------------------------------------------

    def handle(self, line: str) -> None:
        self._prompting = False
        try:
            line = commands.clean_line(line).strip()
        except commands.CommandError as exc:
            self.say(f"error: {exc}")
            return
        if not line:
            return
        word = line.split()[0].lower()
        try:
            if word in ("approve", "abort", "reject") and not line.startswith("/"):
                self._decide(word, line.split(None, 1)[1] if " " in line else "")
                return
            try:
                command = commands.parse_line(line)
            except commands.CommandError as exc:
                self.say(f"error: {exc}\n{commands.USAGE}")
                return
            self._execute(command)
        except (service.UserError, commands.CommandError) as exc:
            self.say(f"error: {exc}")
        except Exception as exc:  # a database restart must not end the session
            self.say(f"error: {outage.describe(exc)}; nothing was done. Try again in a moment.")

    def _execute(self, command: commands.Command) -> None:
        if isinstance(command, commands.StartRun):
            run, _ = service.start_run(
                self.store,
                self.config,
                request=command.request,
                team=command.team,
                platform=PLATFORM,
                channel=self.channel,
                thread=None,
                requester=self.user,
                origin_key=f"{self.channel}:{uuid.uuid4()}",
                caps=Caps.from_settings(),
            )
            self.runs.append(run.id)
            self._started_at[run.id] = time.monotonic()
            self.enqueue(run.id, 0)
        elif isinstance(command, commands.Status):
            self.say(
                service.status_report(
                    self.store, self.config, command.run_id, self.actor, mine=True
                )
            )
        elif isinstance(command, commands.Abort):
            self.say(service.abort_run(self.store, self.config, command.run_id, self.actor))
        elif isinstance(command, commands.Reply):
            run, message = service.continue_in_thread(
                self.store,
                self.config,
                command.run_id,
                command.text,
                self.actor,
                origin_key=f"{self.channel}:{uuid.uuid4()}",
                caps=Caps.from_settings(),
            )
            self.say(message)
            if run is not None:
                self.runs.append(run.id)
                self.enqueue(run.id, 0)
        elif isinstance(command, commands.Retry):
            result = service.retry_run(self.store, self.config, command.run_id, self.actor)
            self.say(result.message)
            if result.resume_version is not None and result.run_id is not None:
                if result.run_id not in self.runs:
                    self.runs.append(result.run_id)
                self.enqueue(result.run_id, result.resume_version)
        elif isinstance(command, commands.Budget):
            self.say(reports.budget_text(self.store, self.config, channel=self.channel))
        elif isinstance(command, commands.Teams):
            self.say(reports.teams_text(self.config))
        elif isinstance(command, commands.Help):
            self.say(commands.USAGE)

    def _decide(self, word: str, rest: str) -> None:
        """`approve [N] [guidance]`, `reject [N] [reason]`, `abort [N]`."""
        watched = self.runs + self.followed
        pending = [e for run_id in watched for e in self.store.pending_escalations(run_id)]
        first, _, note = rest.strip().partition(" ")
        if first.lstrip("#").isdigit():
            escalation_id = commands.parse_id(first, "escalation id")
        elif first and word == "abort":
            self.say(f"error: {first!r} is not an escalation id")
            return
        else:
            note = rest.strip()
            escalation_id = 0
        if not escalation_id:
            if not pending:
                self.say("error: nothing is waiting for approval")
                return
            if len(pending) > 1:
                ids = ", ".join(str(e.id) for e in pending)
                self.say(f"error: several escalations are waiting ({ids}); say which: {word} <id>")
                return
            escalation_id = pending[0].id
        result = service.decide(
            self.store,
            self.config,
            escalation_id,
            word == "approve",
            self.actor,
            reject=word == "reject",
            note=note or None,
        )
        self.say(result.message)
        if result.resume_version is not None and result.run_id is not None:
            self.enqueue(result.run_id, result.resume_version)
        applied = result.outcome == service.DecisionOutcome.APPLIED
        run_id = result.run_id
        if applied and run_id is not None and run_id not in self.runs + self.followed:
            # Approved here, started elsewhere: follow it to its end in this session.
            self._seen.add(("pause", escalation_id))
            facts = store_progress.run_facts(self.store, run_id)
            done = progress.build(facts, max_items=10_000).items if facts is not None else ()
            self._port.follow(run_id, [i.id for i in done if i.status != progress.WORKING])
            self.followed.append(run_id)
            self.say(f"[run {run_id}] following it here until it ends")

    # --- waiting ----------------------------------------------------------------------------

    def settled(self) -> bool:
        """Every run of this session ended or waits for a human, and its notices are out."""
        runs = self.store.runs(self.runs + self.followed)
        if any(r.status not in RunStatus.TERMINAL | {RunStatus.AWAITING_APPROVAL} for r in runs):
            return False
        with self.store.sessions() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(OutboxItem)
                .where(
                    OutboxItem.channel == self.channel,
                    OutboxItem.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]),
                )
            )
        return not pending

    def wait(self, timeout_s: float) -> bool:
        self._prompting = False  # input is over (or paused): print plainly
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.drain()
                if self.settled():
                    return True
            except Exception:  # the drain thread says so; an outage only delays the end
                time.sleep(1)
            time.sleep(0.1)
        return False

    def waiting_for_approval(self) -> list[int]:
        watched = self.store.runs(self.runs + self.followed)
        return [r.id for r in watched if r.status == RunStatus.AWAITING_APPROVAL]


def _uses_broker() -> bool:
    from orchestrator.settings import get_settings

    return bool(get_settings().broker_url)


def history_path() -> Path:
    """Where the console keeps its input history ($XDG_STATE_HOME/switchboard/history)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "switchboard" / "history"


def line_editing() -> Any:
    """Turn on readline for input(): arrow keys, Ctrl-A/E, history. None where unavailable."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input still works
        return None
    readline.set_history_length(1000)
    with contextlib.suppress(OSError):
        readline.read_history_file(history_path())
    return readline


def save_history(editing: Any) -> None:
    with contextlib.suppress(OSError):  # history is a convenience, not worth an error
        path = history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        editing.write_history_file(path)
