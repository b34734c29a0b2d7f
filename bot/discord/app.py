"""The Discord client: the `/agent` command group in, neutral service calls out.

Every handler answers Discord within its 3 seconds by deferring (ephemeral: the run's
public face is the thread the outbox starts), does its database work off the event loop,
and then follows up. Errors are ephemeral and say what to do next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot import outage
from bot.discord.render import MESSAGE_LIMIT, mention, split_text
from bot.discord.views import EscalationButton
from orchestrator import reports, service
from orchestrator.intake import Caps
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig

log = logging.getLogger(__name__)

PLATFORM = "discord"

USAGE = """Usage:
  /agent run request:<text> [team:<name>]   start a run; without a team a router picks one
  /agent status [run_id]                    a run's steps, spend and pending escalation
  /agent abort run_id                       abort a run (its requester or an approver)
  /agent retry run_id                       run a failed run's last step again
  /agent budget                             spend against each limit
  /agent teams                              the teams and what they do
  /agent help                               this text
Each run gets a thread under its opening message; Approve / Abort buttons appear there
when a run needs a human."""

# What the bot needs to run in a channel, or inside an existing thread (app_permissions bits).
NEEDED_TO_RUN = discord.Permissions(
    view_channel=True, send_messages=True, create_public_threads=True,
    send_messages_in_threads=True,
)  # fmt: skip
NEEDED_IN_THREAD = discord.Permissions(view_channel=True, send_messages_in_threads=True)


@dataclass(frozen=True)
class Services:
    """The bot's callbacks into the core: a store, the teams, and the queue's two verbs."""

    store: Store
    config: TeamsConfig
    enqueue: Callable[[int, int], None]  # advance run `id` from version `v`
    deliver: Callable[[int], None]  # have a process with the Discord port drain a run


def queue_services(store: Store, config: TeamsConfig) -> Services:
    """Services that use the Celery tasks (Redis, or the embedded in-process queue)."""
    from tasks.notify import notify
    from tasks.steps import advance

    return Services(
        store,
        config,
        enqueue=lambda run_id, version: advance.delay(run_id, version),
        deliver=lambda run_id: notify.delay(PLATFORM, [run_id]),
    )


def where(interaction: discord.Interaction[Any]) -> tuple[str, str | None]:
    """(channel, thread) of an interaction: inside a thread, runs belong to its parent."""
    channel = interaction.channel
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        return str(channel.parent_id), str(channel.id)
    return str(interaction.channel_id), None


def actor_of(interaction: discord.Interaction[Any]) -> service.Actor:
    """The acting user with the role ids the interaction payload carries."""
    user = interaction.user
    roles: set[str] = set()
    if isinstance(user, discord.Member):
        roles |= {str(role.id) for role in user.roles if not role.is_default()}
        # Member.roles resolves through the guild cache; the payload's ids need no cache.
        roles |= {str(role_id) for role_id in getattr(user, "_roles", ())}
    return service.Actor(
        user=str(user.id),
        platform=PLATFORM,
        channel=where(interaction)[0],
        groups=tuple(sorted(roles)),
    )


async def reply(interaction: discord.Interaction[Any], text: str, *, code: bool = False) -> None:
    """An ephemeral answer of any length: the deferred follow-up, split to Discord's limit."""
    limit = MESSAGE_LIMIT - 8 if code else MESSAGE_LIMIT
    chunks = [f"```\n{c}\n```" if code else c for c in split_text(text, limit)]
    quiet = discord.AllowedMentions.none()
    for chunk in chunks:
        if interaction.response.is_done():
            await interaction.followup.send(chunk, ephemeral=True, allowed_mentions=quiet)
        else:
            await interaction.response.send_message(chunk, ephemeral=True, allowed_mentions=quiet)


