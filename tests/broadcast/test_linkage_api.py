"""Acknowledging through the API and the link page: every bad input gets a clear error and changes nothing.

Tasks are opened by the real use case (``linkage_jobs.on_issue``, what the dissemination job
calls); the full round with workers and simulators is in test_linkage.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from broadcast import ack_links, keys, linkage_jobs
from broadcast.linkage import MAX_NOTE_LENGTH, LinkageStore
from broadcast.records import AlertStatus
from broadcast.roster import RosterStore, bind_user, demo_roster
from broadcast.settings import Settings
from broadcast.store import AlertStore
from geotarget import build_demo_gazetteer
from tests.broadcast.test_api import create, post, red_rainstorm

FUTIAN, LUOHU = "440304", "440303"


@pytest.fixture
async def issued(client, auth, settings: Settings, redis_client: redis.Redis) -> dict[str, Any]:
    """A red warning over Futian, its tasks open, the demo roster, dave acting for Futian district."""
    gazetteer = build_demo_gazetteer()
    RosterStore(redis_client).replace(demo_roster(gazetteer), source="demo")
    bind_user(redis_client, "dave", [FUTIAN])
    draft = await create(client, auth, request=red_rainstorm(channels=["cap_feed"]))
    await post(client, auth, "alice", draft["id"], "submit")
    record = await post(client, auth, "bob", draft["id"], "approve")
    linkage_jobs.on_issue(redis_client, AlertStore(redis_client).get(record["id"]), gazetteer, settings)
    street = next(u for u in sorted(LinkageStore(redis_client).tasks(record["id"])) if u.startswith(FUTIAN)
                  and len(u) == 9)
    return {"id": record["id"], "street": street, "expires": int(time.time()) + 3600}


def token_for(settings: Settings, client: redis.Redis, alert_id: str, unit: str, officer: str,
              expires: int | None = None) -> str:
    claim = ack_links.AckClaim(alert_id, unit, officer, expires or int(time.time()) + 3600)
    return ack_links.sign(ack_links.secret_of(settings, client), claim)


def state(client: redis.Redis, alert_id: str) -> tuple[dict[bytes, bytes], int]:
    """The alert's tasks and how many changes its stream holds: both must stay put after a refusal."""
    return client.hgetall(keys.linkage_tasks(alert_id)), client.xlen(keys.linkage_events(alert_id))


async def error_of(response) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return (await response.json())["error"]


# ---------------------------------------------------------------- the API


async def test_an_officer_acknowledges_their_unit_and_reads_their_subtree(client, auth, issued,
                                                                          redis_client: redis.Redis) -> None:
    path = f"/api/alerts/{issued['id']}/linkage/{FUTIAN}"
    response = await client.post(f"{path}/acknowledge", json={"status": "linkage_started", "note": "启动Ⅳ级响应"},
                                 headers=auth["dave"])
    assert response.status == 200
    body = await response.json()
    assert body["state"] == "acknowledged" and body["status"] == "linkage_started" and body["changed"] is True
    assert body["acknowledgements"][0]["via"] == "api" and body["name"] == "福田区"
    shown = await (await client.get(path, headers=auth["dave"])).json()
    assert shown["acknowledgements"] == body["acknowledgements"]
    below = await client.get(f"/api/alerts/{issued['id']}/linkage/{issued['street']}", headers=auth["dave"])
    assert below.status == 200 and (await below.json())["parent"] == FUTIAN
    for who in ("alice", "bob", "erin", "root"):  # supervisors see every unit
        assert (await client.get(f"/api/alerts/{issued['id']}/linkage/{LUOHU}", headers=auth[who])).status in (
            200, 404)


BAD_REQUESTS = [
    # (who, unit, body, status, field)
    ("dave", LUOHU, {"status": "received"}, 403, "unit"),  # outside his units
    ("dave", "street", {"status": "received"}, 403, "unit"),  # below his unit, but not his
    ("bob", FUTIAN, {"status": "received"}, 403, "unit"),  # not an officer
    ("dave", "999999", {"status": "received"}, 404, "unit"),  # no such unit
    ("dave", FUTIAN, {"status": "done"}, 422, "status"),
    ("dave", FUTIAN, {}, 422, "status"),
    ("dave", FUTIAN, {"status": "received", "note": "x" * (MAX_NOTE_LENGTH + 1)}, 422, "note"),
    ("dave", FUTIAN, {"status": "cannot_comply"}, 422, "note"),
    ("dave", FUTIAN, {"status": "received", "note": 5}, 422, "note"),
    ("dave", FUTIAN, {"status": "received", "who": "me"}, 422, "who"),
]


