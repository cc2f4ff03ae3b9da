"""The ``broadcast`` command.

    broadcast up [--workers N]             the whole local stack in the foreground
    broadcast serve [--processes N]        the HTTP API only
    broadcast worker [--burst] [--fork]    one RQ worker
    broadcast user add NAME --role ROLE    prints the new user's token, nothing else
    broadcast user list | token NAME | remove NAME
    broadcast alert create|list|show|edit|submit|approve|reject|update|cancel|cap|audit|progress ...
    broadcast signals                      the warning-signal catalogue
    broadcast roster import FILE | generate-demo | show CODE   duty officers per unit

``alert`` subcommands talk to the running service over HTTP (``BROADCAST_URL``, default
from the settings; token from ``--token`` or ``BROADCAST_TOKEN``), so scripts go
through the same checks and audit trail as everyone else. Exit codes: 0 done, 1 the
service refused (its JSON error is printed on stderr), 2 bad usage or unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import redis

from broadcast.errors import BroadcastError, InvalidInput
from broadcast.settings import Settings, load_settings
from broadcast.users import UserDirectory, parse_roles

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.effective_redis_url, socket_connect_timeout=3)


# ---------------------------------------------------------------- local commands


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from broadcast.stack import run_stack

    return run_stack(settings, args.workers, simulators=not args.no_sim)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from broadcast.api import serve

    if args.processes < 1:
        raise InvalidInput("at least one process", field="--processes")
    serve(settings, processes=args.processes)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from broadcast.worker import run_worker

    run_worker(settings, name=args.name, burst=args.burst, fork=args.fork, with_scheduler=not args.no_scheduler,
               max_jobs=args.max_jobs)
    return 0


def cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    directory = UserDirectory(_redis(settings))
    if args.user_command == "add":
        print(directory.add(args.name, parse_roles(args.role)))
    elif args.user_command == "token":
        print(directory.rotate_token(args.name))
    elif args.user_command == "remove":
        directory.remove(args.name)
    else:
        for user in directory.list():
            print(f"{user.name}\t{','.join(sorted(r.value for r in user.roles))}")
    return 0


def _registry(settings: Settings):  # type: ignore[no-untyped-def]
    from geotarget.registry import RegistryStore, TargetCache

    store = RegistryStore(_redis(settings), settings.data_dir)
    return store, TargetCache(store)


def cmd_gazetteer(settings: Settings, args: argparse.Namespace) -> int:
    from collections import Counter

    from geotarget.importer import PropertyMapping, import_file
    from geotarget.registry import publish_gazetteer

    store, cache = _registry(settings)
    if args.gazetteer_command == "export":
        cache.get().gazetteer.write_geojson(args.file)
        return 0
    if args.gazetteer_command == "reset":
        store.reset("gazetteer")
        print("the built-in demo gazetteer is current")
        return 0
    defaults = PropertyMapping()
    mapping = PropertyMapping(
        code=tuple(args.code_property) if args.code_property else defaults.code,
        name=args.name_property or defaults.name,
        name_en=args.name_en_property or defaults.name_en,
        level=args.level_property or defaults.level,
        parent=args.parent_property or defaults.parent,
        population=args.population_property or defaults.population,
    )
    result = import_file(cache.get().gazetteer, args.file, args.level, mapping)
    for note in result.report:
        if note.kind in ("unplaced", "removed", "reparented", "repaired", "created"):
            print(f"{note.kind}\t{note.code or '-'}\t{note.message}")
    counts = Counter(note.kind for note in result.report)
    print("summary: " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) if counts else "summary: -")
    if args.dry_run:
        return 0
    version = publish_gazetteer(store, result.gazetteer, note=f"{args.level} from {args.file}")
    print(f"published gazetteer {version}")
    return 0


def cmd_registry(settings: Settings, args: argparse.Namespace) -> int:
    from geotarget.facilities import FacilityRegistry, generate_facilities
    from geotarget.subscribers import generate_subscribers, import_csv

    store, cache = _registry(settings)
    command = args.registry_command
    if command == "status":
        targets = cache.get()
        print(json.dumps({
            "versions": targets.versions,
            "gazetteer": {lv.value: len(targets.gazetteer.units_at(lv)) for lv in _levels()},
            "subscribers": len(targets.subscribers) if targets.subscribers is not None else None,
            "facilities": targets.facilities.counts() if targets.facilities is not None else None,
        }, ensure_ascii=False, indent=2))
        return 0
    if command == "verify":
        for kind, version in sorted(store.current_versions().items()):
            store.locate(kind, version, full_check=True)
            print(f"{kind} {version}: ok")
        return 0
    gazetteer = cache.get().gazetteer
    if command == "generate-demo":
        version = store.publish("facilities", lambda d: generate_facilities(gazetteer, seed=args.seed).save(d),
                                note="generated demo facilities")
        print(f"published facilities {version}")
        version = store.publish("subscribers", lambda d: generate_subscribers(
            gazetteer, args.subscribers, d, seed=args.seed, overwrite=True), note=f"{args.subscribers} generated")
        print(f"published subscribers {version}")
        return 0
    if args.kind == "subscribers":
        version = store.publish("subscribers", lambda d: import_csv(args.path, d, overwrite=True),
                                note=f"imported from {args.path}")
    else:
        version = store.publish("facilities", lambda d: FacilityRegistry.load(args.path).save(d),
                                note=f"imported from {args.path}")
    print(f"published {args.kind} {version}")
    return 0


def cmd_roster(settings: Settings, args: argparse.Namespace) -> int:
    from broadcast.roster import RosterStore, demo_roster, parse_csv

    store, cache = _registry(settings)
    roster = RosterStore(store.redis, settings.timezone)
    gazetteer = cache.get().gazetteer
    if args.roster_command == "import":
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            print(f"error: cannot read {args.file}: {err}", file=sys.stderr)
            return EXIT_USAGE
        count = roster.replace(parse_csv(text, gazetteer, source=args.file), source=args.file)
        print(f"imported {count} officers from {args.file}")
    elif args.roster_command == "generate-demo":
        count = roster.replace(demo_roster(gazetteer), source="demo")
        print(f"generated the demo roster: {count} officers")
    else:
        gazetteer.unit(args.code)  # NotFound for an unknown unit
        officers = roster.of_unit(args.code)
        if not officers:
            print(f"error: nobody answers for unit {args.code} on the roster", file=sys.stderr)
            return EXIT_REFUSED
        print(json.dumps([o.as_dict() for o in officers], ensure_ascii=False, indent=2))
    return 0


def _levels():  # type: ignore[no-untyped-def]
    from geotarget.gazetteer import Level

    return tuple(Level)


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    """``broadcast bench sms ...``: the SMS fan-out benchmark (perf/bench_sms.py), options passed through."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "perf" / f"bench_{args.benchmark}.py"
    if not script.is_file():
        print(f"error: {script} is missing (benchmarks run from a checkout)", file=sys.stderr)
        return EXIT_USAGE
    return subprocess.call([sys.executable, str(script), *args.options])


