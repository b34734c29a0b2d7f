"""The console adapter: `switchboard chat`. It doubles as the end-to-end test harness.

It speaks the same /agent grammar as Slack, renders notices as indented lines under their
run, and drains its own outbox rows (platform "console", channel = this session), so it
works the same with the embedded queue and with a separate worker on Redis.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TextIO

from sqlalchemy import func, select

from bot import commands, outage
from orchestrator import reports, service
from orchestrator.intake import Caps
from orchestrator.notices import Kind, Notice
from orchestrator.outbox import OutboxSender
from orchestrator.ports import Target
from orchestrator.store.models import OutboxItem, OutboxStatus, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig

PLATFORM = "console"
Enqueue = Callable[[int, int], None]


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines() if line.strip())


def render(notice: Notice) -> str:
    tag = f"[run {notice.run_id}]"
    figures = notice.figures
    if notice.kind == Kind.OPENED:
        if notice.outcome:
            return f"{tag} {notice.outcome}"
        return f"{tag} {notice.title} (team: {figures.get('team', '?')})"
    if notice.kind == Kind.PROGRESS:
        meta = " · ".join(
            f"{k} {v}" for k, v in figures.items() if k in ("step", "tokens", "dollars")
        )
        return f"    · {notice.title}" + (f"  [{meta}]" if meta else "")
    if notice.kind == Kind.HIGHLIGHT:
        return f"    » {notice.title}\n{_indent(notice.body[:600], '      ')}"
    if notice.kind == Kind.RESULT:
        mark = "✔" if notice.outcome == "finished" else "■"
        return f"{tag} {mark} {notice.title}\n{_indent(notice.body)}"
    if notice.kind == Kind.ERROR:
        return f"{tag} ✖ {notice.title}: {notice.body}"
    if notice.kind == Kind.ESCALATION:
        facts = ", ".join(f"{k} {v}" for k, v in figures.items())
        return (
            f"{tag} ⏸ {notice.title}\n{_indent(notice.body)}\n    ({facts})\n"
            f"    → answer: approve {notice.escalation_id}  |  abort {notice.escalation_id}"
        )
    if notice.kind == Kind.DECISION:
        return f"{tag} escalation #{notice.escalation_id}: {notice.title}"
    raise ValueError(f"console cannot render notice kind {notice.kind!r}")


class ConsolePort:
    """ChatPort for a terminal: posting prints; updating prints the new state."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._refs = itertools.count(1)

    def post(self, target: Target, notice: Notice) -> str:
        self._write(render(notice))
        return f"console-{next(self._refs)}"

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        # A terminal scrolls; progress "updated in place" is simply the next line.
        self._write(render(notice))


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
        self._print_lock = threading.Lock()
        self._sender = OutboxSender(
            store, ConsolePort(self.say), PLATFORM, progress_interval_s=0.0, coalesce_progress=False
        )
        self._stop = threading.Event()
        self._drainer = threading.Thread(
            target=self._drain_forever, name="console-outbox", daemon=True
        )

    def say(self, text: str) -> None:
        with self._print_lock:
            try:
                print(text, file=self.out, flush=True)
            except BrokenPipeError:
                # The reader went away (`| head`); runs are durable and resume on next start.
                os._exit(0)

    def start(self) -> None:
        self._drainer.start()

    def close(self) -> None:
        self._stop.set()
        self._drainer.join(timeout=5)
        self.drain()

    def drain(self) -> None:
        if self.runs:
            self._sender.drain(channel=self.channel)

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
        try:
            line = commands.clean_line(line).strip()
        except commands.CommandError as exc:
            self.say(f"error: {exc}")
            return
        if not line:
            return
        word = line.split()[0].lower()
        try:
            if word in ("approve", "abort") and not line.startswith("/"):
                self._decide(word == "approve", line.split()[1:])
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
            self.enqueue(run.id, 0)
        elif isinstance(command, commands.Status):
            self.say(service.status_report(self.store, self.config, command.run_id, self.actor))
        elif isinstance(command, commands.Abort):
            self.say(service.abort_run(self.store, self.config, command.run_id, self.actor))
        elif isinstance(command, commands.Budget):
            self.say(reports.budget_text(self.store, self.config, channel=self.channel))
        elif isinstance(command, commands.Teams):
            self.say(reports.teams_text(self.config))
        elif isinstance(command, commands.Help):
            self.say(commands.USAGE)

    def _decide(self, approve: bool, args: list[str]) -> None:
        pending = [e for run_id in self.runs for e in self.store.pending_escalations(run_id)]
        if args:
            escalation_id = commands.parse_id(args[0], "escalation id")
        elif len(pending) == 1:
            escalation_id = pending[0].id
        elif not pending:
            self.say("error: nothing is waiting for approval")
            return
        else:
            ids = ", ".join(str(e.id) for e in pending)
            self.say(f"error: several escalations are waiting ({ids}); say which: approve <id>")
            return
        result = service.decide(self.store, self.config, escalation_id, approve, self.actor)
        self.say(result.message)
        if result.resume_version is not None and result.run_id is not None:
            self.enqueue(result.run_id, result.resume_version)

    # --- waiting ----------------------------------------------------------------------------

    def settled(self) -> bool:
        """Every run of this session ended or waits for a human, and its notices are out."""
        runs = self.store.runs(self.runs)
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
        return [r.id for r in self.store.runs(self.runs) if r.status == RunStatus.AWAITING_APPROVAL]
