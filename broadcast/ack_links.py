"""Officers' personal acknowledgement links: signed, unguessable, expiring, bound to one officer and alert.

A link is ``{callback_base_url}/ack/{token}``; the token carries its own claim::

    token   = base64url(claim) "." base64url(mac)
    claim   = "v1|<alert id>|<unit code>|<officer id>|<expires, epoch seconds>"
    mac     = HMAC-SHA256(secret, claim), first 16 bytes

so the service checks a link without storing it, and a link changed in any way (another
officer, unit or alert, a later expiry) fails the check. The MAC is cut to 128 bits (RFC 2104
allows truncation to half the hash) to keep the link short in an SMS; forging one still
means guessing 128 bits. Comparison is constant-time (:func:`hmac.compare_digest`).

Links expire with the alert (its CAP ``expires``; an alert without one: a day after the
notice). The secret is ``settings.ack_link_secret`` when set (the same on every process);
otherwise a random 32-byte secret is generated once and kept in Redis
(``keys.ACK_LINK_SECRET``, written with SET NX so concurrent first users agree), since
Redis is what every API and worker process shares. Rotating the secret voids every link.

Errors: :class:`~broadcast.errors.Forbidden` (403) for a malformed or forged token,
:class:`LinkExpired` (410) for an expired one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis

from broadcast import keys
from broadcast.errors import Forbidden
from broadcast.settings import Settings

VERSION = "v1"
MAC_BYTES = 16
ACK_PATH = "/ack/"
MAX_TOKEN_LENGTH = 1024


class LinkExpired(Forbidden):
    """The link was genuine but its alert has expired."""

    status = 410
    code = "expired"


@dataclass(frozen=True, slots=True)
class AckClaim:
    """What a link lets its holder do: acknowledge ``unit``'s task of ``alert_id`` as ``officer``, until ``expires``."""

    alert_id: str
    unit: str
    officer: str
    expires: int  # epoch seconds

    def __post_init__(self) -> None:
        for name in ("alert_id", "unit", "officer"):
            if not getattr(self, name) or "|" in getattr(self, name):
                raise ValueError(f"{name} must be non-empty and without '|'")

    def encode(self) -> bytes:
        return f"{VERSION}|{self.alert_id}|{self.unit}|{self.officer}|{self.expires}".encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, claim: bytes) -> bytes:
    return hmac.new(secret, claim, hashlib.sha256).digest()[:MAC_BYTES]


def sign(secret: bytes, claim: AckClaim) -> str:
    """The URL-safe token of ``claim``."""
    encoded = claim.encode()
    return f"{_b64(encoded)}.{_b64(_mac(secret, encoded))}"


def verify(secret: bytes, token: str, now: float) -> AckClaim:
    """The claim of a genuine, unexpired token.

    Raises:
        Forbidden: the token is malformed or its signature does not match (forged or altered).
        LinkExpired: genuine, but past its expiry.
    """
    forged = Forbidden("this acknowledgement link is not valid (altered or not issued by this service)",
                       field="token")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise forged
    body, _, mac = token.partition(".")
    try:
        encoded, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise forged from None
    if not hmac.compare_digest(_mac(secret, encoded), given):
        raise forged
    try:
        version, alert_id, unit, officer, expires = encoded.decode().split("|")
        claim = AckClaim(alert_id, unit, officer, int(expires))
    except ValueError:  # cannot happen for a token we signed, unless the format changed
        raise forged from None
    if version != VERSION:
        raise forged
    if now >= claim.expires:
        raise LinkExpired("this acknowledgement link has expired with its alert", field="token")
    return claim


def secret_of(settings: Settings, client: redis.Redis) -> bytes:
    """The signing key: ``settings.ack_link_secret``, else the random one kept in Redis (made on first use)."""
    if settings.ack_link_secret:
        return settings.ack_link_secret.encode()
    client.set(keys.ACK_LINK_SECRET, secrets.token_bytes(32), nx=True)
    stored = client.get(keys.ACK_LINK_SECRET)
    assert stored is not None
    return bytes(stored)


def link(settings: Settings, token: str) -> str:
    """The link an officer opens (on ``public_url`` when set, so it works from a phone)."""
    return f"{settings.callback_base_url}{ACK_PATH}{token}"
