"""A `Retry-After` told to one process holds for every process that talks to the server
(`connectors.holdoff`): a reorganisation runs many flow runs against one SaaS app."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connectors.base import TransientError
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


def told_to_wait(server: Throttling, folder: Path) -> None:
    """In another process: one request, answered 429 with Retry-After: 1."""
    one = client(server, folder)
    with one.session() as session:
        try:
            one._request(session, "GET", "Users")
        except TransientError as exc:
            assert exc.retry_after == 1
            return
    raise AssertionError("the first request should have been told to wait")


def test_another_process_waits_until_the_retry_after_has_passed(
    server: Throttling, tmp_path: Path
) -> None:
    other = multiprocessing.get_context("fork").Process(
        target=told_to_wait, args=(server, tmp_path)
    )
    other.start()
    other.join(60)
    assert other.exitcode == 0
    told_at = server.arrivals[0]
    this = client(server, tmp_path)
    with this.session() as session:
        assert this._request(session, "GET", "Users").status_code == 200
    assert len(server.arrivals) == 2
    # sent no earlier than the other process was told (its 429 arrived after this moment)
    assert server.arrivals[1] >= told_at + 1.0


def note_at(folder: Path, now: float, seconds: float) -> None:
    FileHoldOff(folder, clock=lambda: now).note("https://app.example", seconds)


def wait_at(folder: Path, now: float, slept: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    FileHoldOff(folder, clock=lambda: now).wait("https://app.example", slept.put)
    slept.put(None)


def in_another_process(target: object, *args: object) -> None:
    process = multiprocessing.get_context("fork").Process(target=target, args=args)  # type: ignore[arg-type]
    process.start()
    process.join(60)
    assert process.exitcode == 0


def test_the_told_process_does_not_wait_twice_and_the_later_moment_wins(tmp_path: Path) -> None:
    here = FileHoldOff(tmp_path, clock=lambda: 1000.0)
    slept: list[float] = []
    here.note("https://app.example", 2.0)  # until 1002.0
    assert here.wait("https://app.example", slept.append) == 0.0  # told here: its retry waits
    in_another_process(note_at, tmp_path, 1000.0, 0.5)  # until 1000.5: earlier, so ignored
    waited = multiprocessing.get_context("fork").Queue()
    in_another_process(wait_at, tmp_path, 1001.0, waited)
    assert waited.get(timeout=10) == 1.0  # the 1.0 s left of the 2.0 s
    assert waited.get(timeout=10) is None
    assert slept == []
    assert HoldOff().wait("https://app.example", slept.append) == 0.0  # nothing shared


def pace_at(folder: Path, now: float, slept: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    slept.put(FileHoldOff(folder, clock=lambda: now).pace("https://app.example", 2.0, slept.put))


def test_pacing_gives_each_request_its_own_slot_across_processes(tmp_path: Path) -> None:
    here = FileHoldOff(tmp_path, clock=lambda: 1000.0)
    slept: list[float] = []
    # two requests per second: this process takes the slots at 1000.0 and 1000.5
    assert here.pace("https://app.example", 2.0, slept.append) == 0.0
    assert here.pace("https://app.example", 2.0, slept.append) == 0.5
    waited = multiprocessing.get_context("fork").Queue()
    in_another_process(pace_at, tmp_path, 1000.0, waited)  # the next one: 1001.0
    assert waited.get(timeout=10) == 1.0
    assert here.pace("https://app.example", 2.0, slept.append) == 1.5  # and then 1001.5
    assert slept == [0.5, 1.5]
    # another server has slots of its own; without a folder, pacing is this object's own
    assert here.pace("https://other.example", 2.0, slept.append) == 0.0
    alone = HoldOff(clock=lambda: 1000.0)
    assert [alone.pace("s", 4.0, slept.append) for _ in range(3)] == [0.0, 0.25, 0.5]
