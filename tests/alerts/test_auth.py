"""The intake accepts exactly its bearer token or its basic-auth pair, and never runs open."""

from __future__ import annotations

import base64

import pytest

from bot.alerts.auth import Credentials, CredentialsError

TOKEN = "s3cret-token-for-alertmanager"
PASSWORD = "correct horse battery staple"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_token() -> None:
    credentials = Credentials(token=TOKEN)
    assert credentials.allows(f"Bearer {TOKEN}")
    assert credentials.allows(f"bearer {TOKEN}")  # the scheme is case-insensitive
    for header in (None, "", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN):
        assert not credentials.allows(header), header
    assert not credentials.allows(basic("alertmanager", TOKEN))  # no basic pair configured


def test_basic_auth() -> None:
    credentials = Credentials(username="alertmanager", password=PASSWORD)
    assert credentials.allows(basic("alertmanager", PASSWORD))
    for header in (
        basic("alertmanager", PASSWORD + "!"),
        basic("someone", PASSWORD),
        basic("alertmanager", ""),
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"alertmanager").decode(),  # no colon
        f"Bearer {PASSWORD}",  # no token configured
        "Digest username=alertmanager",
    ):
        assert not credentials.allows(header), header


def test_both_schemes_may_be_configured() -> None:
    credentials = Credentials(token=TOKEN, username="am", password=PASSWORD)
    assert credentials.allows(f"Bearer {TOKEN}") and credentials.allows(basic("am", PASSWORD))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "never runs unauthenticated"),
        ({"SWITCHBOARD_ALERTS_TOKEN": "short"}, "too short"),
        ({"SWITCHBOARD_ALERTS_USERNAME": "am"}, "set both"),
        (
            {"SWITCHBOARD_ALERTS_USERNAME": "a:b", "SWITCHBOARD_ALERTS_PASSWORD": PASSWORD},
            "must not contain ':'",
        ),
        (
            {"SWITCHBOARD_ALERTS_USERNAME": "am", "SWITCHBOARD_ALERTS_PASSWORD": "short"},
            "too short",
        ),
    ],
)
def test_unusable_credentials_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        Credentials.from_env(env)


def test_from_env() -> None:
    credentials = Credentials.from_env({"SWITCHBOARD_ALERTS_TOKEN": TOKEN})
    assert credentials.allows(f"Bearer {TOKEN}")
    assert Credentials.configured({"SWITCHBOARD_ALERTS_TOKEN": TOKEN})
    assert not Credentials.configured({})
