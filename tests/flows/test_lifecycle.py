"""A case's lifecycle after its first event, against the running service (real Prefect server,
slapd, SMTP, PostgreSQL): urgent upgrade, cancellation, reschedule, rehire."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import Stack, start_stack
from sqlmodel import Session, select
from support import (
    can_bind,
    decide,
    flow_run,
    groups_with,
    is_locked,
    link_in,
    run_of,
    text_of,
    wait_for_state,
)

from offboarding.domain.audit import events_for_case
from offboarding.domain.cases import get_case, set_status
from offboarding.domain.models import ApprovalDecision, CaseStatus
from offboarding.intake.client import send_event, termination_event

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def life(tmp_path_factory, smtp_server, new_postgres_database) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from start_stack(
        tmp_path_factory.mktemp("lifecycle"),
        new_postgres_database(),
        smtp_server,
        urgent_containment=["account"],
    )


def leaving(stack: Stack, employee_id: str, uid: str, name: str, **changes: Any) -> dict:  # type: ignore[type-arg]
    event = termination_event(
        employee_id=employee_id,
        email=f"{uid}@example.test",
        display_name=name,
        requested_by=stack.org.requester_id,
    )
    event.update(changes)
    return event


def cancellation(stack: Stack, employee_id: str, reason: str = "") -> dict:  # type: ignore[type-arg]
    event = termination_event(
        employee_id=employee_id, email="x@example.test", display_name="x", requested_by="x"
    )
    return {
        "id": event["id"],
        "type": "employee.termination_cancelled",
        "occurred_at": datetime.now(UTC).isoformat(),
        "employee": {"id": employee_id},
        "requested_by": stack.org.requester_id,
        "reason": reason,
    }


def send(stack: Stack, event: dict) -> httpx.Response:  # type: ignore[type-arg]
    return send_event(
        base_url=stack.running.web_url,
        secret=stack.settings.hris_secret.get_secret_value(),
        event=event,
    )


def actions(stack: Stack, case_id: str) -> list[str]:
    return [e.action for e in events_for_case(stack.engine, case_id)]


def wait_until(check, timeout: float = 120.0) -> float:  # type: ignore[no-untyped-def]
    """Poll `check` until true; the moment (monotonic) it first was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def waiting_case(stack: Stack, employee_id: str, uid: str, name: str) -> tuple[str, str]:
    """A normal leaver whose run waits for the second manager."""
    answer = send(stack, leaving(stack, employee_id, uid, name))
    assert answer.status_code == 202, answer.text
    case_id = answer.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    return case_id, flow_run_id


def approval_mails(stack: Stack, case_id: str) -> list:  # type: ignore[type-arg]
    return [
        m
        for m in stack.mailbox.messages  # type: ignore[attr-defined]
        if case_id in text_of(m) and "/approvals/" in text_of(m)
    ]


