"""The approval page's hand-over to a run is bounded in time, whatever Prefect answers."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from offboarding.orchestration.runs import RunGateway


class BusyPrefect(BaseHTTPRequestHandler):
    """A Prefect server too busy to answer: 503 and "come back in an hour", every time."""

    requests: list[str] = []

    def _busy(self) -> None:
        self.requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"exception_message": "Service Unavailable"}'
        self.send_response(503)
        self.send_header("Retry-After", "3600")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _busy

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def busy_prefect() -> Iterator[tuple[str, list[str]]]:
    BusyPrefect.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), BusyPrefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", BusyPrefect.requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_hand_over_to_a_busy_prefect_is_given_up_and_left_to_the_dispatcher(
    busy_prefect: tuple[str, list[str]],
) -> None:
    """Prefect's client would wait out the Retry-After (an hour) before asking again; the
    page's hand-over gives up after its bound and says "not resumed" (the dispatcher then
    delivers the recorded decision)."""
    url, requests = busy_prefect
    gateway = RunGateway("offboard-leaver/offboarding", handover_seconds=1.0)

    async def hand_over() -> bool:
        with temporary_settings({PREFECT_API_URL: url}):
            # the ceiling only keeps a regression from hanging the suite for an hour
            return await asyncio.wait_for(
                gateway.resume(str(uuid.uuid4()), {"decision": "approve"}, wait_seconds=0),
                timeout=120,
            )

    assert asyncio.run(hand_over()) is False
    assert requests and requests[0].startswith("GET /api/flow_runs/")
    assert len(requests) == 1  # asked once, then waiting out the Retry-After when cut off


class CountingResumes(RunGateway):
    """Resumes that take a while and count how many were under way at once."""

    def __init__(self, *, one_resume_at_a_time: bool) -> None:
        super().__init__("none/none", one_resume_at_a_time=one_resume_at_a_time)
        self.now = 0
        self.most = 0

    async def _resume_now(self, flow_run_id, run_input, wait_seconds):  # type: ignore[no-untyped-def, override]
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0)  # the others get their turn while this one is under way
        await asyncio.sleep(0)
        self.now -= 1
        return True


@pytest.mark.parametrize(("one_at_a_time", "most"), [(True, 1), (False, 5)])
def test_resumes_queue_when_prefect_cannot_take_them_at_once(
    one_at_a_time: bool, most: int
) -> None:
    # Prefect on SQLite answers concurrent state changes with "database is locked"
    gateway = CountingResumes(one_resume_at_a_time=one_at_a_time)

    async def five_at_once() -> list[bool]:
        return await asyncio.gather(
            *(gateway.resume(str(uuid.uuid4()), {}, wait_seconds=0) for _ in range(5))
        )

    assert asyncio.run(five_at_once()) == [True] * 5
    assert gateway.most == most
