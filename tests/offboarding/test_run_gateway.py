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
