"""Preview: every channel's rendering of an alert, and the submit rule that text must fit the channels chosen."""

from __future__ import annotations

from channels import sms_text
from channels.cell_broadcast import cbs_length
from channels.weibo import weibo_length
from tests.broadcast.test_api import create, post, red_rainstorm

CHANNELS = {"sms", "cell_broadcast", "voice", "email", "wechat", "weibo", "app_push", "tv", "radio",
            "display_screen", "loudspeaker", "webhook", "cap_feed"}


async def test_preview_shows_every_channel_in_both_languages(client, auth) -> None:
    draft = await create(client, auth)
    response = await client.get(f"/api/alerts/{draft['id']}/preview", headers=auth["bob"])
    assert response.status == 200
    channels = (await response.json())["channels"]
    assert set(channels) == CHANNELS
    for name, channel in channels.items():
        assert channel["selected"] is True
        assert set(channel["languages"]) == {"zh-CN", "en"}, name
        assert all(text["body"] and text["fits"] for text in channel["languages"].values()), name
    sms = channels["sms"]["languages"]
    assert sms["zh-CN"]["encoding"] == "UCS-2" and sms["en"]["encoding"] == "GSM-7"
    for language, text in sms.items():
        assert text["segments"] == sms_text.summary(text["body"]).segments > 1, language
        assert text["body"].startswith("【深圳气象】" if language == "zh-CN" else "[SZ Weather]")
    cbs = channels["cell_broadcast"]["languages"]["zh-CN"]
    assert cbs["pages"] == cbs_length(cbs["body"]).pages and cbs["limit"] == 15
    weibo = channels["weibo"]["languages"]["en"]
    assert weibo["characters"] == weibo_length(weibo["body"]) < weibo["length"]  # two ASCII count as one
    assert channels["email"]["languages"]["en"]["subject"]


async def test_text_that_does_not_fit_a_chosen_channel_cannot_be_submitted(client, auth) -> None:
    long_instruction = "请立即转移到安全地带，" * 80
    request = red_rainstorm(info=[{"language": "zh-CN", "instruction": long_instruction}, {"language": "en"}])
    draft = await create(client, auth, request=request)
    preview = await (await client.get(f"/api/alerts/{draft['id']}/preview", headers=auth["bob"])).json()
    sms = preview["channels"]["sms"]["languages"]["zh-CN"]
    assert sms["fits"] is False and sms["segments"] > sms["limit"] == 10
    too_long = [name for name, channel in preview["channels"].items()
                if not all(text["fits"] for text in channel["languages"].values())]
    assert {"sms", "cell_broadcast"} <= set(too_long)
    refused = await post(client, auth, "alice", draft["id"], "submit", status=409)
    assert refused["error"]["field"] == f"channels.{too_long[0]}"
    # Without SMS (nor the other long-text channels) among its channels, the same text may go.
    response = await client.patch(f"/api/alerts/{draft['id']}",
                                  json={"channels": [n for n in CHANNELS if n not in too_long]},
                                  headers=auth["alice"])
    assert response.status == 200
    preview = await (await client.get(f"/api/alerts/{draft['id']}/preview", headers=auth["bob"])).json()
    assert preview["channels"]["sms"]["selected"] is False and preview["channels"]["weibo"]["selected"] is True
    submitted = await post(client, auth, "alice", draft["id"], "submit")
    assert submitted["state"] == "submitted"


async def test_unknown_channels_are_refused(client, auth) -> None:
    response = await client.post("/api/alerts", json=red_rainstorm(channels=["sms", "pigeon"]), headers=auth["alice"])
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["field"] == "channels[1]" and "pigeon" in error["message"]


async def test_preview_needs_a_token_and_a_known_alert(client, auth) -> None:
    assert (await client.get("/api/alerts/nope/preview")).status == 401
    assert (await client.get("/api/alerts/nope/preview", headers=auth["bob"])).status == 404