def cmd_sim(settings: Settings, args: argparse.Namespace) -> int:
    from ops.simulators.run import run

    return run(settings)


def cmd_channels_send(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from broadcast.alerts import AlertService
    from broadcast.sample_send import send_sample
    from broadcast.signals import load_catalogue
    from channels.base import registered

    store, cache = _registry(settings)
    service = AlertService(store.redis, settings, load_catalogue(), cache)
    record = service.store.get(args.id)
    names = args.channel or list(registered())
    outcomes = asyncio.run(send_sample(record, names, signal=service.signal_of(record), settings=settings,
                                       targets=cache.get(), redis_url=settings.effective_redis_url,
                                       limit=args.limit))
    failed = False
    for outcome in outcomes:
        counts = " ".join(f"{k}={v}" for k, v in outcome.counts().items() if v)
        problem = outcome.error or next((r.error for r in outcome.results if r.error), "")
        failed = failed or bool(outcome.error) or not outcome.results
        print(f"{outcome.channel}\t{counts or 'no recipients'}\t{outcome.endpoint}" + (f"\t{problem}" if problem
                                                                                       else ""))
    return EXIT_REFUSED if failed else 0


def cmd_channels(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    import aiohttp

    import channels
    from channels.base import ChannelContext, registered

    if getattr(args, "channels_command", None) == "send":
        return cmd_channels_send(settings, args)

    async def describe() -> list[str]:
        lines = []
        async with aiohttp.ClientSession() as http:
            context = ChannelContext(settings, http)
            for name, cls in registered().items():
                caps = cls.capabilities
                adapter = cls(context)
                try:
                    endpoint = adapter.endpoint()
                finally:
                    await adapter.aclose()
                limit = "-" if caps.max_length is None else str(caps.max_length)
                lines.append(f"{name}\tkind={caps.kind} batch={caps.max_batch} length={limit} "
                             f"segments={caps.segment_rule} rate={settings.rates.get(name, caps.rate_per_second):g}/s "
                             f"receipts={'yes' if caps.supports_receipts else 'no'} "
                             f"ack={'yes' if caps.supports_ack else 'no'}\t{endpoint}")
        return lines

    assert channels.__doc__  # the package import registers every adapter
    print("\n".join(asyncio.run(describe())))
    return 0


def cmd_signals(settings: Settings, args: argparse.Namespace) -> int:
    from broadcast.signals import load_catalogue

    print(json.dumps(load_catalogue().as_dict(), ensure_ascii=False, indent=2))
    return 0


# ---------------------------------------------------------------- alert commands (HTTP)


class ApiClient:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, bytes, str]:
        request = urllib.request.Request(f"{self.base_url}{path}", data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get_content_type()


def _read_input(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def _looks_like_xml(data: bytes) -> bool:
    return data.lstrip().startswith(b"<")


def _alert_progress(client: ApiClient, args: argparse.Namespace) -> int:
    import time

    from broadcast.progress_view import render_progress

    if args.interval <= 0 or args.width < 1:
        print("error: --interval must be above 0 and --width at least 1", file=sys.stderr)
        return EXIT_USAGE
    while True:
        try:
            status, payload, _ = client.call("GET", f"/api/alerts/{args.id}/progress")
        except OSError as err:
            if not args.watch:
                print(f"error: cannot reach {client.base_url}: {err}", file=sys.stderr)
                return EXIT_USAGE
            text = f"cannot reach {client.base_url}: {err} (retrying every {args.interval:g} s)"
        else:
            if status >= 400:
                sys.stderr.write(payload.decode("utf-8", errors="replace") + "\n")
                return EXIT_REFUSED
            progress = json.loads(payload)
            text = (json.dumps(progress, ensure_ascii=False, indent=2) if args.raw
                    else render_progress(progress, width=args.width))
        if not args.watch:
            print(text)
            return 0
        sys.stdout.write("\033[H\033[2J" + text + "\n")  # home the cursor, clear the screen, redraw
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_alert(settings: Settings, args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("BROADCAST_TOKEN")
    if not token:
        print("error: a token is needed: --token or BROADCAST_TOKEN", file=sys.stderr)
        return EXIT_USAGE
    client = ApiClient(args.url or os.environ.get("BROADCAST_URL") or settings.base_url, token)
    action = args.alert_command
    if action == "progress":
        return _alert_progress(client, args)
    body: bytes | None = None
    content_type = "application/json"
    method, path = "POST", f"/api/alerts/{getattr(args, 'id', '')}/{action}"
    if action == "create":
        body = _read_input(args.file)
        content_type = "application/cap+xml" if _looks_like_xml(body) else "application/json"
        path = "/api/alerts"
    elif action == "list":
        method, path = "GET", f"/api/alerts?limit={args.limit}"
    elif action == "show":
        method, path = "GET", f"/api/alerts/{args.id}"
    elif action in ("cap", "audit"):
        method = "GET"
    elif action == "edit":
        method, path, body = "PATCH", f"/api/alerts/{args.id}", _read_input(args.file)
    elif action == "update":
        body = _read_input(args.file)
    elif action == "reject":
        body = json.dumps({"reason": args.reason}).encode()
    elif action == "cancel":
        body = json.dumps({"reason": args.reason, "urgent": args.urgent}).encode()
    try:
        status, payload, received_type = client.call(method, path, body, content_type)
    except OSError as err:
        print(f"error: cannot reach {client.base_url}: {err}", file=sys.stderr)
        return EXIT_USAGE
    if status >= 400:
        sys.stderr.write(payload.decode("utf-8", errors="replace") + "\n")
        return EXIT_REFUSED
    if received_type == "application/json" and not args.raw:
        print(json.dumps(json.loads(payload), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(payload.decode("utf-8"))
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broadcast", description="Multichannel emergency alert broadcast service")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start Redis (unless REDIS_URL is set), the API and workers")
    up.add_argument("--workers", type=int, default=None, help="number of worker processes")
    up.add_argument("--no-sim", action="store_true", help="do not start the channel simulators")
    up.set_defaults(run=cmd_up)
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--processes", type=int, default=1,
                       help="API processes sharing the port (SO_REUSEPORT); about one per core")
    serve.set_defaults(run=cmd_serve)
    worker = commands.add_parser("worker", help="run one RQ worker on the alert queues")
    worker.add_argument("--name")
    worker.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    worker.add_argument("--fork", action="store_true", help="run each job in a forked child")
    worker.add_argument("--no-scheduler", action="store_true", help="do not take part in running scheduled jobs")
    worker.add_argument("--max-jobs", type=int, help="stop after this many jobs")
    worker.set_defaults(run=cmd_worker)

    user = commands.add_parser("user", help="manage users and tokens")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="add a user and print their token")
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True,
                     help="forecaster, approver, officer, ops or admin (repeatable)")
    user_commands.add_parser("list")
    user_commands.add_parser("token", help="issue a new token, revoking the old").add_argument("name")
    user_commands.add_parser("remove").add_argument("name")
    user.set_defaults(run=cmd_user)

    commands.add_parser("signals", help="print the warning-signal catalogue").set_defaults(run=cmd_signals)
    channel_parser = commands.add_parser("channels", help="one line per channel: limits and configured endpoint")
    channel_parser.set_defaults(run=cmd_channels)
    channel_commands = channel_parser.add_subparsers(dest="channels_command")
    sample = channel_commands.add_parser("send", help="send an ISSUED alert to the first recipients of each "
                                                      "channel (a smoke test of the channels)")
    sample.add_argument("id", help="alert id")
    sample.add_argument("--channel", action="append", help="only this channel (repeatable)")
    sample.add_argument("--limit", type=int, default=3, help="recipients per channel (default 3)")
    commands.add_parser("sim", help="run every local simulator in the foreground").set_defaults(run=cmd_sim)
    bench = commands.add_parser("bench", help="benchmarks: `broadcast bench sms --provider smpp|twilio --recipients N "
                                              "--rate R [--workers K] [--latency-ms L]` (see perf/README.md)")
    bench.add_argument("benchmark", choices=["sms", "subscribers", "targeting"])
    bench.add_argument("options", nargs=argparse.REMAINDER, help="passed to perf/bench_<benchmark>.py")
    bench.set_defaults(run=cmd_bench)

    gazetteer = commands.add_parser("gazetteer", help="import or export administrative boundaries")
    gazetteer_commands = gazetteer.add_subparsers(dest="gazetteer_command", required=True)
    imported = gazetteer_commands.add_parser(
        "import", help="replace one level's polygons from a GeoJSON FeatureCollection; lower levels are re-fitted")
    imported.add_argument("file")
    imported.add_argument("--level", required=True, choices=["city", "district", "street", "community"])
    imported.add_argument("--code-property", action="append",
                          help="property holding the unit code (repeatable, tried in order; default code, adcode)")
    imported.add_argument("--name-property", help="default name")
    imported.add_argument("--name-en-property", help="default name_en")
    imported.add_argument("--level-property", help="default level")
    imported.add_argument("--parent-property", help="default parent (a code, or an object such as DataV's "
                                                    "{\"adcode\": 440300}); dotted paths like parent.adcode work")
    imported.add_argument("--population-property", help="default population")
    imported.add_argument("--dry-run", action="store_true", help="print the report, publish nothing")
    gazetteer_commands.add_parser("export", help="write the current gazetteer as GeoJSON").add_argument("file")
    gazetteer_commands.add_parser("reset", help="make the built-in demo gazetteer current again")
    gazetteer.set_defaults(run=cmd_gazetteer)

    roster = commands.add_parser("roster", help="duty officers of every unit (CSV format: see the README)")
    roster_commands = roster.add_subparsers(dest="roster_command", required=True)
    roster_commands.add_parser("import", help="replace the roster with a CSV file (nothing changes if a row is "
                                              "bad)").add_argument("file")
    roster_commands.add_parser("generate-demo", help="a primary and a deputy for every unit of the gazetteer")
    roster_commands.add_parser("show", help="the officers of one unit, as JSON").add_argument("code")
    roster.set_defaults(run=cmd_roster)

    registry = commands.add_parser("registry", help="target registries: subscribers, facilities")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    demo = registry_commands.add_parser("generate-demo", help="generate demo subscribers and facilities")
    demo.add_argument("--subscribers", type=int, default=200_000)
    demo.add_argument("--seed", type=int, default=0)
    registry_import = registry_commands.add_parser("import", help="subscribers from CSV; facilities from a folder "
                                                                  "of GeoJSON files (cells, screens, stations, "
                                                                  "loudspeakers)")
    registry_import.add_argument("kind", choices=["subscribers", "facilities"])
    registry_import.add_argument("path")
    registry_commands.add_parser("status", help="current snapshot versions and counts")
    registry_commands.add_parser("verify", help="recompute every snapshot file's sha256")
    registry.set_defaults(run=cmd_registry)

    alert = commands.add_parser("alert", help="alert operations through the HTTP API")
    alert.add_argument("--url", help="service URL (default BROADCAST_URL or the settings)")
    alert.add_argument("--token", help="bearer token (default BROADCAST_TOKEN)")
    alert.add_argument("--raw", action="store_true", help="print the response body as received")
    alert_commands = alert.add_subparsers(dest="alert_command", required=True)
    alert_commands.add_parser("create", help="FILE is JSON or CAP XML; - reads stdin").add_argument("file")
    listing = alert_commands.add_parser("list")
    listing.add_argument("--limit", type=int, default=50)
    for name in ("show", "submit", "approve", "cap", "audit"):
        alert_commands.add_parser(name).add_argument("id")
    for name in ("edit", "update"):
        sub = alert_commands.add_parser(name, help="FILE holds the changed fields as JSON; - reads stdin")
        sub.add_argument("id")
        sub.add_argument("file")
    progress_parser = alert_commands.add_parser("progress", help="per-channel progress bars of an issued alert")
    progress_parser.add_argument("id")
    progress_parser.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    progress_parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    progress_parser.add_argument("--width", type=int, default=40, help="characters per progress bar (default 40)")
    reject = alert_commands.add_parser("reject")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    cancel = alert_commands.add_parser("cancel")
    cancel.add_argument("id")
    cancel.add_argument("--reason", required=True)
    cancel.add_argument("--urgent", action="store_true", help="any approver may approve it, the requester too")
    alert.set_defaults(run=cmd_alert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return int(args.run(settings, args))
    except BroadcastError as err:
        where = f"{err.field}: " if err.field else ""
        print(f"error: {where}{err.message}", file=sys.stderr)
        return EXIT_USAGE if err.status >= 400 and err.status < 500 else EXIT_REFUSED
    except redis.ConnectionError as err:
        print(f"error: cannot reach Redis: {err} (is `broadcast up` running, or REDIS_URL set?)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
