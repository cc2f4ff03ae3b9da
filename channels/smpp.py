"""SMPP 3.4: a small PDU codec, an asyncio client (ESME), and the SMS provider built on them.

This is the path for mass city-wide sending: one long-lived bind to the carrier's SMS
centre, ``window`` submit_sm PDUs outstanding at once (matched to their responses by
sequence number), enquire_link keepalives, delivery receipts (deliver_sm) parsed, stored
in Redis and handed to a callback.

Why our own codec and not aiosmpplib (0.7.4, evaluated): aiosmpplib is built around a
fire-and-forget queue (a broker the ESME drains, hooks called later, reconnecting
forever), whereas an adapter must return one result per recipient from ``send()``; it has
no window of outstanding PDUs (it sends as fast as the queue yields, or sleeps inside its
own throttle handler); and its GSM-7 splitting counts characters, not septets, so a text
with ``€`` or ``[`` can overflow a part or cut an escape pair. The SMPP 3.4 subset we
need (bind, submit_sm, deliver_sm, enquire_link, unbind, generic_nack) is a few hundred
lines with no dependency, tested against an independent implementation (smpplib) through
the simulator in ``ops/simulators/smpp.py``, which uses this codec too.

Errors, mapped at the boundary:

    connection refused, bind refused (0x0D, 0x0E bad password, 0x0F bad system_id...)
        -> TransientDeliveryError for the batch (the channel is down for us)
    submit_sm_resp 0x58 ESME_RTHROTTLED, 0x14 ESME_RMSGQFUL  -> throttled, retry_after
    0x0B ESME_RINVDSTADR and other errors about the message   -> permanent
    anything else, no response in time, connection lost       -> transient

A receipt is stored as a JSON string under ``keys.receipt(message_id)`` (TTL
``keys.RECEIPT_TTL_SECONDS``), in the shape of Twilio's receipts::

    {"provider": "smpp", "kind": "sms", "status": "delivered", "final": true, "error_code": 0,
     "to": "+86...", "time": "...", "rank": 3, "provider_status": "DELIVRD", "done_date": "2607011005"}

A concatenated message gets one receipt, requested on its last part; ``provider_ref`` is the last
part's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import inspect
import itertools
import logging
import random
import re
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from broadcast import receipts
from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.settings import Settings
from channels import sms_text
from channels.base import (
    ChannelContext,
    DeliveryResult,
    Emission,
    Recipient,
    channel_option,
    simulator_port,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- protocol constants


class Command(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015


RESPONSE_BIT = 0x80000000
BIND_COMMANDS = {
    "transmitter": Command.BIND_TRANSMITTER,
    "receiver": Command.BIND_RECEIVER,
    "transceiver": Command.BIND_TRANSCEIVER,
}


class Status(IntEnum):
    """command_status values (SMPP 3.4 section 5.1.3) that we send or act upon."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RMSGQFUL = 0x14
    ESME_RINVESMCLASS = 0x43
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RTHROTTLED = 0x58
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RUNKNOWNERR = 0xFF


def status_name(status: int) -> str:
    try:
        return f"{Status(status).name} (0x{status:02X})"
    except ValueError:
        return f"0x{status:08X}"


THROTTLE_STATUSES = frozenset({Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL})
# Attempts at a later part of a concatenated message before the text is given up.
PART_RETRIES = 10
# Delivery receipts waiting to be stored, and how many one Redis pipeline writes.
RECEIPT_QUEUE = 100_000
RECEIPT_BATCH = 500
# Errors about the message or its addresses: sending the same PDU again cannot help.
PERMANENT_STATUSES = frozenset({
    Status.ESME_RINVMSGLEN, Status.ESME_RINVSRCADR, Status.ESME_RINVDSTADR, Status.ESME_RINVESMCLASS,
    Status.ESME_RINVSRCTON, Status.ESME_RINVSRCNPI, Status.ESME_RINVDSTTON, Status.ESME_RINVDSTNPI,
    Status.ESME_RINVOPTPARAMVAL,
})

ESM_CLASS_UDHI = 0x40  # the short message starts with a user data header
ESM_CLASS_TYPE_MASK = 0x3C
ESM_CLASS_DELIVERY_RECEIPT = 0x04
IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_MESSAGE_STATE = 0x0427
MAX_PDU_LENGTH = 64 * 1024
HEADER = struct.Struct("!IIII")
READ_SIZE = 64 * 1024
WRITE_HIGH_WATER = 256 * 1024  # drain the socket only when this much is waiting to be written

# message_state TLV values (section 5.2.28), and the receipt "stat:" words for them.
MESSAGE_STATES = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
                  "UNKNOWN": 7, "REJECTD": 8}
# Receipt stat -> the status we store and its rank, in the vocabulary of Twilio's status callbacks
# (channels/twilio_callbacks.py), so that every receipt under keys.receipt() reads the same.
RECEIPT_STATUS: dict[str, tuple[str, int]] = {
    "DELIVRD": ("delivered", 3), "UNDELIV": ("undelivered", 3), "EXPIRED": ("undelivered", 3),
    "DELETED": ("canceled", 3), "REJECTD": ("failed", 3), "UNKNOWN": ("undelivered", 3),
    "ENROUTE": ("sent", 2), "ACCEPTD": ("sent", 2),
}
FINAL_RANK = 3


class SmppProtocolError(Exception):
    """The peer sent bytes that are not a valid PDU."""


# ---------------------------------------------------------------- PDU codec


