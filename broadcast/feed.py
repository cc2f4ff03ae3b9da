"""The public CAP feed: an Atom 1.0 feed of the active alerts, and each alert's CAP 1.2 document.

The ``cap_feed`` channel publishes here (:func:`publish`); anyone may read, without a token:

    GET /feed/cap.atom[?lang=en]       the active alerts, newest first (Atom 1.0)
    GET /feed/cap/{alert_id}.xml       one alert's CAP document (application/cap+xml)

Both answer with a strong ``ETag`` (a hash of the body) and ``Cache-Control: public,
max-age=30``, and answer ``If-None-Match`` with 304, so polling readers cost little. The
API's bearer-auth middleware must let ``/feed/`` through.

Storage (names in :mod:`broadcast.keys`): the sorted set ``FEED_ENTRIES`` (alert id ->
time published) and one JSON string per entry, ``feed_entry(alert_id)``, holding the CAP XML.
Each entry key carries a TTL a day past the alert's expiry, so nothing outlives its use even
if housekeeping never runs; :func:`withdraw_expired` removes expired entries (and ids whose
key has gone) from the set. An Update or a Cancel replaces the entries of the messages it
references: a reader sees the Cancel, not the alert it cancels, until the Cancel expires.

The functions take either Redis client: the channel workers hold a ``redis.asyncio.Redis``,
the API a synchronous ``redis.Redis`` (whose calls run in a worker thread here).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio
from aiohttp import web

from broadcast import keys
from broadcast.model import MsgType
from channels.base import Message

ATOM_NAMESPACE = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CAP_MEDIA_TYPE = "application/cap+xml"
ATOM_MEDIA_TYPE = "application/atom+xml"
FEED_PATH = "/feed/cap.atom"
CACHE_CONTROL = "public, max-age=30"
# An alert without <expires> stays this long, unless an Update or Cancel replaces it first.
DEFAULT_LIFETIME = timedelta(hours=24)
# Entry keys outlive the alert by this much, so a late reader still finds a just-expired CAP.
KEY_GRACE = timedelta(days=1)
DEFAULT_LANGUAGE = "zh-CN"
FEED_TITLES = {
    "zh-CN": "深圳市气象台 生效中的预警信号（CAP）",
    "en": "Shenzhen Meteorological Observatory: warnings in force (CAP)",
}
FEED_AUTHOR = "深圳市气象台 Shenzhen Meteorological Observatory"
# Namespace for the entries' urn:uuid ids, derived from the CAP message reference.
_ENTRY_NAMESPACE = uuid.UUID("6f2b7c52-1d4e-5b8a-9a63-3c1f0e2d4b71")

AnyRedis = redis.Redis | redis.asyncio.Redis


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One published alert, as stored in ``feed_entry(alert_id)``."""

    id: str  # the alert id
    identifier: str  # CAP identifier
    sender: str
    sent: datetime
    msg_type: str
    status: str
    published: datetime
    expires: datetime  # when it leaves the feed
    titles: dict[str, str]  # language -> headline
    summaries: dict[str, str]  # language -> rendered summary (templates/cap_feed/)
    cap_xml: str
    references: list[str] = field(default_factory=list)  # "sender,identifier" it replaces

    @property
    def urn(self) -> str:
        """The entry's permanent Atom id, derived from the CAP message reference."""
        return "urn:uuid:" + str(uuid.uuid5(_ENTRY_NAMESPACE, f"{self.sender},{self.identifier},{self.sent}"))

    def title(self, language: str) -> str:
        return _pick(self.titles, language)

    def summary(self, language: str) -> str:
        return _pick(self.summaries, language)

    def to_json(self) -> str:
        doc = asdict(self)
        for name in ("sent", "published", "expires"):
            doc[name] = getattr(self, name).isoformat()
        return json.dumps(doc, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> FeedEntry:
        doc = json.loads(raw)
        for name in ("sent", "published", "expires"):
            doc[name] = datetime.fromisoformat(doc[name])
        return cls(**doc)


def _pick(texts: dict[str, str], language: str) -> str:
    if language in texts:
        return texts[language]
    primary = language.split("-")[0].lower()
    for tag, text in texts.items():
        if tag.split("-")[0].lower() == primary:
            return text
    return next(iter(texts.values()), "")


# ---------------------------------------------------------------- Redis, either client


async def _call(client: AnyRedis, command: str, *args: Any, **kwargs: Any) -> Any:
    method = getattr(client, command)
    if isinstance(client, redis.asyncio.Redis):
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)


