"""The public CAP feed channel: "sending" an alert publishes it in the service's own Atom feed.

A pull channel: readers (news desks, aggregators, apps) poll ``GET /feed/cap.atom`` and fetch
each entry's CAP document (see :mod:`broadcast.feed`). There is one recipient, the feed
itself (:data:`PUBLIC_FEED`); an ``accepted`` result means published, with the entry id
(the alert id) as ``provider_ref``. Redis unreachable is the only way the channel is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from broadcast import feed
from broadcast.errors import TransientDeliveryError
from broadcast.settings import Settings
from channels.base import (
    Capabilities,
    ChannelContext,
    DeliveryResult,
    Message,
    Recipient,
    channel_option,
    register,
)

PUBLIC_FEED = "public-feed"


def public_feed_recipient() -> Recipient:
    """The channel's one recipient."""
    return Recipient(id=PUBLIC_FEED, address=feed.FEED_PATH)


@dataclass(frozen=True, slots=True)
class CapFeedConfig:
    public_url: str  # where readers find the service, for endpoint() and logs

    @classmethod
    def from_settings(cls, settings: Settings) -> CapFeedConfig:
        return cls(public_url=channel_option(settings, "cap_feed", "public_url", settings.callback_base_url))


@register
class CapFeedAdapter:
    """Publishes alerts in the public CAP Atom feed."""

    name = "cap_feed"
    capabilities = Capabilities(max_batch=1, max_length=None, segment_rule="none", rate_per_second=1000,
                                supports_receipts=False, supports_ack=False, kind="pull")

    def __init__(self, context: ChannelContext) -> None:
        self.config = CapFeedConfig.from_settings(context.settings)
        self.redis = context.redis

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """Publish ``message`` once, answering each recipient.

        Returns:
            ``accepted`` (provider_ref: the entry id) for :data:`PUBLIC_FEED`, ``permanent``
            for any other recipient id.

        Raises:
            TransientDeliveryError: no Redis in the context, or Redis is unreachable.
        """
        if self.redis is None:
            raise TransientDeliveryError("the cap_feed channel needs Redis (ChannelContext.redis)")
        results: list[DeliveryResult] = []
        entry_id: str | None = None
        for recipient in batch:
            if recipient.id != PUBLIC_FEED:
                results.append(DeliveryResult.permanent(recipient, f"unknown feed {recipient.id!r}; "
                                                                   f"the only recipient is {PUBLIC_FEED!r}"))
                continue
            if entry_id is None:
                try:
                    entry_id = (await feed.publish(self.redis, message)).id
                except redis.RedisError as exc:
                    raise TransientDeliveryError(f"cannot publish to the feed: {exc}") from exc
            results.append(DeliveryResult.accepted(recipient, provider_ref=entry_id))
        return results

    async def aclose(self) -> None:
        """Nothing to close: Redis belongs to the context."""

    def endpoint(self) -> str:
        return self.config.public_url.rstrip("/") + feed.FEED_PATH
