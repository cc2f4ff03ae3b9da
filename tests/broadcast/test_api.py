"""The composition API end to end: real HTTP (aiohttp test server), real Redis, real RQ workers."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from lxml import etree
from rq import Queue
from rq.registry import ScheduledJobRegistry

from broadcast import keys
from broadcast.queues import HOUSEKEEPING_QUEUE
from broadcast.settings import Settings

FUTIAN = {
    "type": "Polygon",
    "coordinates": [[[114.02, 22.52], [114.09, 22.52], [114.09, 22.58], [114.02, 22.58], [114.02, 22.52]]],
}


def red_rainstorm(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "signal": {"hazard": "rainstorm", "level": "red"},
        "areas": [{"desc": {"zh-CN": "福田区", "en": "Futian"}, "geometry": copy.deepcopy(FUTIAN)}],
        "info": [
            {"language": "zh-CN", "description": "福田区过去3小时降雨量已超过100毫米，且降雨仍将持续。"},
            {"language": "en", "description": "More than 100 mm of rain fell in Futian in 3 hours; more to come."},
        ],
    }
    request.update(changes)
    return request


def run_worker_burst(settings: Settings) -> None:
    """A real worker process (``broadcast worker --burst``) on the alert queues, until they are empty.

    No simulators run for these tests: channels fail at once (connection refused, one attempt),
    which is all the workflow needs; the fan-out itself is tested in test_fanout.py.
    """
    env = {**os.environ, "REDIS_URL": settings.effective_redis_url, "BROADCAST_DATA_DIR": str(settings.data_dir),
           "BROADCAST_MAX_SEND_ATTEMPTS": "1", "BROADCAST_SIM_BASE_PORT": "1"}
    result = subprocess.run([str(Path(sys.executable).parent / "broadcast"), "worker", "--burst"], env=env,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


async def create(client, auth, who: str = "alice", request: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post("/api/alerts", json=request or red_rainstorm(), headers=auth[who])
    assert response.status == 201, await response.text()
    return await response.json()


async def post(client, auth, who: str, alert_id: str, action: str, body: dict | None = None,
               status: int = 200) -> dict[str, Any]:
    response = await client.post(f"/api/alerts/{alert_id}/{action}", json=body or {}, headers=auth[who])
    assert response.status == status, await response.text()
    return await response.json()


async def issue(client, auth, request: dict[str, Any] | None = None) -> dict[str, Any]:
    draft = await create(client, auth, request=request)
    await post(client, auth, "alice", draft["id"], "submit")
    return await post(client, auth, "bob", draft["id"], "approve")


async def audit_actions(client, auth, alert_id: str) -> list[tuple[str, str, str]]:
    response = await client.get(f"/api/alerts/{alert_id}/audit", headers=auth["erin"])
    assert response.status == 200
    return [(e["actor"], e["action"], e["outcome"]) for e in (await response.json())["entries"]]


async def test_health_answers_without_a_token(client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_red_rainstorm_gets_every_cap_field_from_the_signal(client, auth) -> None:
    record = await create(client, auth)
    assert record["state"] == "draft"
    assert record["signal"] == "rainstorm.red"
    alert = record["alert"]
    assert alert["msg_type"] == "Alert" and alert["status"] == "Actual" and alert["scope"] == "Public"
    assert alert["identifier"].startswith("SZMB-")
    zh, en = alert["info"]
    assert (zh["language"], en["language"]) == ("zh-CN", "en")
    for info in (zh, en):
        assert info["categories"] == ["Met"]
        assert (info["severity"], info["urgency"]) == ("Extreme", "Immediate")
        assert info["certainty"] in ("Observed", "Likely")
        assert info["headline"] and info["instruction"]
        assert info["event_codes"] == [{"value_name": "CN-MET-SIGNAL", "value": "rainstorm.red"}]
        assert info["areas"][0]["geometry"] == FUTIAN
        assert datetime.fromisoformat(info["expires"]) > datetime.fromisoformat(info["effective"])
    assert "暴雨" in zh["event"] and "红色" in zh["event"]
    assert "rainstorm" in en["event"].lower() and "red" in en["event"].lower()
    assert zh["description"].startswith("福田区过去3小时")
    assert record["findings"] == []


async def test_the_headline_names_the_city_for_every_district_and_never_for_some(client, auth) -> None:
    districts = ["440303", "440304", "440305", "440306", "440307", "440308", "440309", "440310", "440311",
                 "440399"]
    whole = await create(client, auth, request={"signal": {"hazard": "rainstorm", "level": "red"},
                                                "areas": [{"geocodes": districts}]})
    zh, en = whole["alert"]["info"]
    assert "发布深圳市暴雨红色预警信号" in zh["headline"] and "for Shenzhen:" in en["headline"]
    one_each = await create(client, auth, request={"signal": {"hazard": "rainstorm", "level": "red"},
                                                   "areas": [{"geocodes": [code]} for code in districts]})
    zh, en = one_each["alert"]["info"]
    assert "发布深圳市暴雨红色预警信号" in zh["headline"] and "for Shenzhen:" in en["headline"]
    # Three districts under the longest English headline: named would be past 160 characters (422
    # before), so it says "parts of the city" rather than fail or claim the whole city.
    some = await create(client, auth, request={"signal": {"hazard": "high_temperature", "level": "orange"},
                                               "areas": [{"geocodes": ["440311", "440309", "440304"]}]})
    zh, en = some["alert"]["info"]
    assert "福田区、龙华区、光明区" in zh["headline"]  # in code order
    assert "for parts of the city:" in en["headline"] and len(en["headline"]) <= 160
    assert "Shenzhen" not in en["headline"].replace("Shenzhen Meteorological Observatory", "")


async def test_whole_workflow_issues_and_a_real_worker_disseminates(client, auth, settings) -> None:
    draft = await create(client, auth)
    alert_id = draft["id"]
    later = (datetime.fromisoformat(draft["alert"]["sent"]) + timedelta(hours=3)).isoformat()
    response = await client.patch(f"/api/alerts/{alert_id}", json={"expires": later}, headers=auth["alice"])
    assert response.status == 200, await response.text()
    edited = await response.json()
    assert edited["alert"]["info"][0]["expires"] == later
    assert edited["signal"] == "rainstorm.red"  # the edit kept what it did not change

    submitted = await post(client, auth, "alice", alert_id, "submit")
    assert submitted["state"] == "submitted" and submitted["submitted"]["by"] == "alice"
    issued = await post(client, auth, "bob", alert_id, "approve")
    assert issued["state"] == "issued" and issued["approved"]["by"] == "bob"
    assert issued["dissemination"]["queue"] == "alerts-extreme"
    assert issued["dissemination"]["outcome"] == "queued"

    queue = Queue("alerts-extreme", connection=redis.Redis.from_url(settings.effective_redis_url))
    assert queue.job_ids == [f"disseminate-{alert_id}"]
    run_worker_burst(settings)
    assert queue.job_ids == []

    record = await (await client.get(f"/api/alerts/{alert_id}", headers=auth["dave"])).json()
    assert record["state"] == "issued"
    assert record["dissemination"]["outcome"] == "ran"
    assert record["dissemination"]["worker"]
    assert record["dissemination"]["finished_at"] >= record["dissemination"]["started_at"]
    assert await audit_actions(client, auth, alert_id) == [
        ("alice", "create", "ok"), ("alice", "edit", "ok"), ("alice", "submit", "ok"),
        ("bob", "approve", "ok"), ("system", "disseminate", "ok"), ("system", "fan-out", "ok"),
    ]
    entries = (await (await client.get(f"/api/alerts/{alert_id}/audit", headers=auth["erin"])).json())["entries"]
    assert entries[3]["from_state"] == "submitted" and entries[3]["to_state"] == "issued"
    assert entries[3]["remote"] == "127.0.0.1"

    listing = await (await client.get("/api/alerts", headers=auth["dave"])).json()
    assert listing["total"] == 1 and listing["alerts"][0]["id"] == alert_id


async def test_expiry_is_scheduled_at_issue_and_run_by_the_worker(client, auth, settings) -> None:
    soon = (datetime.now().astimezone() + timedelta(seconds=8)).replace(microsecond=0)
    issued = await issue(client, auth, red_rainstorm(expires=soon.isoformat()))
    connection = redis.Redis.from_url(settings.effective_redis_url)
    registry = ScheduledJobRegistry(HOUSEKEEPING_QUEUE, connection=connection)
    job_id = registry.get_job_ids()[0]
    assert job_id.startswith(f"expire-{issued['id']}")
    assert abs(registry.get_scheduled_time(job_id).timestamp() - soon.timestamp()) < 1
    run_worker_burst(settings)  # disseminates; the expiry is not due yet
    record = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    assert record["state"] == "issued"
    await asyncio.sleep(max(0.0, (soon - datetime.now().astimezone()).total_seconds()) + 1.1)
    # Reading it applies the due expiry at once; the scheduled job then finds nothing left to do.
    record = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    assert record["state"] == "expired"
    assert record["closed"]["by"] == "system"
    run_worker_burst(settings)
    assert registry.get_job_ids() == []
    again = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    assert again == record
    actions = [a[1] for a in await audit_actions(client, auth, issued["id"])]
    assert actions.count("expire") == 1
    await post(client, auth, "alice", issued["id"], "cancel", {"reason": "too late"}, status=409)


async def test_nobody_approves_their_own_alert(client, auth) -> None:
    draft = await create(client, auth, who="dual")
    await post(client, auth, "dual", draft["id"], "submit")
    refused = await post(client, auth, "dual", draft["id"], "approve", status=403)
    assert refused["error"]["field"] == "approver"
    record = await (await client.get(f"/api/alerts/{draft['id']}", headers=auth["bob"])).json()
    assert record["state"] == "submitted" and record["version"] == draft["version"] + 1
    # A forecaster cannot approve at all, and the one who submitted someone else's draft cannot either.
    await post(client, auth, "alice", draft["id"], "approve", status=403)
    issued = await post(client, auth, "bob", draft["id"], "approve")
    assert issued["state"] == "issued"
    assert await audit_actions(client, auth, draft["id"]) == [
        ("dual", "create", "ok"), ("dual", "submit", "ok"), ("dual", "approve", "refused"),
        ("alice", "approve", "refused"), ("bob", "approve", "ok"),
    ]


async def test_the_submitter_of_a_colleagues_draft_cannot_approve_it(client, auth) -> None:
    draft = await create(client, auth, who="alice")
    await post(client, auth, "dual", draft["id"], "submit")
    await post(client, auth, "dual", draft["id"], "approve", status=403)
    await post(client, auth, "bob", draft["id"], "approve")


async def test_reject_returns_to_draft_with_a_reason_and_it_can_be_resubmitted(client, auth) -> None:
    draft = await create(client, auth)
    await post(client, auth, "alice", draft["id"], "submit")
    missing = await post(client, auth, "bob", draft["id"], "reject", {}, status=422)
    assert missing["error"]["field"] == "reason"
    rejected = await post(client, auth, "bob", draft["id"], "reject", {"reason": "area too wide"})
    assert rejected["state"] == "draft"
    assert rejected["rejection"]["reason"] == "area too wide" and rejected["rejection"]["by"] == "bob"
    await post(client, auth, "bob", draft["id"], "approve", status=409)
    await post(client, auth, "alice", draft["id"], "submit")
    assert (await post(client, auth, "carol", draft["id"], "approve"))["state"] == "issued"


async def test_update_references_the_original_needs_approval_and_supersedes_it(client, auth) -> None:
    issued = await issue(client, auth)
    update = await post(client, auth, "alice", issued["id"], "update",
                        {"signal": {"hazard": "rainstorm", "level": "orange"}}, status=201)
    assert update["state"] == "submitted" and update["replaces"] == issued["id"]
    assert update["alert"]["msg_type"] == "Update"
    assert update["alert"]["references"][-1] == {
        "sender": issued["alert"]["sender"], "identifier": issued["alert"]["identifier"],
        "sent": issued["alert"]["sent"]}
    assert update["alert"]["info"][0]["severity"] == "Severe"
    assert update["alert"]["info"][0]["areas"][0]["geometry"] == FUTIAN  # kept from the original
    await post(client, auth, "alice", update["id"], "approve", status=403)
    approved = await post(client, auth, "bob", update["id"], "approve")
    assert approved["state"] == "issued"
    original = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    assert original["state"] == "updated" and original["replaced_by"] == update["id"]
    cap = await (await client.get(f"/api/alerts/{update['id']}/cap", headers=auth["dave"])).text()
    assert f"{issued['alert']['sender']},{issued['alert']['identifier']}," in cap
    assert "<msgType>Update</msgType>" in cap
    # The superseded alert can no longer be updated; the update chain continues from the new one.
    await post(client, auth, "alice", issued["id"], "update", {"expires": None}, status=409)
    second = await post(client, auth, "alice", update["id"], "update",
                        {"signal": {"hazard": "rainstorm", "level": "yellow"}}, status=201)
    assert len(second["alert"]["references"]) == 2


async def test_cancel_needs_a_second_person_unless_urgent(client, auth) -> None:
    issued = await issue(client, auth)
    cancel = await post(client, auth, "bob", issued["id"], "cancel", {"reason": "rain has eased"}, status=201)
    assert cancel["alert"]["msg_type"] == "Cancel" and cancel["alert"]["note"] == "rain has eased"
    assert cancel["alert"]["info"][0]["headline"].startswith("【解除】")
    await post(client, auth, "bob", cancel["id"], "approve", status=403)

    urgent = await post(client, auth, "bob", issued["id"], "cancel",
                        {"reason": "issued in error", "urgent": True}, status=201)
    approved = await post(client, auth, "bob", urgent["id"], "approve")
    assert approved["state"] == "issued" and approved["urgent"] is True
    original = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    assert original["state"] == "cancelled" and original["replaced_by"] == urgent["id"]
    # The first, slower cancel can no longer be approved: its original is cancelled already.
    await post(client, auth, "carol", cancel["id"], "approve", status=409)


async def test_a_cancelled_alert_refuses_every_action_and_changes_nothing(client, auth) -> None:
    issued = await issue(client, auth)
    cancel = await post(client, auth, "alice", issued["id"], "cancel", {"reason": "over"}, status=201)
    await post(client, auth, "bob", cancel["id"], "approve")
    before = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    for who, action, body in [("alice", "submit", {}), ("bob", "approve", {}), ("bob", "reject", {"reason": "x"}),
                              ("alice", "update", {}), ("alice", "cancel", {"reason": "again"})]:
        refused = await post(client, auth, who, issued["id"], action, body, status=409)
        assert refused["error"]["field"] == "state", action
    response = await client.patch(f"/api/alerts/{issued['id']}", json={"note": "x"}, headers=auth["alice"])
    assert response.status == 409
    after = await (await client.get(f"/api/alerts/{issued['id']}", headers=auth["dave"])).json()
    assert after == before
    outcomes = [a for a in await audit_actions(client, auth, issued["id"]) if a[2] == "refused"]
    assert len(outcomes) == 6


async def test_cap_export_validates_against_the_official_schema(client, auth, shared_data) -> None:
    issued = await issue(client, auth)
    response = await client.get(f"/api/alerts/{issued['id']}/cap", headers=auth["dave"])
    assert response.status == 200 and response.content_type == "application/cap+xml"
    schema = etree.XMLSchema(etree.parse(str(shared_data / "cap" / "CAP-v1.2.xsd")))
    document = etree.fromstring(await response.read())
    assert schema.validate(document), schema.error_log
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert document.findtext("cap:sent", namespaces=ns) == issued["alert"]["sent"]
    assert document.findtext("cap:sent", namespaces=ns).endswith("+08:00")
    polygon = document.findtext("cap:info/cap:area/cap:polygon", namespaces=ns)
    assert polygon.split()[0] == "22.52,114.02" and polygon.split()[0] == polygon.split()[-1]


async def test_cap_round_trip_through_the_api_gives_the_same_alert(client, auth) -> None:
    issued = await issue(client, auth)
    xml = await (await client.get(f"/api/alerts/{issued['id']}/cap", headers=auth["dave"])).read()
    # The same message cannot be stored twice...
    response = await client.post("/api/alerts", data=xml, headers={**auth["fiona"],
                                                                    "Content-Type": "application/cap+xml"})
    assert response.status == 409
    # ...but with another identifier it imports as a draft equal in every CAP field.
    renamed = xml.replace(issued["alert"]["identifier"].encode(), b"OTHER-AGENCY-1")
    response = await client.post("/api/alerts", data=renamed, headers={**auth["fiona"],
                                                                        "Content-Type": "application/cap+xml"})
    assert response.status == 201, await response.text()
    imported = await response.json()
    assert imported["origin"] == "imported" and imported["state"] == "draft"
    assert imported["alert"] == {**issued["alert"], "identifier": "OTHER-AGENCY-1"}
    assert imported["signal"] == "rainstorm.red" and imported["findings"] == []
    # Inside our jurisdiction and in our languages, so it can go through the workflow.
    await post(client, auth, "fiona", imported["id"], "submit")
    await post(client, auth, "carol", imported["id"], "approve")
    # An Update of the imported alert is ours and references the other agency's message.
    update = await post(client, auth, "alice", imported["id"], "update",
                        {"info": [{"language": "en", "headline": "Red rainstorm warning extended"}]}, status=201)
    assert update["alert"]["references"][-1]["identifier"] == "OTHER-AGENCY-1"
    assert update["alert"]["info"][1]["headline"] == "Red rainstorm warning extended"
    assert update["alert"]["info"][0]["headline"] == imported["alert"]["info"][0]["headline"]


async def test_spec_examples_import_as_drafts_that_cannot_be_submitted(client, auth, shared_data) -> None:
    for path in sorted((shared_data / "cap").glob("cap12-spec-example-*.xml")):
        response = await client.post("/api/alerts", data=path.read_bytes(),
                                     headers={**auth["alice"], "Content-Type": "application/cap+xml"})
        assert response.status == 201, (path.name, await response.text())
        record = await response.json()
        assert record["state"] == "draft" and record["origin"] == "imported"
        assert any(f["code"] == "outside_jurisdiction" for f in record["findings"]), path.name
        refused = await post(client, auth, "alice", record["id"], "submit", status=409)
        assert refused["error"]["field"]
        again = await (await client.get(f"/api/alerts/{record['id']}", headers=auth["dave"])).json()
        assert again["state"] == "draft"
    listing = await (await client.get("/api/alerts", headers=auth["dave"])).json()
    assert listing["total"] == 4


async def test_other_agencies_cap_imports_with_the_findings_that_block_submission(client, auth) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "cap"
    expected = {
        # Its outer-waters area reaches 22.58N, into Shenzhen Bay: it overlaps our extent, so only the language
        # rules block it.
        "hko-typhoon-signal8-zh-hk-en.xml": {"unsupported_language", "missing_language"},
        "dwd-thunderstorm-update-de-en.xml": {"outside_jurisdiction", "unsupported_language", "missing_language",
                                              "unknown_reference"},
        "nws-flood-warning-en-us.xml": {"outside_jurisdiction", "unsupported_language", "missing_language"},
        "cma-rainstorm-cancel-zh-cn.xml": {"unknown_reference", "missing_language"},
    }
    for name, codes in expected.items():
        response = await client.post("/api/alerts", data=(fixtures / name).read_bytes(),
                                     headers={**auth["alice"], "Content-Type": "application/cap+xml"})
        assert response.status == 201, (name, await response.text())
        record = await response.json()
        assert {f["code"] for f in record["findings"]} == codes, (name, record["findings"])
        assert record["state"] == "draft"
        await post(client, auth, "alice", record["id"], "submit", status=409)


# ---------------------------------------------------------------- bad input


def _closed(points: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [points]}


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown hazard", red_rainstorm(signal={"hazard": "meteor", "level": "red"}), 422, "signal.hazard"),
    ("unknown level", red_rainstorm(signal={"hazard": "rainstorm", "level": "purple"}), 422, "signal.level"),
    ("expires before effective", red_rainstorm(effective="2030-01-01T10:00:00+08:00",
                                               expires="2030-01-01T09:00:00+08:00"), 422, "expires"),
    ("expires without offset", red_rainstorm(expires="2030-01-01T09:00:00"), 422, "expires"),
    ("polygon not closed", red_rainstorm(areas=[{"desc": "x", "geometry": _closed(
        [[114.0, 22.5], [114.1, 22.5], [114.1, 22.6], [114.0, 22.6]])}]), 422, "areas[0].geometry.coordinates[0]"),
    ("polygon with 3 points", red_rainstorm(areas=[{"desc": "x", "geometry": _closed(
        [[114.0, 22.5], [114.1, 22.5], [114.0, 22.5]])}]), 422, "areas[0].geometry.coordinates[0]"),
    ("latitude out of range", red_rainstorm(areas=[{"desc": "x", "geometry": _closed(
        [[114.0, 22.5], [114.1, 95.0], [114.1, 22.6], [114.0, 22.5]])}]), 422,
     "areas[0].geometry.coordinates[0][1]"),
    ("longitude out of range", red_rainstorm(areas=[{"desc": "x", "circles": [
        {"lon": 214.0, "lat": 22.5, "radius_km": 3}]}]), 422, "areas[0].circles[0].center"),
    ("no area", red_rainstorm(areas=[]), 422, "areas"),
    ("empty headline", red_rainstorm(info=[{"language": "zh-CN", "headline": "  "},
                                           {"language": "en"}]), 422, "info[0].headline"),
    ("unknown language", red_rainstorm(info=[{"language": "zh-CN"}, {"language": "tlh"}]), 422,
     "info[1].language"),
    ("missing required language", red_rainstorm(info=[{"language": "zh-CN"}]), 422, "info"),
    ("text over the maximum", red_rainstorm(info=[{"language": "zh-CN"},
                                                  {"language": "en", "description": "x" * 4001}]), 422,
     "info[1].description"),
    ("headline over the maximum", red_rainstorm(info=[{"language": "zh-CN", "headline": "暴" * 161},
                                                      {"language": "en"}]), 422, "info[0].headline"),
    ("unknown field", red_rainstorm(colour="red"), 422, "colour"),
    ("wrong type", red_rainstorm(areas="Futian"), 422, "areas"),
    ("bad enum", red_rainstorm(status="Urgent"), 422, "status"),
    ("no signal and no event", {"areas": [{"desc": "x", "geometry": FUTIAN}],
                                "info": [{"language": "zh-CN"}, {"language": "en"}]}, 422, "info[0].urgency"),
]


@pytest.mark.parametrize(("case", "request_doc", "status", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_composition_names_the_field_and_stores_nothing(client, auth, redis_client, case, request_doc,
                                                                  status, field) -> None:
    response = await client.post("/api/alerts", json=request_doc, headers=auth["alice"])
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"]["field"] == field, body
    assert redis_client.zcard(keys.ALERTS_BY_CREATION) == 0
    assert redis_client.keys("bc:alert:*") == []
    refused = redis_client.xrange(keys.SERVICE_AUDIT)
    assert len(refused) == 1 and refused[0][1][b"outcome"] == b"refused"


async def test_malformed_bodies_get_400_and_store_nothing(client, auth, redis_client) -> None:
    cases = [
        (b"{not json", "application/json", 400, "body"),
        (b"<alert><unclosed></alert>", "application/cap+xml", 400, None),
        (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
         b"&x;</alert>", "application/cap+xml", 400, None),
        (b"plain words", "text/plain", 422, "Content-Type"),
    ]
    for body, content_type, status, field in cases:
        response = await client.post("/api/alerts", data=body, headers={**auth["alice"], "Content-Type": content_type})
        assert response.status == status, (body, await response.text())
        error = (await response.json())["error"]
        if field:
            assert error["field"] == field
    assert redis_client.keys("bc:alert:*") == []


async def test_body_over_the_size_limit_gets_413(client, auth, settings, redis_client) -> None:
    big = red_rainstorm(note="x" * (settings.max_body_bytes + 10))
    response = await client.post("/api/alerts", json=big, headers=auth["alice"])
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "too_large"
    assert redis_client.keys("bc:alert:*") == []


async def test_unknown_id_is_404_on_every_alert_endpoint(client, auth) -> None:
    for method, path, who in [("GET", "", "dave"), ("PATCH", "", "alice"), ("POST", "/submit", "alice"),
                              ("POST", "/approve", "bob"), ("POST", "/reject", "bob"), ("POST", "/update", "alice"),
                              ("POST", "/cancel", "alice"), ("GET", "/cap", "dave"), ("GET", "/audit", "erin")]:
        body = {"reason": "r"} if method != "GET" else None
        response = await client.request(method, f"/api/alerts/nope{path}", json=body, headers=auth[who])
        assert response.status == 404, (method, path, await response.text())


async def test_bad_paging_parameters(client, auth) -> None:
    response = await client.get("/api/alerts?limit=0", headers=auth["dave"])
    assert response.status == 422 and (await response.json())["error"]["field"] == "limit"
    response = await client.get("/api/alerts?offset=x", headers=auth["dave"])
    assert response.status == 422 and (await response.json())["error"]["field"] == "offset"


# ---------------------------------------------------------------- authentication and roles


ENDPOINTS = [
    ("GET", "/api/openapi.json"), ("GET", "/api/signals"), ("GET", "/api/alerts"), ("POST", "/api/alerts"),
    ("GET", "/api/alerts/{id}"), ("PATCH", "/api/alerts/{id}"), ("POST", "/api/alerts/{id}/submit"),
    ("POST", "/api/alerts/{id}/approve"), ("POST", "/api/alerts/{id}/reject"), ("POST", "/api/alerts/{id}/update"),
    ("POST", "/api/alerts/{id}/cancel"), ("GET", "/api/alerts/{id}/cap"), ("GET", "/api/alerts/{id}/audit"),
]


async def test_every_endpoint_but_health_needs_a_valid_token(client, auth) -> None:
    draft = await create(client, auth)
    for method, template in ENDPOINTS:
        path = template.format(id=draft["id"])
        for headers in ({}, {"Authorization": "Bearer bct_forged"}, {"Authorization": "Basic YWxpY2U6eA=="}):
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, (method, path, headers)
            assert (await response.json())["error"]["field"] == "Authorization"


async def test_signal_catalogue_is_served(client, auth) -> None:
    body = await (await client.get("/api/signals", headers=auth["dave"])).json()
    by_code = {h["hazard"]: h for h in body["hazards"]}
    assert [lv["level"] for lv in by_code["typhoon"]["levels"]] == ["white", "blue", "yellow", "orange", "red"]
    red = by_code["rainstorm"]["levels"][-1]
    assert red["code"] == "rainstorm.red" and red["severity"] == "Extreme"
    assert red["event"]["zh-CN"] == "暴雨红色预警信号"


async def test_openapi_document_describes_every_route(client, auth) -> None:
    document = await (await client.get("/api/openapi.json", headers=auth["dave"])).json()
    assert document["openapi"].startswith("3.")
    routes = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.method != "HEAD"}
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops if m != "parameters"}
    assert routes == described


ROLE_RULES = {
    # (method, path kind) -> roles that pass the role check
    ("POST", "create"): {"alice", "fiona", "dual"},
    ("PATCH", "edit"): {"alice", "fiona", "dual"},
    ("POST", "submit"): {"alice", "fiona", "dual"},
    ("POST", "approve"): {"bob", "carol", "dual"},
    ("POST", "reject"): {"bob", "carol", "dual"},
    ("POST", "update"): {"alice", "fiona", "dual"},
    ("POST", "cancel"): {"alice", "fiona", "dual", "bob", "carol"},
    ("GET", "audit"): {"alice", "fiona", "dual", "bob", "carol", "erin", "root"},
    ("GET", "show"): {"alice", "fiona", "dual", "bob", "carol", "dave", "erin", "root"},
}


async def test_role_checks_on_every_endpoint(client, auth) -> None:
    everyone = set(auth)
    for (method, kind), allowed in ROLE_RULES.items():
        for who in sorted(everyone):
            # A fresh alert in the state the action needs, so only the role decides.
            draft = await create(client, auth, who="fiona")
            alert_id = draft["id"]
            if kind in ("approve", "reject"):
                await post(client, auth, "fiona", alert_id, "submit")
            if kind in ("update", "cancel"):
                await post(client, auth, "fiona", alert_id, "submit")
                await post(client, auth, "carol", alert_id, "approve")
            path = {"create": "/api/alerts", "edit": f"/api/alerts/{alert_id}", "show": f"/api/alerts/{alert_id}",
                    "audit": f"/api/alerts/{alert_id}/audit"}.get(kind, f"/api/alerts/{alert_id}/{kind}")
            body = {"create": red_rainstorm(), "reject": {"reason": "no"}, "cancel": {"reason": "over"},
                    "edit": {"note": "checked"}}.get(kind, {} if method != "GET" else None)
            response = await client.request(method, path, json=body, headers=auth[who])
            # fiona drafted and submitted it, so she is refused by the two-person rule, not by role.
            two_person = kind == "approve" and who == "fiona"
            expected = {200, 201} if who in allowed and not two_person else {403}
            assert response.status in expected, (kind, who, response.status, await response.text())
            if response.status == 403 and not (kind == "approve" and who in ("fiona", "dual")):
                assert (await response.json())["error"]["field"] == "role"


async def test_concurrent_approvals_issue_once(client, auth, settings) -> None:
    draft = await create(client, auth)
    await post(client, auth, "alice", draft["id"], "submit")
    responses = await asyncio.gather(*[
        client.post(f"/api/alerts/{draft['id']}/approve", headers=auth[who]) for who in ("bob", "carol") * 3])
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 409, 409, 409, 409, 409]
    queue = Queue("alerts-extreme", connection=redis.Redis.from_url(settings.effective_redis_url))
    assert queue.count == 1