@pytest.mark.parametrize(("who", "unit", "body", "status", "field"), BAD_REQUESTS,
                         ids=[f"{w}-{u}-{s}-{f}" for w, u, _, s, f in BAD_REQUESTS])
async def test_bad_api_acknowledgements_are_refused_and_change_nothing(client, auth, issued, redis_client, who,
                                                                      unit, body, status, field) -> None:
    before = state(redis_client, issued["id"])
    unit = issued["street"] if unit == "street" else unit
    response = await client.post(f"/api/alerts/{issued['id']}/linkage/{unit}/acknowledge", json=body,
                                 headers=auth[who])
    assert response.status == status, await response.text()
    assert (await error_of(response))["field"] == field
    assert state(redis_client, issued["id"]) == before


async def test_malformed_bodies_unknown_alerts_and_missing_tokens(client, auth, issued, redis_client) -> None:
    before = state(redis_client, issued["id"])
    path = f"/api/alerts/{issued['id']}/linkage/{FUTIAN}"
    malformed = await client.post(f"{path}/acknowledge", data=b"{not json",
                                  headers={**auth["dave"], "Content-Type": "application/json"})
    assert malformed.status == 400 and (await error_of(malformed))["field"] == "body"
    unknown = await client.post(f"/api/alerts/20990101-000000-000000/linkage/{FUTIAN}/acknowledge",
                                json={"status": "received"}, headers=auth["dave"])
    assert unknown.status == 404 and (await error_of(unknown))["field"] == "id"
    anonymous = await client.post(f"{path}/acknowledge", json={"status": "received"})
    assert anonymous.status == 401
    no_task = await client.get(f"/api/alerts/{issued['id']}/linkage/{LUOHU}001001", headers=auth["alice"])
    assert no_task.status == 404 and (await error_of(no_task))["field"] == "unit"
    outside = await client.get(f"/api/alerts/{issued['id']}/linkage/{LUOHU}", headers=auth["dave"])
    assert outside.status == 403
    assert state(redis_client, issued["id"]) == before


async def test_a_cancelled_alerts_tasks_cannot_be_acknowledged(client, auth, issued, redis_client,
                                                               settings: Settings) -> None:
    cancel = await post(client, auth, "bob", issued["id"], "cancel", {"reason": "issued in error", "urgent": True},
                        status=201)
    await post(client, auth, "bob", cancel["id"], "approve")
    # Refused at once, even before the dissemination job of the Cancel has closed the tasks.
    before = state(redis_client, issued["id"])
    response = await client.post(f"/api/alerts/{issued['id']}/linkage/{FUTIAN}/acknowledge",
                                 json={"status": "received"}, headers=auth["dave"])
    assert response.status == 409 and "cancelled" in (await error_of(response))["message"]
    token = token_for(settings, redis_client, issued["id"], FUTIAN, f"{FUTIAN}-1")
    by_link = await client.post(f"/ack/{token}", data={"status": "received"})
    assert by_link.status == 409 and "cancelled" in await by_link.text()
    page = await client.get(f"/ack/{token}")
    assert page.status == 200 and "该预警已解除" in await page.text() and 'name="status"' not in await page.text()
    assert state(redis_client, issued["id"]) == before


async def test_the_status_beside_the_record_and_records_stored_without_one(client, auth, issued,
                                                                           redis_client: redis.Redis) -> None:
    store = AlertStore(redis_client)
    assert store.status(issued["id"]) == AlertStatus.of(store.get(issued["id"]))
    redis_client.delete(keys.alert_status(issued["id"]))  # as stored before statuses were kept
    response = await client.post(f"/api/alerts/{issued['id']}/linkage/{FUTIAN}/acknowledge",
                                 json={"status": "received"}, headers=auth["dave"])
    assert response.status == 200 and (await response.json())["changed"] is True
    assert AlertStatus.from_fields(issued["id"], redis_client.hmget(keys.alert_status(issued["id"]),
                                                                    AlertStatus.FIELDS)) == store.status(issued["id"])


