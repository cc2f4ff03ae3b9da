"""An SMTP server (aiosmtpd) that records every message, with faults and an HTTP inspection API.

It runs on the caller's event loop (``await SmtpSimulator().start(host, port, inspect_port)``),
so asyncio tests and ``broadcast sim`` start it the same way; port 0 picks a free port
(read ``.port`` / ``.inspect_port`` afterwards).

SMTP behaviour:

- EHLO advertises ``AUTH LOGIN PLAIN``; AUTH is required before MAIL (530 otherwise) and
  accepts only the demo account (535 5.7.8 otherwise). ``auth_require_tls`` is off: the
  simulator listens on loopback only and has no certificate, so it offers no STARTTLS
  (the adapter's ``email.starttls`` stays false against it).
- RCPT to an address in ``unknown_users`` (case-insensitive): ``550 5.1.1 ... User unknown``.
- Faults (``PUT /_sim/faults`` on the inspection port): ``down`` -> ``421 4.3.2`` greeting
  and the connection closed; ``throttle_rate`` -> ``451 4.7.1`` on RCPT; ``error_rate`` ->
  on DATA ``error_status`` when it is a 4xx code, else ``554 5.3.0``; ``latency_ms`` before
  each RCPT and DATA reply.

Each accepted message is recorded as kind ``email`` with the envelope (``mail_from``,
``rcpt_tos``, ``auth_user``), the decoded headers (``from``, ``to``, ``subject``,
``message_id``, ``date``, ``content_language``), the undecoded ``raw_subject`` (to see the
RFC 2047 encoding), the ``text`` and ``html`` parts, ``attachments`` (filename,
content_type, size) and the CAP attachment (``cap_size`` in bytes, ``cap_xml`` as text).

Inspection API (HTTP, on ``inspect_port``): the shared ``/_sim/`` routes, plus
``GET``/``PUT /_sim/unknown_users`` (``{"addresses": [...]}``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import warnings
from collections.abc import Iterable
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ops.simulators.base import RECORDER, Recorder, add_inspection_routes

DEMO_USERNAME = "alerts"
DEMO_PASSWORD = "demo-smtp-secret"
DEFAULT_UNKNOWN_USERS = ("nobody@szmb.example", "unknown@example.com")
HOSTNAME = "smtp-sim.localdomain"


class _Refuse(asyncio.Protocol):
    """What a connection meets while the simulator is ``down``: a 421 greeting, then hang-up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"421 4.3.2 {HOSTNAME} Service not available (simulated)\r\n".encode())
        transport.close()


class _Handler:
    """aiosmtpd hooks: RCPT checks and faults, DATA recording."""

    def __init__(self, simulator: SmtpSimulator) -> None:
        self.sim = simulator

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        recorder = self.sim.recorder
        await recorder.delay()
        if recorder.roll(recorder.faults.throttle_rate):
            return "451 4.7.1 Rate limit exceeded, try again later (simulated)"
        if address.lower() in self.sim.unknown_users:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recorder = self.sim.recorder
        await recorder.delay()
        if recorder.roll(recorder.faults.error_rate):
            status = recorder.faults.error_status
            if 400 <= status < 500:
                return f"{status} 4.3.0 Temporary failure (simulated)"
            return "554 5.3.0 Transaction failed (simulated)"
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        recorder.record("email", mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                        auth_user=auth if isinstance(auth, str) else None, **describe(parsed, raw))
        return "250 2.0.0 OK: queued"


def _lines(text: str) -> str:
    # Quoted-printable parts keep the wire's CRLF line ends; base64 ones keep the sender's.
    return text.replace("\r\n", "\n")


def describe(message: EmailMessage, raw: bytes) -> dict[str, Any]:
    """The fields of a received message a test or an operator wants to see."""
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    attachments, cap = [], None
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True) or b""
        assert isinstance(payload, bytes)
        attachments.append({"filename": part.get_filename(), "content_type": part.get_content_type(),
                            "size": len(payload)})
        if part.get_content_type() == "application/cap+xml" and cap is None:
            cap = payload
    raw_headers = email.message_from_bytes(raw, policy=email.policy.compat32)
    return {
        "from": str(message["From"]),
        "to": str(message["To"]),
        "subject": str(message["Subject"]),
        "raw_subject": str(raw_headers["Subject"]),
        "message_id": message["Message-ID"],
        "date": message["Date"],
        "content_language": message["Content-Language"],
        "content_type": message.get_content_type(),
        "text": _lines(text.get_content()) if text is not None else None,
        "html": _lines(html.get_content()) if html is not None else None,
        "attachments": attachments,
        "cap_size": len(cap) if cap is not None else None,
        "cap_xml": cap.decode("utf-8", errors="replace") if cap is not None else None,
    }


class SmtpSimulator:
    """The SMTP server and its inspection API, on the running event loop."""

    def __init__(self, recorder: Recorder | None = None, *, username: str = DEMO_USERNAME,
                 password: str = DEMO_PASSWORD, unknown_users: Iterable[str] = DEFAULT_UNKNOWN_USERS) -> None:
        self.recorder = recorder or Recorder("smtp")
        self.username = username
        self.password = password
        self.unknown_users = {a.lower() for a in unknown_users}
        self.port: int | None = None
        self.inspect_port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._runner: web.AppRunner | None = None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.username
              and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    def _protocol(self) -> asyncio.Protocol:
        if self.recorder.faults.down:
            return _Refuse()
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH without TLS is unsafe: deliberate here (loopback, no certificate).
            warnings.simplefilter("ignore", UserWarning)
            return SMTP(_Handler(self), hostname=HOSTNAME, enable_SMTPUTF8=True, auth_required=True,
                        auth_require_tls=False, authenticator=self._authenticate)

    def inspection_app(self) -> web.Application:
        app = web.Application()
        app[RECORDER] = self.recorder
        add_inspection_routes(app, self.recorder)

        async def get_unknown(request: web.Request) -> web.Response:
            return web.json_response({"addresses": sorted(self.unknown_users)})

        async def put_unknown(request: web.Request) -> web.Response:
            try:
                doc = await request.json()
            except json.JSONDecodeError:
                doc = None
            addresses = doc.get("addresses") if isinstance(doc, dict) else None
            if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
                return web.json_response({"error": {"message": "body is {\"addresses\": [...]}",
                                                    "field": "addresses"}}, status=422)
            self.unknown_users = {a.lower() for a in addresses}
            return web.json_response({"addresses": sorted(self.unknown_users)})

        app.router.add_get("/_sim/unknown_users", get_unknown)
        app.router.add_put("/_sim/unknown_users", put_unknown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, inspect_port: int | None = None) -> None:
        """Listen for SMTP on ``host:port`` and, if given, serve the inspection API on ``inspect_port``."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        if inspect_port is not None:
            self._runner = web.AppRunner(self.inspection_app())
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, inspect_port)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.inspect_port = sockets[0].getsockname()[1] if sockets else inspect_port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
