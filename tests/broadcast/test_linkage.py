"""A full linkage round on the demo gazetteer, at district scale, with nothing of ours mocked.

Real Redis, the real API (aiohttp test server), real RQ workers (``broadcast worker --burst``
subprocesses, the scheduler included), the real simulators (``broadcast sim``): issue a red
warning over Futian, see every unit hit get a task and every officer's notice arrive at the
simulator of their first channel, acknowledge by link, API, SMS reply and voice keypress, let
the deadlines pass for the units that do not answer (reminder on the next channel, the deputy
called, the supervising unit told), then cancel and see the open tasks closed.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from broadcast.linkage import LinkageStore, Task
from broadcast.roster import Rank, RosterStore, bind_user, demo_roster
from broadcast.settings import Settings
from channels.twilio import INBOUND_SMS_PATH
from geotarget import build_demo_gazetteer
from tests.broadcast.test_api import create, post, red_rainstorm
from tests.broadcast.test_fanout import clear, inspect, set_faults, sim_base  # noqa: F401 - sim_base: a fixture

BIN = Path(sys.executable).parent
TWILIO, WECHAT, FCM, SMPP_INSPECT, SMTP_INSPECT = 1, 5, 7, 12, 14
DEADLINE_SECONDS = 24
FUTIAN = "440304"
LINK = re.compile(r"https?://[^\s]+/ack/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


@pytest.fixture
def roster(redis_client: redis.Redis) -> dict[str, Any]:
    """The demo roster (two officers for every unit), and dave bound to Futian district."""
    officers = demo_roster(build_demo_gazetteer())
    RosterStore(redis_client).replace(officers, source="demo")
    bind_user(redis_client, "dave", [FUTIAN])
    return {o.id: o for o in officers}


@pytest.fixture
def linkage_env(client, settings: Settings, sim_base: int, published_targets, roster):  # noqa: F811
    """The environment of this test's workers: its Redis, data, simulators, API (for callbacks), short deadlines."""
    for offset in (TWILIO, WECHAT, FCM, SMPP_INSPECT, SMTP_INSPECT):
        clear(sim_base, offset)
        set_faults(sim_base, offset, latency_ms=0, error_rate=0, throttle_rate=0, down=False)
    public = str(client.make_url("")).rstrip("/")
    minutes = DEADLINE_SECONDS / 60
    return {**os.environ, "REDIS_URL": settings.effective_redis_url, "BROADCAST_DATA_DIR": str(settings.data_dir),
            "BROADCAST_SIM_BASE_PORT": str(sim_base), "BROADCAST_PUBLIC_URL": public,
            "BROADCAST_LINKAGE_DEADLINE_MINUTES": f"red={minutes},Extreme={minutes},Unknown={minutes}",
            "BROADCAST_LINKAGE_REMINDER_FRACTION": "0.5", "BROADCAST_LINKAGE_PARENT_DELAY_FRACTION": "0",
            "SIM_BASE": str(sim_base), "PUBLIC": public}


async def work(env: dict[str, str]) -> None:
    """A real worker (``broadcast worker --burst``, with the scheduler); the event loop keeps serving the API
    meanwhile, so the simulators' callbacks reach it."""
    process = await asyncio.create_subprocess_exec(str(BIN / "broadcast"), "worker", "--burst", env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()[-3000:]
    assert "Traceback" not in stderr.decode(), stderr.decode()[-3000:]


async def sim_post(base: int, offset: int, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{base + offset}{path}",
                                                                json=doc) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def tasks_of(client: redis.Redis, alert_id: str) -> dict[str, Task]:
    return LinkageStore(client).tasks(alert_id)


def sms_texts(base: int) -> dict[str, list[str]]:
    """Complete texts the SMS centre took, by destination phone (+E.164)."""
    texts: dict[str, list[str]] = {}
    for m in inspect(base, SMPP_INSPECT, "submit_sm"):
        if m["full_text"] is not None:
            texts.setdefault("+" + m["destination"], []).append(m["full_text"])
    return texts


def arrivals(base: int) -> dict[str, Counter[str]]:
    """What each officer-facing simulator received, counted by address."""
    return {
        "sms": Counter({phone: len(texts) for phone, texts in sms_texts(base).items()}),
        "wechat": Counter(m["touser"] for m in inspect(base, WECHAT, "template")),
        "email": Counter(to for m in inspect(base, SMTP_INSPECT, "email") for to in m["rcpt_tos"]),
        "app_push": Counter(m["target"] for m in inspect(base, FCM, "message")),
        "voice": Counter(m["to"] for m in inspect(base, TWILIO, "call")),
    }


async def wait_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()) + 0.3)