async def test_answers_at_once_are_each_recorded(client, auth, issued, redis_client: redis.Redis) -> None:
    # Answers race between their read and the compare-and-set; the losers are retried, none is lost.
    path = f"/api/alerts/{issued['id']}/linkage/{FUTIAN}/acknowledge"
    changes_before = redis_client.xlen(keys.linkage_events(issued["id"]))
    await client.post(path, json={"status": "received"}, headers=auth["dave"])  # maps the roster's officers
    notes = [f"第{i}组已出动" for i in range(12)]
    responses = await asyncio.gather(*(client.post(path, json={"status": "linkage_started", "note": note},
                                                   headers=auth["dave"]) for note in notes))
    assert [r.status for r in responses] == [200] * len(notes)
    task = LinkageStore(redis_client).task(issued["id"], FUTIAN)
    assert sorted(a.note for a in task.acknowledgements if a.note) == sorted(notes)
    assert task.version == 1 + 1 + len(notes)  # opened, "received", then each note once
    assert redis_client.xlen(keys.linkage_events(issued["id"])) == changes_before + 1 + len(notes)


async def test_answers_go_on_after_redis_drops_the_apis_connections(client, auth, issued,
                                                                    redis_client: redis.Redis) -> None:
    # As after a Redis restart or a failover: the API's connections (its pipelined one included) are gone.
    path = f"/api/alerts/{issued['id']}/linkage/{FUTIAN}/acknowledge"
    first = await client.post(path, json={"status": "received"}, headers=auth["dave"])
    assert first.status == 200
    assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
    await asyncio.sleep(0.1)
    second = await client.post(path, json={"status": "linkage_started", "note": "队伍已出动"}, headers=auth["dave"])
    assert second.status == 200, await second.text()
    task = LinkageStore(redis_client).task(issued["id"], FUTIAN)
    assert [a.status.value for a in task.acknowledgements] == ["received", "linkage_started"]


async def test_an_answer_to_an_updated_alert_goes_to_the_carried_task(client, auth, issued, settings: Settings,
                                                                     redis_client: redis.Redis) -> None:
    update = await post(client, auth, "alice", issued["id"], "update", {"note": "extended"}, status=201)
    await post(client, auth, "bob", update["id"], "approve")
    linkage_jobs.on_issue(redis_client, AlertStore(redis_client).get(update["id"]), build_demo_gazetteer(),
                          settings)
    response = await client.post(f"/api/alerts/{issued['id']}/linkage/{FUTIAN}/acknowledge",
                                 json={"status": "received"}, headers=auth["dave"])  # the old id, as on the notice
    assert response.status == 200, await response.text()
    assert (await response.json())["alert_id"] == update["id"]
    assert LinkageStore(redis_client).task(update["id"], FUTIAN).state.value == "acknowledged"


# ---------------------------------------------------------------- links


async def test_a_link_shows_the_page_and_records_once(client, issued, redis_client, settings: Settings) -> None:
    token = token_for(settings, redis_client, issued["id"], issued["street"], f"{issued['street']}-1")
    page = await client.get(f"/ack/{token}")
    assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
    html = await page.text()
    assert "暴雨红色预警" in html and "Red" in html and "待确认" in html and 'name="note"' in html
    for _ in range(2):
        answer = await client.post(f"/ack/{token}", json={"status": "received"})
        assert answer.status == 200
    assert (await answer.json())["changed"] is False  # the second time changed nothing
    [ack] = LinkageStore(redis_client).task(issued["id"], issued["street"]).acknowledgements
    assert (ack.officer, ack.via.value) == (f"{issued['street']}-1", "link")
    after = await (await client.get(f"/ack/{token}")).text()
    assert "收到" in after and "(link)" in after


def _forged(token: str) -> str:
    body, mac = token.split(".")
    return f"{body}.{'A' * len(mac)}"


