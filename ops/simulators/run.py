"""``broadcast sim``: every simulator in one process, on 127.0.0.1 at sim_base_port + offset.

| simulator | port (default) | speaks |
|---|---|---|
| twilio | 9101 | Twilio REST (SMS, voice), status callbacks to the service |
| smpp | 9102 (SMPP), 9112 (inspection) | SMPP 3.4 SMS centre |
| cbc | 9103 | cell broadcast centre, osmo-cbc ECBE REST |
| smtp | 9104 (SMTP), 9114 (inspection) | SMTP server |
| wechat | 9105 | WeChat Official Account API |
| weibo | 9106 | Weibo API |
| fcm | 9107 | FCM HTTP v1 |
| tv | 9108 | TV broadcaster intake (CAP) |
| radio | 9109 | radio broadcaster intake (CAP + WAV) |
| screens | 9110 | display-screen management API |
| loudspeakers | 9111 | community loudspeaker terminals |
| webhook | 9113 | a partner department's webhook receiver |
| feed_reader | 9115 | polls the service's public CAP Atom feed |

Each answers ``GET /_sim/messages`` (what it received), ``DELETE /_sim/messages`` and
``GET|PUT /_sim/faults`` on its (inspection) port.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from aiohttp import web

from broadcast.settings import Settings
from channels.base import simulator_port
from channels.twilio import INBOUND_SMS_PATH

HTTP_SIMULATORS = ("twilio", "cbc", "wechat", "weibo", "fcm", "tv", "radio", "screens", "loudspeakers", "webhook")
Stop = Callable[[], Awaitable[None]]


async def _serve_app(app: web.Application, host: str, port: int) -> Stop:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup


async def start_all(settings: Settings, *, feed_poll_seconds: float = 5.0) -> dict[str, Stop]:
    """Start every simulator; returns name -> stop function."""
    host = settings.sim_host
    stops: dict[str, Stop] = {}
    try:
        for name in HTTP_SIMULATORS:
            module = importlib.import_module(f"ops.simulators.{name}")
            # Texts to our Twilio number go to the service's inbound-SMS webhook (officers' replies).
            options = {"sms_url": settings.callback_base_url + INBOUND_SMS_PATH} if name == "twilio" else {}
            stops[name] = await _serve_app(module.create_app(**options), host, simulator_port(settings, name))
        from ops.simulators.smpp import SmppSimulator
        from ops.simulators.smtp import SmtpSimulator

        smpp: Any = SmppSimulator(record=settings.sim_record)
        await smpp.start(host, simulator_port(settings, "smpp"), simulator_port(settings, "smpp_inspect"))
        stops["smpp"] = smpp.stop
        smtp: Any = SmtpSimulator()
        await smtp.start(host, simulator_port(settings, "smtp"), simulator_port(settings, "smtp_inspect"))
        stops["smtp"] = smtp.stop
        from ops.simulators.feed_reader import create_app as feed_reader_app

        reader = feed_reader_app(f"{settings.base_url}/feed/cap.atom", feed_poll_seconds)
        stops["feed_reader"] = await _serve_app(reader, host, simulator_port(settings, "feed_reader"))
    except BaseException:
        await stop_all(stops)
        raise
    return stops


async def stop_all(stops: dict[str, Stop]) -> None:
    for stop in reversed(list(stops.values())):
        # Stopping the others matters more than one simulator failing to stop cleanly.
        with contextlib.suppress(Exception):
            await stop()


def run(settings: Settings) -> int:
    """Run every simulator in the foreground until SIGINT or SIGTERM."""

    async def main() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        stops = await start_all(settings)
        ports = ", ".join(f"{name} {simulator_port(settings, name)}" for name in stops)
        print(f"simulators on {settings.sim_host}: {ports}", flush=True)
        await stopped.wait()
        await stop_all(stops)

    # uvloop: the SMPP simulator alone answers ~15,000 PDUs/s in a benchmark; a late simulator would
    # show up as the sender's jitter.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0
