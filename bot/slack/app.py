"""Inbound Slack: the Bolt AsyncApp, its listeners, and their translation into core calls.

Why async: Bolt's AsyncApp serves many Slack requests on one event loop, which matters for
the 3-second ack budget; the core store is synchronous SQLAlchemy, so every store call goes
through asyncio.to_thread (short transactions, no model calls: nothing here waits on a model).

Why process_before_response=True: a listener finishes before Slack gets its answer, so an
event whose enqueue failed gets a 500 and Slack retries it, instead of being acked and lost.
Listeners stay well inside the 3 seconds: queue sends have a deadline and nothing else is slow.
Deduplication: an event id is recorded in the database only *after* its work is enqueued; a
retry of a processed event is skipped, a retry of an unprocessed one is processed, and runs
are created idempotently on an origin key, so a retry racing the first delivery makes no twin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands
from bot.slack.directory import UserGroups
from bot.slack.port import PLATFORM, SlackSettings, error_code
from bot.slack.queue import Queue
from bot.slack.render import escape, people_text
from orchestrator import reports, service
from orchestrator.intake import Caps
from orchestrator.notices import ABORT, APPROVE, APPROVE_NOTE, REJECT
from orchestrator.store.models import InboundEvent
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig
from orchestrator.telemetry.metrics import CHAT_API_ERRORS

log = logging.getLogger(__name__)

NOT_IN_CHANNEL = (
    "I am not a member of this channel, so I cannot post the run here. "
    "Invite me first (`/invite @Switchboard`), or run the command in a channel I am in."
)
QUEUE_DOWN = (
    "I could not queue that: the task queue is not answering. Nothing was started; "
    "try again in a minute, and tell your Switchboard operator if it persists."
)
_BOT_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(\|[^>]*)?>")


@dataclass(frozen=True)
class Core:
    """What the listeners need from the rest of Switchboard: plain values, no globals."""

    store: Store
    config: TeamsConfig
    queue: Queue
    enqueue_timeout_s: float = 2.0
    check_timeout_s: float = 1.0


@dataclass(frozen=True)
class Reply:
    text: str
    started: bool = False  # a run was queued: its opening message will speak for us


def _code(text: str) -> str:
    return f"```{escape(text)}```"


def _report(text: str) -> str:
    """A report for a person: user ids shown as people (`<@U…>`, which Slack renders as the
    user's name), so not in a code block, where Slack would print the raw id."""
    ids = tuple(dict.fromkeys(_SLACK_USER.findall(text)))
    return people_text(text, ids)


_SLACK_USER = re.compile(r"\b[UW][A-Z0-9]{8,11}\b")


class Listeners:
    """The adapter's logic, kept apart from Bolt's registration so each part reads alone."""

    def __init__(self, core: Core, client: AsyncWebClient) -> None:
        self.core = core
        self.client = client
        self.groups = UserGroups(client)

    # --- helpers ---------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _enqueue(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> bool:
        try:
            await asyncio.wait_for(
                asyncio.to_thread(fn, *args, **kwargs), self.core.enqueue_timeout_s
            )
            return True
        except Exception as exc:  # broker down or slow: say so instead of missing the ack
            log.warning("enqueue %s failed: %s: %s", fn.__name__, type(exc).__name__, exc)
            return False

    def _processed(self, key: str) -> bool:
        with self.core.store.sessions() as session:
            return session.get(InboundEvent, key) is not None

    async def _ephemeral(self, channel: str, user: str, text: str, thread: str | None) -> None:
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread
            )
        except SlackApiError as exc:
            CHAT_API_ERRORS.labels(PLATFORM, error_code(exc)).inc()
            log.warning("ephemeral reply in %s failed: %s", channel, error_code(exc))

    async def _membership_problem(self, channel: str) -> str | None:
        """NOT_IN_CHANNEL when Slack says the bot cannot post here; None if fine or unknown."""
        try:
            response = await asyncio.wait_for(
                self.client.conversations_info(channel=channel), self.core.check_timeout_s
            )
        except SlackApiError as exc:
            return NOT_IN_CHANNEL if error_code(exc) == "channel_not_found" else None
        except Exception:  # a slow or failing check must not block the command
            return None
        info = response.get("channel") or {}
        if info.get("is_im") or info.get("is_member", True):
            return None
        return NOT_IN_CHANNEL

    # --- the grammar -------------------------------------------------------------------------

    async def execute(
        self,
        text: str,
        *,
        user: str,
        channel: str,
        thread: str | None,
        origin: str,
        response_url: str | None = None,
    ) -> Reply:
        """Run one /agent command; the reply is what the user should see (ephemerally)."""
        try:
            command = commands.parse(text)
        except commands.CommandError as exc:
            return Reply(f"{exc}\n{_code(commands.USAGE)}")
        core = self.core
        try:
            if isinstance(command, commands.StartRun):
                return await self._start(command, user, channel, thread, origin, response_url)
            if isinstance(command, commands.Status):
                actor = service.Actor(user, PLATFORM, channel, await self.groups.groups_of(user))
                report = await self._db(
                    service.status_report, core.store, core.config, command.run_id, actor
                )
                return Reply(_report(report))
            if isinstance(command, commands.Abort):
                actor = service.Actor(user, PLATFORM, channel, await self.groups.groups_of(user))
                message = await self._db(
                    service.abort_run, core.store, core.config, command.run_id, actor
                )
                await self._enqueue(core.queue.notify, [command.run_id])
                return Reply(message)
            if isinstance(command, commands.Retry):
                actor = service.Actor(user, PLATFORM, channel, await self.groups.groups_of(user))
                result = await self._db(
                    service.retry_run, core.store, core.config, command.run_id, actor
                )
                if result.resume_version is not None and result.run_id is not None:
                    await self._enqueue(core.queue.advance, result.run_id, result.resume_version)
                await self._enqueue(core.queue.notify, [command.run_id])
                return Reply(result.message)
            if isinstance(command, commands.Budget):
                report = await self._db(
                    reports.budget_text, core.store, core.config, channel=channel
                )
                return Reply(_code(report))
            if isinstance(command, commands.Teams):
                return Reply(_code(reports.teams_text(core.config)))
            return Reply(_code(commands.USAGE))
        except service.UserError as exc:
            return Reply(str(exc))

    async def _start(
        self,
        command: commands.StartRun,
        user: str,
        channel: str,
        thread: str | None,
        origin: str,
        response_url: str | None,
    ) -> Reply:
        request = service.validate_request(self.core.config, command.request, command.team)
        try:  # early word on the caps; the worker counts again when it creates the run
            await self._db(
                service.check_capacity,
                self.core.store,
                platform=PLATFORM,
                channel=channel,
                requester=user,
            )
        except service.UserError:
            raise
        except Exception as exc:
            log.warning("cannot count runs in flight: %s: %s", type(exc).__name__, exc)
        problem = await self._membership_problem(channel)
        if problem:
            return Reply(problem)
        # Whatever stops the worker from starting the run after our ack reaches the user
        # here: the slash command's response_url, or an ephemeral message in the thread.
        reply_to = {"user": user, "channel": channel, "thread": thread}
        if response_url:
            reply_to["response_url"] = response_url
        queued = await self._enqueue(
            self.core.queue.start_run,
            request=request,
            team=command.team,
            platform=PLATFORM,
            channel=channel,
            thread=thread,
            requester=user,
            origin_key=origin,
            reply_to=reply_to,
        )
        if not queued:
            return Reply(QUEUE_DOWN)
        team = f"team {command.team}" if command.team else "a router picks the team"
        where = "in this thread" if thread else "in this channel"
        return Reply(
            f"Queued ({team}): {escape(request[:300])}\nThe run opens {where} shortly.",
            started=True,
        )

    # --- listeners -------------------------------------------------------------------------

    async def on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        reply = await self.execute(
            command.get("text") or "",
            user=command["user_id"],
            channel=command["channel_id"],
            thread=None,
            origin=f"slack:cmd:{command.get('trigger_id') or command.get('command_ts', '')}",
            response_url=command.get("response_url"),
        )
        await ack(response_type="ephemeral", text=reply.text)

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        key = f"slack:event:{body.get('event_id') or event.get('client_msg_id') or event['ts']}"
        if await self._db(self._processed, key):
            log.info("skipping %s: already processed", key)
            return
        await self._mention(event, body.get("authorizations") or [])
        await self._db(self.core.store.first_delivery, key, PLATFORM)

    async def _mention(self, event: dict[str, Any], authorizations: list[dict[str, Any]]) -> None:
        channel, user, ts = event["channel"], event.get("user") or "", event["ts"]
        text = _BOT_MENTION.sub("", event.get("text") or "", count=1).strip()
        thread_ts = event.get("thread_ts")
        if thread_ts and thread_ts != ts:
            run = await self._db(self.core.store.run_in_thread, PLATFORM, channel, thread_ts)
            if run is not None:
                # Input for a run still going; a follow-up run in the thread once it ended.
                actor = service.Actor(user, PLATFORM, channel)
                core = self.core
                try:
                    follow, message = await self._db(
                        lambda: service.continue_in_thread(
                            core.store,
                            core.config,
                            run.id,
                            text,
                            actor,
                            origin_key=f"slack:msg:{channel}:{ts}",
                            caps=Caps.from_settings(),
                        )
                    )
                except service.UserError as exc:
                    follow, message = None, str(exc)
                if follow is not None and follow.version == 0:
                    await self._enqueue(core.queue.advance, follow.id, 0)
                    await self._enqueue(core.queue.notify, [follow.id])
                await self._ephemeral(channel, user, message, thread_ts)
                return
        reply = await self.execute(
            text,
            user=user,
            channel=channel,
            thread=thread_ts or ts,
            origin=f"slack:msg:{channel}:{ts}",
        )
        if reply.text == QUEUE_DOWN:
            raise RuntimeError("queue down; let Slack retry this event")
        if not reply.started:
            await self._ephemeral(channel, user, reply.text, thread_ts or ts)

    async def on_decision(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        approve = action.get("action_id") == APPROVE
        user = body["user"]["id"]
        channel, thread = _where(body)
        try:
            escalation_id = int(action.get("value") or "")
        except ValueError:
            await self._ephemeral(channel, user, "That button carries no escalation id.", thread)
            return
        await self._decide(escalation_id, user, channel, thread, approve=approve)

    async def on_note_button(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        """Reject… and Approve with note… ask for the words in a modal (views.open)."""
        await ack()
        user = body["user"]["id"]
        channel, thread = _where(body)
        reject = action.get("action_id") == REJECT
        try:
            escalation_id = int(action.get("value") or "")
        except ValueError:
            await self._ephemeral(channel, user, "That button carries no escalation id.", thread)
            return
        view = note_modal(escalation_id, reject=reject, channel=channel, thread=thread)
        try:
            await self.client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as exc:
            CHAT_API_ERRORS.labels(platform=PLATFORM, error=error_code(exc)).inc()
            what = "reject" if reject else "approve with a note"
            await self._ephemeral(
                channel,
                user,
                f"Slack did not open the form ({error_code(exc)}); to {what}, press the "
                "button again.",
                thread,
            )

    async def on_note_submitted(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The modal's words: the reason for a rejection, or guidance with an approval."""
        await ack()
        view = body.get("view") or {}
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            escalation_id = int(meta["escalation"])
        except (ValueError, KeyError, TypeError):
            return
        values = (view.get("state") or {}).get("values") or {}
        note = ((values.get(NOTE_BLOCK) or {}).get(NOTE_INPUT) or {}).get("value") or ""
        await self._decide(
            escalation_id,
            body["user"]["id"],
            meta.get("channel", ""),
            meta.get("thread"),
            approve=not meta.get("reject"),
            reject=bool(meta.get("reject")),
            note=note.strip() or None,
        )

    async def _decide(
        self,
        escalation_id: int,
        user: str,
        channel: str,
        thread: str | None,
        *,
        approve: bool,
        reject: bool = False,
        note: str | None = None,
    ) -> None:
        actor = service.Actor(user, PLATFORM, channel, await self.groups.groups_of(user))
        core = self.core
        result = await self._db(
            lambda: service.decide(
                core.store, core.config, escalation_id, approve, actor, reject=reject, note=note
            )
        )
        if result.outcome != service.DecisionOutcome.APPLIED:
            text = (  # a refusal names the approvers in Slack's own formatting already
                result.message
                if result.outcome == service.DecisionOutcome.UNAUTHORISED
                else people_text(result.message, (user, *result.people))
            )
            await self._ephemeral(channel, user, text, thread)
            return
        assert result.run_id is not None
        if result.resume_version is not None and not await self._enqueue(
            core.queue.advance, result.run_id, result.resume_version
        ):
            await self._ephemeral(
                channel,
                user,
                f"Decided, but the task queue is not answering; run {result.run_id} "
                "resumes by itself once it is back.",
                thread,
            )
        # The decision notice updates the escalation message; deliver it now, not after a step.
        await self._enqueue(core.queue.notify, [result.run_id])


NOTE_CALLBACK = "switchboard_note"
NOTE_BLOCK = "note"
NOTE_INPUT = "text"


def _where(body: dict[str, Any]) -> tuple[str, str | None]:
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id", ""
    )
    message = body.get("message") or {}
    return channel, message.get("thread_ts") or message.get("ts")


def note_modal(escalation_id: int, *, reject: bool, channel: str, thread: str | None) -> dict:
    """The Block Kit modal asking for a rejection's reason or an approval's guidance."""
    meta = {"escalation": escalation_id, "reject": reject, "channel": channel, "thread": thread}
    label = "Why not? The worker reads this." if reject else "Guidance for the supervisor"
    return {
        "type": "modal",
        "callback_id": NOTE_CALLBACK,
        "private_metadata": json.dumps(meta),
        "title": {"type": "plain_text", "text": "Reject the call" if reject else "Approve"},
        "submit": {"type": "plain_text", "text": "Reject" if reject else "Approve"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": NOTE_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": label},
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }


def build_app(core: Core, settings: SlackSettings, *, socket_mode: bool = False) -> AsyncApp:
    """The Bolt app with every Switchboard listener registered."""
    client = AsyncWebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)
    app = AsyncApp(
        client=client,
        signing_secret=settings.signing_secret or "",
        process_before_response=True,
        request_verification_enabled=not socket_mode,
    )
    listeners = Listeners(core, client)

    @app.command("/agent")
    async def agent_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await listeners.on_command(ack, command)

    @app.action(APPROVE)
    @app.action(ABORT)
    async def escalation_button(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await listeners.on_decision(ack, body, action)

    @app.action(REJECT)
    @app.action(APPROVE_NOTE)
    async def note_button(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await listeners.on_note_button(ack, body, action)

    @app.view(NOTE_CALLBACK)
    async def note_submitted(ack: AsyncAck, body: dict[str, Any]) -> None:
        await listeners.on_note_submitted(ack, body)

    @app.event("app_mention")
    async def app_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        await listeners.on_mention(body, event)

    @app.event("message")
    async def ignore_messages() -> None:
        """Plain channel messages are not for us; acknowledging them keeps Bolt quiet."""

    return app