def test_an_urgent_event_upgrades_a_waiting_case_contains_at_once_and_still_needs_approval(
    life: Stack,
) -> None:
    admin = life.directory.admin_connection()
    dn = f"uid=jdekker,{life.directory.users_base}"
    groups = groups_with(admin, life.directory.groups_base, dn, "jdekker")
    case_id, flow_run_id = waiting_case(life, "E1013", "jdekker", "Julia Dekker")
    first_links = life.mailbox.wait_for(lambda m: m in approval_mails(life, case_id))  # type: ignore[attr-defined]
    assert not is_locked(admin, dn)

    upgrade = send(life, leaving(life, "E1013", "jdekker", "Julia Dekker", urgent=True))
    assert upgrade.status_code == 202, upgrade.text
    assert upgrade.json()["case_id"] == case_id
    assert upgrade.json()["outcome"] == "upgraded"
    wait_until(lambda: is_locked(admin, dn))
    assert not can_bind(life.directory.url, dn, life.password)
    assert groups_with(admin, life.directory.groups_base, dn, "jdekker") == groups  # waits

    # the run waits again, for a plan that shows the containment; the old links are void
    wait_until(lambda: len(approval_mails(life, case_id)) > len(first_links), timeout=180)
    wait_for_state(life.running.api_url, flow_run_id, "PAUSED")
    assert get_case(life.engine, case_id).status == CaseStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    assert httpx.get(link_in(first_links[0])).status_code == 409
    new_link = link_in(approval_mails(life, case_id)[-1])
    assert decide(new_link, "approve").status_code == 200
    run = wait_for_state(life.running.api_url, flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"
    assert groups_with(admin, life.directory.groups_base, dn, "jdekker") == []
    admin.unbind()
    done = actions(life, case_id)
    assert done.count("case.upgraded") == 1
    assert done.index("case.upgraded") < done.index("containment.started")
    assert done.index("containment.started") < done.index("decision.recorded")


def test_an_urgent_event_starts_a_scheduled_case_now(life: Stack) -> None:
    admin = life.directory.admin_connection()
    dn = f"uid=edewit,{life.directory.users_base}"
    groups = groups_with(admin, life.directory.groups_base, dn, "edewit")
    day = (date.today() + timedelta(days=10)).isoformat()
    first = send(life, leaving(life, "E1015", "edewit", "Eva de Wit", last_working_day=day))
    assert first.json()["status"] == "scheduled"
    case_id = first.json()["case_id"]
    flow_run_id = run_of(life, case_id)
    assert flow_run(life.running.api_url, flow_run_id)["state"]["type"] == "SCHEDULED"

    upgrade = send(
        life, leaving(life, "E1015", "edewit", "Eva de Wit", last_working_day=day, urgent=True)
    )
    assert upgrade.status_code == 202 and upgrade.json()["case_id"] == case_id
    wait_until(lambda: is_locked(admin, dn), timeout=180)
    wait_for_state(life.running.api_url, flow_run_id, "PAUSED")
    assert groups_with(admin, life.directory.groups_base, dn, "edewit") == groups
    admin.unbind()
    assert "run.rescheduled" in actions(life, case_id)


def test_two_urgent_events_at_once_upgrade_once_and_contain_once(life: Stack) -> None:
    admin = life.directory.admin_connection()
    dn = f"uid=mdijkstra,{life.directory.users_base}"
    case_id, flow_run_id = waiting_case(life, "E1016", "mdijkstra", "Milan Dijkstra")
    events = [leaving(life, "E1016", "mdijkstra", "Milan Dijkstra", urgent=True) for _ in range(2)]
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda e=e: answers.append(send(life, e))) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 202], [a.text for a in answers]
    assert {a.json()["case_id"] for a in answers} == {case_id}
    assert sorted(a.json()["outcome"] for a in answers) == ["unchanged", "upgraded"]
    wait_until(lambda: is_locked(admin, dn))
    admin.unbind()
    wait_until(lambda: get_case(life.engine, case_id).contained_at is not None)  # type: ignore[union-attr]
    wait_for_state(life.running.api_url, flow_run_id, "PAUSED")
    done = actions(life, case_id)
    assert done.count("case.upgraded") == 1
    assert done.count("containment.started") == 1


def test_a_cancellation_withdraws_a_waiting_case_and_a_rehire_opens_a_new_one(
    life: Stack,
) -> None:
    admin = life.directory.admin_connection()
    dn = f"uid=asmits,{life.directory.users_base}"
    groups = groups_with(admin, life.directory.groups_base, dn, "asmits")
    case_id, flow_run_id = waiting_case(life, "E1017", "asmits", "Anouk Smits")
    links = life.mailbox.wait_for(lambda m: m in approval_mails(life, case_id))  # type: ignore[attr-defined]
    approvers = {str(m["To"]) for m in links}

    event = cancellation(life, "E1017", reason="Anouk blijft.")
    answer = send(life, event)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["case_id"], body["status"], body["outcome"]) == (case_id, "cancelled", "cancelled")
    wait_for_state(life.running.api_url, flow_run_id, "CANCELLED")
    life.mailbox.wait_for(lambda m: m in cancelled_mails(life, case_id))  # type: ignore[attr-defined]
    wait_until(lambda: len({str(m["To"]) for m in cancelled_mails(life, case_id)}) > len(approvers))
    mails = cancelled_mails(life, case_id)
    assert {str(m["To"]) for m in mails} >= approvers  # and the requester
    assert any("geannuleerd" in str(m["Subject"]) for m in mails)  # Dutch readers in Dutch
    assert not is_locked(admin, dn)
    assert groups_with(admin, life.directory.groups_base, dn, "asmits") == groups
    # the link decides nothing now, and says why: HR withdrew the case
    page = httpx.get(link_in(links[0]))
    assert page.status_code == 410
    assert "withdrawn by HR" in page.text or "ingetrokken door HR" in page.text
    with Session(life.engine) as session:
        assert (
            session.exec(
                select(ApprovalDecision).where(ApprovalDecision.case_id == case_id)
            ).first()
            is None
        )
    assert actions(life, case_id).count("case.cancelled") == 1
    again = send(life, event)  # a resend
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"

    rehire = send(life, leaving(life, "E1017", "asmits", "Anouk Smits"))
    assert rehire.status_code == 202, rehire.text
    assert rehire.json()["case_id"] != case_id
    assert run_of(life, rehire.json()["case_id"]) != flow_run_id
    admin.unbind()


