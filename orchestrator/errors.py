"""Errors whose message is written for the person who caused them."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from a chat user: the message is shown to them as is."""
