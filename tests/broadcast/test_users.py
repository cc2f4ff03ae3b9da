"""Users, roles and bearer tokens against a real Redis."""

from __future__ import annotations

import hashlib

import pytest
import redis

from broadcast import keys
from broadcast.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from broadcast.users import (
    TOKEN_PREFIX,
    Permission,
    RecentTokens,
    Role,
    User,
    UserDirectory,
    hash_token,
    parse_roles,
)


@pytest.fixture
def directory(redis_client: redis.Redis) -> UserDirectory:
    return UserDirectory(redis_client)


def everything_in(client: redis.Redis) -> list[bytes]:
    """Every key and every stored value (strings, hash fields and values, set members)."""
    found: list[bytes] = []
    for key in client.scan_iter("*"):
        found.append(key)
        kind = client.type(key)
        if kind == b"string":
            found.append(client.get(key))
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                found += [field, value]
        elif kind == b"set":
            found += list(client.smembers(key))
        else:
            pytest.fail(f"unexpected key type {kind!r} for {key!r}")
    return found


# ---------------------------------------------------------------- add and authenticate


def test_add_returns_a_token_that_authenticates_to_that_user(directory: UserDirectory) -> None:
    token = directory.add("alice", parse_roles(["forecaster"]))
    other = directory.add("bob", parse_roles(["approver", "ops"]))
    assert token.startswith(TOKEN_PREFIX) and len(token) > len(TOKEN_PREFIX) + 40
    assert token != other
    assert directory.authenticate(token) == User("alice", frozenset({Role.FORECASTER}))
    assert directory.authenticate(other) == User("bob", frozenset({Role.APPROVER, Role.OPS}))


def test_redis_holds_only_the_sha256_digest_of_the_token(directory: UserDirectory,
                                                         redis_client: redis.Redis) -> None:
    token = directory.add("alice", parse_roles(["forecaster"]))
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) == digest
    stored = everything_in(redis_client)
    assert stored, "the user was not written at all"
    secret = token.removeprefix(TOKEN_PREFIX).encode()
    assert not [item for item in stored if secret in item]
    assert redis_client.get(keys.token(digest)) == b"alice"
    assert redis_client.hget(keys.user("alice"), "token_hash") == digest.encode()


def test_user_record_fields(directory: UserDirectory, redis_client: redis.Redis) -> None:
    directory.add("bob", parse_roles(["ops", "approver"]))
    stored = redis_client.hgetall(keys.user("bob"))
    assert stored[b"name"] == b"bob"
    assert stored[b"roles"] == b"approver,ops"
    assert stored[b"created"]
    assert redis_client.smembers(keys.USERS) == {b"bob"}


def test_duplicate_name_is_a_conflict_and_changes_nothing(directory: UserDirectory,
                                                          redis_client: redis.Redis) -> None:
    token = directory.add("alice", parse_roles(["forecaster"]))
    before = sorted(redis_client.scan_iter("*"))
    with pytest.raises(Conflict) as caught:
        directory.add("alice", parse_roles(["admin"]))
    assert caught.value.field == "name"
    assert sorted(redis_client.scan_iter("*")) == before
    assert directory.authenticate(token).roles == frozenset({Role.FORECASTER})


@pytest.mark.parametrize("name", ["", "Alice", "-alice", ".alice", "a b", "alice:admin", "../etc", "a" * 65,
                                  "名字", "alice\tbob"])