async def _transaction(client: AnyRedis, build: Callable[[Any], None]) -> None:
    """Queue commands with ``build(pipeline)`` and run them in one MULTI/EXEC."""
    if isinstance(client, redis.asyncio.Redis):
        async with client.pipeline(transaction=True) as pipe:
            build(pipe)
            await pipe.execute()
        return

    def run() -> None:
        with client.pipeline(transaction=True) as pipe:
            build(pipe)
            pipe.execute()

    await asyncio.to_thread(run)


# ---------------------------------------------------------------- store


def _now() -> datetime:
    return datetime.now(UTC)


def entry_for(message: Message, published: datetime, replaced: Sequence[FeedEntry] = ()) -> FeedEntry:
    """The feed entry of a rendered alert (not stored).

    Args:
        message: The alert rendered for ``cap_feed``.
        published: When it enters the feed.
        replaced: Entries this Update or Cancel replaces; a Cancel without an expiry of its own
            stays as long as they would have.

    Returns:
        The entry; titles are the template's ``subject`` (else the CAP headline) per language.
    """
    alert = message.alert
    titles: dict[str, str] = {}
    summaries: dict[str, str] = {}
    for info in alert.infos:
        text = message.text_for(info.language) if message.texts else None
        titles[info.language] = (text.subject if text and text.subject else None) or info.headline or info.event
        summaries[info.language] = text.body if text else (info.description or "")
    expires = alert.expires
    if expires is None:
        later = [entry.expires for entry in replaced]
        expires = max(later) if later else published + DEFAULT_LIFETIME
    return FeedEntry(
        id=message.alert_id, identifier=alert.identifier, sender=alert.sender, sent=alert.sent,
        msg_type=alert.msg_type.value, status=alert.status.value, published=published, expires=expires,
        titles=titles, summaries=summaries, cap_xml=message.cap_xml.decode("utf-8"),
        references=[f"{ref.sender},{ref.identifier}" for ref in alert.references])


async def load_entries(client: AnyRedis, *, now: datetime | None = None) -> list[FeedEntry]:
    """The stored entries, newest first; with ``now``, only those not yet expired."""
    ids = await _call(client, "zrevrange", keys.FEED_ENTRIES, 0, -1)
    if not ids:
        return []
    raws = await _call(client, "mget", [keys.feed_entry(_text(i)) for i in ids])
    entries = [FeedEntry.from_json(raw) for raw in raws if raw is not None]
    return [e for e in entries if now is None or e.expires > now]


async def get_entry(client: AnyRedis, alert_id: str) -> FeedEntry | None:
    """One stored entry, or None."""
    raw = await _call(client, "get", keys.feed_entry(alert_id))
    return FeedEntry.from_json(raw) if raw is not None else None


async def publish(client: AnyRedis, message: Message, *, now: datetime | None = None) -> FeedEntry:
    """Put an alert in the feed (idempotent: publishing it again keeps its first publication time).

    An Update or Cancel removes the entries of the messages it references. Expired entries
    are withdrawn on the way.

    Args:
        client: Redis.
        message: The alert rendered for ``cap_feed``.
        now: The publication time (default: the clock).

    Returns:
        The stored entry; its ``id`` is the alert id.

    Raises:
        redis.RedisError: Redis is unreachable.
    """
    now = now or _now()
    current = await load_entries(client)
    previous = next((e for e in current if e.id == message.alert_id), None)
    wanted = {f"{ref.sender},{ref.identifier}" for ref in message.alert.references}
    replaced = []
    if message.alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and wanted:
        replaced = [e for e in current if f"{e.sender},{e.identifier}" in wanted and e.id != message.alert_id]
    entry = entry_for(message, previous.published if previous else now, replaced)
    stale = [e.id for e in replaced] + [e.id for e in current if e.expires <= now and e.id != entry.id]

    def build(pipe: Any) -> None:
        pipe.set(keys.feed_entry(entry.id), entry.to_json(), exat=_expire_at(entry.expires, now))
        pipe.zadd(keys.FEED_ENTRIES, {entry.id: entry.published.timestamp()})
        for alert_id in stale:
            pipe.zrem(keys.FEED_ENTRIES, alert_id)
            pipe.delete(keys.feed_entry(alert_id))

    await _transaction(client, build)
    return entry


def _expire_at(expires: datetime, now: datetime) -> int:
    return int(max(expires, now).timestamp() + KEY_GRACE.total_seconds())