@dataclass(frozen=True, slots=True)
class Pdu:
    command_id: int
    command_status: int
    sequence: int
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)

    def encode(self) -> bytes:
        return HEADER.pack(HEADER.size + len(self.body), self.command_id, self.command_status,
                           self.sequence) + self.body

    def __repr__(self) -> str:
        try:
            name = Command(self.command_id).name
        except ValueError:
            name = f"0x{self.command_id:08X}"
        return f"Pdu({name}, status={self.command_status:#x}, seq={self.sequence}, {len(self.body)} octets)"


class PduParser:
    """Splits a byte stream into PDUs: feed it what the socket gave, get back every complete PDU.

    Reading 64 KiB at a time and parsing all it holds costs one await per read rather than two
    per PDU, which is what lets one session carry thousands of PDUs a second.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Pdu]:
        """Raises SmppProtocolError on an impossible command_length."""
        buffer = self._buffer
        buffer += data
        pdus = []
        at = 0
        size = HEADER.size
        end = len(buffer)
        while end - at >= size:
            length, command_id, status, sequence = HEADER.unpack_from(buffer, at)
            if not size <= length <= MAX_PDU_LENGTH:
                raise SmppProtocolError(f"command_length {length} out of range")
            if end - at < length:
                break
            pdus.append(Pdu(command_id, status, sequence, bytes(buffer[at + size:at + length])))
            at += length
        if at:
            del buffer[:at]
        return pdus


async def read_pdus(reader: asyncio.StreamReader, parser: PduParser) -> list[Pdu]:
    """The PDUs complete after the next read (possibly none).

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection.
        SmppProtocolError: an impossible command_length.
    """
    data = await reader.read(READ_SIZE)
    if not data:
        raise asyncio.IncompleteReadError(b"", None)
    return parser.feed(data)


def cstring(value: str | bytes, max_octets: int = 0) -> bytes:
    """A C-Octet String (NUL-terminated); ``max_octets`` counts the NUL, 0 means unchecked."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    if b"\x00" in raw:
        raise ValueError("C-Octet String with an embedded NUL")
    if max_octets and len(raw) + 1 > max_octets:
        raise ValueError(f"{raw!r} is longer than {max_octets - 1} octets")
    return raw + b"\x00"