def test_bad_names_are_refused(directory: UserDirectory, redis_client: redis.Redis, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        directory.add(name, parse_roles(["forecaster"]))
    assert caught.value.field == "name"
    assert list(redis_client.scan_iter("*")) == []


@pytest.mark.parametrize("name", ["a", "0", "alice.smith", "ops_1", "x-y", "a" * 64])
def test_good_names_are_accepted(directory: UserDirectory, name: str) -> None:
    token = directory.add(name, parse_roles(["officer"]))
    assert directory.authenticate(token).name == name


def test_a_name_with_a_trailing_newline_is_refused(directory: UserDirectory) -> None:
    with pytest.raises(InvalidInput) as caught:
        directory.add("alice\n", parse_roles(["forecaster"]))
    assert caught.value.field == "name"


def test_unknown_role_is_refused_naming_role() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_roles(["forecaster", "superuser"])
    assert caught.value.field == "role"
    assert "superuser" in caught.value.message


def test_no_role_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_roles([])
    assert caught.value.field == "role"


def test_parse_roles_collects_every_role() -> None:
    assert parse_roles(("forecaster", "approver", "forecaster")) == frozenset({Role.FORECASTER, Role.APPROVER})


# ---------------------------------------------------------------- rotate, remove, authenticate


def test_rotate_token_revokes_the_old_one(directory: UserDirectory, redis_client: redis.Redis) -> None:
    old = directory.add("alice", parse_roles(["forecaster"]))
    new = directory.rotate_token("alice")
    assert new != old
    with pytest.raises(Unauthenticated):
        directory.authenticate(old)
    assert directory.authenticate(new) == User("alice", frozenset({Role.FORECASTER}))
    assert list(redis_client.scan_iter(keys.token("*"))) == [keys.token(hash_token(new)).encode()]


def test_rotate_token_of_unknown_user_is_not_found(directory: UserDirectory, redis_client: redis.Redis) -> None:
    with pytest.raises(NotFound) as caught:
        directory.rotate_token("ghost")
    assert caught.value.field == "name"
    assert list(redis_client.scan_iter("*")) == []


def test_remove_revokes_and_forgets_the_user(directory: UserDirectory, redis_client: redis.Redis) -> None:
    token = directory.add("alice", parse_roles(["forecaster"]))
    kept = directory.add("bob", parse_roles(["approver"]))
    directory.remove("alice")
    with pytest.raises(Unauthenticated):
        directory.authenticate(token)
    with pytest.raises(NotFound):
        directory.get("alice")
    assert [u.name for u in directory.list()] == ["bob"]
    assert directory.authenticate(kept).name == "bob"
    assert not redis_client.exists(keys.user("alice"), keys.token(hash_token(token)))
    # The name is free again, with a new token.
    again = directory.add("alice", parse_roles(["officer"]))
    assert directory.authenticate(again).roles == frozenset({Role.OFFICER})


def test_remove_unknown_user_is_not_found(directory: UserDirectory) -> None:
    with pytest.raises(NotFound):
        directory.remove("ghost")


@pytest.mark.parametrize("token", ["", "bct_unknown", "not-even-prefixed", "bct_" + "A" * 43])
def test_authenticate_unknown_token(directory: UserDirectory, token: str) -> None:
    directory.add("alice", parse_roles(["forecaster"]))
    with pytest.raises(Unauthenticated) as caught:
        directory.authenticate(token)
    assert caught.value.field == "Authorization"


def test_authenticate_the_digest_itself_fails(directory: UserDirectory) -> None:
    """A copy of the Redis data (the digest) does not act as the token."""
    token = directory.add("alice", parse_roles(["forecaster"]))
    with pytest.raises(Unauthenticated):
        directory.authenticate(hash_token(token))


def test_list_is_sorted_by_name(directory: UserDirectory) -> None:
    for name in ("carol", "alice", "bob"):
        directory.add(name, parse_roles(["officer"]))
    assert [u.name for u in directory.list()] == ["alice", "bob", "carol"]


# ---------------------------------------------------------------- permissions

ALLOWED = {
    Role.FORECASTER: {Permission.READ_ALERTS, Permission.COMPOSE, Permission.REQUEST_CANCEL, Permission.READ_AUDIT},
    Role.APPROVER: {Permission.READ_ALERTS, Permission.APPROVE, Permission.REQUEST_CANCEL, Permission.READ_AUDIT},
    Role.OFFICER: {Permission.READ_ALERTS},
    Role.OPS: {Permission.READ_ALERTS, Permission.READ_AUDIT},
    Role.ADMIN: {Permission.READ_ALERTS, Permission.READ_AUDIT, Permission.MANAGE_USERS},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_permission_table(role: Role, permission: Permission) -> None:
    user = User("someone", frozenset({role}))
    expected = permission in ALLOWED[role]
    assert user.can(permission) is expected
    if expected:
        user.require(permission)
    else:
        with pytest.raises(Forbidden) as caught:
            user.require(permission)
        assert caught.value.field == "role"
        assert permission.value in caught.value.message


@pytest.mark.parametrize(("role", "permission", "allowed"), [
    (Role.FORECASTER, Permission.APPROVE, False),
    (Role.APPROVER, Permission.COMPOSE, False),
    (Role.OFFICER, Permission.COMPOSE, False),
    (Role.OFFICER, Permission.APPROVE, False),
    (Role.OPS, Permission.COMPOSE, False),
    (Role.OPS, Permission.APPROVE, False),
    (Role.ADMIN, Permission.MANAGE_USERS, True),
    (Role.OPS, Permission.READ_AUDIT, True),
    (Role.OFFICER, Permission.READ_AUDIT, False),
])
def test_the_rules_the_readme_states(role: Role, permission: Permission, allowed: bool) -> None:
    assert User("someone", frozenset({role})).can(permission) is allowed


def test_roles_add_up(directory: UserDirectory) -> None:
    token = directory.add("dual", parse_roles(["forecaster", "approver"]))
    user = directory.authenticate(token)
    assert user.can(Permission.COMPOSE) and user.can(Permission.APPROVE)
    assert not user.can(Permission.MANAGE_USERS)


def test_a_user_without_roles_can_do_nothing() -> None:
    nobody = User("nobody", frozenset())
    assert [p for p in Permission if nobody.can(p)] == []


def test_recent_tokens_remember_only_tokens_that_authenticated_and_only_for_max_age(
        directory: UserDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    token = directory.add("alice", frozenset({Role.OFFICER}))
    recent, clock = RecentTokens(directory, max_age=10.0), [1000.0]
    monkeypatch.setattr("broadcast.users.time.monotonic", lambda: clock[0])
    assert recent.cached(token) is None
    with pytest.raises(Unauthenticated):
        recent.authenticate(token + "x")
    assert recent.cached(token + "x") is None
    assert recent.authenticate(token) == recent.cached(token) == User("alice", frozenset({Role.OFFICER}))
    directory.remove("alice")
    clock[0] += 9.9
    assert recent.cached(token) is not None  # revocation reaches this process within max_age
    clock[0] += 0.1
    assert recent.cached(token) is None
    with pytest.raises(Unauthenticated):
        recent.authenticate(token)
