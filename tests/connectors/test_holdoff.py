"""A `Retry-After` told to one process holds for every process that talks to the server
(`connectors.holdoff`): a reorganisation runs many flow runs against one SaaS app."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connectors.holdoff import FileHoldOff, HoldOff
from connectors.http import HttpClient, HttpConfig


class Throttling(ThreadingHTTPServer):
    """Answers the first request 429 with Retry-After: 1, the rest 200; notes when each
    request arrived (monotonic: the same clock in every process on this machine)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.arrivals: list[float] = []


class Handler(BaseHTTPRequestHandler):
    server: Throttling

    def do_GET(self) -> None:
        self.server.arrivals.append(time.monotonic())
        first = len(self.server.arrivals) == 1
        self.send_response(429 if first else 200)
        if first:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Throttling]:
    running = Throttling()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()


def client(server: Throttling, folder: Path) -> HttpClient:
    config = HttpConfig(
        name="app",
        kind="scim",
        base_url=f"http://127.0.0.1:{server.server_address[1]}",
        retry_budget_seconds=0,  # the told process gives up at once: the other one must wait
    )
    return HttpClient(config, holdoff=FileHoldOff(folder))


ROOT = Path(__file__).resolve().parents[2]
HOLDOFF = "from pathlib import Path\nfrom connectors.holdoff import FileHoldOff\nimport sys\n"


def in_another_process(code: str, *args: object) -> str:
    """`code` run by a new interpreter (another process), with `args` as sys.argv[1:];
    returns the last line it printed (structlog's default output comes first)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


TOLD_TO_WAIT = """
from connectors.base import TransientError
from connectors.http import HttpClient, HttpConfig
config = HttpConfig(name="app", kind="scim", base_url=sys.argv[1], retry_budget_seconds=0)
one = HttpClient(config, holdoff=FileHoldOff(Path(sys.argv[2])))
with one.session() as session:
    try:
        one._request(session, "GET", "Users")
    except TransientError as exc:
        print(exc.retry_after)
"""


def test_another_process_waits_until_the_retry_after_has_passed(
    server: Throttling, tmp_path: Path
) -> None:
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    # the other process is told to wait (429, Retry-After: 1) and gives up at once
    assert in_another_process(HOLDOFF + TOLD_TO_WAIT, base_url, tmp_path) == "1.0"
    told_at = server.arrivals[0]
    this = client(server, tmp_path)
    with this.session() as session:
        assert this._request(session, "GET", "Users").status_code == 200
    assert len(server.arrivals) == 2
    # sent no earlier than the other process was told (its 429 arrived after this moment)
    assert server.arrivals[1] >= told_at + 1.0


HERE = "here = FileHoldOff(Path(sys.argv[1]), clock=lambda: float(sys.argv[2]))\n"
NOTE_AT = HERE + 'here.note("https://app.example", float(sys.argv[3]))'
WAIT_AT = HERE + 'slept = []\nhere.wait("https://app.example", slept.append)\nprint(slept)'
PACE_AT = HERE + 'print(here.pace("https://app.example", 2.0, lambda s: None))'


def test_the_told_process_does_not_wait_twice_and_the_later_moment_wins(tmp_path: Path) -> None:
    here = FileHoldOff(tmp_path, clock=lambda: 1000.0)
    slept: list[float] = []
    here.note("https://app.example", 2.0)  # until 1002.0
    assert here.wait("https://app.example", slept.append) == 0.0  # told here: its retry waits
    in_another_process(HOLDOFF + NOTE_AT, tmp_path, 1000.0, 0.5)  # until 1000.5: ignored
    # another process, at 1001.0, sleeps the 1.0 s left of the 2.0 s
    assert in_another_process(HOLDOFF + WAIT_AT, tmp_path, 1001.0) == "[1.0]"
    assert slept == []
    assert HoldOff().wait("https://app.example", slept.append) == 0.0  # nothing shared


def test_pacing_gives_each_request_its_own_slot_across_processes(tmp_path: Path) -> None:
    here = FileHoldOff(tmp_path, clock=lambda: 1000.0)
    slept: list[float] = []
    # two requests per second: this process takes the slots at 1000.0 and 1000.5
    assert here.pace("https://app.example", 2.0, slept.append) == 0.0
    assert here.pace("https://app.example", 2.0, slept.append) == 0.5
    # another process takes the next one, at 1001.0
    assert in_another_process(HOLDOFF + PACE_AT, tmp_path, 1000.0) == "1.0"
    assert here.pace("https://app.example", 2.0, slept.append) == 1.5  # and then 1001.5
    assert slept == [0.5, 1.5]
    # another server has slots of its own; without a folder, pacing is this object's own
    assert here.pace("https://other.example", 2.0, slept.append) == 0.0
    alone = HoldOff(clock=lambda: 1000.0)
    assert [alone.pace("s", 4.0, slept.append) for _ in range(3)] == [0.0, 0.25, 0.5]
