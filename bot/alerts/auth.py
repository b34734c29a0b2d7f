"""Who may post alerts: a bearer token or basic auth, as Alertmanager's `http_config` sends.

Secrets are compared in constant time (hmac.compare_digest, on both the user name and the
password, whichever fails), so response timing tells nothing about how much of a guess
was right. With no credentials configured the intake refuses to start: an open alert
endpoint would let anyone start paid investigations.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_ENV = "SWITCHBOARD_ALERTS_TOKEN"
USERNAME_ENV = "SWITCHBOARD_ALERTS_USERNAME"
PASSWORD_ENV = "SWITCHBOARD_ALERTS_PASSWORD"
MIN_SECRET = 16  # characters of a token or password: long enough that guessing is hopeless
CHALLENGE = 'Bearer realm="switchboard-alerts", Basic realm="switchboard-alerts"'


class CredentialsError(ValueError):
    """The intake's credentials are missing or unusable; the message says which variable."""


@dataclass(frozen=True)
class Credentials:
    """The accepted secrets: a bearer token, a user name and password, or both."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if bool(self.username) != bool(self.password):
            raise CredentialsError(f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
        if not self.token and not self.username:
            raise CredentialsError(
                f"set {TOKEN_ENV} (bearer token) or {USERNAME_ENV} and {PASSWORD_ENV} "
                "(basic auth): the alert intake never runs unauthenticated"
            )
        if self.token is not None and len(self.token) < MIN_SECRET:
            raise CredentialsError(
                f"{TOKEN_ENV} is too short: use at least {MIN_SECRET} characters"
            )
        if self.password is not None and len(self.password) < MIN_SECRET:
            raise CredentialsError(
                f"{PASSWORD_ENV} is too short: use at least {MIN_SECRET} characters"
            )
        if self.username is not None and ":" in self.username:
            raise CredentialsError(f"{USERNAME_ENV} must not contain ':'")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        return cls(
            token=env.get(TOKEN_ENV) or None,
            username=env.get(USERNAME_ENV) or None,
            password=env.get(PASSWORD_ENV) or None,
        )

    @staticmethod
    def configured(env: Mapping[str, str] | None = None) -> bool:
        """Whether any alert credential is set (the Slack server mounts the intake only then)."""
        env = os.environ if env is None else env
        return any(env.get(name) for name in (TOKEN_ENV, USERNAME_ENV, PASSWORD_ENV))

    def allows(self, authorization: str | None) -> bool:
        """True when the Authorization header carries an accepted secret."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == "basic" and self.username and self.password:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            user_ok = hmac.compare_digest(user.encode(), self.username.encode())
            password_ok = hmac.compare_digest(password.encode(), self.password.encode())
            return bool(sep) and user_ok and password_ok
        return False
