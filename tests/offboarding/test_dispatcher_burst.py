"""A burst of HR events is answered first and handled in one pass afterwards; an urgent
case (instant dismissal) does not wait for the burst to end."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.intake.client import termination_event
from offboarding.intake.hris import SIGNATURE_HEADER, sign
from offboarding.orchestration import dispatcher as dispatching
from offboarding.orchestration.dispatcher import Dispatcher
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.services import build_services
from offboarding.wiring.settings import Settings
from offboarding.wiring.web import create_app
from offboarding.wiring.web_processes import WakeListener, WakeSender, listen_for_wakes

WAIT = 30.0  # seconds a condition may take on a busy machine


class CountingDispatcher(Dispatcher):
    """The real run loop; a pass only counts itself."""

    def __init__(self) -> None:
        settings = SimpleNamespace(dispatch_interval_seconds=3600.0, db_concurrency=1)
        super().__init__(SimpleNamespace(settings=settings), RunGateway("none/none"))  # type: ignore[arg-type]
        self.passes = 0
        self.changed = asyncio.Condition()

    async def tick(self) -> None:
        async with self.changed:
            self.passes += 1
            self.changed.notify_all()

    async def passes_reach(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.passes >= count), WAIT)


def test_wake_ups_wait_for_the_burst_and_an_urgent_one_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a burst that would not end within the test: only the urgent wake-up can start a pass
    monkeypatch.setattr(dispatching, "BURST_QUIET", 3600.0)
    monkeypatch.setattr(dispatching, "BURST_MAX", 3600.0)

    async def scenario() -> None:
        dispatcher = CountingDispatcher()
        running = asyncio.create_task(dispatcher.run_forever())
        try:
            await dispatcher.passes_reach(1)  # the pass at start
            for _ in range(3):
                dispatcher.wake()
            dispatcher.wake(urgent=True)
            await dispatcher.passes_reach(2)
            assert dispatcher.passes == 2  # four wake-ups, one pass
        finally:
            running.cancel()

    asyncio.run(scenario())


def test_an_urgent_wake_up_from_another_web_process_stays_urgent(tmp_path: Path) -> None:
    async def scenario() -> list[bool]:
        heard: list[bool] = []
        got = asyncio.Event()

        def wake(*, urgent: bool = False) -> None:
            heard.append(urgent)
            if len(heard) == 2:
                got.set()

        address = f"\0offboarding-test-{secrets.token_hex(8)}"
        transport = await listen_for_wakes(address, WakeListener(wake))
        try:
            sender = WakeSender(address)
            sender()
            sender(urgent=True)
            await asyncio.wait_for(got.wait(), WAIT)
        finally:
            transport.close()
        return heard

    assert asyncio.run(scenario()) == [False, True]


@pytest.fixture
def people(tmp_path: Path) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        yield d, seed_demo_org(d, password="Pw-" + secrets.token_urlsafe(12))


def test_the_intake_wakes_the_dispatcher_at_once_for_an_urgent_case(
    tmp_path: Path, people: tuple[LocalDirectory, DemoOrg]
) -> None:
    directory, org = people
    settings = Settings(
        home=tmp_path / "home",  # SQLite of its own: no running dispatcher sees these cases
        hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        connectors=[directory.connector_config(managers_group=org.managers_group_dn)],
    )
    woken: list[bool] = []

    def wake(*, urgent: bool = False) -> None:
        woken.append(urgent)

    app = create_app(build_services(settings), RunGateway("none/none"), dispatch=False, wake=wake)
    later = (date.today() + timedelta(days=20)).isoformat()
    events: list[dict[str, Any]] = [
        termination_event(
            employee_id="E1018",
            email="jdegraaf@example.test",
            display_name="Jesse de Graaf",
            requested_by=org.requester_id,
            urgent=True,
        ),
        termination_event(
            employee_id="E1010",
            email="rpeters@example.test",
            display_name="Ruben Peters",
            requested_by=org.requester_id,
            last_working_day=date.fromisoformat(later),
        ),
    ]
    with TestClient(app) as client:
        for event in events:
            body = json.dumps(event).encode()
            header = sign(settings.hris_secret.get_secret_value(), body)
            response = client.post(
                "/hris/events",
                content=body,
                headers={"Content-Type": "application/json", SIGNATURE_HEADER: header},
            )
            assert response.status_code == 202, response.text
    assert woken == [True, False]
