"""When each text went on the wire to the SMSC simulator, from a packet capture on the loopback.

Why not the simulator's own times: it stamps a read with the kernel's receive time, but TCP gives
bytes still unread when more arrive the receive time of the newer ones (segments are coalesced in
the receive queue), so a simulator that is slow to read, sharing two cores with the senders, moves
texts later by up to its lag. A carrier's SMSC on its own machine has no such lag. A packet socket
sees every segment as it is transmitted, with the kernel's time of that moment, however late this
process reads it.

Linux only, and needs root (CAP_NET_RAW for the packet socket, CAP_NET_ADMIN for its large
buffer). Only IPv4 TCP segments to the simulator's port, as they leave (PACKET_OUTGOING), are
kept: a classic BPF filter drops the rest in the kernel. Streams are told apart by their source
port, which a benchmark's few long-lived SMPP sessions do not reuse.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from channels.smpp import ESM_CLASS_UDHI, Command, PduParser, ShortMessage, SmppProtocolError, split_udh

ETH_P_ALL = 0x0003  # every protocol, outgoing packets included (a socket for one protocol sees only incoming)
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
PACKET_STATISTICS = 6
SOL_PACKET = 263
SKF_AD_PKTTYPE = 0xFFFFF000 + 4
_TIMESPEC = struct.Struct("qq")


def _filter(port: int) -> bytes:
    """cBPF: outgoing, IPv4, TCP, not a fragment, destination port ``port`` (offsets from the IP header)."""
    program = [
        (0x20, 0, 0, SKF_AD_PKTTYPE),  # ld pkttype
        (0x15, 0, 11, PACKET_OUTGOING),  # jeq outgoing, else drop
        (0x30, 0, 0, 0),  # ldb [0]: version and header length
        (0x54, 0, 0, 0xF0),  # and 0xf0
        (0x15, 0, 8, 0x40),  # jeq IPv4, else drop
        (0x30, 0, 0, 9),  # ldb [9]: protocol
        (0x15, 0, 6, 6),  # jeq tcp, else drop
        (0x28, 0, 0, 6),  # ldh [6]: flags and fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset fragment offset: drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): IP header length
        (0x48, 0, 0, 2),  # ldh [x+2]: TCP destination port
        (0x15, 0, 1, port),  # jeq port, else drop
        (0x06, 0, 0, 0x40000),  # ret: keep the packet
        (0x06, 0, 0, 0),  # ret: drop
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in program)


@dataclass
class WireCapture:
    """Capture the TCP segments sent to ``port`` on the loopback, in a thread, until :meth:`stop`."""

    port: int
    buffer_bytes: int = 512 * 1024 * 1024
    segments: list[tuple[float, int, int, bytes]] = field(default_factory=list)  # (time, source port, seq, data)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stopping: bool = False

    def start(self) -> None:
        """Raises PermissionError without CAP_NET_RAW, OSError where there are no packet sockets."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            program = ctypes.create_string_buffer(_filter(self.port))  # the kernel copies it when attaching
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                            struct.pack("HL", len(program.raw) // 8, ctypes.addressof(program)))
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind(("lo", 0))
            sock.settimeout(0.2)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="wire-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        sock, segments = self._sock, self.segments
        space = socket.CMSG_SPACE(_TIMESPEC.size)
        while not self._stopping:
            try:
                data, ancillary, _, _ = sock.recvmsg(70000, space)
            except TimeoutError:
                continue
            except OSError:
                return
            at = 0.0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                    at = seconds + nanoseconds / 1e9
            ip_length = (data[0] & 0x0F) * 4
            total = struct.unpack_from("!H", data, 2)[0]
            source, _, sequence = struct.unpack_from("!HHI", data, ip_length)
            tcp_length = (data[ip_length + 12] >> 4) * 4
            payload = data[ip_length + tcp_length:total]
            if payload:
                segments.append((at, source, sequence, payload))

    def stop(self) -> dict[str, int]:
        """Stop capturing; the kernel's count of packets received and dropped (buffer full)."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join(5)
        stats = {"packets": 0, "dropped": 0}
        if self._sock is not None:
            with contextlib.suppress(OSError):
                received, dropped = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
                stats = {"packets": received, "dropped": dropped}
            self._sock.close()
            self._sock = None
        return stats

    def texts(self) -> tuple[list[tuple[float, str]], dict[str, int]]:
        """(time of the segment that completed it, destination) of every text submitted, in time
        order, and counts of what was seen (submit_sm, bytes out of sequence)."""
        streams: dict[int, list[tuple[float, int, bytes]]] = defaultdict(list)
        for at, source, sequence, payload in self.segments:
            streams[source].append((at, sequence, payload))
        texts: list[tuple[float, str]] = []
        counts = {"submit_sm": 0, "retransmitted_bytes": 0, "gaps": 0, "undecodable": 0}
        for segments in streams.values():
            parser = PduParser()
            partial: dict[tuple[str, int, int], set[int]] = {}
            expected: int | None = None
            for at, sequence, payload in segments:  # in capture order: the order they were sent
                if expected is not None:
                    offset = (expected - sequence) & 0xFFFFFFFF
                    if 0 < offset < 0x80000000:  # starts before what we have: a retransmission
                        counts["retransmitted_bytes"] += min(offset, len(payload))
                        payload = payload[offset:]
                        if not payload:
                            continue
                        sequence = expected
                    elif sequence != expected:
                        counts["gaps"] += 1
                        parser = PduParser()
                expected = (sequence + len(payload)) & 0xFFFFFFFF
                try:
                    pdus = parser.feed(payload)
                except SmppProtocolError:
                    counts["gaps"] += 1
                    parser = PduParser()
                    continue
                for pdu in pdus:
                    if pdu.command_id != Command.SUBMIT_SM:
                        continue
                    counts["submit_sm"] += 1
                    try:
                        sm = ShortMessage.decode(pdu.body)
                    except SmppProtocolError:
                        counts["undecodable"] += 1
                        continue
                    if not sm.esm_class & ESM_CLASS_UDHI:
                        texts.append((at, sm.destination_addr))
                        continue
                    concat, _ = split_udh(sm.short_message)
                    if concat is None or concat.total <= 1:
                        texts.append((at, sm.destination_addr))
                        continue
                    key = (sm.destination_addr, concat.reference, concat.total)
                    parts = partial.setdefault(key, set())
                    parts.add(concat.number)
                    if len(parts) == concat.total:
                        del partial[key]
                        texts.append((at, sm.destination_addr))
        texts.sort()
        return texts, counts