class BodyReader:
    """Sequential reader of a PDU body."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def cstring(self) -> str:
        end = self.body.find(b"\x00", self.at)
        if end < 0:
            raise SmppProtocolError("unterminated C-Octet String")
        value = self.body[self.at:end].decode("latin-1")
        self.at = end + 1
        return value

    def u8(self) -> int:
        if self.at >= len(self.body):
            raise SmppProtocolError("body too short")
        value = self.body[self.at]
        self.at += 1
        return value

    def octets(self, count: int) -> bytes:
        if self.at + count > len(self.body):
            raise SmppProtocolError("body too short")
        value = self.body[self.at:self.at + count]
        self.at += count
        return value

    def tlvs(self) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        while self.at + 4 <= len(self.body):
            tag, length = struct.unpack_from("!HH", self.body, self.at)
            self.at += 4
            found[tag] = self.octets(length)
        return found


def encode_tlvs(tlvs: dict[int, bytes]) -> bytes:
    return b"".join(struct.pack("!HH", tag, len(value)) + value for tag, value in tlvs.items())


@dataclass(frozen=True, slots=True)
class Bind:
    """Body of bind_transmitter / bind_receiver / bind_transceiver."""

    system_id: str
    password: str
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def encode(self) -> bytes:
        return (cstring(self.system_id, 16) + cstring(self.password, 9) + cstring(self.system_type, 13)
                + bytes((self.interface_version, self.addr_ton, self.addr_npi)) + cstring(self.address_range, 41))

    @classmethod
    def decode(cls, body: bytes) -> Bind:
        r = BodyReader(body)
        return cls(system_id=r.cstring(), password=r.cstring(), system_type=r.cstring(), interface_version=r.u8(),
                   addr_ton=r.u8(), addr_npi=r.u8(), address_range=r.cstring())


@dataclass(frozen=True, slots=True)
class ShortMessage:
    """Body of submit_sm and deliver_sm (the same layout)."""

    source_addr: str
    destination_addr: str
    short_message: bytes
    data_coding: int = 0
    esm_class: int = 0
    registered_delivery: int = 0
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    service_type: str = ""
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    replace_if_present_flag: int = 0
    sm_default_msg_id: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        if len(self.short_message) > 254:
            raise ValueError("short_message longer than 254 octets")
        return (cstring(self.service_type, 6) + bytes((self.source_addr_ton, self.source_addr_npi))
                + cstring(self.source_addr, 21) + bytes((self.dest_addr_ton, self.dest_addr_npi))
                + cstring(self.destination_addr, 21)
                + bytes((self.esm_class, self.protocol_id, self.priority_flag))
                + cstring(self.schedule_delivery_time, 17) + cstring(self.validity_period, 17)
                + bytes((self.registered_delivery, self.replace_if_present_flag, self.data_coding,
                         self.sm_default_msg_id, len(self.short_message)))
                + self.short_message + encode_tlvs(self.tlvs))

    @classmethod
    def decode(cls, body: bytes) -> ShortMessage:
        """Raises SmppProtocolError when the body is cut short or a C-Octet String is unterminated."""
        # Index arithmetic rather than a reader object: both ends decode thousands of these a second.
        try:
            end = body.index(0)
            service_type = body[:end].decode("latin-1")
            source_ton, source_npi = body[end + 1], body[end + 2]
            at = end + 3
            end = body.index(0, at)
            source = body[at:end].decode("latin-1")
            dest_ton, dest_npi = body[end + 1], body[end + 2]
            at = end + 3
            end = body.index(0, at)
            dest = body[at:end].decode("latin-1")
            esm_class, protocol_id, priority = body[end + 1], body[end + 2], body[end + 3]
            at = end + 4
            end = body.index(0, at)
            schedule = body[at:end].decode("latin-1")
            at = end + 1
            end = body.index(0, at)
            validity = body[at:end].decode("latin-1")
            registered, replace, data_coding, default_id, length = body[end + 1:end + 6]
        except (ValueError, IndexError):
            raise SmppProtocolError("submit_sm/deliver_sm body too short or unterminated") from None
        at = end + 6
        message = body[at:at + length]
        if len(message) != length:
            raise SmppProtocolError("body too short")
        at += length
        tlvs = BodyReader(body[at:]).tlvs() if at < len(body) else {}
        return cls(source, dest, message, data_coding, esm_class, registered, source_ton, source_npi, dest_ton,
                   dest_npi, service_type, protocol_id, priority, schedule, validity, replace, default_id, tlvs)


def concat_udh(reference: int, total: int, number: int) -> bytes:
    """User data header for part ``number`` of ``total`` (8-bit reference, IEI 0x00)."""
    return bytes((5, IEI_CONCAT_8BIT, 3, reference & 0xFF, total, number))


@dataclass(frozen=True, slots=True)
class Concat:
    reference: int
    total: int
    number: int


def split_udh(short_message: bytes) -> tuple[Concat | None, bytes]:
    """The concatenation element of a user data header (IEI 0x00 or 0x08), and the text octets after it.

    Raises:
        SmppProtocolError: the header is longer than the message.
    """
    if not short_message:
        raise SmppProtocolError("UDHI set on an empty short message")
    udh_length = short_message[0]
    if udh_length + 1 > len(short_message):
        raise SmppProtocolError("user data header longer than the short message")
    header, payload = short_message[1:udh_length + 1], short_message[udh_length + 1:]
    concat = None
    at = 0
    while at + 2 <= len(header):
        iei, length = header[at], header[at + 1]
        data = header[at + 2:at + 2 + length]
        if iei == IEI_CONCAT_8BIT and length == 3:
            concat = Concat(data[0], data[1], data[2])
        elif iei == IEI_CONCAT_16BIT and length == 4:
            concat = Concat((data[0] << 8) | data[1], data[2], data[3])
        at += 2 + length
    return concat, payload


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt carried by deliver_sm (SMPP 3.4 Appendix B format)."""

    message_id: str
    stat: str  # DELIVRD, UNDELIV, EXPIRED...
    error_code: str  # "000" when delivered
    submit_date: str = ""
    done_date: str = ""

    destination: str = ""  # the handset the message went to (the deliver_sm source_addr)

    @property
    def status(self) -> str:
        return RECEIPT_STATUS.get(self.stat, ("undelivered", FINAL_RANK))[0]

    @property
    def rank(self) -> int:
        return RECEIPT_STATUS.get(self.stat, ("undelivered", FINAL_RANK))[1]

    @property
    def error(self) -> int | None:
        """The ``err:`` code as a number (0 when delivered), None if absent or not numeric."""
        return int(self.error_code) if self.error_code.isdigit() else None

    def as_dict(self, received_at: str | None = None) -> dict[str, Any]:
        """The stored receipt, in the shape Twilio receipts have (plus the SMSC's own stat word)."""
        status, rank = RECEIPT_STATUS.get(self.stat, ("undelivered", FINAL_RANK))
        return {"provider": "smpp", "kind": "sms", "status": status,
                "final": rank == FINAL_RANK, "error_code": self.error,
                "to": f"+{self.destination}" if self.destination else None,
                "time": received_at or datetime.now(UTC).isoformat(), "rank": rank,
                "provider_status": self.stat, "done_date": self.done_date}

    def stored(self, received_at: str | None = None) -> receipts.Receipt:
        """As broadcast.receipts stores and counts it (``received_at``: one time for a whole batch).

        A "delivered" receipt is counted, not stored: the alert's counters say it, and at city
        scale the documents would fill Redis. Every other receipt keeps its document.
        """
        status, rank = RECEIPT_STATUS.get(self.stat, ("undelivered", FINAL_RANK))
        if status == "delivered":
            return receipts.Receipt(self.message_id, None, rank, receipts.DELIVERED)
        outcome = receipts.UNDELIVERED if rank == FINAL_RANK else ""
        return receipts.Receipt(self.message_id, self.as_dict(received_at), rank, outcome)


_RECEIPT_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err):(\S*)", re.IGNORECASE)


_DELIVERED_STATE = bytes((MESSAGE_STATES["DELIVRD"],))


