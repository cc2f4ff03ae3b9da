"""Who an alert reaches on each channel: recipients drawn from the registries for an area.

One function yields the recipients of one channel, lazily and in a stable order, so a
planner can stream 17.8 million subscribers in batches without holding them all, and a
smoke test can take the first few. Subscribers come from the columnar registry (their
opt-ins and addresses); cells, screens, loudspeakers and stations from the facility
registry; webhook partners (read from Redis by the caller); Weibo and the CAP feed have one recipient each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from shapely.geometry.base import BaseGeometry

from channels.base import Recipient
from channels.webhook import Partner, partner_recipient
from geotarget.registry import Targets
from geotarget.subscribers import Channel

# Subscriber channels and the column holding each one's address (phone numbers for SMS and voice).
SUBSCRIBER_CHANNELS: dict[str, tuple[Channel, str | None]] = {
    "sms": (Channel.SMS, None),
    "voice": (Channel.VOICE, None),
    "email": (Channel.EMAIL, "email"),
    "wechat": (Channel.WECHAT, "wechat_openid"),
    "app_push": (Channel.APP_PUSH, "app_token"),
}
BUREAU_ACCOUNT = Recipient("bureau", "bureau")
PUBLIC_FEED = Recipient("public-feed", "public-feed")
CHUNK = 65_536


def subscriber_recipients(channel: str, area: BaseGeometry, targets: Targets) -> Iterator[Recipient]:
    """Subscribers inside ``area`` who opted in to ``channel``, in registry order."""
    snapshot = targets.subscribers
    if snapshot is None:
        return
    bit, column = SUBSCRIBER_CHANNELS[channel]
    rows = snapshot.select(area)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        chunk = chunk[(np.asarray(snapshot.channels[chunk]) & int(bit)) != 0]
        ids = snapshot.ids[chunk]
        languages = snapshot.language[chunk]
        if column is None:
            addresses = [f"+{int(p)}" for p in snapshot.phones[chunk]]
        else:
            addresses = [raw.decode() for raw in getattr(snapshot, column)[chunk]]
        for sub_id, address, language in zip(ids, addresses, languages, strict=True):
            yield Recipient(str(int(sub_id)), address, snapshot.languages[int(language)])


def recipients_for(channel: str, area: BaseGeometry, targets: Targets, *,
                   partners: Sequence[Partner] = ()) -> Iterator[Recipient]:
    """Every recipient of ``channel`` for an alert covering ``area`` (already clipped to the city)."""
    if channel in SUBSCRIBER_CHANNELS:
        yield from subscriber_recipients(channel, area, targets)
        if channel == "app_push":
            # Devices subscribed to a district's topic get it once through the topic too.
            for unit, fraction in targets.gazetteer.units_hit(area, "district"):
                if fraction > 0:
                    yield Recipient(f"topic-{unit.code}", f"/topics/district-{unit.code}",
                                    attributes={"kind": "topic"})
        return
    facilities = targets.facilities
    if channel == "cell_broadcast" and facilities is not None:
        for sector in facilities.sectors_intersecting(area):
            yield Recipient(sector.id, sector.id)
    elif channel == "display_screen" and facilities is not None:
        for screen in facilities.screens_inside(area):
            yield Recipient(screen.id, screen.id, attributes={
                "lines": str(screen.lines), "chars_per_line": str(screen.chars_per_line),
                "community": screen.community})
    elif channel == "loudspeaker" and facilities is not None:
        for speaker in facilities.loudspeakers_inside(area):
            yield Recipient(speaker.id, speaker.id, attributes={"community": speaker.community})
    elif channel in ("tv", "radio") and facilities is not None:
        for station in facilities.stations_intersecting(area):
            if station.kind.value == channel:
                yield Recipient(station.id, station.id, attributes={"name": station.name})
    elif channel == "webhook":
        # Every partner: the adapter applies each partner's filters and reports "suppressed".
        for partner in partners:
            yield partner_recipient(partner)
    elif channel == "weibo":
        yield BUREAU_ACCOUNT
    elif channel == "cap_feed":
        yield PUBLIC_FEED
