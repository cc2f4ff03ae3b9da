"""Email: one personal message per recipient, over one SMTP session per batch (aiosmtplib).

Each message is ``multipart/mixed``: a ``multipart/alternative`` of the template's plain
text (block ``body``) and HTML (block ``html``), and the CAP XML attached as
``application/cap+xml`` named ``<identifier>.xml``. Headers: From, To (the recipient
alone), Subject (block ``subject``; RFC 2047 encoded-words when not ASCII), Date,
Message-ID (derived from the alert and recipient ids, so a retried send carries the same
id and mail systems can drop the duplicate), Content-Language, Auto-Submitted
(RFC 3834: no auto-replies).

Options (``channel_options`` ``email.<key>=<value>``): ``host``, ``port`` (default the SMTP
simulator), ``starttls`` (``true``/``false``; default false, since the simulator has no
certificate), ``username``/``password`` (empty username: no AUTH), ``from``, ``helo``,
``timeout`` (seconds).

Error mapping:

    address fails a syntax check            permanent, nothing sent
    RCPT/DATA 5xx                            permanent (the server's reply as the reason)
    RCPT/DATA 4xx with 4.7.1 or "rate"       throttled (a rate limit), retry after 60 s
    RCPT/DATA other 4xx, dropped session     transient
    connection refused, 421 greeting,        TransientDeliveryError (the channel is down)
    timeout on connect, AUTH refused (535)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, ClassVar

import aiosmtplib

from broadcast.errors import InvalidInput, TransientDeliveryError
from channels.base import (
    Capabilities,
    ChannelContext,
    DeliveryResult,
    Message,
    Recipient,
    channel_option,
    register,
    simulator_port,
)

# Deliberately simple (RFC 5321 mailbox without quoted local parts): a dot-atom local part,
# and a domain of LDH labels with a dot, or an internationalized domain.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"(?:[A-Za-z0-9\u00a0-\uffff](?:[A-Za-z0-9\u00a0-\uffff-]{0,61}[A-Za-z0-9\u00a0-\uffff])?)"
_ADDRESS = re.compile(rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})+$")
THROTTLE_RETRY_SECONDS = 60.0


def valid_address(address: str) -> bool:
    """True when ``address`` is a plain mailbox ``local@domain.tld`` of sane length."""
    return len(address) <= 254 and len(address.partition("@")[0]) <= 64 and bool(_ADDRESS.match(address))


@dataclass(frozen=True, slots=True)
class EmailConfig:
    host: str
    port: int
    starttls: bool
    username: str
    password: str
    sender: str  # the From header, "Name <address>" or an address
    helo: str
    timeout: float

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidInput("port must be 1..65535", field="email.port")
        if not valid_address(self.envelope_from):
            raise InvalidInput(f"{self.sender!r} has no valid address", field="email.from")
        if self.timeout <= 0:
            raise InvalidInput("timeout must be positive", field="email.timeout")

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.sender)[1]

    @property
    def domain(self) -> str:
        return self.envelope_from.rpartition("@")[2]

    @classmethod
    def from_settings(cls, settings: Any) -> EmailConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, "email", key, default)

        starttls = option("starttls", "false").strip().lower()
        if starttls not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidInput("starttls is true or false", field="email.starttls")
        try:
            return cls(
                host=option("host", settings.sim_host),
                port=int(option("port", str(simulator_port(settings, "smtp")))),
                starttls=starttls in ("true", "1", "yes"),
                username=option("username", "alerts"),
                password=option("password", "demo-smtp-secret"),
                sender=option("from", f"{settings.sender_name} <{settings.sender}>"),
                helo=option("helo", "broadcast.localdomain"),
                timeout=float(option("timeout", "15")),
            )
        except ValueError as exc:
            raise InvalidInput(f"bad email option: {exc}", field="channel_options") from exc


def build_email(message: Message, recipient: Recipient, config: EmailConfig,
                now: datetime | None = None) -> EmailMessage:
    """The MIME message for one recipient, in the recipient's language."""
    text = message.text_for(recipient.language)
    mail = EmailMessage()
    display, address = parseaddr(config.sender)
    local, _, domain = address.rpartition("@")
    mail["From"] = Address(display, local, domain) if display else address
    mail["To"] = recipient.address
    mail["Subject"] = text.subject or (message.alert.infos[0].headline if message.alert.infos else "") or \
        message.alert.identifier
    mail["Date"] = format_datetime(now or datetime.now(UTC))
    digest = hashlib.sha256(f"{message.alert_id}|{recipient.id}".encode()).hexdigest()[:16]
    mail["Message-ID"] = f"<{message.alert_id}.{digest}@{config.domain}>"
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(text.body, subtype="plain", charset="utf-8")
    if text.html:
        mail.add_alternative(text.html, subtype="html", charset="utf-8")
    mail.add_attachment(message.cap_xml, maintype="application", subtype="cap+xml",
                        filename=f"{message.alert.identifier}.xml")
    # Set last: making the message multipart moves every Content-* header into the first part.
    mail["Content-Language"] = text.language
    return mail