def parse_receipt(sm: ShortMessage) -> Receipt | None:
    """The receipt in a deliver_sm, or None if it is a mobile-originated message."""
    if sm.esm_class & ESM_CLASS_TYPE_MASK != ESM_CLASS_DELIVERY_RECEIPT:
        return None
    if sm.tlvs.get(TAG_MESSAGE_STATE) == _DELIVERED_STATE and TAG_RECEIPTED_MESSAGE_ID in sm.tlvs:
        # The common case, from the TLVs alone: the text's fields only matter when something went wrong.
        return Receipt(message_id=sm.tlvs[TAG_RECEIPTED_MESSAGE_ID].rstrip(b"\x00").decode("latin-1"),
                       stat="DELIVRD", error_code="000", destination=sm.source_addr)
    text = sm.short_message.decode("latin-1")
    head = text.split(" text:", 1)[0] if " text:" in text else text
    fields = {name.lower(): value for name, value in _RECEIPT_FIELD.findall(head)}
    message_id = sm.tlvs.get(TAG_RECEIPTED_MESSAGE_ID, b"").rstrip(b"\x00").decode("latin-1") or fields.get("id", "")
    stat = fields.get("stat", "").upper()
    if not stat and TAG_MESSAGE_STATE in sm.tlvs:
        states = {v: k for k, v in MESSAGE_STATES.items()}
        stat = states.get(sm.tlvs[TAG_MESSAGE_STATE][0], "UNKNOWN")
    if not message_id:
        return None
    return Receipt(message_id=message_id, stat=stat or "UNKNOWN", error_code=fields.get("err", ""),
                   submit_date=fields.get("submit date", ""), done_date=fields.get("done date", ""),
                   destination=sm.source_addr)


def format_receipt(message_id: str, stat: str, error_code: int, submit_date: str, done_date: str,
                   text: str = "") -> bytes:
    """Receipt text as SMSCs send it: ``id:... sub:001 dlvrd:001 submit date:... stat:DELIVRD err:000 text:...``."""
    delivered = 1 if stat == "DELIVRD" else 0
    return (f"id:{message_id} sub:001 dlvrd:{delivered:03d} submit date:{submit_date} done date:{done_date} "
            f"stat:{stat} err:{error_code:03d} text:{text[:20]}").encode("ascii", errors="replace")


# ---------------------------------------------------------------- client


DeliverHandler = Callable[[ShortMessage], Awaitable[None]]

SIOCOUTQNSD = 0x894B  # Linux: bytes in a TCP socket's send queue not yet sent