async def issue_over_futian(client, auth, channels: list[str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    draft = await create(client, auth, request=red_rainstorm(channels=channels))
    await post(client, auth, "alice", draft["id"], "submit")
    return await post(client, auth, "bob", draft["id"], "approve")


@pytest.mark.timeout(300)
async def test_a_full_linkage_round(client, auth, linkage_env, roster, redis_client: redis.Redis) -> None:
    base, public = int(linkage_env["SIM_BASE"]), linkage_env["PUBLIC"]
    issued = await issue_over_futian(client, auth, ["cap_feed"])
    alert_id = issued["id"]
    await work(linkage_env)

    # -- tasks: one per unit hit, at every level, with the red deadline
    targets = issued["targets"]
    hit = {c for codes in targets["codes"].values() for c in codes} | set(targets["edge"])
    tasks = tasks_of(redis_client, alert_id)
    assert set(tasks) == hit and len(hit) > 50
    assert {t.level for t in tasks.values()} == {"city", "district", "street", "community"}
    assert tasks["440300"].parent is None and tasks[FUTIAN].parent == "440300"
    assert all(t.state.value == "open" and t.deadline - t.opened_at == pytest.approx(DEADLINE_SECONDS)
               for t in tasks.values())
    opened = {e["unit"] for _, e in LinkageStore(redis_client).events(alert_id) if e["type"] == "opened"}
    assert opened == hit

    # -- notices: every officer of every unit, on their first channel, with a personal link
    seen = arrivals(base)
    for unit, task in tasks.items():
        notices = {c.officer: c.channel for c in task.contacts if c.kind == "notice"}
        assert set(notices) == {f"{unit}-1", f"{unit}-2"}, unit
        for officer_id, channel in notices.items():
            officer = roster[officer_id]
            assert channel == officer.order[0]
            assert seen[channel][officer.contacts[channel]] == 1, (officer_id, channel)
    assert seen["voice"] == Counter()  # voice is last in every order: no call yet
    assert {ch for ch, counts in seen.items() if counts} == {"sms", "wechat", "email", "app_push"}
    texts = sms_texts(base)
    wechat = {m["touser"]: m for m in inspect(base, WECHAT, "template")}

    # -- (a) by link: the primary of a unit notified by SMS opens the page and says linkage started
    by_sms = sorted(u for u, t in tasks.items() if roster[f"{u}-1"].order[0] == "sms" and u != FUTIAN
                    and roster[f"{u}-1"].language == "zh-CN")
    link_unit = by_sms[0]
    primary = roster[f"{link_unit}-1"]
    [text] = texts[primary.contacts["sms"]]
    assert text.startswith("【深圳应急联动】") and "回复：1 收到" in text
    token = LINK.search(text).group(1)  # type: ignore[union-attr]
    page = await client.get(f"/ack/{token}")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "深圳市气象台发布" in html and "name=\"status\"" in html and primary.name in html
    answer = await client.post(f"/ack/{token}", data={"status": "linkage_started", "note": "已转移低洼地带群众"})
    assert answer.status == 200 and "已记录" in await answer.text()
    task = tasks_of(redis_client, alert_id)[link_unit]
    [ack] = task.acknowledgements
    assert (ack.officer, ack.via.value, ack.status.value, ack.note) == (primary.id, "link", "linkage_started",
                                                                      "已转移低洼地带群众")
    # The WeChat notice carries the link as the message's URL.
    wechat_unit = next(u for u in sorted(tasks) if roster[f"{u}-1"].order[0] == "wechat")
    wechat_link = wechat[roster[f"{wechat_unit}-1"].contacts["wechat"]]["url"]
    assert LINK.fullmatch(wechat_link)

    # -- (b) by the API: dave acts for Futian district
    response = await client.post(f"/api/alerts/{alert_id}/linkage/{FUTIAN}/acknowledge",
                                 json={"status": "received"}, headers=auth["dave"])
    assert response.status == 200, await response.text()
    assert (await response.json())["changed"] is True
    again = await client.post(f"/api/alerts/{alert_id}/linkage/{FUTIAN}/acknowledge",
                              json={"status": "received"}, headers=auth["dave"])
    assert (await again.json())["changed"] is False  # harmless
    task = tasks_of(redis_client, alert_id)[FUTIAN]
    assert [(a.officer, a.via.value, a.status.value) for a in task.acknowledgements] == [("user:dave", "api",
                                                                                            "received")]

    # -- (c) by SMS reply: a deputy texts back "2 ..." through the Twilio number
    sms_unit = by_sms[1]
    deputy = roster[f"{sms_unit}-2"]
    answer = await sim_post(base, TWILIO, "/_sim/inbound", {"from": deputy.contacts["sms"], "body": "2 已开放避难所",
                                                           "url": public + INBOUND_SMS_PATH})
    assert answer["status"] == 200 and "已记录" in answer["reply"], answer
    [reply] = [m for m in inspect(base, TWILIO, "reply") if m["to"] == deputy.contacts["sms"]]
    assert "已启动联动" in reply["body"]
    [ack] = tasks_of(redis_client, alert_id)[sms_unit].acknowledgements
    assert (ack.officer, ack.via.value, ack.status.value, ack.note) == (deputy.id, "sms", "linkage_started",
                                                                      "已开放避难所")
    unknown = await sim_post(base, TWILIO, "/_sim/inbound", {"from": "+8613800000001", "body": "1",
                                                            "url": public + INBOUND_SMS_PATH})
    assert "not on the duty roster" in unknown["reply"]
    gibberish = await sim_post(base, TWILIO, "/_sim/inbound", {"from": roster[f"{by_sms[2]}-1"].contacts["sms"],
                                                              "body": "what?", "url": public + INBOUND_SMS_PATH})
    assert "回复 1 收到" in gibberish["reply"]
    assert tasks_of(redis_client, alert_id)[by_sms[2]].state.value == "open"

    # -- the reminder: open tasks only, each officer on the channel after the one that reached them
    answered = {link_unit, FUTIAN, sms_unit}
    await wait_until(min(t.opened_at for t in tasks.values()) + DEADLINE_SECONDS / 2)
    before = arrivals(base)
    await work(linkage_env)
    after = arrivals(base)
    tasks = tasks_of(redis_client, alert_id)
    for unit, task in tasks.items():
        reminders = {c.officer: c.channel for c in task.contacts if c.kind == "reminder"}
        if unit in answered:
            assert reminders == {}, unit
            continue
        assert reminders == {f"{unit}-1": roster[f"{unit}-1"].order[1], f"{unit}-2": "voice"}, unit
        for officer_id, channel in reminders.items():
            address = roster[officer_id].contacts[channel]
            assert after[channel][address] == before[channel][address] + 1, (officer_id, channel)
    for unit in answered:
        for officer_id in (f"{unit}-1", f"{unit}-2"):
            assert after["voice"][roster[officer_id].contacts["voice"]] == 0

    # -- (d) by voice: a deputy presses 1 on the reminder call
    voice_unit = by_sms[2]
    deputy = roster[f"{voice_unit}-2"]
    [call] = [m for m in inspect(base, TWILIO, "call") if m["to"] == deputy.contacts["voice"]]
    assert "收到请按1确认" in call["twiml"]
    pressed = await sim_post(base, TWILIO, f"/_sim/calls/{call['sid']}/press", {"digits": "1"})
    assert pressed["status"] == 200 and "谢谢" in pressed["twiml"]
    [ack] = tasks_of(redis_client, alert_id)[voice_unit].acknowledgements
    assert (ack.officer, ack.via.value, ack.status.value) == (deputy.id, "voice", "received")
    answered.add(voice_unit)

    # -- the deadline: the deputies of units still open are called, then their supervising unit is told
    await wait_until(max(t.deadline for t in tasks.values()))
    await work(linkage_env)  # overdue: deputies (and the supervising step is scheduled, due now)
    await work(linkage_env)  # supervise
    tasks = tasks_of(redis_client, alert_id)
    silent = next(u for u in sorted(tasks) if tasks[u].level == "community" and u not in answered)
    task = tasks[silent]
    assert task.state.value == "open" and task.escalation == 2 and task.overdue(time.time())
    escalations = [c for c in task.contacts if c.kind == "escalation"]
    deputy_calls = [c for c in escalations if c.unit == silent]
    assert [(c.officer, c.channel) for c in deputy_calls] == [(f"{silent}-2", "voice")]
    street = task.parent
    assert street is not None
    to_street = sorted((c.officer, c.channel) for c in escalations if c.unit == street)
    assert to_street == [(f"{street}-1", roster[f"{street}-1"].order[0]), (f"{street}-2", "sms")]
    street_deputy = roster[f"{street}-2"]
    overdue_texts = [t for t in sms_texts(base)[street_deputy.contacts["sms"]] if "督办" in t]
    assert len(overdue_texts) == 1 and gazetteer_name(silent) in overdue_texts[0]
    for unit in answered:
        assert tasks[unit].escalation == 0 and not [c for c in tasks[unit].contacts if c.kind == "escalation"]
    events = Counter(e["type"] for _, e in LinkageStore(redis_client).events(alert_id))
    assert events["opened"] == len(tasks) and events["acknowledged"] == 4
    assert events["notified"] == len(tasks) and events["escalated"] >= 2 * (len(tasks) - len(answered)) - 1

    # -- cancel: the open tasks close, the acknowledged ones stay; answering then is a conflict
    cancel = await post(client, auth, "bob", alert_id, "cancel", {"reason": "issued in error", "urgent": True},
                        status=201)
    await post(client, auth, "bob", cancel["id"], "approve")
    await work(linkage_env)
    tasks = tasks_of(redis_client, alert_id)
    assert {u for u, t in tasks.items() if t.state.value == "acknowledged"} == answered
    assert all(t.state.value == "closed" and t.closed_reason == f"cancelled by alert {cancel['id']}"
               for u, t in tasks.items() if u not in answered)
    assert tasks_of(redis_client, cancel["id"]) == {}  # a Cancel opens no tasks
    late = LINK.search(sms_texts(base)[roster[f"{by_sms[3]}-1"].contacts["sms"]][0]).group(1)  # type: ignore[union-attr]
    refused = await client.post(f"/ack/{late}", data={"status": "received"})
    assert refused.status == 409 and "cancelled" in await refused.text()
    assert tasks_of(redis_client, alert_id)[by_sms[3]] == tasks[by_sms[3]]


def gazetteer_name(code: str) -> str:
    return build_demo_gazetteer().unit(code).name_zh


@pytest.mark.timeout(180)
async def test_officers_are_notified_before_the_public(client, auth, linkage_env, roster,
                                                       redis_client: redis.Redis) -> None:
    issued = await issue_over_futian(client, auth, ["sms", "cap_feed"])
    await work(linkage_env)
    base = int(linkage_env["SIM_BASE"])
    destinations = [m["destination"] for m in inspect(base, SMPP_INSPECT, "submit_sm") if m["part"] == 1]
    officers = {o.contacts["sms"].removeprefix("+") for o in roster.values()}
    first_public = next(i for i, d in enumerate(destinations) if d not in officers)
    notified = sum(1 for t in tasks_of(redis_client, issued["id"]).values() for c in t.contacts
                   if c.kind == "notice" and c.channel == "sms")
    assert first_public == notified > 0  # every officer's SMS left before the first subscriber's
    assert issued["targets"]["counts"]["sms"] == len(destinations) - notified


@pytest.mark.timeout(180)
async def test_an_officer_whose_first_channel_fails_is_reached_on_the_next(client, auth, linkage_env, roster,
                                                                          redis_client: redis.Redis) -> None:
    base = int(linkage_env["SIM_BASE"])
    set_faults(base, WECHAT, down=True)
    issued = await issue_over_futian(client, auth, ["cap_feed"])
    await work(linkage_env)
    tasks = tasks_of(redis_client, issued["id"])
    wechat_first = [u for u in tasks if roster[f"{u}-1"].order[0] == "wechat"]
    assert wechat_first
    texts = sms_texts(base)
    for unit in wechat_first:
        primary = roster[f"{unit}-1"]
        [notice] = [c for c in tasks[unit].contacts if c.kind == "notice" and c.officer == primary.id]
        assert notice.channel == "sms"  # wechat > sms > voice: the next one took it
        assert len(texts[primary.contacts["sms"]]) == 1
    assert inspect(base, WECHAT, "template") == []


@pytest.mark.timeout(180)
async def test_an_update_raising_the_level_opens_new_tasks_and_closes_the_old(client, auth, linkage_env, roster,
                                                                               redis_client: redis.Redis) -> None:
    first = await create(client, auth, request=red_rainstorm(signal={"hazard": "rainstorm", "level": "yellow"},
                                                               channels=["cap_feed"]))
    await post(client, auth, "alice", first["id"], "submit")
    await post(client, auth, "bob", first["id"], "approve")
    await work(linkage_env)
    old = tasks_of(redis_client, first["id"])
    await client.post(f"/api/alerts/{first['id']}/linkage/{FUTIAN}/acknowledge", json={"status": "received"},
                      headers=auth["dave"])

    # The same level again: the tasks carry over as they stand, nobody is notified twice.
    same = await post(client, auth, "alice", first["id"], "update", {"note": "extended"}, status=201)
    await post(client, auth, "bob", same["id"], "approve")
    await work(linkage_env)
    carried = tasks_of(redis_client, same["id"])
    assert set(carried) == set(old)
    assert carried[FUTIAN].state.value == "acknowledged"
    assert all(t.opened_at == old[u].opened_at and len([c for c in t.contacts if c.kind == "notice"]) == 2
               for u, t in carried.items())
    assert all(t.state.value == "closed" for u, t in tasks_of(redis_client, first["id"]).items() if u != FUTIAN)

    # Raised to red: fresh tasks with the red deadline, fresh notices; the carried ones close.
    raised = await post(client, auth, "alice", same["id"], "update",
                        {"signal": {"hazard": "rainstorm", "level": "red"}}, status=201)
    await post(client, auth, "bob", raised["id"], "approve")
    await work(linkage_env)
    fresh = tasks_of(redis_client, raised["id"])
    assert set(fresh) == set(old) and all(t.state.value == "open" for t in fresh.values())
    assert all(t.opened_at > carried[u].opened_at for u, t in fresh.items())
    assert all(t.deadline - t.opened_at == pytest.approx(DEADLINE_SECONDS) for t in fresh.values())
    assert all(len([c for c in t.contacts if c.kind == "notice"]) == 2 for t in fresh.values())
    closed = tasks_of(redis_client, same["id"])
    assert all(t.state.value == "closed" and t.closed_reason == f"updated by alert {raised['id']}"
               for u, t in closed.items() if u != FUTIAN)
    assert closed[FUTIAN].state.value == "acknowledged"
    # A link of the yellow warning now answers nothing: its task was closed by the raise.
    texts = sms_texts(int(linkage_env["SIM_BASE"]))
    unit = next(u for u in sorted(old) if roster[f"{u}-2"].rank is Rank.DEPUTY and u != FUTIAN)
    yellow_link = LINK.search(texts[roster[f"{unit}-2"].contacts["sms"]][0]).group(1)  # type: ignore[union-attr]
    refused = await client.post(f"/ack/{yellow_link}", json={"status": "received"})
    assert refused.status == 409
    assert (await refused.json())["error"]["field"] == "state"


@pytest.mark.timeout(180)
async def test_the_expiry_closes_the_open_tasks(client, auth, linkage_env, roster, redis_client: redis.Redis) -> None:
    soon = (datetime.now().astimezone() + timedelta(seconds=10)).replace(microsecond=0)
    draft = await create(client, auth, request=red_rainstorm(channels=["cap_feed"], expires=soon.isoformat()))
    await post(client, auth, "alice", draft["id"], "submit")
    await post(client, auth, "bob", draft["id"], "approve")
    await work(linkage_env)
    await client.post(f"/api/alerts/{draft['id']}/linkage/{FUTIAN}/acknowledge", json={"status": "received"},
                      headers=auth["dave"])
    await wait_until(soon.timestamp())
    await work(linkage_env)  # the expiry job
    tasks = tasks_of(redis_client, draft["id"])
    assert tasks[FUTIAN].state.value == "acknowledged"
    assert all(t.state.value == "closed" and t.closed_reason == "expired" for u, t in tasks.items() if u != FUTIAN)
    refused = await client.post(f"/api/alerts/{draft['id']}/linkage/{FUTIAN}/acknowledge",
                                json={"status": "linkage_started"}, headers=auth["dave"])
    assert refused.status == 409 and "expired" in (await refused.json())["error"]["message"]