def _classify(recipient: Recipient, code: int, reply: str) -> DeliveryResult:
    detail = f"SMTP {code} {reply}".strip()
    if 500 <= code < 600:
        return DeliveryResult.permanent(recipient, detail)
    if "4.7.1" in reply or "rate" in reply.lower():
        return DeliveryResult.throttled(recipient, detail, THROTTLE_RETRY_SECONDS)
    return DeliveryResult.transient(recipient, detail)


@register
class EmailAdapter:
    name: ClassVar[str] = "email"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch=100, max_length=None, segment_rule="none", rate_per_second=20.0,
        supports_receipts=False, supports_ack=False)

    def __init__(self, context: ChannelContext) -> None:
        self.config = EmailConfig.from_settings(context.settings)

    def endpoint(self) -> str:
        scheme = "smtp+starttls" if self.config.starttls else "smtp"
        return f"{scheme}://{self.config.host}:{self.config.port}"

    async def aclose(self) -> None:
        """Nothing to close: each batch opens and closes its own SMTP session."""

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One personal email per recipient over one SMTP session.

        Raises:
            TransientDeliveryError: the server is unreachable, refuses the session (421) or our login.
        """
        results: dict[str, DeliveryResult] = {}
        valid = []
        for recipient in batch:
            if valid_address(recipient.address):
                valid.append(recipient)
            else:
                results[recipient.id] = DeliveryResult.permanent(
                    recipient, f"{recipient.address!r} is not a valid email address")
        if valid:
            smtp = await self._connect()
            try:
                for index, recipient in enumerate(valid):
                    result = await self._send_one(smtp, message, recipient)
                    results[recipient.id] = result
                    if not smtp.is_connected:
                        for rest in valid[index + 1:]:
                            results[rest.id] = DeliveryResult.transient(rest, "SMTP session closed by the server")
                        break
            finally:
                await self._quit(smtp)
        return [results[r.id] for r in batch]

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self.config
        smtp = aiosmtplib.SMTP(hostname=config.host, port=config.port, start_tls=config.starttls,
                               use_tls=False, timeout=config.timeout, local_hostname=config.helo)
        where = f"SMTP server {config.host}:{config.port}"
        try:
            await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise TransientDeliveryError(f"{where} refused the session: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError, aiosmtplib.SMTPTimeoutError,
                aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            raise TransientDeliveryError(f"{where} is unreachable: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:  # STARTTLS refused, EHLO failed
            await self._quit(smtp)
            raise TransientDeliveryError(f"{where} refused the session: {exc.code} {exc.message}") from exc
        if config.username:
            try:
                await smtp.login(config.username, config.password)
            except aiosmtplib.SMTPAuthenticationError as exc:
                await self._quit(smtp)
                raise TransientDeliveryError(f"{where} refused our login ({exc.code} {exc.message})") from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._quit(smtp)
                raise TransientDeliveryError(f"{where}: login failed: {exc}") from exc
        return smtp

    async def _send_one(self, smtp: aiosmtplib.SMTP, message: Message, recipient: Recipient) -> DeliveryResult:
        mail = build_email(message, recipient, self.config)
        try:
            errors, _ = await smtp.send_message(mail, sender=self.config.envelope_from,
                                                recipients=[recipient.address])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return _classify(recipient, refused.code, refused.message)
        except aiosmtplib.SMTPResponseException as exc:  # MAIL FROM or DATA refused
            if smtp.is_connected:
                await self._reset(smtp)
            return _classify(recipient, exc.code, exc.message)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            return DeliveryResult.transient(recipient, f"SMTP session failed: {exc}")
        if recipient.address in errors:
            code, reply = errors[recipient.address]
            return _classify(recipient, code, reply)
        return DeliveryResult.accepted(recipient, str(mail["Message-ID"]))

    @staticmethod
    async def _reset(smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()

    @staticmethod
    async def _quit(smtp: aiosmtplib.SMTP) -> None:
        if not smtp.is_connected:
            return
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
