"""Configuration: one typed, frozen settings object.

Values come from, in rising precedence: the defaults below, one TOML file (the path in
``BROADCAST_CONFIG``, else ``./broadcast.toml`` when it exists; keys are the field names),
and the environment (``BROADCAST_<FIELD>`` in upper case, plus ``REDIS_URL``). Lists in
the environment are comma-separated. The README's configuration reference lists them all.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from broadcast.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # None means: no external Redis; `broadcast up` runs its own redis-server on local_redis_port.
    redis_url: str | None = None
    local_redis_port: int = 6399
    data_dir: Path = Path(".broadcast")
    workers: int = 2
    # Subscribers `broadcast up` generates when no subscriber registry is published yet.
    demo_subscribers: int = 200_000

    sender: str = "alerts@szmb.example"
    sender_name: str = "深圳市气象台 Shenzhen Meteorological Observatory"
    identifier_prefix: str = "SZMB"
    contact: str = "12121"
    web: str = "https://weather.sz.example/warnings"
    timezone: str = "Asia/Shanghai"

    languages: tuple[str, ...] = ("zh-CN", "en")
    required_languages: tuple[str, ...] = ("zh-CN", "en")
    max_headline_length: int = 160
    max_text_length: int = 4000
    max_body_bytes: int = 1_048_576
    max_sms_segments: int = 10  # concatenated SMS parts an alert's text may take
    default_validity_hours: float = 6.0

    # Geometry rules for drawn areas, and the coverage below which a unit counts as "edge".
    max_area_vertices: int = 10_000
    edge_coverage_fraction: float = 0.05

    job_timeout_seconds: int = 600

    # Fan-out (broadcast/fanout.py, broadcast/sender.py).
    batch_size: int = 1000  # recipients per RQ job (at most the channel's max_batch)
    lookahead_seconds: float = 10.0  # seconds of sending queued ahead per channel
    sender_lanes: int = 6  # chunks of one batch in flight at once (keeps a provider connection busy)
    # Tokens (recipients) a sender books from its account's bucket at once. An account's emission
    # window holds what is written in any second to its rate + sender_chunk.
    sender_chunk: int = 50
    # Seconds of an account's rate its senders may catch up at once after falling behind (a slow
    # spell on a busy machine): the bucket's burst. The emission window still holds every second.
    sender_catch_up_seconds: float = 0.1
    batch_timeout_seconds: int = 120  # a batch's RQ timeout (a dead worker's batch re-runs ~60 s after it)
    max_send_attempts: int = 5  # transient failures of one recipient before it counts as failed
    retry_backoff_seconds: float = 0.5
    retry_backoff_max_seconds: float = 10.0
    dedupe_ttl_seconds: int = 7 * 86400  # how long "already sent" is remembered per alert and channel

    # Channels: where the adapters send. By default every channel points at its local simulator
    # (`broadcast sim`) on sim_host:sim_base_port+offset; channel_options entries
    # "<channel>.<key>=<value>" set real endpoints and credentials (see channels/*.py).
    sim_host: str = "127.0.0.1"
    sim_base_port: int = 9100
    # "full": the SMPP simulator records every PDU (tests, demos); "compact": only when each text
    # completed and for whom (benchmarks at millions of messages; see GET /_sim/texts).
    sim_record: str = "full"
    channel_options: tuple[str, ...] = ()
    # Where providers (Twilio status callbacks, voice keypresses) reach this service.
    public_url: str | None = None

    # Sending rate per channel (messages per second; per provider account for SMS), used for
    # coverage-time estimates now and by the rate-controlled sender later.
    channel_rates: tuple[str, ...] = (
        "sms=5000", "cell_broadcast=50", "voice=100", "email=500", "wechat=2000", "weibo=1",
        "app_push=10000", "tv=1", "radio=1", "display_screen=200", "loudspeaker=100", "webhook=50",
        "cap_feed=1000",
    )

    # Linkage (broadcast/linkage_jobs.py): minutes each unit has to acknowledge, by the warning's
    # colour, else by its CAP severity (else 60); the reminder goes out this fraction of the way to
    # the deadline; the supervising unit hears of an overdue unit this fraction of a deadline after it.
    linkage_deadline_minutes: tuple[str, ...] = (
        "red=10", "orange=20", "yellow=30", "blue=60", "white=60",
        "Extreme=10", "Severe=20", "Moderate=30", "Minor=60", "Unknown=60",
    )
    linkage_reminder_fraction: float = 0.5
    linkage_parent_delay_fraction: float = 0.5
    # Key of the officers' signed acknowledgement links (broadcast/ack_links.py); unset: a random
    # secret generated once and kept in Redis (keys.ACK_LINK_SECRET), shared by every process.
    ack_link_secret: str | None = None

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise InvalidInput("port must be 1..65535", field="port")
        if self.sim_record not in ("full", "compact"):
            raise InvalidInput("sim_record is full or compact", field="sim_record")
        if not (0 < self.sim_base_port < 65520):
            raise InvalidInput("port must be 1..65519 (the simulators use the next 16)", field="sim_base_port")
        if not (0 < self.local_redis_port < 65536):
            raise InvalidInput("port must be 1..65535", field="local_redis_port")
        self.rates  # noqa: B018 - parses and checks channel_rates
        self.linkage_deadlines  # noqa: B018 - parses and checks linkage_deadline_minutes
        if not (0.0 < self.linkage_reminder_fraction < 1.0):
            raise InvalidInput("must be above 0 and below 1", field="linkage_reminder_fraction")
        if not (0.0 <= self.linkage_parent_delay_fraction <= 10.0):
            raise InvalidInput("must be between 0 and 10", field="linkage_parent_delay_fraction")
        if not (0.0 <= self.edge_coverage_fraction < 1.0):
            raise InvalidInput("must be at least 0 and below 1", field="edge_coverage_fraction")
        missing = set(self.required_languages) - set(self.languages)
        if missing:
            raise InvalidInput(f"required languages not supported: {sorted(missing)}", field="languages")
        for name in ("workers", "max_headline_length", "max_text_length", "max_body_bytes",
                     "default_validity_hours", "job_timeout_seconds", "max_area_vertices", "max_sms_segments",
                     "batch_size", "lookahead_seconds", "sender_lanes", "sender_chunk", "batch_timeout_seconds",
                     "max_send_attempts", "dedupe_ttl_seconds"):
            if getattr(self, name) <= 0:
                raise InvalidInput("must be positive", field=name)
        if not (0.0 <= self.sender_catch_up_seconds <= 10.0):
            raise InvalidInput("must be between 0 and 10 seconds", field="sender_catch_up_seconds")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"unknown time zone {self.timezone!r}", field="timezone") from None

    @property
    def rates(self) -> dict[str, float]:
        """channel_rates as a mapping: channel name -> messages per second."""
        rates = {}
        for entry in self.channel_rates:
            name, _, value = entry.partition("=")
            try:
                rate = float(value)
            except ValueError:
                rate = math.nan
            if not name.strip() or not math.isfinite(rate) or rate <= 0:
                raise InvalidInput(f"{entry!r} is not channel=rate with a positive rate", field="channel_rates")
            rates[name.strip()] = rate
        return rates

    @property
    def linkage_deadlines(self) -> dict[str, float]:
        """linkage_deadline_minutes as a mapping: colour ("red") or CAP severity ("Extreme") -> minutes."""
        known = {"white", "blue", "yellow", "orange", "red", "Extreme", "Severe", "Moderate", "Minor", "Unknown"}
        deadlines = {}
        for entry in self.linkage_deadline_minutes:
            name, _, value = entry.partition("=")
            try:
                minutes = float(value)
            except ValueError:
                minutes = math.nan
            if name.strip() not in known or not math.isfinite(minutes) or minutes <= 0:
                raise InvalidInput(f"{entry!r} is not colour=minutes or Severity=minutes with positive minutes",
                                   field="linkage_deadline_minutes")
            deadlines[name.strip()] = minutes
        return deadlines

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.local_redis_port}/0"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def callback_base_url(self) -> str:
        return (self.public_url or self.base_url).rstrip("/")

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(raw: Any, annotation: Any, name: str) -> Any:
    hint = typing.get_type_hints(Settings)[name] if annotation is None else annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None or raw == "":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(raw, inner, name)
    wrong = InvalidInput(f"cannot read {raw!r} as {getattr(hint, '__name__', hint)}", field=name)
    if origin is tuple:
        if not isinstance(raw, str | list):
            raise wrong
        items = raw.split(",") if isinstance(raw, str) else raw
        return tuple(_convert(item.strip() if isinstance(item, str) else item, args[0], name)
                     for item in items if item != "")
    if isinstance(raw, bool):
        raise wrong  # TOML true/false is never a number or a name
    if hint is int:
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
            return int(raw)
        raise wrong
    if hint is float:
        try:
            value = float(raw) if isinstance(raw, int | float | str) else math.nan
        except ValueError:
            raise wrong from None
        if not math.isfinite(value):
            raise wrong
        return value
    if hint in (str, Path):
        if not isinstance(raw, str):
            raise wrong
        return Path(raw) if hint is Path else raw
    raise InvalidInput(f"unsupported setting type {hint}", field=name)


def load_settings(environ: Mapping[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """Build Settings from the TOML file and the environment.

    Raises:
        InvalidInput: an unknown key in the file, or a value of the wrong type (names the setting).
    """
    env = os.environ if environ is None else environ
    if config_file is None:
        named = env.get("BROADCAST_CONFIG")
        config_file = Path(named) if named else Path("broadcast.toml")
        if not named and not config_file.exists():
            config_file = None
    values: dict[str, Any] = {}
    known = {f.name for f in fields(Settings)}
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read config file {config_file}: {exc}", field="BROADCAST_CONFIG") from exc
        for key, value in document.items():
            if key not in known:
                raise InvalidInput(f"unknown setting in {config_file}", field=key)
            values[key] = _convert(value, None, key)
    for name in known:
        env_name = "REDIS_URL" if name == "redis_url" else f"BROADCAST_{name.upper()}"
        if env_name in env:
            values[name] = _convert(env[env_name], None, name)
    return Settings(**values)
