"""An SMPP 3.4 SMS centre (SMSC) for local runs and tests, with the /_sim/ inspection API on a second port.

It authenticates binds (system_id/password; demo defaults are the sms adapter's defaults),
answers bind_transmitter/receiver/transceiver, submit_sm, enquire_link, unbind and
deliver_sm_resp, reassembles concatenated messages (UDH IEI 0x00 or 0x08), decodes GSM-7
(data_coding 0), Latin-1 (3) and UCS-2 (8), and records every accepted submit_sm:

    kind "submit_sm": system_id, source, destination, data_coding, esm_class,
        registered_delivery, text (of this part), part, parts, reference, message_id,
        full_text (the reassembled text on the part that completes it; the text itself
        for a single SMS; None while parts are missing)
    kind "deliver_sm": a receipt sent back (message_id, destination, stat, err)

For registered_delivery (bit 0 or 1) it sends a deliver_sm receipt after
``receipt_delay`` seconds to a receiver or transceiver session of the same system_id
(stat UNDELIV for numbers in ``undeliverable``, DELIVRD otherwise).

Faults (PUT /_sim/faults): latency_ms per PDU; throttle_rate -> submit_sm_resp 0x58
ESME_RTHROTTLED; error_rate -> 0x08 ESME_RSYSERR; down -> every bind refused (0x0D
ESME_RBINDFAIL) and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import socket
import struct
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field

from aiohttp import web

from channels import sms_text
from channels.smpp import (
    DEFAULT_PASSWORD,
    DEFAULT_SYSTEM_ID,
    ESM_CLASS_DELIVERY_RECEIPT,
    ESM_CLASS_UDHI,
    MESSAGE_STATES,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    WRITE_HIGH_WATER,
    Bind,
    Command,
    Pdu,
    PduParser,
    ShortMessage,
    SmppProtocolError,
    Status,
    cstring,
    format_receipt,
    split_udh,
)
from ops.simulators.base import RECORDER, Recorder, add_inspection_routes

log = logging.getLogger(__name__)

_BIND_RESPONSES = {
    Command.BIND_TRANSMITTER: (Command.BIND_TRANSMITTER_RESP, "transmitter"),
    Command.BIND_RECEIVER: (Command.BIND_RECEIVER_RESP, "receiver"),
    Command.BIND_TRANSCEIVER: (Command.BIND_TRANSCEIVER_RESP, "transceiver"),
}
_ADDRESS = re.compile(r"[0-9]{1,20}")
_SUPPORTED_CODINGS = {0x00, 0x01, 0x03, 0x08}


# Linux's SO_TIMESTAMPNS (not exported by the socket module): each read carries the moment the kernel
# received the data, as a struct timespec.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("qq")
# Bytes per read: about one write of a sender. TCP gives a read the receive time of the newest
# segment it takes (segments left unread are coalesced), so a simulator that reads late blurs the
# times it records; perf/wire_capture.py times texts on the wire instead, for the benchmarks.
READ_SIZE = 16384


class _Connection:
    """One SMPP connection on a plain non-blocking socket: reads carry the kernel's receive time,
    writes go through a buffer that drains when the socket can take more.

    Why not asyncio streams: they hide when the bytes came in. On a busy machine the simulator
    reads late, and a text stamped when read would show the simulator's own lag as bunching in
    the sender's traffic; the receive time is what a carrier's SMSC on its own machine would see.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.fd = sock.fileno()
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # not Linux: reads carry no time, and are stamped when read
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._out = bytearray()
        self._closing = False
        self._waiter: asyncio.Future[None] | None = None  # a read waiting for data
        self._drains: list[asyncio.Future[None]] = []  # tasks waiting for the buffer to empty

    async def read(self) -> tuple[bytes, float]:
        """Bytes received (b"" at the end of the stream) and when the kernel received them (epoch s)."""
        while True:
            if self._closing:
                return b"", time.time()
            try:
                data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(_TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                self._waiter = self.loop.create_future()
                self.loop.add_reader(self.fd, self._wake_reader)
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                    if not self._closing:
                        self.loop.remove_reader(self.fd)
                continue
            except OSError:
                return b"", time.time()
            at = time.time()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                    at = seconds + nanoseconds / 1e9
            return data, at

    def _wake_reader(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        if not self._out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.loop.add_writer(self.fd, self._write_buffered)
        self._out += data

    def _write_buffered(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self._out[:sent]
        if not self._out:
            self.loop.remove_writer(self.fd)
            self._wake_drains()

    def _wake_drains(self) -> None:
        drains, self._drains = self._drains, []
        for waiter in drains:
            if not waiter.done():
                waiter.set_result(None)

    def buffered(self) -> int:
        return len(self._out)

    async def drain(self) -> None:
        """When over ``WRITE_HIGH_WATER`` is waiting to be written, wait until it has all gone to the
        socket (or the connection is closed); any number of tasks may wait at once."""
        if len(self._out) <= WRITE_HIGH_WATER:
            return
        while self._out and not self._closing:
            waiter = self.loop.create_future()
            self._drains.append(waiter)
            await waiter

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._wake_drains()
        self.sock.close()


@dataclass(eq=False)  # sessions are kept in a set, by identity
class _Session:
    writer: _Connection
    system_id: str = ""
    mode: str = ""  # transmitter / receiver / transceiver, "" while unbound
    sequence: itertools.count = field(default_factory=lambda: itertools.count(1))
    outbox: list[bytes] = field(default_factory=list)
    read_at: float = 0.0  # when the kernel received the PDUs being handled (epoch seconds)

    @property
    def can_submit(self) -> bool:
        return self.mode in ("transmitter", "transceiver")

    @property
    def can_receive(self) -> bool:
        return self.mode in ("receiver", "transceiver")

    async def send(self, pdu: Pdu) -> None:
        self.flush()  # whatever was queued goes first: responses stay in order
        if not self.writer.is_closing():
            self.writer.write(pdu.encode())
            await self.writer.drain()

    def queue(self, pdu: Pdu) -> None:
        """Answer later in one write with the others (see :meth:`flush`): a write per PDU is a system
        call per PDU."""
        self.outbox.append(pdu.encode())

    async def send_queued(self) -> None:
        self.flush()
        await self.writer.drain()

    def flush(self) -> None:
        if self.outbox and not self.writer.is_closing():
            self.writer.write(b"".join(self.outbox))
        self.outbox.clear()


@dataclass
class CompactRecord:
    """What a benchmark needs at millions of messages: when each text completed (when the kernel
    received the bytes of its last part), and for whom.

    Kept instead of one recorded entry per PDU when the simulator runs with ``record="compact"``.
    """

    times: array = field(default_factory=lambda: array("d"))
    destinations: list[str] = field(default_factory=list)

    def add(self, destination: str, at: float) -> None:
        self.times.append(at)
        self.destinations.append(destination)

    def as_dict(self) -> dict[str, object]:
        return {"count": len(self.destinations), "times": self.times.tolist(), "destinations": self.destinations}


class SmppSimulator:
    """The SMSC: ``await start(host, port, inspect_port)``, then ``port`` and ``inspect_port`` are bound."""

    def __init__(self, recorder: Recorder | None = None, *, system_id: str = DEFAULT_SYSTEM_ID,
                 password: str = DEFAULT_PASSWORD, receipt_delay: float = 0.05,
                 undeliverable: set[str] | None = None, record: str = "full") -> None:
        if record not in ("full", "compact"):
            raise ValueError("record is full or compact")
        self.recorder = recorder or Recorder("smpp")
        self.record_mode = record
        self.compact = CompactRecord()
        self.accounts = {system_id: password}
        self.receipt_delay = receipt_delay
        self.undeliverable = set(undeliverable or ())
        self.host = "127.0.0.1"
        self.port = 0
        self.inspect_port = 0
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()  # accepted, until served to the end
        self._accepting: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._message_ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3).upper()  # ids stay unique across restarts, as an SMSC's do
        self._partial: dict[tuple[str, str, str, int, int], dict[int, str]] = {}
        self.pdu_counts: Counter[str] = Counter()  # requests received by command name, accepted or not
        self._due_receipts: deque[tuple[float, str, ShortMessage, str, str, str]] = deque()
        self._receipt_pump: asyncio.Task[None] | None = None

    @property
    def submit_count(self) -> int:
        """submit_sm PDUs received, accepted or not (a test's "nothing was sent")."""
        return self.pdu_counts["submit_sm"]

    async def start(self, host: str = "127.0.0.1", port: int = 0, inspect_port: int = 0) -> None:
        """Listen for SMPP on ``port`` and serve the inspection API on ``inspect_port`` (0: any free port)."""
        self.host = host
        self._listener = socket.create_server((host, port))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(self._listener))
        app = web.Application()
        app[RECORDER] = self.recorder
        add_inspection_routes(app, self.recorder)

        async def get_texts(_: web.Request) -> web.Response:
            return web.json_response({**self.compact.as_dict(), "pdus": dict(self.pdu_counts)})

        app.router.add_get("/_sim/texts", get_texts)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, inspect_port)
        await site.start()
        self.inspect_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for connection in list(self._connections):  # a connection whose serving never started too
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors and the like: keep serving the others
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            connection = _Connection(sock)
            self._connections.add(connection)
            self._spawn(self._serve(connection))

    async def _serve(self, connection: _Connection) -> None:
        session = _Session(connection)
        self._sessions.add(session)
        parser = PduParser()
        try:
            open_ = True
            while open_:
                data, session.read_at = await connection.read()
                if not data:
                    break
                for pdu in parser.feed(data):
                    if not await self._handle(session, pdu):
                        open_ = False
                        break
                session.flush()
                await connection.drain()
        except SmppProtocolError:
            pass
        finally:
            self._sessions.discard(session)
            self._connections.discard(connection)
            connection.close()

    async def _handle(self, session: _Session, pdu: Pdu) -> bool:
        """Answer one PDU; False to close the connection."""
        command = pdu.command_id
        if not pdu.is_response:
            with contextlib.suppress(ValueError):
                self.pdu_counts[Command(command).name.lower()] += 1
        if command in _BIND_RESPONSES:
            await self.recorder.delay()
            return await self._bind(session, pdu)
        if command == Command.SUBMIT_SM:
            if self.recorder.faults.latency_ms > 0:
                # Each submit_sm is answered on its own, so a client's window of PDUs overlaps the latency.
                self._spawn(self._submit_later(session, pdu, session.read_at))
            else:
                session.queue(self._submit(session, pdu, session.read_at))
            return True
        if command == Command.ENQUIRE_LINK:
            await session.send(Pdu(Command.ENQUIRE_LINK_RESP, 0, pdu.sequence))
            return True
        if command == Command.UNBIND:
            await session.send(Pdu(Command.UNBIND_RESP, 0, pdu.sequence))
            session.mode = ""
            return False
        if pdu.is_response:  # deliver_sm_resp, enquire_link_resp, generic_nack: nothing to answer
            return True
        await session.send(Pdu(Command.GENERIC_NACK, Status.ESME_RINVCMDID, pdu.sequence))
        return True

    async def _bind(self, session: _Session, pdu: Pdu) -> bool:
        response_id, mode = _BIND_RESPONSES[Command(pdu.command_id)]
        try:
            bind = Bind.decode(pdu.body)
        except SmppProtocolError:
            await session.send(Pdu(response_id, Status.ESME_RINVCMDLEN, pdu.sequence))
            return True
        if self.recorder.faults.down:
            await session.send(Pdu(response_id, Status.ESME_RBINDFAIL, pdu.sequence))
            return False
        if session.mode:
            status = Status.ESME_RALYBND
        elif bind.system_id not in self.accounts:
            status = Status.ESME_RINVSYSID
        elif self.accounts[bind.system_id] != bind.password:
            status = Status.ESME_RINVPASWD
        else:
            status = Status.ESME_ROK
        body = cstring("SZSIMSMSC") if status == Status.ESME_ROK else b""
        await session.send(Pdu(response_id, status, pdu.sequence, body))
        if status == Status.ESME_ROK:
            session.system_id, session.mode = bind.system_id, mode
        return True

    async def _submit_later(self, session: _Session, pdu: Pdu, arrived: float) -> None:
        await self.recorder.delay()
        await session.send(self._submit(session, pdu, arrived))

    def _submit(self, session: _Session, pdu: Pdu, arrived: float) -> Pdu:
        """Check, record and answer one submit_sm (received by the kernel at ``arrived``): its submit_sm_resp."""

        def answer(status: int, message_id: str = "") -> Pdu:
            body = cstring(message_id) if status == Status.ESME_ROK else b""
            return Pdu(Command.SUBMIT_SM_RESP, status, pdu.sequence, body)

        if not session.can_submit:
            return answer(Status.ESME_RINVBNDSTS)
        try:
            sm = ShortMessage.decode(pdu.body)
        except SmppProtocolError:
            return answer(Status.ESME_RINVCMDLEN)
        faults = self.recorder.faults
        if self.recorder.roll(faults.throttle_rate):
            return answer(Status.ESME_RTHROTTLED)
        if self.recorder.roll(faults.error_rate):
            return answer(Status.ESME_RSYSERR)
        if not _ADDRESS.fullmatch(sm.destination_addr):
            return answer(Status.ESME_RINVDSTADR)
        if not sm.source_addr or len(sm.source_addr) > 20:
            return answer(Status.ESME_RINVSRCADR)
        if sm.data_coding not in _SUPPORTED_CODINGS:
            return answer(Status.ESME_RINVOPTPARAMVAL)
        concat = None
        payload = sm.short_message
        if sm.esm_class & ESM_CLASS_UDHI:
            try:
                concat, payload = split_udh(sm.short_message)
            except SmppProtocolError:
                return answer(Status.ESME_RINVESMCLASS)
        full = self.record_mode == "full"
        # Compact recording needs no text, except the receipt's first 20 characters.
        text = sms_text.decode(sm.data_coding, payload) if full or sm.registered_delivery & 0x03 else ""
        message_id = f"{self._id_prefix}{next(self._message_ids):08X}"
        full_text: str | None = text
        if concat is not None and concat.total > 1:
            key = (session.system_id, sm.source_addr, sm.destination_addr, concat.reference, concat.total)
            parts = self._partial.setdefault(key, {})
            parts[concat.number] = text
            full_text = None
            if len(parts) == concat.total:
                full_text = "".join(parts[n] for n in sorted(parts))
                del self._partial[key]
        if full:
            self.recorder.record(
                "submit_sm", system_id=session.system_id, source=sm.source_addr, destination=sm.destination_addr,
                data_coding=sm.data_coding, esm_class=sm.esm_class, registered_delivery=sm.registered_delivery,
                text=text, full_text=full_text, part=concat.number if concat else 1,
                parts=concat.total if concat else 1, reference=concat.reference if concat else None,
                message_id=message_id)
        elif full_text is not None:
            self.compact.add(sm.destination_addr, arrived)
        if sm.registered_delivery & 0x03:
            stat = "UNDELIV" if sm.destination_addr in self.undeliverable else "DELIVRD"
            if stat != "DELIVRD" or sm.registered_delivery & 0x03 == 1:
                self._schedule_receipt(session.system_id, sm, message_id, stat, text)
        return answer(Status.ESME_ROK, message_id)

    def _schedule_receipt(self, system_id: str, sm: ShortMessage, message_id: str, stat: str, text: str) -> None:
        # One pump sends every receipt when due (the delay is the same for all, so the queue stays in
        # order): a task per receipt would cost more than the submit itself at thousands a second.
        self._due_receipts.append((time.monotonic() + self.receipt_delay, system_id, sm, message_id, stat, text))
        if self._receipt_pump is None or self._receipt_pump.done():
            self._receipt_pump = asyncio.create_task(self._pump_receipts())
            self._tasks.add(self._receipt_pump)
            self._receipt_pump.add_done_callback(self._tasks.discard)

    async def _pump_receipts(self) -> None:
        due = self._due_receipts
        while due:
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            targets = set()
            while due and due[0][0] <= now:
                _, system_id, sm, message_id, stat, text = due.popleft()
                target = self._receipt(system_id, sm, message_id, stat, text)
                if target is not None:
                    targets.add(target)
            for target in targets:
                await target.send_queued()

    def _receipt(self, system_id: str, sm: ShortMessage, message_id: str, stat: str, text: str) -> _Session | None:
        """Queue one receipt on a receiving session of ``system_id``; that session (None: nobody to receive it)."""
        submitted = time.strftime("%y%m%d%H%M")
        target = next((s for s in self._sessions if s.system_id == system_id and s.can_receive), None)
        if target is None:
            return None  # a real SMSC would queue it; the simulator drops it
        error = 0 if stat == "DELIVRD" else 1
        receipt = ShortMessage(
            source_addr=sm.destination_addr, destination_addr=sm.source_addr, source_addr_ton=sm.dest_addr_ton,
            source_addr_npi=sm.dest_addr_npi, dest_addr_ton=sm.source_addr_ton, dest_addr_npi=sm.source_addr_npi,
            esm_class=ESM_CLASS_DELIVERY_RECEIPT, data_coding=0,
            short_message=format_receipt(message_id, stat, error, submitted, time.strftime("%y%m%d%H%M"),
                                         text if sm.data_coding != 0x08 else ""),
            tlvs={TAG_RECEIPTED_MESSAGE_ID: cstring(message_id), TAG_MESSAGE_STATE: bytes((MESSAGE_STATES[stat],))})
        target.queue(Pdu(Command.DELIVER_SM, 0, next(target.sequence), receipt.encode()))
        if self.record_mode == "full":
            self.recorder.record("deliver_sm", system_id=system_id, message_id=message_id,
                                 destination=sm.destination_addr, stat=stat, err=error)
        return target