class AgentCommands(
    app_commands.Group,
    name="agent",
    description="Ask a team of agents; check, budget and abort runs.",
    guild_only=True,
):
    """`/agent ...`: the same sub-commands as Slack and the console."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    @app_commands.command(name="run", description="Start a run: a team of agents works on it.")
    @app_commands.describe(
        request="What you need, in plain words",
        team="A team from the teams file (default: a router picks one)",
    )
    async def run(
        self, interaction: discord.Interaction[Any], request: str, team: str | None = None
    ) -> None:
        s = self.services
        try:  # a NUL, control characters or an oversized request get a visible answer
            request = service.validate_request(s.config, request, team)
        except service.UserError as exc:
            await reply(interaction, str(exc))
            return
        needed = NEEDED_IN_THREAD if where(interaction)[1] else NEEDED_TO_RUN
        if interaction.guild_id is not None and not interaction.app_permissions >= needed:
            await reply(
                interaction,
                "I cannot start a run here: I need View Channel, Send Messages, Create Public "
                "Threads and Send Messages in Threads in this channel. Ask a server admin to "
                "grant them, or use another channel.",
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel, thread = where(interaction)
        earlier = None
        if thread is not None:
            earlier = await asyncio.to_thread(s.store.run_in_thread, PLATFORM, channel, thread)
        if earlier is not None:
            # Inside a run's thread: input while it runs, a follow-up once it ended.
            actor = actor_of(interaction)
            try:
                follow, message = await asyncio.to_thread(
                    lambda: service.continue_in_thread(
                        s.store,
                        s.config,
                        earlier.id,
                        request,
                        actor,
                        origin_key=f"{PLATFORM}:{interaction.id}",
                        caps=Caps.from_settings(),
                    )
                )
            except service.UserError as exc:
                await reply(interaction, str(exc))
                return
            if follow is not None and follow.version == 0:
                await asyncio.to_thread(s.enqueue, follow.id, 0)
            await reply(interaction, message)
            return
        run, created = await asyncio.to_thread(
            service.start_run,
            s.store,
            s.config,
            request=request,
            team=team,
            platform=PLATFORM,
            channel=channel,
            thread=thread,
            requester=str(interaction.user.id),
            origin_key=f"{PLATFORM}:{interaction.id}",
            caps=Caps.from_settings(),
        )
        if created:
            await asyncio.to_thread(s.enqueue, run.id, 0)
        await reply(
            interaction,
            f"Run #{run.id} queued (team: {team or 'picked by the router'}). Follow it in the "
            "thread under its opening message; `/agent status "
            f"{run.id}` shows its steps.",
        )

    @run.autocomplete("team")
    async def _team_choices(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        names = sorted(self.services.config.teams)
        found = [n for n in names if current.lower() in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in found[:25]]

    @app_commands.command(name="status", description="A run's steps and spend, or recent runs.")
    @app_commands.describe(run_id="The run number (leave out for recent runs here)")
    async def status(
        self,
        interaction: discord.Interaction[Any],
        run_id: app_commands.Range[int, 1] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        s = self.services
        text = await asyncio.to_thread(
            service.status_report, s.store, s.config, run_id, actor_of(interaction)
        )
        await reply(interaction, mention(text), code=False)

    @app_commands.command(name="abort", description="Abort a run (its requester or an approver).")
    @app_commands.describe(run_id="The run number")
    async def abort(
        self, interaction: discord.Interaction[Any], run_id: app_commands.Range[int, 1]
    ) -> None:
        s = self.services
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await asyncio.to_thread(
                service.abort_run, s.store, s.config, run_id, actor_of(interaction)
            )
        except service.UserError as exc:
            await reply(interaction, str(exc))
            return
        await asyncio.to_thread(s.deliver, run_id)
        await reply(interaction, text)

    @app_commands.command(
        name="retry", description="Run a failed run's last step again (or answer its Retry)."
    )
    @app_commands.describe(run_id="The run number")
    async def retry(
        self, interaction: discord.Interaction[Any], run_id: app_commands.Range[int, 1]
    ) -> None:
        s = self.services
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            result = await asyncio.to_thread(
                service.retry_run, s.store, s.config, run_id, actor_of(interaction)
            )
        except service.UserError as exc:
            await reply(interaction, str(exc))
            return
        if result.resume_version is not None and result.run_id is not None:
            await asyncio.to_thread(s.enqueue, result.run_id, result.resume_version)
        await asyncio.to_thread(s.deliver, run_id)
        await reply(interaction, result.message)

    @app_commands.command(name="budget", description="Spend against each limit today.")
    async def budget(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await asyncio.to_thread(
            reports.budget_text,
            self.services.store,
            self.services.config,
            channel=where(interaction)[0],
        )
        await reply(interaction, text, code=True)

    @app_commands.command(name="teams", description="The teams and what they do.")
    async def teams(self, interaction: discord.Interaction[Any]) -> None:
        await reply(interaction, reports.teams_text(self.services.config), code=True)

    @app_commands.command(name="help", description="How to use /agent.")
    async def help(self, interaction: discord.Interaction[Any]) -> None:
        await reply(interaction, USAGE, code=True)


class SwitchboardBot(discord.Client):
    """A gateway client with the minimum intents (guilds: threads and roles, no content)."""

    def __init__(
        self,
        services: Services,
        *,
        guild_id: int | None = None,
        sync_commands: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(intents=discord.Intents(guilds=True), **options)
        self.services = services
        self.guild_id = guild_id
        self.sync_commands = sync_commands
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(AgentCommands(services))
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign]

    async def setup_hook(self) -> None:
        """Register the button handler before any event arrives, then sync the commands."""
        self.add_dynamic_items(EscalationButton)
        if not self.sync_commands:
            return
        if self.guild_id is not None:
            guild = discord.Object(id=self.guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
            log.info("synced /agent to guild %s", self.guild_id)
        else:
            await self.tree.sync()
            log.info("synced /agent globally (may take a while to appear)")

    async def decide_from_click(
        self,
        interaction: discord.Interaction[Any],
        escalation_id: int,
        approve: bool,
        *,
        reject: bool = False,
        note: str | None = None,
    ) -> None:
        """A button or a note modal's decision; the outbox then edits the escalation message."""
        s = self.services
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            actor = actor_of(interaction)
            result = await asyncio.to_thread(
                lambda: service.decide(
                    s.store, s.config, escalation_id, approve, actor, reject=reject, note=note
                )
            )
            if result.resume_version is not None and result.run_id is not None:
                await asyncio.to_thread(s.enqueue, result.run_id, result.resume_version)
            if result.outcome == service.DecisionOutcome.APPLIED and result.run_id is not None:
                await asyncio.to_thread(s.deliver, result.run_id)
            await reply(interaction, mention(result.message))
        except Exception as exc:
            await self._apologise(interaction, exc)

    async def _on_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        cause = getattr(error, "original", error)
        if isinstance(cause, service.UserError):
            await reply(interaction, str(cause))
            return
        await self._apologise(interaction, cause)

    async def _apologise(self, interaction: discord.Interaction[Any], exc: BaseException) -> None:
        log.error("discord interaction %s failed", interaction.id, exc_info=exc)
        cause = outage.describe(exc) if outage.is_database(exc) else type(exc).__name__
        try:
            await reply(
                interaction,
                f"Something went wrong on our side ({cause}); nothing was done. Try again in a "
                "moment; if it keeps failing, ask whoever runs Switchboard to check its logs.",
            )
        except discord.HTTPException:
            log.warning("could not tell the user about the failure either")
