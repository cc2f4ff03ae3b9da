"""Cell broadcast: alerts to every phone in a set of cell sectors, through a Cell Broadcast Centre.

The CBC is driven over the ECBE REST interface of osmo-cbc:

    POST   /api/ecbe/v1/message                 create a message (201 "Created"; 409 when a message
                                                with that message_id is still active; 400 + reason)
    DELETE /api/ecbe/v1/message/{message_id}    withdraw it (200 "OK"; 404 when none is active)

osmo-cbc answers plain-text bodies and knows only ``"scope": {"scope_plmn": {}}``; our CBC
additionally takes ``"scope": {"scope_cell_list": {"cell_list": ["CS00001-1", ...]}}`` (the
operator's sector ids, which is what our recipients are) and HTTP basic authentication.

One CBC message per alert and language, addressed to the cells of the batch; every cell
of the batch gets every language. So ``max_batch`` is large: a second batch of the same
alert would reuse the message id, which osmo-cbc refuses while the first is active.

Message identifier (3GPP TS 23.041 section 9.4.1.2.2, CMAS): the first language of the
alert uses the CMAS identifiers, the others the "additional language" ones (+13):

    Extreme, Immediate, Observed   4371 / 4384      Severe, Immediate, Observed   4375 / 4388
    Extreme, Immediate, other      4372 / 4385      Severe, Immediate, other      4376 / 4389
    Extreme, not Immediate, Obs.   4373 / 4386      Severe, not Immediate, Obs.   4377 / 4390
    Extreme, not Immediate, other  4374 / 4387      Severe, not Immediate, other  4378 / 4391
    Moderate, Minor, Unknown       4396 / 4397 (Public Safety Alert)
    status Exercise                4381 / 4394      status Test   4380 / 4393 (Required Monthly Test)

4370 (Presidential, EU-Alert level 1) is never used: handsets cannot opt out of it and it is
reserved to the national authority, not a city's weather service.

Serial number (TS 23.041 9.4.1.2.1): geographical scope ``cell_wide_immediate`` for
Extreme/Severe (shown at once) else ``cell_wide``; a 10-bit message code derived from the
identifier of the first message of the CAP chain (an Update's first reference), so every
version of one warning shares it; the update number is 0 for an Alert and, for an Update,
the number of messages it references (CAP lists the whole chain), modulo 16. Because
osmo-cbc keys messages by message id, an Update first withdraws (DELETE) the id and then
creates the new version; a Cancel withdraws the ids.

Pages (TS 23.041 9.4.1.2.4, TS 23.038): a CBS page carries 82 octets of user data, that is
93 GSM-7 septets (DCS 0x01, English; other languages 0x0F) or 41 UCS-2 characters (DCS
0x48); unused room is padded with <CR>. At most 15 pages: 1395 GSM-7 or 615 UCS-2
characters. GSM-7 is used when every character is in the default alphabet or its
extension table (an extension character takes two septets and never straddles a page).
A longer text is a ``permanent`` result for every cell with the reason; see
:func:`cbs_length` for the composer's preview.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp

from broadcast import keys
from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.model import Alert, Certainty, MsgType, Severity, Status, Urgency
from channels.base import (
    Capabilities,
    ChannelContext,
    DeliveryResult,
    Message,
    Recipient,
    channel_option,
    register,
    simulator_url,
)

PAGE_OCTETS = 82
GSM7_PAGE_SEPTETS = 93  # 93 * 7 = 651 bits fit in 82 octets
UCS2_PAGE_CHARS = 41
MAX_PAGES = 15
CR = 0x0D

DCS_GSM7_ENGLISH = 0x01
DCS_GSM7_UNSPECIFIED = 0x0F
DCS_UCS2 = 0x48  # general data coding, uncompressed, UCS-2, no message class
# TS 23.038 section 5, language group 0000 (GSM-7): their DCS values.
GSM7_LANGUAGE_DCS = {"de": 0x00, "en": 0x01, "it": 0x02, "fr": 0x03, "es": 0x04, "nl": 0x05, "sv": 0x06,
                     "da": 0x07, "pt": 0x08, "fi": 0x09, "no": 0x0A, "el": 0x0B, "tr": 0x0C, "hu": 0x0D,
                     "pl": 0x0E}

# TS 23.038 6.2.1 default alphabet (position = septet value) and its extension table (after ESC 0x1B).
GSM7_ALPHABET = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                 "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
                  "|": 0x40, "€": 0x65}
_GSM7_INDEX = {ch: i for i, ch in enumerate(GSM7_ALPHABET) if ch != "\x1b"}

CMAS_ADDITIONAL_LANGUAGE_OFFSET = 13
CMAS_PUBLIC_SAFETY = 4396
CMAS_PUBLIC_SAFETY_ADDITIONAL = 4397
CMAS_MONTHLY_TEST = 4380
CMAS_EXERCISE = 4381


# ---------------------------------------------------------------------- encoding


def _gsm7_units(text: str) -> list[tuple[int, ...]] | None:
    """Each character as its septets (one, or ESC + one), or None if one is not in GSM-7."""
    units: list[tuple[int, ...]] = []
    for ch in text:
        if ch in _GSM7_INDEX:
            units.append((_GSM7_INDEX[ch],))
        elif ch in GSM7_EXTENSION:
            units.append((0x1B, GSM7_EXTENSION[ch]))
        else:
            return None
    return units


def _ucs2_units(text: str) -> list[bytes]:
    # A character outside the BMP is a surrogate pair (4 octets) and is kept on one page.
    return [ch.encode("utf-16-be") for ch in text]


def _pack_septets(septets: Sequence[int]) -> bytes:
    """TS 23.038 6.1.2.1.1: septets packed least significant bit first."""
    out = bytearray()
    acc = bits = 0
    for septet in septets:
        acc |= (septet & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class CbsPages:
    """A text cut into CBS pages."""

    encoding: str  # "gsm7" or "ucs2"
    dcs: int
    texts: tuple[str, ...]  # the characters on each page
    payloads: tuple[bytes, ...]  # each page's 82 octets, padded with <CR>

    @property
    def count(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, slots=True)
class CbsLength:
    """How a text fits cell broadcast pages (for the composer's preview)."""

    encoding: str  # "gsm7" or "ucs2"
    characters: int
    pages: int
    max_pages: int
    page_capacity: int  # characters per page: 93 (GSM-7) or 41 (UCS-2)
    max_characters: int  # page_capacity * max_pages

    @property
    def fits(self) -> bool:
        return self.pages <= self.max_pages


def _fill(units: Sequence[Any], capacity: int, size: Any) -> list[list[int]]:
    """Indexes of units per page, greedily, no unit straddling a page."""
    pages: list[list[int]] = [[]]
    used = 0
    for index, unit in enumerate(units):
        need = size(unit)
        if used + need > capacity and pages[-1]:
            pages.append([])
            used = 0
        pages[-1].append(index)
        used += need
    return pages


def split_pages(text: str, language: str = "") -> CbsPages:
    """Cut ``text`` into 82-octet CBS pages: GSM-7 when it can, else UCS-2.

    Any number of pages is returned; the caller checks against :data:`MAX_PAGES`.
    """
    gsm = _gsm7_units(text)
    if gsm is not None:
        dcs = GSM7_LANGUAGE_DCS.get(language.split("-")[0].lower(), DCS_GSM7_UNSPECIFIED)
        groups = _fill(gsm, GSM7_PAGE_SEPTETS, len)
        texts, payloads = [], []
        for group in groups:
            septets = [s for i in group for s in gsm[i]]
            septets += [CR] * (GSM7_PAGE_SEPTETS - len(septets))
            texts.append("".join(text[i] for i in group))
            payloads.append(_pack_septets(septets))
        return CbsPages("gsm7", dcs, tuple(texts), tuple(payloads))
    ucs = _ucs2_units(text)
    groups = _fill(ucs, PAGE_OCTETS, len)
    texts, payloads = [], []
    for group in groups:
        data = b"".join(ucs[i] for i in group)
        data += b"\x00\x0d" * ((PAGE_OCTETS - len(data)) // 2)
        texts.append("".join(text[i] for i in group))
        payloads.append(data)
    return CbsPages("ucs2", DCS_UCS2, tuple(texts), tuple(payloads))


def cbs_length(text: str) -> CbsLength:
    """How many CBS pages ``text`` takes, and whether it fits in 15.

    Characters are counted in the encoding's units: GSM-7 septets (an extension character
    such as ``€`` counts two) or UCS-2 characters.
    """
    gsm = _gsm7_units(text)
    if gsm is not None:
        pages = split_pages(text)
        return CbsLength("gsm7", sum(len(u) for u in gsm), pages.count if text else 0, MAX_PAGES,
                         GSM7_PAGE_SEPTETS, GSM7_PAGE_SEPTETS * MAX_PAGES)
    pages = split_pages(text)
    return CbsLength("ucs2", len(text.encode("utf-16-be")) // 2, pages.count, MAX_PAGES, UCS2_PAGE_CHARS,
                     UCS2_PAGE_CHARS * MAX_PAGES)


# ---------------------------------------------------------------------- identifiers


def message_identifier(alert: Alert, language: str) -> int:
    """The CMAS message identifier of ``alert`` in ``language`` (see the module docstring)."""
    additional = bool(alert.languages) and language.lower() != alert.languages[0].lower()
    offset = CMAS_ADDITIONAL_LANGUAGE_OFFSET if additional else 0
    if alert.status is Status.EXERCISE:
        return CMAS_EXERCISE + offset
    if alert.status is Status.TEST:
        return CMAS_MONTHLY_TEST + offset
    info = alert.info_for(language) or (alert.infos[0] if alert.infos else None)
    severity = info.severity if info else Severity.UNKNOWN
    if severity not in (Severity.EXTREME, Severity.SEVERE):
        return CMAS_PUBLIC_SAFETY_ADDITIONAL if additional else CMAS_PUBLIC_SAFETY
    assert info is not None
    base = 4371 if severity is Severity.EXTREME else 4375
    base += 0 if info.urgency is Urgency.IMMEDIATE else 2
    base += 0 if info.certainty is Certainty.OBSERVED else 1
    return base + offset


def message_code(alert: Alert) -> int:
    """The 10-bit message code shared by every version of one warning (its first CAP message)."""
    origin = alert.references[0].identifier if alert.references else alert.identifier
    return zlib.crc32(origin.encode("utf-8")) % 1024


def update_number(alert: Alert) -> int:
    if alert.msg_type is MsgType.UPDATE:
        return max(1, len(alert.references)) % 16
    return 0


def is_sector_id(address: str) -> bool:
    """A sector id is ``<site>-<sector number>`` (``CS00001-1``): printable, no spaces."""
    site, dash, number = address.rpartition("-")
    return bool(site) and bool(dash) and number.isdigit() and 1 <= int(number) <= 99 \
        and site.isascii() and site.replace("_", "").replace(".", "").replace("-", "").isalnum()


# ---------------------------------------------------------------------- the adapter


@dataclass(frozen=True, slots=True)
class CellBroadcastConfig:
    url: str  # the CBC's base URL; the ECBE paths are appended
    username: str
    password: str
    cbe_name: str  # how the CBC knows us (CBCMSG cbe_name)
    repetition_period: int  # CBSP units of 1.883 s (1..4095)
    timeout: float

    def __post_init__(self) -> None:
        if not 1 <= self.repetition_period <= 4095:
            raise InvalidInput("repetition_period is 1..4095 (units of 1.883 s)",
                               field="cell_broadcast.repetition_period")
        if self.timeout <= 0:
            raise InvalidInput("timeout must be positive", field="cell_broadcast.timeout")

    @classmethod
    def from_settings(cls, settings: Any) -> CellBroadcastConfig:
        try:
            return cls(
                url=channel_option(settings, "cell_broadcast", "url", simulator_url(settings, "cbc")).rstrip("/"),
                username=channel_option(settings, "cell_broadcast", "username", "szmb"),
                password=channel_option(settings, "cell_broadcast", "password", "demo-cbc-secret"),
                cbe_name=channel_option(settings, "cell_broadcast", "cbe_name", "szmb-alerts"),
                repetition_period=int(channel_option(settings, "cell_broadcast", "repetition_period", "32")),
                timeout=float(channel_option(settings, "cell_broadcast", "timeout", "10")),
            )
        except ValueError as exc:
            raise InvalidInput(f"bad cell_broadcast option: {exc}", field="channel_options") from exc


class _Outcome:
    """The result of one CBC request, to apply to every cell of the batch."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        self.kind = kind  # accepted / permanent / transient / throttled
        self.detail = detail
        self.retry_after = retry_after


@register
class CellBroadcastAdapter:
    name: ClassVar[str] = "cell_broadcast"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch=50_000, max_length=GSM7_PAGE_SEPTETS * MAX_PAGES, segment_rule="cbs", rate_per_second=5.0,
        supports_receipts=False, supports_ack=False, kind="broadcast", single_request=True)

    def __init__(self, context: ChannelContext) -> None:
        self.config = CellBroadcastConfig.from_settings(context.settings)
        self._http = context.http
        self._redis = context.redis
        credentials = f"{self.config.username}:{self.config.password}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}

    def endpoint(self) -> str:
        return f"{self.config.url}/api/ecbe/v1/message"

    async def aclose(self) -> None:
        """Nothing to close: the HTTP session belongs to the caller."""

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """Broadcast (or withdraw) ``message`` in the batch's cells: one CBC message per language.

        Raises:
            TransientDeliveryError: the CBC is unreachable or refuses our credentials.
        """
        cells = [r for r in batch if is_sector_id(r.address)]
        results: dict[str, DeliveryResult] = {
            r.id: DeliveryResult.permanent(r, f"{r.address!r} is not a sector id (<site>-<n>)")
            for r in batch if not is_sector_id(r.address)}
        if cells:
            outcome = await self._deliver(message, [r.address for r in cells])
            for r in cells:
                results[r.id] = self._result(r, outcome)
        return [results[r.id] for r in batch]

    @staticmethod
    def _result(recipient: Recipient, outcome: _Outcome) -> DeliveryResult:
        if outcome.kind == "accepted":
            return DeliveryResult.accepted(recipient, outcome.detail)
        if outcome.kind == "throttled":
            return DeliveryResult.throttled(recipient, outcome.detail, outcome.retry_after)
        if outcome.kind == "transient":
            return DeliveryResult.transient(recipient, outcome.detail, outcome.retry_after)
        return DeliveryResult.permanent(recipient, outcome.detail)

    async def _deliver(self, message: Message, cells: list[str]) -> _Outcome:
        alert = message.alert
        ids = {language: message_identifier(alert, language) for language in message.texts}
        # What this warning chain has on air now: an Update or Cancel withdraws exactly that,
        # even if a change of severity changed the message id.
        on_air = await self._on_air(alert)
        if alert.msg_type is MsgType.CANCEL:
            refs = []
            for message_id in sorted({*ids.values(), *on_air.values()}):
                outcome = await self._withdraw(message_id, missing_ok=True)
                if outcome.kind != "accepted":
                    return outcome
                refs.append(f"{message_id}:{outcome.detail}")
            await self._forget(alert)
            return _Outcome("accepted", "withdrawn " + ",".join(refs))

        bodies = {}
        for language, text in message.texts.items():
            pages = split_pages(text.body, language)
            if pages.count > MAX_PAGES:
                summary = cbs_length(text.body)
                return _Outcome("permanent", f"the {language} text needs {pages.count} cell broadcast pages "
                                             f"({summary.characters} {summary.encoding} characters); at most "
                                             f"{MAX_PAGES} pages of {summary.page_capacity} fit")
            bodies[language] = self._body(alert, language, ids[language], pages, cells)

        if alert.msg_type is MsgType.UPDATE:
            for message_id in sorted({*ids.values(), *on_air.values()}):
                outcome = await self._withdraw(message_id, missing_ok=True)
                if outcome.kind != "accepted":
                    return outcome
            await self._forget(alert)
        refs = []
        for language, body in bodies.items():
            outcome = await self._create(body)
            if outcome.kind != "accepted":
                return outcome
            await self._remember(alert, language, ids[language])
            serial = body["smscb_message"]["serial_nr"]["serial_nr_decoded"]
            refs.append(f"{ids[language]}/{serial['msg_code']}.{serial['update_nr']}")
        return _Outcome("accepted", ",".join(refs))

    async def _on_air(self, alert: Alert) -> dict[str, int]:
        if self._redis is None:
            return {}
        raw = await self._redis.hgetall(keys.cbc_active(message_code(alert)))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def _remember(self, alert: Alert, language: str, message_id: int) -> None:
        if self._redis is None:
            return
        key = keys.cbc_active(message_code(alert))
        ttl = int((alert.expires - datetime.now(UTC)).total_seconds()) + 86400 if alert.expires else 7 * 86400
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, language, message_id)
            pipe.expire(key, max(ttl, 60))
            await pipe.execute()

    async def _forget(self, alert: Alert) -> None:
        if self._redis is not None:
            await self._redis.delete(keys.cbc_active(message_code(alert)))

    def _body(self, alert: Alert, language: str, message_id: int, pages: CbsPages,
              cells: list[str]) -> dict[str, Any]:
        info = alert.info_for(language) or alert.infos[0]
        urgent = info.severity in (Severity.EXTREME, Severity.SEVERE)
        return {
            "cbe_name": self.config.cbe_name,
            "category": "high_priority" if urgent else "normal",
            "repetition_period": self.config.repetition_period,
            "num_of_bcast": self._broadcasts(alert),
            "scope": {"scope_cell_list": {"cell_list": cells}},
            "smscb_message": {
                "serial_nr": {"serial_nr_decoded": {
                    "geo_scope": "cell_wide_immediate" if urgent else "cell_wide",
                    "msg_code": message_code(alert),
                    "update_nr": update_number(alert),
                }},
                "message_id": message_id,
                "payload": {"payload_encoded": {"dcs": pages.dcs, "pages": [p.hex() for p in pages.payloads]}},
            },
        }

    def _broadcasts(self, alert: Alert) -> int:
        """Repeat until the alert expires; 0 (until withdrawn) when it never does."""
        if alert.expires is None:
            return 0
        seconds = (alert.expires - datetime.now(UTC)).total_seconds()
        return max(1, min(65535, int(seconds / (self.config.repetition_period * 1.883))))

    async def _create(self, body: dict[str, Any]) -> _Outcome:
        status, text, retry_after = await self._request("POST", self.endpoint(), body)
        if status in (200, 201):
            return _Outcome("accepted", text)
        if status == 409:
            message_id = body["smscb_message"]["message_id"]
            return _Outcome("permanent", f"CBC refused message id {message_id}: another message with this id "
                                         f"is still being broadcast ({text or 'HTTP 409'}); cancel it first")
        return self._failure(status, text, retry_after)

    async def _withdraw(self, message_id: int, *, missing_ok: bool) -> _Outcome:
        status, text, retry_after = await self._request("DELETE", f"{self.endpoint()}/{message_id}", None)
        if status == 200 or (status == 404 and missing_ok):
            return _Outcome("accepted", "ok" if status == 200 else "not-active")
        return self._failure(status, text, retry_after)

    @staticmethod
    def _failure(status: int, text: str, retry_after: float | None) -> _Outcome:
        if status == 429:
            return _Outcome("throttled", f"CBC throttling: {text}", retry_after or 1.0)
        if status >= 500:
            return _Outcome("transient", f"CBC error {status}: {text}", retry_after)
        return _Outcome("permanent", f"CBC refused the message ({status}): {text}")

    async def _request(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, str, float | None]:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self._http.request(method, url, json=body, headers=self._headers,
                                          timeout=timeout) as response:
                text = (await response.text()).strip()
                retry = response.headers.get("Retry-After")
                retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
                if response.status == 401:
                    raise TransientDeliveryError(f"CBC at {self.config.url} refused our credentials (401)")
                return response.status, text, retry_after
        except TimeoutError:
            return 504, f"no answer from the CBC within {self.config.timeout} s", None
        except aiohttp.ClientConnectorError as exc:
            raise TransientDeliveryError(f"CBC at {self.config.url} is unreachable: {exc}") from exc
        except aiohttp.ClientError as exc:
            return 503, f"connection to the CBC failed: {exc}", None