def _unsent(writer: asyncio.StreamWriter) -> int:
    """Bytes the kernel holds for ``writer``'s socket and has not sent yet (0 where it cannot tell)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class SmppClient:
    """One SMPP 3.4 session to an SMSC: bind, windowed requests, keepalive, unbind.

    Requests are matched to responses by sequence number; at most ``window`` submit_sm are
    outstanding at once. deliver_sm from the SMSC is answered at once and handed to
    ``on_deliver``.
    """

    def __init__(self, host: str, port: int, system_id: str, password: str, *, system_type: str = "",
                 bind_mode: str = "transceiver", window: int = 10, response_timeout: float = 10.0,
                 enquire_link_interval: float = 30.0, connect_timeout: float = 5.0,
                 on_deliver: DeliverHandler | None = None) -> None:
        if bind_mode not in BIND_COMMANDS:
            raise ValueError(f"bind mode is one of {', '.join(BIND_COMMANDS)}")
        self.host, self.port = host, port
        self.system_id, self.password, self.system_type = system_id, password, system_type
        self.bind_mode = bind_mode
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.connect_timeout = connect_timeout
        self.on_deliver = on_deliver
        self._window = asyncio.Semaphore(window)
        self._sequence = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._deadlines: dict[int, float] = {}  # sequence -> loop time by which its response is due
        self._sweeper: asyncio.Task[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._outbox: list[bytes] = []
        self._bound = False

    @property
    def bound(self) -> bool:
        return self._bound

    def _next_sequence(self) -> int:
        sequence = next(self._sequence)
        if sequence > 0x7FFFFFFF:
            self._sequence = itertools.count(2)
            sequence = 1
        return sequence

    async def connect(self) -> None:
        """Open the connection and bind.

        Raises:
            TransientDeliveryError: nothing listening, a timeout, or the bind refused (bad credentials...).
        """
        where = f"{self.host}:{self.port}"
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"SMSC {where} unreachable: {exc or type(exc).__name__}") from exc
        self._tasks.append(asyncio.create_task(self._read_loop(), name=f"smpp-read-{where}"))
        bind = Bind(self.system_id, self.password, self.system_type)
        try:
            response = await self._request(BIND_COMMANDS[self.bind_mode], bind.encode(), windowed=False)
        except (ConnectionError, TimeoutError) as exc:
            await self._teardown()
            raise TransientDeliveryError(f"SMSC {where} did not answer the bind: {exc or type(exc).__name__}") \
                from exc
        if response.command_status != Status.ESME_ROK:
            await self._teardown()
            raise TransientDeliveryError(f"SMSC {where} refused bind_{self.bind_mode} as {self.system_id!r}: "
                                         f"{status_name(response.command_status)}")
        self._bound = True
        if self.enquire_link_interval > 0:
            self._tasks.append(asyncio.create_task(self._keepalive(), name=f"smpp-keepalive-{where}"))

    async def submit_body(self, body: bytes) -> Pdu:
        """Send one submit_sm (its encoded body, see ShortMessage.encode) within the window; its
        submit_sm_resp (or generic_nack).

        Raises:
            ConnectionError: not bound, or the connection was lost before the response.
            TimeoutError: no response within ``response_timeout``.
        """
        if not self._bound:
            raise ConnectionError("not bound")
        return await self._request(Command.SUBMIT_SM, body, windowed=True)

    async def submit_all(self, bodies: Sequence[bytes]) -> list[asyncio.Future[Pdu]]:
        """Send one submit_sm per body, in order, as fast as the window allows, without waiting for
        the answers; returns when every one has been handed to the connection.

        Returns:
            Each PDU's answer to come (submit_sm_resp or generic_nack; ConnectionError when the
            connection is lost first, or was lost before that PDU could be sent; TimeoutError when
            none came within ``response_timeout``). Once a PDU has gone, a lost connection never
            raises here: what was accepted before it must be known, not sent again.

        Raises:
            ConnectionError: not bound: nothing was sent.
        """
        if not self._bound:
            raise ConnectionError("not bound")
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[Pdu]] = []
        for body in bodies:
            await self._window.acquire()
            try:
                answer = self._issue(Command.SUBMIT_SM, body)
            except ConnectionError as exc:
                self._window.release()
                if not answers:
                    raise
                for _ in range(len(answers), len(bodies)):  # never sent
                    unsent: asyncio.Future[Pdu] = loop.create_future()
                    unsent.set_exception(ConnectionError(f"not sent: {exc}"))
                    answers.append(unsent)
                break
            except BaseException:
                self._window.release()
                raise
            answer.add_done_callback(lambda _: self._window.release())
            answers.append(answer)
        self._flush()
        return answers

    async def written(self) -> None:
        """Return once everything sent so far has left this host: out of this process's buffer, and
        out of the kernel's send queue (a slow SMSC's full receive window keeps bytes there); or
        after ``response_timeout``, when an SMSC that takes nothing in has bigger problems."""
        deadline = asyncio.get_running_loop().time() + self.response_timeout
        while self._writer is not None and not self._writer.is_closing():
            self._flush()
            if not self._writer.transport.get_write_buffer_size() and not _unsent(self._writer):
                return
            if asyncio.get_running_loop().time() > deadline:
                log.warning("SMSC %s:%s took nothing in for %ss", self.host, self.port, self.response_timeout)
                return
            await asyncio.sleep(0.001)

    async def _request(self, command: int, body: bytes, *, windowed: bool) -> Pdu:
        if windowed:
            async with self._window:
                return await self._exchange(command, body)
        return await self._exchange(command, body)

    async def _exchange(self, command: int, body: bytes) -> Pdu:
        answer = self._issue(command, body)
        writer = self._writer
        if writer is not None and writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await writer.drain()
        return await answer

    def _issue(self, command: int, body: bytes) -> asyncio.Future[Pdu]:
        """Queue one request; the future of its answer, forgotten here once it is settled."""
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ConnectionError("connection closed")
        sequence = self._next_sequence()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Pdu] = loop.create_future()
        self._pending[sequence] = answer
        # The sweeper fails it when no answer came in time: cheaper than asyncio.wait_for (a task per
        # PDU) or a timer each.
        self._deadlines[sequence] = loop.time() + self.response_timeout
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name=f"smpp-timeouts-{self.host}:{self.port}")
        answer.add_done_callback(lambda _: self._forget(sequence))
        self._queue(HEADER.pack(HEADER.size + len(body), command, 0, sequence) + body)
        return answer

    def _forget(self, sequence: int) -> None:
        self._pending.pop(sequence, None)
        self._deadlines.pop(sequence, None)

    async def _sweep(self) -> None:
        """Fail requests unanswered past their deadline (checked a few times per response_timeout)."""
        loop = asyncio.get_running_loop()
        step = min(1.0, self.response_timeout / 4)
        while self._pending:
            await asyncio.sleep(step)
            now = loop.time()
            for sequence, deadline in list(self._deadlines.items()):
                future = self._pending.get(sequence)
                if deadline <= now and future is not None and not future.done():
                    future.set_exception(TimeoutError(
                        f"no response to sequence {sequence} within {self.response_timeout}s"))

    def _queue(self, encoded: bytes) -> None:
        # PDUs made in one turn of the loop leave in one write (one system call, not one each).
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(encoded)

    def _flush(self) -> None:
        writer = self._writer
        if self._outbox and writer is not None and not writer.is_closing():
            writer.write(b"".join(self._outbox))
        self._outbox.clear()

    async def _send(self, pdu: Pdu) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            self._flush()
            writer.write(pdu.encode())
            if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await writer.drain()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        error: BaseException | None = None
        parser = PduParser()
        try:
            unbound = False
            while not unbound:
                delivered = []
                for pdu in await read_pdus(self._reader, parser):
                    if pdu.is_response:
                        future = self._pending.get(pdu.sequence)
                        if future is not None and not future.done():
                            future.set_result(pdu)
                    elif pdu.command_id == Command.DELIVER_SM:
                        self._queue(Pdu(Command.DELIVER_SM_RESP, 0, pdu.sequence, b"\x00").encode())
                        delivered.append(pdu)
                    elif pdu.command_id == Command.ENQUIRE_LINK:
                        await self._send(Pdu(Command.ENQUIRE_LINK_RESP, 0, pdu.sequence))
                    elif pdu.command_id == Command.UNBIND:
                        await self._send(Pdu(Command.UNBIND_RESP, 0, pdu.sequence))
                        unbound = True
                        break
                    else:
                        await self._send(Pdu(Command.GENERIC_NACK, Status.ESME_RINVCMDID, pdu.sequence))
                if delivered:
                    self._dispatch(delivered)
        except (asyncio.IncompleteReadError, ConnectionError, SmppProtocolError) as exc:
            error = exc
        finally:
            self._bound = False
            if self._writer is not None:
                self._writer.close()
            lost = ConnectionError(f"SMPP connection lost: {error or 'unbound by the SMSC'}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)

    def _dispatch(self, pdus: list[Pdu]) -> None:
        if self.on_deliver is None:
            return
        messages = []
        for pdu in pdus:
            try:
                messages.append(ShortMessage.decode(pdu.body))
            except SmppProtocolError:
                log.warning("undecodable deliver_sm from %s:%s", self.host, self.port)

        async def handle() -> None:
            for message in messages:
                try:
                    await self.on_deliver(message)  # type: ignore[misc]
                except Exception:  # a failing receipt store must not break the session
                    log.exception("deliver_sm handler failed")

        task = asyncio.create_task(handle())
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _keepalive(self) -> None:
        while self._bound:
            await asyncio.sleep(self.enquire_link_interval)
            try:
                await self._request(Command.ENQUIRE_LINK, b"", windowed=False)
            except (ConnectionError, TimeoutError):
                log.warning("enquire_link to %s:%s unanswered; closing the session", self.host, self.port)
                self._bound = False
                if self._writer is not None:
                    self._writer.close()
                return

    async def close(self) -> None:
        """Unbind (waiting briefly for unbind_resp), then close the connection."""
        if self._bound:
            self._bound = False
            with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                await asyncio.wait_for(self._exchange(Command.UNBIND, b""), min(self.response_timeout, 2.0))
        await self._teardown()

    async def _teardown(self) -> None:
        self._bound = False
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=2.0)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        if self._sweeper is not None:
            self._tasks.append(self._sweeper)
            self._sweeper = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._writer = self._reader = None


# ---------------------------------------------------------------- the SMS provider


def _message_id(response: Pdu) -> str | None:
    """The SMSC's message_id in a submit_sm_resp. For a text, the last part's: the receipt
    (requested on the last part) carries it."""
    return (BodyReader(response.body).cstring() if response.body else "") or None


DEFAULT_SYSTEM_ID = "szalert"
DEFAULT_PASSWORD = "demo1234"  # SMPP passwords are at most 8 characters
DEFAULT_SOURCE = "12379"  # the national emergency warning short number

# on_receipt(provider_ref, status, error_code): status as stored ("delivered", "undelivered"...).
ReceiptCallback = Callable[[str, str, int | None], Awaitable[None] | None]


def _number(value: str, name: str, kind: type = float, minimum: float = 0, inclusive: bool = False) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise InvalidInput(f"sms.{name} must be a number", field=f"sms.{name}") from None
    if number < minimum or (number == minimum and not inclusive):
        raise InvalidInput(f"sms.{name} must be {'at least' if inclusive else 'above'} {minimum}",
                           field=f"sms.{name}")
    return number


@dataclass(frozen=True, slots=True)
class SmppConfig:
    host: str
    port: int
    system_id: str = DEFAULT_SYSTEM_ID
    password: str = DEFAULT_PASSWORD
    system_type: str = ""
    source_addr: str = DEFAULT_SOURCE
    source_ton: int = 0
    source_npi: int = 0
    bind_mode: str = "transceiver"
    window: int = 10
    response_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    connect_timeout: float = 5.0
    throttle_retry_after: float = 1.0
    receipt_grace: float = 3.0  # seconds closing waits for outstanding delivery receipts

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise InvalidInput("sms.smpp_port must be 1..65535", field="sms.smpp_port")
        if not 0 < len(self.system_id) <= 15:
            raise InvalidInput("sms.system_id is 1 to 15 characters", field="sms.system_id")
        if len(self.password) > 8:
            raise InvalidInput("sms.password is at most 8 characters", field="sms.password")
        if self.bind_mode not in BIND_COMMANDS or self.bind_mode == "receiver":
            raise InvalidInput("sms.bind_mode is transmitter or transceiver", field="sms.bind_mode")
        if self.window <= 0:
            raise InvalidInput("sms.window must be positive", field="sms.window")

    @classmethod
    def from_settings(cls, settings: Settings) -> SmppConfig:
        """Options ``sms.smpp_host``, ``sms.smpp_port``, ``sms.system_id``, ``sms.password``, ``sms.source``,
        ``sms.window``, ``sms.bind_mode``, ``sms.enquire_link_interval``, ``sms.response_timeout``...
        Defaults point at the local SMPP simulator."""

        def option(key: str, default: str) -> str:
            return channel_option(settings, "sms", key, default)

        return cls(
            host=option("smpp_host", settings.sim_host),
            port=_number(option("smpp_port", str(simulator_port(settings, "smpp"))), "smpp_port", int),
            system_id=option("system_id", DEFAULT_SYSTEM_ID),
            password=option("password", DEFAULT_PASSWORD),
            system_type=option("system_type", ""),
            source_addr=option("source", DEFAULT_SOURCE),
            source_ton=_number(option("source_ton", "0"), "source_ton", int, 0, inclusive=True),
            source_npi=_number(option("source_npi", "0"), "source_npi", int, 0, inclusive=True),
            bind_mode=option("bind_mode", "transceiver"),
            window=_number(option("window", "64"), "window", int),
            response_timeout=_number(option("response_timeout", "10"), "response_timeout"),
            enquire_link_interval=_number(option("enquire_link_interval", "30"), "enquire_link_interval"),
            connect_timeout=_number(option("connect_timeout", "5"), "connect_timeout"),
            throttle_retry_after=_number(option("throttle_retry_after", "1"), "throttle_retry_after"),
            receipt_grace=_number(option("receipt_grace", "3"), "receipt_grace", float, 0, inclusive=True),
        )


def smpp_destination(address: str) -> str:
    """E.164 address without the ``+``: what ``destination_addr`` carries with TON 1 (international)."""
    return address.strip().removeprefix("+")


@functools.lru_cache(maxsize=64)
def _encoded_pieces(text: str) -> tuple[int, tuple[bytes, ...]]:
    """Data coding and the encoded pieces of ``text``: computed once per text, not once per recipient."""
    data_coding, _ = sms_text.encode(text)
    pieces = sms_text.segments(text)
    to_bytes = sms_text.encode_gsm7 if data_coding == sms_text.DATA_CODING_GSM7 else sms_text.encode_ucs2
    if len(pieces) == 1:
        return data_coding, (to_bytes(text),)
    return data_coding, tuple(to_bytes(piece) for piece in pieces)


def build_parts(text: str, reference: int) -> list[tuple[int, int, bytes]]:
    """(data_coding, esm_class, short_message) of each submit_sm that carries ``text``."""
    data_coding, pieces = _encoded_pieces(text)
    if len(pieces) == 1:
        return [(data_coding, 0, pieces[0])]
    if len(pieces) > 255:
        raise ValueError("text needs more than 255 SMS parts")
    return [(data_coding, ESM_CLASS_UDHI, concat_udh(reference, len(pieces), number) + piece)
            for number, piece in enumerate(pieces, start=1)]


class SmppProvider:
    """SMS over one SMPP session (bound lazily, re-bound on the next send after a loss)."""

    def __init__(self, context: ChannelContext, on_receipt: ReceiptCallback | None = None,
                 config: SmppConfig | None = None) -> None:
        self.config = config or SmppConfig.from_settings(context.settings)
        self.redis = context.redis
        self.on_receipt = on_receipt
        self._client: SmppClient | None = None
        self._connecting = asyncio.Lock()
        self._reference = itertools.count(random.randrange(256))
        self._receipts: asyncio.Queue[Receipt] = asyncio.Queue(maxsize=RECEIPT_QUEUE)
        self._receipt_writer: asyncio.Task[None] | None = None
        self._receipts_dropped = 0
        c = self.config
        # service_type, source TON/NPI and address, destination TON/NPI: the same in every submit_sm.
        self._head = cstring("", 6) + bytes((c.source_ton, c.source_npi)) + cstring(c.source_addr, 21) + bytes((1, 1))
        self._receipts_expected = 0  # texts accepted with a receipt requested, and final receipts seen:
        self._receipts_seen = 0  # closing waits (briefly) for the difference to arrive

    def endpoint(self) -> str:
        return f"smpp://{self.config.system_id}@{self.config.host}:{self.config.port}"

    async def _session(self) -> SmppClient:
        async with self._connecting:
            if self._client is not None and self._client.bound:
                return self._client
            if self._client is not None:
                await self._client.close()
            c = self.config
            client = SmppClient(c.host, c.port, c.system_id, c.password, system_type=c.system_type,
                                bind_mode=c.bind_mode, window=c.window, response_timeout=c.response_timeout,
                                enquire_link_interval=c.enquire_link_interval, connect_timeout=c.connect_timeout,
                                on_deliver=self._on_deliver)
            await client.connect()
            self._client = client
            return client

    async def send_texts(self, items: Sequence[tuple[Recipient, str]],
                         emission: Emission | None = None) -> list[DeliveryResult]:
        """Submit every part of every text at once (as the window allows), then collect the answers.

        Everything is encoded first; with ``emission``, the PDUs are written when ``emission.ready()``
        returns and ``emission.written()`` is called as soon as the last of them has left this host
        (out of the kernel's send queue too), before the answers. All parts leaving together puts a
        text on the wire at its moment, not a few SMSC round trips later. A refused part of a text
        whose other parts were accepted is sent again under the text's reference, so that the
        handset puts the text together once.

        Returns:
            One result per item; ``provider_ref`` is the SMSC message_id of the last part (the one
            its delivery receipt names).

        Raises:
            TransientDeliveryError: the SMSC cannot be reached or refuses the bind.
        """
        results: list[DeliveryResult | None] = [None] * len(items)
        texts: list[tuple[int, list[bytes]]] = []  # (item index, each part's submit_sm body)
        for index, (recipient, text) in enumerate(items):
            try:
                parts = build_parts(text, next(self._reference))
            except ValueError as exc:
                results[index] = DeliveryResult.permanent(recipient, str(exc))
                continue
            head = self._head + cstring(smpp_destination(recipient.address), 21)
            # One delivery receipt per text, on its last part: a receipt per part triples the SMSC's
            # return traffic and what we store, and the last part arriving is what matters. Each body
            # is that of ShortMessage(source, destination, payload, data_coding, esm_class,
            # registered_delivery).encode(), put together from the parts that stay the same.
            texts.append((index, [head + bytes((esm_class, 0, 0, 0, 0, 1 if number == len(parts) else 0, 0,
                                                data_coding, 0, len(payload))) + payload
                                  for number, (data_coding, esm_class, payload) in enumerate(parts, start=1)]))
        if texts:
            client = await self._session()
            if emission is not None:
                await emission.ready()
            try:
                answers = await client.submit_all([body for _, bodies in texts for body in bodies])
            except ConnectionError as exc:
                for index, _ in texts:
                    results[index] = DeliveryResult.transient(items[index][0], str(exc))
                answers = []
            else:
                await client.written()
            if emission is not None:
                emission.written()
            if answers:
                await asyncio.wait(answers)
                position = 0
                finishing = []
                for index, bodies in texts:
                    mine = answers[position:position + len(bodies)]
                    position += len(bodies)
                    if all(a.exception() is None and a.result().command_status == Status.ESME_ROK for a in mine):
                        # Every part accepted (the usual case): no task, no wait.
                        results[index] = DeliveryResult.accepted(items[index][0], _message_id(mine[-1].result()))
                        self._receipts_expected += 1
                    else:
                        finishing.append(self._finish(client, index, items[index][0], bodies, mine, results))
                if finishing:
                    await asyncio.gather(*finishing)
        return [r for r in results if r is not None]

    async def _finish(self, client: SmppClient, index: int, recipient: Recipient, bodies: list[bytes],
                      answers: list[asyncio.Future[Pdu]], results: list[DeliveryResult | None]) -> None:
        """One text's result from its parts' answers, after sending refused parts again if need be."""
        outcome: list[Pdu | BaseException] = [a.exception() or a.result() for a in answers]
        try:
            await self._settle(client, index, recipient, bodies, outcome, results)
        finally:
            last = outcome[-1]
            if isinstance(last, Pdu) and last.command_status == Status.ESME_ROK:
                self._receipts_expected += 1  # the receipt is requested on the last part, and will come

    async def _settle(self, client: SmppClient, index: int, recipient: Recipient, bodies: list[bytes],
                      outcome: list[Pdu | BaseException], results: list[DeliveryResult | None]) -> None:
        c = self.config
        total = len(bodies)
        accepted = sum(1 for o in outcome if isinstance(o, Pdu) and o.command_status == Status.ESME_ROK)
        for number, body in enumerate(bodies, start=1):
            answer = outcome[number - 1]
            if isinstance(answer, Pdu) and answer.command_status == Status.ESME_ROK:
                continue
            # Once a part is on the handset's way, the rest must follow under the same reference:
            # sending the whole text again would show those parts twice. So a refused part of a text
            # with accepted parts is sent again here, a few times, before the text is given up.
            retries = 0
            while (accepted and isinstance(answer, Pdu) and answer.command_status != Status.ESME_ROK
                   and answer.command_status not in PERMANENT_STATUSES and retries < PART_RETRIES):
                retries += 1
                throttled = answer.command_status in THROTTLE_STATUSES
                await asyncio.sleep(c.throttle_retry_after if throttled else 0.2 * retries)
                try:
                    answer = await client.submit_body(body)
                except (ConnectionError, TimeoutError) as exc:
                    answer = exc
                outcome[number - 1] = answer
            if isinstance(answer, TimeoutError):
                results[index] = DeliveryResult.transient(recipient, f"no submit_sm_resp within {c.response_timeout}s")
                return
            if isinstance(answer, BaseException):
                results[index] = DeliveryResult.transient(recipient, str(answer) or type(answer).__name__)
                return
            if answer.command_status != Status.ESME_ROK:
                # No part was accepted (nothing reached the handset: the caller may send the whole text
                # again), or this part was refused for good after its retries.
                status = answer.command_status
                error = f"submit_sm refused: {status_name(status)}"
                if total > 1:
                    error += f" (part {number} of {total})"
                if status in THROTTLE_STATUSES:
                    results[index] = DeliveryResult.throttled(recipient, error, retry_after=c.throttle_retry_after)
                elif status in PERMANENT_STATUSES:
                    results[index] = DeliveryResult.permanent(recipient, error)
                else:
                    results[index] = DeliveryResult.transient(recipient, error)
                return
            accepted += 1
        last = outcome[-1]
        assert isinstance(last, Pdu)
        results[index] = DeliveryResult.accepted(recipient, _message_id(last))

    async def _on_deliver(self, message: ShortMessage) -> None:
        receipt = parse_receipt(message)
        if receipt is None:
            log.info("ignoring a mobile-originated deliver_sm from %s", message.source_addr)
            return
        if receipt.rank == FINAL_RANK:
            self._receipts_seen += 1
        if self.redis is not None:
            # Receipts come back as fast as we send: one writer stores them in pipelined batches,
            # so a flood of them cannot exhaust Redis connections or starve the sending.
            if self._receipt_writer is None or self._receipt_writer.done():
                self._receipt_writer = asyncio.create_task(self._write_receipts())
            try:
                self._receipts.put_nowait(receipt)
            except asyncio.QueueFull:
                self._receipts_dropped += 1
        if self.on_receipt is not None:
            outcome = self.on_receipt(receipt.message_id, receipt.status, receipt.error)
            if inspect.isawaitable(outcome):
                await outcome

    async def _write_receipts(self) -> None:
        assert self.redis is not None
        while True:
            batch = [await self._receipts.get()]
            while not self._receipts.empty() and len(batch) < RECEIPT_BATCH:
                batch.append(self._receipts.get_nowait())
            try:
                received_at = datetime.now(UTC).isoformat()
                await receipts.record(self.redis, [receipt.stored(received_at) for receipt in batch])
            except Exception as exc:  # a receipt store failure must not break sending
                log.warning("could not store %d delivery receipts: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._receipts.task_done()

    async def aclose(self) -> None:
        if self._client is not None:
            # Receipts for what this session sent come back to it: give them a moment before unbinding.
            deadline = asyncio.get_running_loop().time() + self.config.receipt_grace
            while (self._receipts_seen < self._receipts_expected and self._client.bound
                   and asyncio.get_running_loop().time() < deadline):
                await asyncio.sleep(0.05)
            await self._client.close()
            self._client = None
        if self._receipt_writer is not None:
            # Receipts that arrived while this provider was open are stored before it closes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._receipts.join(), timeout=2.0)
            self._receipt_writer.cancel()
            self._receipt_writer = None
        if self._receipts_dropped:
            log.warning("%d delivery receipts were not stored (queue full)", self._receipts_dropped)
