"""A reader of the service's public CAP Atom feed, as a news desk or an aggregator runs one.

It polls ``feed_url`` every ``interval`` seconds with ``If-None-Match`` (the last ETag),
and for each entry it has not seen it fetches the linked CAP document (``rel="alternate"``,
``type="application/cap+xml"``) and reads it with the service's own strict CAP parser.

Recorded kinds: ``entry`` (id, title, updated, cap_url, identifier, msg_type), ``withdrawn``
(id: an entry seen before that left the feed), ``not_modified`` (etag: a 304), ``waiting``
(error, url: the feed could not be reached yet, before it ever answered: a reader started before
the service, as ``broadcast up`` starts the simulators first) and ``error`` (status or error,
url: a poll or CAP fetch that failed after that, or CAP that did not parse).

Inspection API: the shared ``/_sim/`` routes, plus ``POST /_sim/poll`` to poll now
(answers ``{"status": 200|304|..., "new_entries": n}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp
import defusedxml
import defusedxml.ElementTree as SafeET
from aiohttp import web

from broadcast.cap import from_xml
from broadcast.errors import BroadcastError
from ops.simulators.base import Recorder, http_simulator

ATOM = "{http://www.w3.org/2005/Atom}"
DEFAULT_FEED_URL = "http://127.0.0.1:8080/feed/cap.atom"


@dataclass
class Reader:
    """The reader's memory between polls, and one poll."""

    feed_url: str
    recorder: Recorder
    etag: str | None = None
    seen: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answered: bool = False  # the feed has answered at least once

    async def poll(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """Fetch the feed once; record what is new. Polls never overlap."""
        async with self.lock:
            headers = {"Accept": "application/atom+xml"}
            if self.etag:
                headers["If-None-Match"] = self.etag
            try:
                async with http.get(self.feed_url, headers=headers) as response:
                    status, body = response.status, await response.read()
                    etag = response.headers.get("ETag")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.recorder.record("error" if self.answered else "waiting", url=self.feed_url,
                                     error=f"{type(exc).__name__}: {exc}")
                return {"status": None, "new_entries": 0}
            self.answered = True
            if status == 304:
                self.recorder.record("not_modified", etag=self.etag)
                return {"status": 304, "new_entries": 0}
            if status != 200:
                self.recorder.record("error", url=self.feed_url, status=status)
                return {"status": status, "new_entries": 0}
            try:
                feed = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
            except (ET.ParseError, defusedxml.DefusedXmlException) as exc:
                self.recorder.record("error", url=self.feed_url, error=f"bad Atom: {exc}")
                return {"status": status, "new_entries": 0}
            self.etag = etag
            new = 0
            current = set()
            for entry in feed.findall(f"{ATOM}entry"):
                entry_id = entry.findtext(f"{ATOM}id", "")
                current.add(entry_id)
                if entry_id in self.seen:
                    continue
                if await self._read_entry(http, entry, entry_id):
                    self.seen.add(entry_id)
                    new += 1
            for gone in sorted(self.seen - current):
                self.seen.discard(gone)
                self.recorder.record("withdrawn", id=gone)
            return {"status": 200, "new_entries": new}

    async def _read_entry(self, http: aiohttp.ClientSession, entry: ET.Element, entry_id: str) -> bool:
        link = next((node.get("href") for node in entry.findall(f"{ATOM}link")
                     if node.get("rel", "alternate") == "alternate" and node.get("type") == "application/cap+xml"),
                    None)
        if not link:
            self.recorder.record("error", url=self.feed_url, error=f"entry {entry_id} has no CAP link")
            return False
        cap_url = urljoin(self.feed_url, link)
        try:
            async with http.get(cap_url, headers={"Accept": "application/cap+xml"}) as response:
                if response.status != 200:
                    self.recorder.record("error", url=cap_url, status=response.status)
                    return False
                alert = from_xml(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.recorder.record("error", url=cap_url, error=f"{type(exc).__name__}: {exc}")
            return False
        except BroadcastError as exc:
            self.recorder.record("error", url=cap_url, error=f"bad CAP: {exc.message}")
            return False
        self.recorder.record("entry", id=entry_id, title=entry.findtext(f"{ATOM}title"),
                             updated=entry.findtext(f"{ATOM}updated"), cap_url=cap_url,
                             identifier=alert.identifier, msg_type=alert.msg_type.value)
        return True


READER = web.AppKey("feed_reader", Reader)
HTTP = web.AppKey("feed_reader_http", aiohttp.ClientSession)


def create_app(feed_url: str = DEFAULT_FEED_URL, interval: float = 30.0,
               recorder: Recorder | None = None) -> web.Application:
    """The feed-reader simulator.

    Args:
        feed_url: The Atom feed to poll.
        interval: Seconds between polls; 0 polls only on ``POST /_sim/poll``.
        recorder: Where observations are recorded (a new one by default).
    """

    def routes(app: web.Application, rec: Recorder) -> None:
        app[READER] = Reader(feed_url, rec)

        async def poll_now(request: web.Request) -> web.Response:
            return web.json_response(await request.app[READER].poll(request.app[HTTP]))

        app.router.add_post("/_sim/poll", poll_now)

    app = http_simulator("feed_reader", routes, recorder=recorder)

    async def polling(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            app[HTTP] = http
            task = asyncio.create_task(_poll_forever(app[READER], http, interval)) if interval > 0 else None
            yield
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.cleanup_ctx.append(polling)
    return app


async def _poll_forever(reader: Reader, http: aiohttp.ClientSession, interval: float) -> None:
    while True:
        await reader.poll(http)
        await asyncio.sleep(interval)
