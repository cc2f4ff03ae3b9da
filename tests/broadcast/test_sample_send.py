"""The channel smoke test: only issued alerts go out, and unknown channels are refused."""

from __future__ import annotations

import pytest

from broadcast.api import SERVICE
from broadcast.errors import Conflict, InvalidInput
from broadcast.sample_send import send_sample
from broadcast.signals import load_catalogue
from tests.broadcast.test_api import create, post


async def test_only_an_issued_alert_is_sent_and_unknown_channels_are_refused(client, auth, settings,
                                                                              published_targets) -> None:
    service = client.app[SERVICE]
    draft = await create(client, auth)
    record = service.store.get(draft["id"])
    targets = published_targets.get()
    with pytest.raises(Conflict) as refused:
        await send_sample(record, ["cap_feed"], signal=None, settings=settings, targets=targets,
                          redis_url=settings.effective_redis_url, limit=1)
    assert refused.value.field == "state"
    await post(client, auth, "alice", draft["id"], "submit")
    await post(client, auth, "bob", draft["id"], "approve")
    record = service.store.get(draft["id"])
    with pytest.raises(InvalidInput) as unknown:
        await send_sample(record, ["cap_feed", "pigeon"], signal=None, settings=settings, targets=targets,
                          redis_url=settings.effective_redis_url, limit=1)
    assert unknown.value.field == "channel" and "pigeon" in unknown.value.message
    # The public feed needs no simulator: the issued alert is published and readable at once.
    signal = load_catalogue().get("rainstorm", "red")
    outcomes = await send_sample(record, ["cap_feed"], signal=signal, settings=settings, targets=targets,
                                 redis_url=settings.effective_redis_url, limit=1)
    assert [o.counts()["accepted"] for o in outcomes] == [1]
    feed = await client.get("/feed/cap.atom")
    assert feed.status == 200 and record.alert.identifier.encode() in await (
        await client.get(f"/feed/cap/{record.id}.xml")).read()
