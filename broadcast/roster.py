"""Duty officers of the four levels: who answers for each unit, and which API users act for which units.

(Being built out: officers per unit with contacts and preferred order, CSV import, the demo
roster, shifts.) What exists already is the binding of API users (role officer) to units,
which the supervision views and acknowledgements use for authorisation.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from broadcast import keys


def bind_user(client: redis.Redis, user: str, units: Iterable[str]) -> None:
    """Let API user ``user`` act for ``units`` (replaces what it had)."""
    codes = sorted(set(units))
    if codes:
        client.hset(keys.USER_UNITS, user, ",".join(codes))
    else:
        client.hdel(keys.USER_UNITS, user)


def units_of_user(client: redis.Redis, user: str) -> frozenset[str]:
    """The units API user ``user`` acts for (empty when none)."""
    raw = client.hget(keys.USER_UNITS, user)
    return frozenset(raw.decode().split(",")) if raw else frozenset()
