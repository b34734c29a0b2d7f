"""Persistent Approve / Abort buttons.

The custom_id carries the escalation id ("switchboard:approve:17"), and `EscalationButton`
is a discord.py DynamicItem registered at start (`Client.add_dynamic_items`). A click is
matched by its custom_id alone, so buttons on messages posted before a restart — or by a
worker process that never held a view — still reach the bot.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

from orchestrator.notices import ABORT, APPROVE, Action

PREFIX = "switchboard"
TEMPLATE = re.compile(rf"{PREFIX}:(?P<action>approve|abort):(?P<escalation>\d+)")
_ACTIONS = {APPROVE: "approve", ABORT: "abort"}
_STYLES = {"approve": discord.ButtonStyle.success, "abort": discord.ButtonStyle.danger}


def custom_id(action: str, escalation_id: int) -> str:
    """The stable id of one button; `action` is "approve" or "abort"."""
    return f"{PREFIX}:{action}:{escalation_id}"


class DecisionHandler(Protocol):
    """What the client must offer for a click: the adapter's decide step."""

    async def decide_from_click(
        self, interaction: discord.Interaction[Any], escalation_id: int, approve: bool
    ) -> None: ...


class EscalationButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    """One Approve or Abort button, rebuilt from its custom_id on every click."""

    def __init__(self, action: str, escalation_id: int, label: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or action.capitalize(),
                style=_STYLES[action],
                custom_id=custom_id(action, escalation_id),
            )
        )
        self.action = action
        self.escalation_id = escalation_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> EscalationButton:
        return cls(match["action"], int(match["escalation"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler: DecisionHandler = interaction.client  # type: ignore[assignment]
        await handler.decide_from_click(interaction, self.escalation_id, self.action == "approve")


def escalation_view(actions: tuple[Action, ...]) -> discord.ui.View:
    """A timeout-less view with one button per neutral action (must run on an event loop)."""
    view = discord.ui.View(timeout=None)
    for action in actions:
        name = _ACTIONS.get(action.action_id)
        if name is None:
            raise ValueError(f"discord has no button for action {action.action_id!r}")
        view.add_item(EscalationButton(name, int(action.value), action.label))
    return view
