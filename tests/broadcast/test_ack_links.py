"""Signed acknowledgement links: what they carry, and every way a link can be wrong."""

from __future__ import annotations

import base64
import time

import pytest
import redis

from broadcast import keys
from broadcast.ack_links import AckClaim, LinkExpired, link, secret_of, sign, verify
from broadcast.errors import Forbidden
from broadcast.settings import Settings

SECRET = b"k" * 32
CLAIM = AckClaim("20260701-080000-abcdef", "440304001", "440304001-1", int(time.time()) + 3600)


def test_a_signed_token_verifies_to_its_claim_and_is_url_safe() -> None:
    token = sign(SECRET, CLAIM)
    assert verify(SECRET, token, time.time()) == CLAIM
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(token) < 130  # it rides in an SMS


def test_tokens_differ_per_officer_unit_and_alert() -> None:
    others = [AckClaim(CLAIM.alert_id, CLAIM.unit, "440304001-2", CLAIM.expires),
              AckClaim(CLAIM.alert_id, "440304002", CLAIM.officer, CLAIM.expires),
              AckClaim("20260701-080000-000000", CLAIM.unit, CLAIM.officer, CLAIM.expires)]
    tokens = {sign(SECRET, c) for c in [CLAIM, *others]}
    assert len(tokens) == 4


def _reclaim(token: str, **changes: str) -> str:
    """The token with its claim rewritten (another officer, a later expiry) but the old signature."""
    body, mac = token.split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    for old, new in changes.items():
        raw = raw.replace(old, new)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=") + "." + mac


@pytest.mark.parametrize("forge", [
    lambda t: _reclaim(t, **{"440304001-1": "440304001-2"}),  # replayed for another officer
    lambda t: _reclaim(t, **{"20260701-080000-abcdef": "20260701-090000-abcdef"}),  # for another alert
    lambda t: _reclaim(t, **{str(CLAIM.expires): str(CLAIM.expires + 86400)}),  # a longer life
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # a changed signature
    lambda t: t.split(".")[0],  # no signature
    lambda t: t + ".x",
    lambda t: "not-a-token",
    lambda t: "!!!.???",
    lambda t: "",
    lambda t: "a" * 5000 + "." + "b",
], ids=["officer", "alert", "expiry", "signature", "unsigned", "three-parts", "garbage", "not-base64", "empty",
        "huge"])
def test_forged_or_altered_tokens_are_refused(forge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Forbidden) as caught:
        verify(SECRET, forge(sign(SECRET, CLAIM)), time.time())
    assert caught.value.status == 403 and caught.value.field == "token"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(Forbidden):
        verify(SECRET, sign(b"x" * 32, CLAIM), time.time())


def test_an_expired_token_is_gone() -> None:
    token = sign(SECRET, CLAIM)
    with pytest.raises(LinkExpired) as caught:
        verify(SECRET, token, CLAIM.expires)
    assert caught.value.status == 410 and "expired" in caught.value.message


def test_the_secret_comes_from_settings_else_is_made_once_in_redis(settings: Settings,
                                                                   redis_client: redis.Redis) -> None:
    assert secret_of(settings.with_overrides(ack_link_secret="configured"), redis_client) == b"configured"
    assert redis_client.get(keys.ACK_LINK_SECRET) is None
    first = secret_of(settings, redis_client)
    assert len(first) == 32 and secret_of(settings, redis_client) == first == redis_client.get(keys.ACK_LINK_SECRET)


def test_links_point_at_the_public_url(settings: Settings) -> None:
    public = settings.with_overrides(public_url="https://alerts.sz.example/")
    assert link(public, "abc.def") == "https://alerts.sz.example/ack/abc.def"