def cancelled_mails(stack: Stack, case_id: str) -> list:  # type: ignore[type-arg]
    return [
        m
        for m in stack.mailbox.messages  # type: ignore[attr-defined]
        if case_id in text_of(m)
        and "/approvals/" not in text_of(m)
        and ("cancelled" in str(m["Subject"]) or "geannuleerd" in str(m["Subject"]))
    ]


def test_a_case_past_approval_cannot_be_cancelled(life: Stack) -> None:
    day = (date.today() + timedelta(days=20)).isoformat()
    first = send(life, leaving(life, "E1014", "fbrouwer", "Finn Brouwer", last_working_day=day))
    case_id = first.json()["case_id"]
    run_of(life, case_id)
    set_status(life.engine, case_id, CaseStatus.REVOKING)  # as the run does after approval
    before = actions(life, case_id)
    refused = send(life, cancellation(life, "E1014"))
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "access is being revoked" in refused.json()["detail"]
    assert refused.json()["case_id"] == case_id
    assert get_case(life.engine, case_id).status == CaseStatus.REVOKING  # type: ignore[union-attr]
    assert actions(life, case_id) == [*before, "intake.refused"]

    set_status(life.engine, case_id, CaseStatus.COMPLETED)
    done = send(life, cancellation(life, "E1014"))
    assert done.status_code == 409
    assert "completed" in done.json()["detail"]


def test_a_new_last_working_day_moves_the_scheduled_run(life: Stack) -> None:
    zone = ZoneInfo("Europe/Amsterdam")
    first_day = date.today() + timedelta(days=10)
    new_day = date.today() + timedelta(days=12)
    event = leaving(
        life, "E1019", "svandermeer", "Sophie van der Meer", last_working_day=first_day.isoformat()
    )
    first = send(life, event)
    case_id = first.json()["case_id"]
    flow_run_id = run_of(life, case_id)
    run = flow_run(life.running.api_url, flow_run_id)
    assert run["state"]["type"] == "SCHEDULED"
    assert datetime.fromisoformat(run["expected_start_time"]) == datetime(
        first_day.year, first_day.month, first_day.day, 23, 59, tzinfo=zone
    )

    moved = send(life, {**event, "id": event["id"] + "-2", "last_working_day": new_day.isoformat()})
    assert moved.status_code == 202, moved.text
    assert moved.json()["outcome"] == "rescheduled" and moved.json()["case_id"] == case_id
    wanted = datetime(new_day.year, new_day.month, new_day.day, 23, 59, tzinfo=zone)
    assert datetime.fromisoformat(moved.json()["scheduled_for"]) == wanted

    def run_moved() -> bool:
        now = flow_run(life.running.api_url, flow_run_id)
        at = now["state"]["state_details"]["scheduled_time"]
        return now["state"]["type"] == "SCHEDULED" and datetime.fromisoformat(at) == wanted

    wait_until(run_moved)
    assert (
        datetime.fromisoformat(
            flow_run(life.running.api_url, flow_run_id)["next_scheduled_start_time"]
        )
        == wanted
    )
    assert get_case(life.engine, case_id).last_working_day == new_day  # type: ignore[union-attr]
    assert "case.rescheduled" in actions(life, case_id)
