"""The HRIS intake contract, against the running service (web app + real Prefect server)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select
from support import flow_run, run_of

from offboarding.domain.audit import events_for_case
from offboarding.domain.models import Case
from offboarding.intake.client import termination_event
from offboarding.intake.hris import SIGNATURE_HEADER, sign
from offboarding.orchestration.dispatcher import Dispatcher
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.web import create_app

pytestmark = pytest.mark.e2e


def event_for(stack, employee_id: str, uid: str, name: str, **changes):  # type: ignore[no-untyped-def]
    event = termination_event(
        employee_id=employee_id,
        email=f"{uid}@example.test",
        display_name=name,
        requested_by=stack.org.requester_id,
    )
    event.update(changes)
    return event


def post(stack, body: bytes, header: str | None) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[SIGNATURE_HEADER] = header
    return httpx.post(f"{stack.running.web_url}/hris/events", content=body, headers=headers)


def signed(stack, event: dict, **kwargs) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    body = json.dumps(event).encode()
    return body, sign(stack.settings.hris_secret.get_secret_value(), body, **kwargs)


def cases_for(stack, event_id: str) -> int:  # type: ignore[no-untyped-def]
    with Session(stack.engine) as session:
        return session.exec(
            select(func.count()).select_from(Case).where(Case.event_id == event_id)
        ).one()


def runs_named(stack, name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return httpx.post(
        f"{stack.running.api_url}/flow_runs/filter",
        json={"flow_runs": {"name": {"any_": [name]}}},
    ).json()


def test_health_and_openapi_describe_the_contract(stack) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(f"{stack.running.web_url}/healthz").json() == {"status": "ok"}
    spec = httpx.get(f"{stack.running.web_url}/openapi.json").json()
    operation = spec["paths"]["/hris/events"]["post"]
    assert {p["name"] for p in operation["parameters"]} == {SIGNATURE_HEADER}
    schema = json.dumps(spec["components"]["schemas"]["TerminationEvent"])
    for field in ("occurred_at", "last_working_day", "requested_by", "urgent", "employee"):
        assert field in schema
    assert {"202", "200", "401", "422"} <= set(operation["responses"])


@pytest.mark.parametrize(
    "header",
    [None, "t=1,v1=abc", "garbage", "STALE", "WRONG-SECRET"],
    ids=["missing", "bad", "garbage", "stale", "wrong-secret"],
)
def test_unsigned_or_stale_events_are_refused_and_create_nothing(stack, header) -> None:  # type: ignore[no-untyped-def]
    event = event_for(stack, "E1013", "jdekker", "Julia Dekker")
    body = json.dumps(event).encode()
    if header == "STALE":
        header = sign(
            stack.settings.hris_secret.get_secret_value(), body, timestamp=int(time.time()) - 301
        )
    elif header == "WRONG-SECRET":
        header = sign("not-the-secret", body)
    response = post(stack, body, header)
    assert response.status_code == 401, response.text
    assert cases_for(stack, event["id"]) == 0


def test_a_signature_over_another_body_is_refused(stack) -> None:  # type: ignore[no-untyped-def]
    event = event_for(stack, "E1013", "jdekker", "Julia Dekker")
    _, header = signed(stack, event)
    tampered = json.dumps({**event, "urgent": True}).encode()
    assert post(stack, tampered, header).status_code == 401
    assert cases_for(stack, event["id"]) == 0


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda e: e["employee"].pop("email"), "email"),
        (lambda e: e.pop("requested_by"), "requested_by"),
        (lambda e: e.update(last_working_day="next tuesday"), "last_working_day"),
        (lambda e: e.update(type="employee.hired"), "type"),
        (lambda e: e["employee"].update(email="not-an-address"), "email"),
    ],
    ids=["no-email", "no-requester", "bad-date", "wrong-type", "bad-email"],
)
def test_malformed_events_get_422_naming_the_field(stack, mutate, named) -> None:  # type: ignore[no-untyped-def]
    event = event_for(stack, "E1013", "jdekker", "Julia Dekker")
    mutate(event)
    response = post(stack, *signed(stack, event))
    assert response.status_code == 422
    assert named in json.dumps(response.json())
    assert cases_for(stack, event["id"]) == 0


def test_body_that_is_not_json_gets_422(stack) -> None:  # type: ignore[no-untyped-def]
    body = b"{not json"
    response = post(stack, body, sign(stack.settings.hris_secret.get_secret_value(), body))
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"employee": {"id": "E9999", "email": "x@example.test", "display_name": "Nobody"}},
            "unknown employee 'E9999'",
        ),
        ({"requested_by": "E8888"}, "unknown requested_by 'E8888'"),
    ],
)
def test_unknown_people_get_422_that_says_so(stack, change, message) -> None:  # type: ignore[no-untyped-def]
    event = event_for(stack, "E1013", "jdekker", "Julia Dekker", **change)
    response = post(stack, *signed(stack, event))
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert cases_for(stack, event["id"]) == 0


def test_the_same_event_twice_gives_one_case_and_one_run(stack) -> None:  # type: ignore[no-untyped-def]
    event = event_for(stack, "E1016", "mdijkstra", "Milan Dijkstra")
    body, header = signed(stack, event)
    first = post(stack, body, header)
    assert first.status_code == 202, first.text
    body2, header2 = signed(stack, event)  # a resend, signed again later
    second = post(stack, body2, header2)
    assert second.status_code == 200
    assert second.json()["case_id"] == first.json()["case_id"]
    flow_run_id = run_of(stack, first.json()["case_id"])
    third = post(stack, *signed(stack, event))  # once the run exists, the answer names it
    assert third.status_code == 200 and third.json()["flow_run_id"] == flow_run_id
    assert cases_for(stack, event["id"]) == 1
    assert len(runs_named(stack, "offboard-E1016-mdijkstra")) == 1

    # another event (new id) for someone whose case is still open: refused, nothing created
    other = event_for(stack, "E1016", "mdijkstra", "Milan Dijkstra")
    conflict = post(stack, *signed(stack, other))
    assert conflict.status_code == 409
    assert first.json()["case_id"] in conflict.json()["detail"]
    assert cases_for(stack, other["id"]) == 0
    assert len(runs_named(stack, "offboard-E1016-mdijkstra")) == 1


def test_a_future_last_working_day_schedules_the_run_for_the_end_of_that_day(stack) -> None:  # type: ignore[no-untyped-def]
    day = date.today() + timedelta(days=10)
    event = event_for(stack, "E1015", "edewit", "Eva de Wit", last_working_day=day.isoformat())
    response = post(stack, *signed(stack, event))
    assert response.status_code == 202
    assert response.json()["status"] == "scheduled"
    flow_run_id = run_of(stack, response.json()["case_id"])
    run = flow_run(stack.running.api_url, flow_run_id)
    assert run["state"]["type"] == "SCHEDULED"
    expected = datetime(day.year, day.month, day.day, 23, 59, tzinfo=ZoneInfo("Europe/Amsterdam"))
    assert datetime.fromisoformat(run["expected_start_time"]) == expected


def test_an_urgent_dismissal_starts_at_once_whatever_the_date(stack) -> None:  # type: ignore[no-untyped-def]
    day = date.today() + timedelta(days=30)
    event = event_for(
        stack, "E1017", "asmits", "Anouk Smits", last_working_day=day.isoformat(), urgent=True
    )
    response = post(stack, *signed(stack, event))
    assert response.status_code == 202
    assert response.json()["status"] == "received"
    assert response.json()["scheduled_for"] is None


def test_an_event_is_kept_while_the_run_cannot_be_created_and_started_later(stack) -> None:  # type: ignore[no-untyped-def]
    """Prefect refusing (here: an unknown deployment) loses nothing: the case is stored,
    answered 202, and the dispatcher creates its run once Prefect accepts again."""
    day = date.today() + timedelta(days=20)  # scheduled: the run will not execute here
    event = event_for(
        stack, "E1018", "jdegraaf", "Jesse de Graaf", last_working_day=day.isoformat()
    )
    app = create_app(stack.services, RunGateway("no-such-flow/no-such-deployment"), dispatch=False)
    with TestClient(app) as client:
        body, header = signed(stack, event)
        response = client.post(
            "/hris/events",
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: header},
        )
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    assert cases_for(stack, event["id"]) == 1
    dispatcher = Dispatcher(stack.services, RunGateway("no-such-flow/no-such-deployment"))
    asyncio.run(dispatcher.start_pending())
    # the service's own dispatcher (same database, the real deployment) may already have
    # started it; either way the case gets exactly one run
    flow_run_id = run_of(stack, case_id)
    assert len(runs_named(stack, "offboard-E1018-jdegraaf")) == 1
    actions = [e.action for e in events_for_case(stack.engine, case_id)]
    assert actions.count("case.opened") == 1 and actions.count("run.created") == 1
    run = flow_run(stack.running.api_url, flow_run_id)
    assert run["state"]["type"] == "SCHEDULED"
