"""Never lose a leaver at the door: events that arrive together, copies of one event, and
refusals that leave a trace. Against the embedded default (SQLite, local Prefect server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from conftest import Stack
from sqlmodel import Session, col, func, select
from support import run_of

from offboarding.domain.models import AuditEvent, Case
from offboarding.intake.client import termination_event
from offboarding.intake.hris import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.e2e


def event_for(stack: Stack, employee_id: str) -> dict[str, Any]:
    """A notice with a future last working day: its run is created, scheduled for then."""
    event = termination_event(
        employee_id=employee_id,
        email=f"{employee_id.lower()}@example.test",
        display_name=f"Employee {employee_id}",
        requested_by=stack.org.requester_id,
    )
    event["last_working_day"] = (date.today() + timedelta(days=30)).isoformat()
    return event


def signed_post(stack: Stack, event: dict[str, Any]) -> Callable[[], httpx.Response]:
    body = json.dumps(event).encode()
    header = sign(stack.settings.hris_secret.get_secret_value(), body)

    def send() -> httpx.Response:
        return httpx.post(
            f"{stack.running.web_url}/hris/events",
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: header},
            timeout=60,
        )

    return send


def all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Every call released at the same moment from its own thread."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        gate.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def cases_of(stack: Stack, employee_ids: list[str]) -> list[Case]:
    with Session(stack.engine) as session:
        return list(session.exec(select(Case).where(col(Case.employee_id).in_(employee_ids))))


def refusals(stack: Stack) -> list[AuditEvent]:
    with Session(stack.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == "intake.refused")))


@pytest.fixture(scope="module")
def people(sqlite_stack: Stack) -> Iterator[list[str]]:
    """Employees who are neither the requester nor a manager (each used by one test)."""
    org = sqlite_stack.org
    yield [e for e in org.employee_ids if e not in org.manager_ids and e != org.requester_id]


def test_events_arriving_together_each_get_a_case_and_a_run(sqlite_stack, people) -> None:  # type: ignore[no-untyped-def]
    stack = sqlite_stack
    leavers = people[:10]
    health = lambda: httpx.get(f"{stack.running.web_url}/healthz", timeout=60)  # noqa: E731
    answers = all_at_once([signed_post(stack, event_for(stack, e)) for e in leavers] + [health])
    assert [a.status_code for a in answers[:-1]] == [202] * len(leavers), [a.text for a in answers]
    assert answers[-1].status_code == 200  # the service stays responsive under the burst
    cases = cases_of(stack, leavers)
    assert sorted(c.employee_id for c in cases) == sorted(leavers)
    runs = {run_of(stack, c.id) for c in cases}
    assert len(runs) == len(leavers)  # one run each, none shared, none missing


def test_copies_of_one_event_at_once_open_one_case_and_never_fail(sqlite_stack, people) -> None:  # type: ignore[no-untyped-def]
    stack = sqlite_stack
    leaver = people[10]
    event = event_for(stack, leaver)
    answers = all_at_once([signed_post(stack, event) for _ in range(10)])
    codes = sorted(a.status_code for a in answers)
    assert codes.count(202) == 1 and set(codes) <= {200, 202, 409}, codes
    case_ids = {a.json()["case_id"] for a in answers if a.status_code in (200, 202)}
    assert len(case_ids) == 1
    assert [c.id for c in cases_of(stack, [leaver])] == list(case_ids)
    run_of(stack, case_ids.pop())


def test_two_events_for_one_person_at_once_open_one_case(sqlite_stack, people) -> None:  # type: ignore[no-untyped-def]
    stack = sqlite_stack
    leaver = people[11]
    answers = all_at_once([signed_post(stack, event_for(stack, leaver)) for _ in range(2)])
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    (case,) = cases_of(stack, [leaver])
    assert case.id in next(a.json()["detail"] for a in answers if a.status_code == 409)


def test_every_refusal_is_audited_with_its_reason_and_no_personal_data(sqlite_stack) -> None:  # type: ignore[no-untyped-def]
    stack = sqlite_stack
    before = len(refusals(stack))
    secret = stack.settings.hris_secret.get_secret_value()
    url = f"{stack.running.web_url}/hris/events"
    stranger = event_for(stack, "E9999")
    stranger["employee"]["display_name"] = "Private Person"
    malformed = {**event_for(stack, "E9998"), "last_working_day": "next tuesday"}

    def post(body: bytes, header: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers[SIGNATURE_HEADER] = header
        return httpx.post(url, content=body, headers=headers, timeout=60)

    stranger_body = json.dumps(stranger).encode()
    assert post(stranger_body, sign(secret, stranger_body)).status_code == 422
    malformed_body = json.dumps(malformed).encode()
    refused = post(malformed_body, sign(secret, malformed_body))
    assert refused.status_code == 422 and "last_working_day" in refused.text
    assert "next tuesday" not in refused.text  # the answer names the field, not the value
    # unauthenticated: refused before anything is parsed, whatever the body is
    unsigned = post(b"{not json", None)
    assert unsigned.status_code == 401
    assert post(malformed_body, sign("not-the-secret", malformed_body)).status_code == 401
    assert post(b"x" * (10 * 1024 * 1024), None).status_code == 413

    events = refusals(stack)[before:]
    assert sorted(e.outcome for e in events) == [
        "malformed",
        "too_large",
        "unauthorized",
        "unauthorized",
        "unknown_employee",
    ]
    by_reason = {e.outcome: json.loads(e.details) for e in events}
    assert by_reason["unknown_employee"]["event_id"] == stranger["id"]
    assert by_reason["malformed"]["event_id"] == malformed["id"]
    stored = " ".join(e.details for e in events)
    for personal in ("E9999", "Private Person", "e9999@example.test", "E9998"):
        assert personal not in stored
    with Session(stack.engine) as session:
        assert (
            session.exec(
                select(func.count()).select_from(Case).where(Case.employee_id == "E9999")
            ).one()
            == 0
        )


def test_a_streamed_body_over_the_limit_is_refused_before_it_is_read(sqlite_stack) -> None:  # type: ignore[no-untyped-def]
    stack = sqlite_stack

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(160):  # 10 MiB in 64 KiB pieces
            yield b"x" * 65536

    response = httpx.post(
        f"{stack.running.web_url}/hris/events",
        content=chunks(),
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: "t=1,v1=00"},
        timeout=60,
    )
    assert response.status_code == 413
