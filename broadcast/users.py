"""Users, roles and bearer tokens.

Tokens are random (256 bits) and stored only as their SHA-256 digest, so a copy of the
Redis data does not let anyone act as a user. ``broadcast user add`` prints a token once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import redis

from broadcast import keys
from broadcast.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated

_USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TOKEN_PREFIX = "bct_"
# How long an API process trusts a token it checked: a removed user or a rotated token keeps working
# that long in processes that saw it (see RecentTokens).
TOKEN_TRUST_SECONDS = 10.0


class Role(StrEnum):
    FORECASTER = "forecaster"  # drafts, edits, submits; requests updates and cancels
    APPROVER = "approver"  # second person: approves or rejects what others submitted
    OFFICER = "officer"  # district/street/community duty officer: reads and acknowledges
    OPS = "ops"  # runs the service: reads alerts, audit, metrics
    ADMIN = "admin"  # manages users


class Permission(StrEnum):
    READ_ALERTS = "read alerts"
    COMPOSE = "compose alerts"
    APPROVE = "approve alerts"
    REQUEST_CANCEL = "request a cancel"
    READ_AUDIT = "read the audit trail"
    MANAGE_USERS = "manage users"


GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.READ_ALERTS: frozenset(Role),
    Permission.COMPOSE: frozenset({Role.FORECASTER}),
    Permission.APPROVE: frozenset({Role.APPROVER}),
    Permission.REQUEST_CANCEL: frozenset({Role.FORECASTER, Role.APPROVER}),
    Permission.READ_AUDIT: frozenset({Role.FORECASTER, Role.APPROVER, Role.OPS, Role.ADMIN}),
    Permission.MANAGE_USERS: frozenset({Role.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    roles: frozenset[Role]

    def can(self, permission: Permission) -> bool:
        return bool(self.roles & GRANTS[permission])

    def require(self, permission: Permission) -> None:
        """Raises Forbidden unless one of the user's roles grants ``permission``."""
        if not self.can(permission):
            needed = ", ".join(sorted(r.value for r in GRANTS[permission]))
            raise Forbidden(f"{self.name} may not {permission.value}: needs role {needed}", field="role")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_roles(values: list[str] | tuple[str, ...]) -> frozenset[Role]:
    if not values:
        raise InvalidInput("at least one role is required", field="role")
    roles = set()
    for value in values:
        try:
            roles.add(Role(value))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise InvalidInput(f"unknown role {value!r}; roles are: {allowed}", field="role") from None
    return frozenset(roles)


class UserDirectory:
    """Users and their tokens in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def add(self, name: str, roles: frozenset[Role]) -> str:
        """Create a user and return their new bearer token (shown once).

        Raises:
            InvalidInput: the name is not a valid user name.
            Conflict: the user exists already.
        """
        if not _USER_NAME.fullmatch(name or ""):
            raise InvalidInput("user names are 1-64 of a-z 0-9 . _ - starting with a letter or digit", field="name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        created = self._redis.hsetnx(keys.user(name), "name", name)
        if not created:
            raise Conflict(f"user {name} exists already", field="name")
        with self._redis.pipeline() as pipe:
            pipe.hset(keys.user(name), mapping={
                "roles": ",".join(sorted(r.value for r in roles)),
                "created": datetime.now(UTC).isoformat(),
                "token_hash": digest,
            })
            pipe.sadd(keys.USERS, name)
            pipe.set(keys.token(digest), name)
            pipe.execute()
        return token

    def rotate_token(self, name: str) -> str:
        """Replace a user's token; the old one stops working at once."""
        old = self._redis.hget(keys.user(name), "token_hash")
        if old is None:
            raise NotFound(f"no user {name}", field="name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        with self._redis.pipeline() as pipe:
            pipe.delete(keys.token(old.decode()))
            pipe.set(keys.token(digest), name)
            pipe.hset(keys.user(name), "token_hash", digest)
            pipe.execute()
        return token

    def remove(self, name: str) -> None:
        old = self._redis.hget(keys.user(name), "token_hash")
        if old is None:
            raise NotFound(f"no user {name}", field="name")
        with self._redis.pipeline() as pipe:
            pipe.delete(keys.token(old.decode()), keys.user(name))
            pipe.srem(keys.USERS, name)
            pipe.execute()

    def get(self, name: str) -> User:
        fields = self._redis.hgetall(keys.user(name))
        if not fields:
            raise NotFound(f"no user {name}", field="name")
        return User(name, frozenset(Role(r) for r in fields[b"roles"].decode().split(",") if r))

    def list(self) -> list[User]:
        return [self.get(name.decode()) for name in sorted(self._redis.smembers(keys.USERS))]

    def authenticate(self, token: str) -> User:
        """The user a bearer token belongs to.

        Raises:
            Unauthenticated: the token is unknown or revoked.
        """
        name = self._redis.get(keys.token(hash_token(token))) if token else None
        if name is None:
            raise Unauthenticated("unknown or revoked token", field="Authorization")
        return self.get(name.decode())


class RecentTokens:
    """Tokens this process checked in the last ``max_age`` seconds, and their users.

    Checking a token costs two Redis round trips and a worker thread; officers answering in bursts
    send the same token again and again. Only tokens that authenticated are held (keyed by their
    digest, like Redis), so a new user's token works at once and garbage cannot fill the cache;
    the price is that revoking a token takes up to ``max_age`` to reach a running API process.
    """

    def __init__(self, directory: UserDirectory, max_age: float = TOKEN_TRUST_SECONDS, entries: int = 10_000) -> None:
        self.directory = directory
        self.max_age = max_age
        self._entries = entries
        self._held: OrderedDict[str, tuple[float, User]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, token: str) -> User | None:
        """The user of a token checked recently, or None (no I/O: safe on the event loop)."""
        digest = hash_token(token)
        with self._lock:
            held = self._held.get(digest)
            if held is None:
                return None
            if time.monotonic() - held[0] >= self.max_age:
                del self._held[digest]
                return None
            return held[1]

    def authenticate(self, token: str) -> User:
        """Check the token in Redis and remember its user.

        Raises:
            Unauthenticated: the token is unknown or revoked.
        """
        user, digest = self.directory.authenticate(token), hash_token(token)
        with self._lock:
            self._held[digest] = (time.monotonic(), user)
            self._held.move_to_end(digest)
            while len(self._held) > self._entries:
                self._held.popitem(last=False)
        return user
