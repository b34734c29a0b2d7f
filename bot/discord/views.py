"""Persistent escalation buttons: Approve, Approve with note…, Reject…, Abort.

The custom_id carries the escalation id ("switchboard:approve:17"), and `EscalationButton`
is a discord.py DynamicItem registered at start (`Client.add_dynamic_items`). A click is
matched by its custom_id alone, so buttons on messages posted before a restart — or by a
worker process that never held a view — still reach the bot. Reject… and Approve with
note… open a discord.py Modal for the reason or the guidance; its submission is decided the
same way as a click.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

from orchestrator.notices import ABORT, APPROVE, APPROVE_NOTE, REJECT, Action

PREFIX = "switchboard"
TEMPLATE = re.compile(rf"{PREFIX}:(?P<action>approve|abort|reject|note):(?P<escalation>\d+)")
_ACTIONS = {APPROVE: "approve", ABORT: "abort", REJECT: "reject", APPROVE_NOTE: "note"}
_STYLES = {
    "approve": discord.ButtonStyle.success,
    "abort": discord.ButtonStyle.danger,
    "reject": discord.ButtonStyle.danger,
    "note": discord.ButtonStyle.secondary,
}


def custom_id(action: str, escalation_id: int) -> str:
    """The stable id of one button; `action` is "approve" or "abort"."""
    return f"{PREFIX}:{action}:{escalation_id}"


class DecisionHandler(Protocol):
    """What the client must offer for a click: the adapter's decide step."""

    async def decide_from_click(
        self,
        interaction: discord.Interaction[Any],
        escalation_id: int,
        approve: bool,
        *,
        reject: bool = False,
        note: str | None = None,
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
        if self.action in ("reject", "note"):
            await interaction.response.send_modal(NoteModal(self.escalation_id, self.action))
            return
        handler: DecisionHandler = interaction.client  # type: ignore[assignment]
        await handler.decide_from_click(interaction, self.escalation_id, self.action == "approve")


class NoteModal(discord.ui.Modal):
    """The reason for a rejection, or guidance with an approval."""

    def __init__(self, escalation_id: int, action: str) -> None:
        reject = action == "reject"
        super().__init__(
            title="Reject the call" if reject else "Approve with a note",
            custom_id=f"{PREFIX}:modal:{action}:{escalation_id}",
            timeout=600,
        )
        self.escalation_id = escalation_id
        self.reject = reject
        self.note: discord.ui.TextInput[NoteModal] = discord.ui.TextInput(
            label="Why not? The worker reads this." if reject else "Guidance for the supervisor",
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=2000,
            custom_id=f"{PREFIX}:note",
        )
        self.add_item(self.note)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        handler: DecisionHandler = interaction.client  # type: ignore[assignment]
        await handler.decide_from_click(
            interaction,
            self.escalation_id,
            not self.reject,
            reject=self.reject,
            note=(self.note.value or "").strip() or None,
        )


def escalation_view(actions: tuple[Action, ...]) -> discord.ui.View:
    """A timeout-less view with one button per neutral action (must run on an event loop)."""
    view = discord.ui.View(timeout=None)
    for action in actions:
        name = _ACTIONS.get(action.action_id)
        if name is None:
            raise ValueError(f"discord has no button for action {action.action_id!r}")
        view.add_item(EscalationButton(name, int(action.value), action.label))
    return view