async def withdraw_expired(client: AnyRedis, now: datetime | None = None) -> list[str]:
    """Take expired alerts out of the feed (and drop ids whose entry key has gone).

    Returns:
        The withdrawn alert ids.
    """
    now = now or _now()
    ids = [_text(i) for i in await _call(client, "zrange", keys.FEED_ENTRIES, 0, -1)]
    if not ids:
        return []
    raws = await _call(client, "mget", [keys.feed_entry(i) for i in ids])
    gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None or FeedEntry.from_json(raw).expires <= now]
    if gone:
        def build(pipe: Any) -> None:
            pipe.zrem(keys.FEED_ENTRIES, *gone)
            pipe.delete(*(keys.feed_entry(i) for i in gone))

        await _transaction(client, build)
    return gone


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------- Atom


def _stamp(value: datetime) -> str:
    """RFC 3339, as Atom requires."""
    return value.replace(microsecond=0).isoformat()


def cap_url(base_url: str, alert_id: str) -> str:
    return f"{base_url.rstrip('/')}/feed/cap/{alert_id}.xml"


def render_atom(entries: Iterable[FeedEntry], base_url: str, *, language: str = DEFAULT_LANGUAGE) -> bytes:
    """The Atom 1.0 document of ``entries``.

    Args:
        entries: The entries to list, in the order given.
        base_url: Where the service is reached (``https://alerts.example``), for the links.
        language: The language of titles and summaries (each entry falls back to its first).

    Returns:
        UTF-8 bytes. The feed's ``updated`` is the newest entry's publication time (the Unix
        epoch for an empty feed), so the same entries always give the same bytes and ETag.
    """
    entries = list(entries)
    base = base_url.rstrip("/")
    self_href = base + FEED_PATH + ("" if language == DEFAULT_LANGUAGE else f"?lang={language}")
    # Unqualified tags under a plain xmlns attribute: prefix-free output without touching
    # ElementTree's global namespace registry (as broadcast.cap does).
    feed = ET.Element("feed", {"xmlns": ATOM_NAMESPACE, XML_LANG: language})
    ET.SubElement(feed, "id").text = base + FEED_PATH
    ET.SubElement(feed, "title").text = _pick(FEED_TITLES, language)
    newest = max((e.published for e in entries), default=datetime.fromtimestamp(0, UTC))
    ET.SubElement(feed, "updated").text = _stamp(newest)
    ET.SubElement(feed, "link", {"rel": "self", "type": ATOM_MEDIA_TYPE, "href": self_href})
    ET.SubElement(ET.SubElement(feed, "author"), "name").text = FEED_AUTHOR
    for entry in entries:
        node = ET.SubElement(feed, "entry")
        ET.SubElement(node, "id").text = entry.urn
        ET.SubElement(node, "title").text = entry.title(language)
        ET.SubElement(node, "updated").text = _stamp(entry.published)
        ET.SubElement(node, "published").text = _stamp(entry.published)
        ET.SubElement(node, "summary", {"type": "text"}).text = entry.summary(language)
        ET.SubElement(node, "category", {"term": entry.msg_type})
        ET.SubElement(node, "link", {"rel": "alternate", "type": CAP_MEDIA_TYPE,
                                            "href": cap_url(base, entry.id)})
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


# ---------------------------------------------------------------- HTTP


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _not_modified(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


def _cached_response(request: web.Request, body: bytes, content_type: str) -> web.Response:
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": content_type})


def add_routes(app: web.Application, redis_key: web.AppKey[Any], *, base_url: str | None = None) -> None:
    """Serve the feed from ``app``: ``GET /feed/cap.atom`` and ``GET /feed/cap/{alert_id}.xml``.

    Args:
        app: The application.
        redis_key: Where ``app`` keeps its Redis client (sync or asyncio).
        base_url: The public address used in the feed's links; default: the request's own
            scheme and host (set it when the service sits behind a proxy).
    """

    def base(request: web.Request) -> str:
        return base_url or str(request.url.origin())

    async def atom(request: web.Request) -> web.Response:
        language = request.query.get("lang", DEFAULT_LANGUAGE)
        if language not in FEED_TITLES:
            raise web.HTTPBadRequest(text=f"lang must be one of {', '.join(FEED_TITLES)}")
        entries = await load_entries(request.app[redis_key], now=_now())
        body = render_atom(entries, base(request), language=language)
        return _cached_response(request, body, f"{ATOM_MEDIA_TYPE}; charset=utf-8")

    async def cap_document(request: web.Request) -> web.Response:
        entry = await get_entry(request.app[redis_key], request.match_info["alert_id"])
        if entry is None:
            raise web.HTTPNotFound(text="no such alert in the feed")
        return _cached_response(request, entry.cap_xml.encode("utf-8"), f"{CAP_MEDIA_TYPE}; charset=utf-8")

    app.router.add_get(FEED_PATH, atom)
    app.router.add_get(r"/feed/cap/{alert_id:[A-Za-z0-9_-]+}.xml", cap_document)
