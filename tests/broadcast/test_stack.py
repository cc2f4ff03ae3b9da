"""`broadcast up` and the README's worked example, run as a new user would: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from lxml import etree

from broadcast.redis_server import free_port, free_port_run

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- example:start -->\s*```bash\n(.*?)```\s*<!-- example:end -->", text, re.S)
    assert match, "README.md lost its marked curl example"
    return match.group(1)


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    port, redis_port = free_port(), free_port()
    sim_base = free_port_run()  # the simulators use the next 16 ports
    env = {**os.environ, "BROADCAST_PORT": str(port), "BROADCAST_LOCAL_REDIS_PORT": str(redis_port),
           "BROADCAST_SIM_BASE_PORT": str(sim_base),
           "BROADCAST_DATA_DIR": str(tmp_path / "data"), "PATH": f"{BIN}:{os.environ['PATH']}",
           "BROADCAST_DEMO_SUBSCRIBERS": "20000"}
    env.pop("REDIS_URL", None)
    log = tmp_path / "up.log"
    # The stack's output goes to a file: a pipe nobody reads would fill and stall the workers' logging.
    with log.open("wb") as sink:
        process = subprocess.Popen([str(BIN / "broadcast"), "up", "--workers", "2"], env=env, cwd=tmp_path,
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and b"ready at" not in log.read_bytes():
        time.sleep(0.1)
    assert b"ready at" in log.read_bytes(), log.read_text(errors="replace")
    try:
        yield process, env
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_up_runs_the_readme_example_and_stops_everything_on_ctrl_c(stack, tmp_path: Path, shared_data) -> None:
    process, env = stack
    port = env["BROADCAST_PORT"]
    script = _readme_example().replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(".venv/bin/", f"{BIN}/")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script + '\necho "ID=$ID"'], env=env, cwd=REPO,
                            capture_output=True, timeout=60)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    # The example ends by printing the CAP XML of the issued alert: valid CAP 1.2.
    xml = out[out.index("<?xml"):out.rindex("</alert>") + len("</alert>")].encode()
    schema = etree.XMLSchema(etree.parse(str(shared_data / "cap" / "CAP-v1.2.xsd")))
    assert schema.validate(etree.fromstring(xml)), schema.error_log
    assert b"<msgType>Alert</msgType>" in xml and b"<severity>Extreme</severity>" in xml
    alert_id = re.search(r"^ID=(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]

    # A worker of the stack picked up the dissemination job.
    token = subprocess.run([str(BIN / "broadcast"), "user", "add", "olivia", "--role", "ops"], env=env,
                           capture_output=True, check=True).stdout.decode().strip()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, body = _get(f"http://127.0.0.1:{port}/api/alerts/{alert_id}", token)
        if b'"outcome":"ran"' in body.replace(b" ", b""):
            break
        time.sleep(0.2)
    assert b'"outcome":"ran"' in body.replace(b" ", b""), body

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
    assert process.wait(timeout=30) == 0
    leftovers = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True).stdout
    assert leftovers == b"", leftovers
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/healthz")
    with pytest.raises(redis.ConnectionError):  # Redis (in a session of its own) stopped too, and last
        redis.Redis(host="127.0.0.1", port=int(env["BROADCAST_LOCAL_REDIS_PORT"])).ping()
    # Redis outlived the processes using it: nothing of theirs failed on the way down.
    log = (tmp_path / "up.log").read_text(errors="replace")
    assert "Traceback" not in log[log.rindex("ready at"):], log[log.rindex("ready at"):][-3000:]
    assert (Path(env["BROADCAST_DATA_DIR"]) / "redis" / "appendonlydir").is_dir()


def test_user_add_prints_only_the_token_and_refuses_bad_input(stack) -> None:
    _, env = stack
    broadcast = str(BIN / "broadcast")
    result = subprocess.run([broadcast, "user", "add", "lin", "--role", "forecaster"], env=env, capture_output=True)
    assert result.returncode == 0
    assert re.fullmatch(rb"bct_[A-Za-z0-9_-]{43}\n", result.stdout), result.stdout
    again = subprocess.run([broadcast, "user", "add", "lin", "--role", "forecaster"], env=env, capture_output=True)
    assert again.returncode == 2 and b"name" in again.stderr and again.stdout == b""
    bad_role = subprocess.run([broadcast, "user", "add", "mei", "--role", "chief"], env=env, capture_output=True)
    assert bad_role.returncode == 2 and b"role" in bad_role.stderr
    listing = subprocess.run([broadcast, "user", "list"], env=env, capture_output=True, check=True).stdout
    assert listing == b"lin\tforecaster\n"


def test_alert_commands_script_the_workflow_over_http(stack, tmp_path: Path) -> None:
    _, env = stack
    broadcast = str(BIN / "broadcast")

    def run(*args: str, token: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([broadcast, "alert", "--token", token, *args], env=env, input=stdin,
                              capture_output=True, timeout=30)

    alice = subprocess.run([broadcast, "user", "add", "alice", "--role", "forecaster"], env=env,
                           capture_output=True, check=True).stdout.decode().strip()
    bob = subprocess.run([broadcast, "user", "add", "bob", "--role", "approver"], env=env,
                         capture_output=True, check=True).stdout.decode().strip()
    request = (b'{"signal": {"hazard": "typhoon", "level": "white"}, "areas": [{"desc": "Nanshan", '
               b'"geocodes": [{"value_name": "adcode", "value": "440305"}]}]}')
    created = run("create", "-", token=alice, stdin=request)
    assert created.returncode == 0, created.stderr
    alert_id = re.search(rb'"id": "([^"]+)"', created.stdout).group(1).decode()  # type: ignore[union-attr]
    assert run("submit", alert_id, token=alice).returncode == 0
    own = run("approve", alert_id, token=alice)
    assert own.returncode == 1 and b'"field": "role"' in own.stderr
    assert run("approve", alert_id, token=bob).returncode == 0
    cap = run("cap", alert_id, token=bob)
    assert cap.returncode == 0 and b"<geocode>" in cap.stdout and b"440305" in cap.stdout
    bad = run("create", "-", token=alice, stdin=b'{"signal": {"hazard": "typhoon", "level": "purple"}}')
    assert bad.returncode == 1 and b"signal.level" in bad.stderr
    unreachable = subprocess.run([broadcast, "alert", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x",
                                  "list"], env=env, capture_output=True, timeout=30)
    assert unreachable.returncode == 2 and b"cannot reach" in unreachable.stderr


def test_gazetteer_import_reaches_the_running_service(stack, tmp_path: Path, shared_data) -> None:
    _, env = stack
    broadcast = str(BIN / "broadcast")
    port = env["BROADCAST_PORT"]
    status = json.loads(subprocess.run([broadcast, "registry", "status"], env=env, capture_output=True,
                                       check=True).stdout)
    assert status["subscribers"] == 20000 and status["facilities"]["sectors"] > 0  # generated by `up`
    token = subprocess.run([broadcast, "user", "add", "olga", "--role", "ops"], env=env, capture_output=True,
                           check=True).stdout.decode().strip()
    _, body = _get(f"http://127.0.0.1:{port}/api/units?level=district", token)
    assert json.loads(body)["total"] == 10

    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Feature"}')
    refused = subprocess.run([broadcast, "gazetteer", "import", str(bad), "--level", "district"], env=env,
                             capture_output=True)
    assert refused.returncode == 2 and b"type" in refused.stderr

    imported = subprocess.run([broadcast, "gazetteer", "import", str(shared_data / "shenzhen-districts.geojson"),
                               "--level", "district"], env=env, capture_output=True)
    assert imported.returncode == 0, imported.stderr
    out = imported.stdout.decode()
    assert "removed\t440399" in out and "published gazetteer" in out
    _, body = _get(f"http://127.0.0.1:{port}/api/units?level=district", token)
    assert json.loads(body)["total"] == 9
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/targeting/resolve", method="POST",
        data=json.dumps({"areas": [{"circle": {"lon": 114.0579, "lat": 22.5431, "radius_km": 0.2}}]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        resolved = json.loads(response.read())
    assert [u["code"] for u in resolved["units"] if u["level"] == "district"] == ["440304"]


def test_the_demo_lands_one_warning_in_all_13_simulators(stack) -> None:
    _, env = stack
    result = subprocess.run(["bash", str(REPO / "ops" / "demo")], env=env, capture_output=True, timeout=120)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    table = {line.split("\t")[0]: dict(cell.split("=") for cell in line.split("\t")[1:])
             for line in out.splitlines() if line.count("\t") == 4}
    assert set(table) == {"sms", "cell_broadcast", "voice", "email", "wechat", "weibo", "app_push", "tv", "radio",
                          "display_screen", "loudspeaker", "webhook", "cap_feed"}, out
    for name, counts in table.items():
        assert int(counts["sent"]) == int(counts["targeted"]) > 0, (name, counts)
        assert counts["failed"] == "0", (name, counts)
    received = out[out.index("what each simulator received:"):].splitlines()[1:]
    assert len(received) == 13
    expected_kind = {"twilio": "call", "smpp": "submit_sm", "cbc": "message", "smtp": "email", "wechat": "template",
                     "weibo": "post", "fcm": "message", "tv": "cap", "radio": "cap", "screens": "display",
                     "loudspeakers": "play", "webhook": "delivery", "feed_reader": "entry"}
    for line in received:
        name, counts = line.split(maxsplit=1)
        assert f" {expected_kind[name]}" in f" {counts}", line