@pytest.mark.parametrize(("make", "status", "words"), [
    (lambda s, c, i: _forged(token_for(s, c, i["id"], FUTIAN, f"{FUTIAN}-1")), 403, "not valid"),
    (lambda s, c, i: "nonsense", 403, "not valid"),
    (lambda s, c, i: ack_links.sign(b"another secret", ack_links.AckClaim(i["id"], FUTIAN, f"{FUTIAN}-1",
                                                                          i["expires"])), 403, "not valid"),
    (lambda s, c, i: token_for(s, c, i["id"], FUTIAN, f"{FUTIAN}-1", expires=int(time.time()) - 1), 410, "expired"),
    # genuine, but the officer does not answer for that unit (a link replayed for another unit)
    (lambda s, c, i: token_for(s, c, i["id"], FUTIAN, f"{LUOHU}-1"), 403, "does not answer"),
    (lambda s, c, i: token_for(s, c, i["id"], FUTIAN, "nobody"), 403, "does not answer"),
    # genuine, but the alert hit no such unit / there is no such alert
    (lambda s, c, i: token_for(s, c, i["id"], f"{LUOHU}001001", f"{LUOHU}001001-1"), 404, "no linkage task"),
    (lambda s, c, i: token_for(s, c, "20990101-000000-000000", FUTIAN, f"{FUTIAN}-1"), 404, "no alert"),
], ids=["forged", "garbage", "other-secret", "expired", "other-unit", "unknown-officer", "no-task", "no-alert"])
async def test_bad_links_are_refused_and_change_nothing(client, issued, redis_client, settings: Settings, make,
                                                        status: int, words: str) -> None:
    before = state(redis_client, issued["id"])
    token = make(settings, redis_client, issued)
    page = await client.get(f"/ack/{token}")
    assert page.status == status and page.content_type == "text/html" and words in await page.text()
    answer = await client.post(f"/ack/{token}", data={"status": "received"})
    assert answer.status == status
    as_json = await client.post(f"/ack/{token}", json={"status": "received"})
    assert as_json.status == status and words in (await error_of(as_json))["message"]
    assert state(redis_client, issued["id"]) == before


@pytest.mark.parametrize(("form", "field"), [
    ({"status": "received", "note": "x" * (MAX_NOTE_LENGTH + 1)}, "note"),
    ({"status": "cannot_comply", "note": "  "}, "note"),
    ({"status": "maybe"}, "status"),
    ({}, "status"),
])
async def test_bad_answers_on_the_page_are_refused(client, issued, redis_client, settings: Settings, form,
                                                   field: str) -> None:
    before = state(redis_client, issued["id"])
    token = token_for(settings, redis_client, issued["id"], FUTIAN, f"{FUTIAN}-1")
    answer = await client.post(f"/ack/{token}", data=form)
    assert answer.status == 422 and f"({field})" in await answer.text()
    as_json = await client.post(f"/ack/{token}", json=form)
    assert as_json.status == 422 and (await error_of(as_json))["field"] == field
    assert state(redis_client, issued["id"]) == before


# ---------------------------------------------------------------- SMS replies


@pytest.mark.parametrize(("body", "expected"), [
    ("1", ("received", "")), (" OK ", ("received", "")), ("收到", ("received", "")),
    ("2 已转移群众", ("linkage_started", "已转移群众")), ("2，已转移群众", ("linkage_started", "已转移群众")),
    ("2", ("linkage_started", "")), ("3 道路中断", ("cannot_comply", "道路中断")),
    ("12", None), ("hello", None), ("", None), ("4 x", None),
])
def test_sms_replies_are_parsed(body: str, expected: tuple[str, str] | None) -> None:
    from broadcast.linkage_api import parse_reply

    parsed = parse_reply(body)
    assert (None if parsed is None else (parsed[0].value, parsed[1])) == expected


async def test_bad_sms_replies_are_answered_and_change_nothing(client, issued, redis_client) -> None:
    from twilio.request_validator import RequestValidator

    from channels.twilio import DEMO_AUTH_TOKEN, INBOUND_SMS_PATH

    officer_phone = demo_phone_of(redis_client, f"{FUTIAN}-2")  # a deputy: reads Chinese
    redis_client.hset(keys.LINKAGE_LATEST_NOTICE, f"{FUTIAN}-2", issued["id"])
    url = str(client.make_url(INBOUND_SMS_PATH))
    before = state(redis_client, issued["id"])
    for body, words in (("2 " + "x" * (MAX_NOTE_LENGTH + 1), "说明过长"), ("3", "请附原因"), ("hm", "回复 1 收到")):
        form = {"From": officer_phone, "To": "+15005550006", "Body": body, "MessageSid": "SM1"}
        signature = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(url, form)
        response = await client.post(INBOUND_SMS_PATH, data=form, headers={"X-Twilio-Signature": signature})
        assert response.status == 200 and words in await response.text()
    forged = await client.post(INBOUND_SMS_PATH, data={"From": officer_phone, "Body": "1"},
                               headers={"X-Twilio-Signature": "forged"})
    assert forged.status == 403
    assert state(redis_client, issued["id"]) == before


def demo_phone_of(client: redis.Redis, officer_id: str) -> str:
    officer = RosterStore(client).officer(officer_id)
    assert officer is not None
    return officer.contacts["sms"]
