"""Targeting over HTTP: /api/targeting/resolve, /api/units, and the target summary alerts keep at approval."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shapely

from geotarget import build_demo_gazetteer
from geotarget.subscribers import SubscriberSnapshot
from tests.broadcast.test_api import FUTIAN, create, post, red_rainstorm

GAZETTEER = build_demo_gazetteer()


def box(min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[min_lon, min_lat], [max_lon, min_lat], [max_lon, max_lat],
                                                [min_lon, max_lat], [min_lon, min_lat]]]}


async def resolve(client, auth, *areas: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await client.post("/api/targeting/resolve", json={"areas": list(areas)}, headers=auth["alice"])
    assert response.status == status, await response.text()
    return await response.json()


def brute_force_count(directory, geometry) -> int:
    snapshot = SubscriberSnapshot.open(directory)
    return int(np.count_nonzero(shapely.intersects_xy(geometry, np.asarray(snapshot.lon), np.asarray(snapshot.lat))))


async def test_a_polygon_over_futian_reaches_futian_at_every_level(client, auth, published_targets,
                                                                    demo_registry_dirs) -> None:
    body = await resolve(client, auth, {"geometry": FUTIAN})
    levels = {u["level"] for u in body["units"]}
    assert levels == {"city", "district", "street", "community"}
    districts = {u["code"]: u for u in body["units"] if u["level"] == "district"}
    assert "440304" in districts
    assert all(0 < u["coverage"] <= 1 for u in body["units"])
    assert body["tree"]["code"] == "440300"
    assert {c["code"] for c in body["tree"]["children"]} == set(districts)
    # Every street in the answer hangs under a district in the answer, and so on down.
    codes = {u["code"] for u in body["units"]}
    assert all(u["parent"] in codes for u in body["units"] if u["level"] != "city")

    expected = brute_force_count(demo_registry_dirs["subscribers"], shapely.geometry.shape(FUTIAN))
    assert body["counts"]["subscribers"] == expected > 0
    assert body["counts"]["sms"] == expected  # everyone has SMS in the demo data
    assert 0 < body["counts"]["app_push"] < expected
    assert body["counts"]["cell_broadcast"] > 0 and body["counts"]["display_screen"] > 0
    assert body["counts"]["loudspeaker"] > 0 and body["counts"]["tv"] >= 1 and body["counts"]["radio"] >= 1
    assert body["counts"]["weibo"] == 1 and body["counts"]["cap_feed"] == 1
    sms = body["estimates"]["sms"]
    assert sms["rate_per_second"] == 5000 and sms["seconds"] == pytest.approx(expected / 5000)
    # The drawn box reaches past the demo coastline a little: that part is clipped, and said so.
    drawn = shapely.geometry.shape(FUTIAN)
    outside = 1 - drawn.intersection(GAZETTEER.city.geometry).area / drawn.area
    assert 0 < outside < 0.05
    assert [(n["code"], n["field"]) for n in body["notices"]] == [("clipped", "areas[0]")]
    assert body["notices"][0]["message"].startswith(f"{outside:.1%} of the area lies outside")
    assert set(body["registries"]) == {"subscribers", "facilities"}


async def test_a_polygon_straddling_a_border_reaches_both_districts_with_fractions(client, auth,
                                                                                    published_targets) -> None:
    futian, luohu = GAZETTEER.unit("440304").geometry, GAZETTEER.unit("440303").geometry
    border = futian.boundary.intersection(luohu.boundary)
    point = border.interpolate(0.5, normalized=True)
    straddling = shapely.geometry.mapping(point.buffer(0.01))
    body = await resolve(client, auth, {"geometry": straddling})
    districts = {u["code"]: u["coverage"] for u in body["units"] if u["level"] == "district"}
    assert {"440304", "440303"} <= set(districts)
    assert all(0 < fraction < 1 for fraction in districts.values())
    expected = {code: shapely.geometry.shape(straddling).intersection(GAZETTEER.unit(code).geometry).area
                / GAZETTEER.unit(code).geometry.area for code in districts}
    assert districts == pytest.approx(expected, abs=1e-6)  # the API rounds fractions to 6 places


async def test_geocodes_resolve_to_the_units_polygons(client, auth, published_targets) -> None:
    body = await resolve(client, auth, {"geocodes": ["440304"]})
    districts = [u for u in body["units"] if u["level"] == "district"]
    assert [(u["code"], u["coverage"]) for u in districts] == [("440304", pytest.approx(1.0))]
    streets = [u for u in body["units"] if u["level"] == "street"]
    assert {u["code"] for u in streets} == {c.code for c in GAZETTEER.children("440304")}
    assert all(u["coverage"] == pytest.approx(1.0) for u in streets)


async def test_a_small_overlap_is_reported_as_edge_not_dropped(client, auth, published_targets) -> None:
    futian = GAZETTEER.unit("440304").geometry
    sliver = shapely.geometry.mapping(futian.centroid.buffer(0.005))
    body = await resolve(client, auth, {"geometry": sliver}, {"circle": {"lon": 113.9, "lat": 22.7, "radius_km": 1}})
    district = next(u for u in body["units"] if u["code"] == "440304")
    assert district["edge"] is True and 0 < district["coverage"] < 0.05
    assert any(not u["edge"] for u in body["units"] if u["level"] == "community")


async def test_an_area_partly_outside_is_clipped_and_reported(client, auth, published_targets) -> None:
    across = box(114.0, 22.3, 114.1, 22.6)  # from Hong Kong into Futian
    body = await resolve(client, auth, {"geometry": across})
    assert [n["code"] for n in body["notices"]] == ["clipped"]
    assert body["notices"][0]["field"] == "areas[0]"
    assert "outside the jurisdiction" in body["notices"][0]["message"]
    assert any(u["code"] == "440304" for u in body["units"])


BOW_TIE = {"type": "Polygon", "coordinates": [[[114.02, 22.52], [114.09, 22.58], [114.09, 22.52], [114.02, 22.58],
                                               [114.02, 22.52]]]}
MANY_VERTICES = {"type": "Polygon", "coordinates": [
    [[114.05 + 0.01 * np.cos(t), 22.55 + 0.01 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 10_002)[:-1]]
    + [[114.06, 22.55]]]}


BAD_AREAS = [
    ("self-intersecting", {"geometry": BOW_TIE}, "areas[0].geometry", "Self-intersection"),
    ("outside", {"geometry": box(114.15, 22.25, 114.2, 22.3)}, "areas[0]", "outside the jurisdiction"),
    ("too many vertices", {"geometry": MANY_VERTICES}, "areas[0].geometry", "at most 10000"),
    ("empty multipolygon", {"geometry": {"type": "MultiPolygon", "coordinates": []}},
     "areas[0].geometry.coordinates", "at least one polygon"),
    ("no geometry at all", {}, "areas[0]", "empty"),
    ("lat/lon swapped", {"geometry": {"type": "Polygon", "coordinates": [[[22.52, 114.02], [22.52, 114.09],
                                                                          [22.58, 114.09], [22.52, 114.02]]]}},
     "areas[0].geometry.coordinates[0]", "[lat, lon]"),
    ("unknown code", {"geocodes": ["999999"]}, "areas[0].geocodes[0]", "unknown administrative code"),
    ("zero circle", {"circle": {"lon": 114.05, "lat": 22.55, "radius_km": 0}}, "areas[0].circles[0]", "radius 0"),
    ("wrong geometry type", {"geometry": {"type": "Point", "coordinates": [114.05, 22.55]}},
     "areas[0].geometry.type", "Polygon or MultiPolygon"),
]


@pytest.mark.parametrize(("case", "area", "field", "words"), BAD_AREAS, ids=[c[0] for c in BAD_AREAS])
async def test_bad_areas_get_a_clear_4xx(client, auth, published_targets, redis_client, case, area, field,
                                         words) -> None:
    keys_before = sorted(redis_client.keys("*"))
    body = await resolve(client, auth, area, status=422)
    assert body["error"]["field"] == field
    assert words in body["error"]["message"]
    assert sorted(redis_client.keys("*")) == keys_before


async def test_resolve_needs_areas_and_a_token(client, auth) -> None:
    body = await resolve(client, auth, status=422)
    assert body["error"]["field"] == "areas"
    response = await client.post("/api/targeting/resolve", json={"areas": [{"geocodes": ["440304"]}]})
    assert response.status == 401


async def test_without_registries_units_still_resolve(client, auth) -> None:
    body = await resolve(client, auth, {"geocodes": ["440305"]})
    assert any(u["code"] == "440305" for u in body["units"])
    assert body["counts"] == {"weibo": 1, "cap_feed": 1}


async def test_units_listing_and_one_unit_with_its_polygon(client, auth) -> None:
    listing = await (await client.get("/api/units?level=district", headers=auth["dave"])).json()
    assert listing["total"] == 10
    assert {u["name"] for u in listing["units"]} >= {"福田区", "南山区", "大鹏新区"}
    streets = await (await client.get("/api/units?parent=440304", headers=auth["dave"])).json()
    assert streets["total"] == 10 and all(u["parent"] == "440304" for u in streets["units"])
    unit = await (await client.get("/api/units/440304", headers=auth["dave"])).json()
    assert unit["name"] == "福田区" and unit["ancestors"] == ["440300"] and len(unit["children"]) == 10
    assert shapely.geometry.shape(unit["geometry"]).equals(GAZETTEER.unit("440304").geometry)
    assert (await client.get("/api/units/999999", headers=auth["dave"])).status == 404
    assert (await client.get("/api/units?parent=999999", headers=auth["dave"])).status == 404
    bad = await client.get("/api/units?level=province", headers=auth["dave"])
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "level"


async def test_alerts_take_the_same_area_objects_and_keep_their_targets_at_approval(client, auth,
                                                                                     published_targets) -> None:
    request = red_rainstorm(areas=[{"geocodes": ["440304"]}])
    draft = await create(client, auth, request=request)
    areas = [info["areas"][0] for info in draft["alert"]["info"]]
    assert [a["desc"] for a in areas] == ["福田区", "Futian District"]
    assert areas[0]["geocodes"] == [{"value_name": "adcode", "value": "440304"}]
    assert "福田区" in draft["alert"]["info"][0]["headline"]
    assert draft["targets"] is None
    await post(client, auth, "alice", draft["id"], "submit")
    issued = await post(client, auth, "bob", draft["id"], "approve")
    targets = issued["targets"]
    assert targets["codes"]["district"] == ["440304"]
    assert targets["levels"]["street"] == 10
    assert targets["counts"]["sms"] > 0 and targets["counts"]["cell_broadcast"] > 0
    assert set(targets["versions"]) == {"subscribers", "facilities"}


async def test_composed_alerts_follow_the_geometry_rules(client, auth) -> None:
    outside = await client.post("/api/alerts", json=red_rainstorm(areas=[{"desc": "HK", "geometry": box(
        114.15, 22.25, 114.2, 22.3)}]), headers=auth["alice"])
    assert outside.status == 422 and (await outside.json())["error"]["field"] == "areas[0]"
    bow = await client.post("/api/alerts", json=red_rainstorm(areas=[{"desc": "x", "geometry": BOW_TIE}]),
                            headers=auth["alice"])
    assert bow.status == 422 and (await bow.json())["error"]["field"] == "areas[0].geometry"
    partly = await create(client, auth, request=red_rainstorm(areas=[{"desc": "bay", "geometry": box(
        114.0, 22.3, 114.1, 22.6)}]))
    assert [n["code"] for n in partly["notices"]] == ["clipped"]
    # The CAP message keeps the area as drawn.
    assert partly["alert"]["info"][0]["areas"][0]["geometry"] == box(114.0, 22.3, 114.1, 22.6)
