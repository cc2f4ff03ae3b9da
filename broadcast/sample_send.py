"""Send an issued alert to the first few recipients of each channel: a smoke test of the channels.

Ops engineers use it to check every channel end to end after a deployment or a credential
change, and the demo uses it to show one warning landing in all 13 simulators. It sends
only alerts that were approved and issued (the two-person rule holds here too); the full
fan-out to every recipient is the dissemination pipeline's job.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import redis.asyncio
import shapely

import channels  # noqa: F401 - registers every adapter
from broadcast.cap import to_xml
from broadcast.errors import Conflict, TransientDeliveryError
from broadcast.recipients import recipients_for
from broadcast.records import AlertRecord, State
from broadcast.render import build_message
from broadcast.settings import Settings
from broadcast.signals import Signal
from channels.base import ChannelContext, DeliveryResult, DeliveryStatus, adapter_class
from channels.webhook import list_partners
from geotarget.areas import area_shape
from geotarget.registry import Targets


@dataclass(frozen=True, slots=True)
class ChannelOutcome:
    channel: str
    endpoint: str
    results: tuple[DeliveryResult, ...]
    error: str | None = None  # the channel as a whole was down

    def counts(self) -> dict[str, int]:
        return {status.value: sum(1 for r in self.results if r.status is status) for status in DeliveryStatus}


async def send_sample(record: AlertRecord, channel_names: Sequence[str], *, signal: Signal | None,
                      settings: Settings, targets: Targets, redis_url: str, limit: int) -> list[ChannelOutcome]:
    """Send ``record`` on each channel to at most ``limit`` of its recipients.

    Raises:
        Conflict: the alert is not issued.
        InvalidInput: an unknown channel name (field ``channel``).
    """
    if record.state is not State.ISSUED:
        raise Conflict(f"alert {record.id} is {record.state.value}; only an issued alert is sent", field="state")
    classes = {name: adapter_class(name) for name in channel_names}
    city = targets.gazetteer.city.geometry
    shapes = [s.intersection(city) for info in record.alert.infos for a in info.areas
              if (s := area_shape(a, targets.gazetteer)) is not None]
    area = shapely.union_all(shapes) if shapes else shapely.Polygon()
    cap_xml = to_xml(record.alert)
    outcomes = []
    async with aiohttp.ClientSession() as http:
        async_redis = redis.asyncio.Redis.from_url(redis_url)
        context = ChannelContext(settings, http, async_redis)
        try:
            partners = await list_partners(async_redis) if "webhook" in classes else []
            for name, cls in classes.items():
                recipients = list(itertools.islice(recipients_for(name, area, targets, partners=partners), limit))
                message = build_message(name, record.id, record.alert, signal=signal, timezone=settings.timezone,
                                        cap_xml=cap_xml)
                adapter = cls(context)
                try:
                    results = await adapter.send(message, recipients) if recipients else []
                    outcomes.append(ChannelOutcome(name, adapter.endpoint(), tuple(results)))
                except TransientDeliveryError as err:
                    outcomes.append(ChannelOutcome(name, adapter.endpoint(), (), error=err.message))
                finally:
                    await adapter.aclose()
        finally:
            await async_redis.aclose()
    return outcomes
