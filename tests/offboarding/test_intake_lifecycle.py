"""What a later HR event does to an employee's case (`store_case`), on SQLite and PostgreSQL,
with the people directory a real slapd: upgrade, reschedule, cancel, rehire, and refusals
that change nothing."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.audit import events_for_case, verify_chain
from offboarding.domain.cases import case_id_for, get_case, set_status
from offboarding.domain.models import AuditEvent, Case, CaseStatus
from offboarding.intake.hris import CancellationEvent, TerminationEvent
from offboarding.intake.routes import Refused, Stored, parse_event, store_case
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    tmp = tmp_path_factory.mktemp("intake-lifecycle")
    with LocalDirectory.start(tmp / "slapd", admin_password=secrets.token_urlsafe(16)) as running:
        yield running, seed_demo_org(running, password="Pw-" + secrets.token_urlsafe(12))


@pytest.fixture
def services(engine: Engine, directory, tmp_path: Path) -> Services:  # type: ignore[no-untyped-def]
    running, org = directory
    settings = Settings(
        home=tmp_path / "home",
        hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        connectors=[running.connector_config(managers_group=org.managers_group_dn)],
    )
    return build_services(settings, engine=engine)


REQUESTER = "E1001"


def terminated(employee_id: str = "E1013", **changes: Any) -> TerminationEvent:
    body: dict[str, Any] = {
        "id": f"evt-{uuid.uuid4().hex[:12]}",
        "type": "employee.terminated",
        "occurred_at": datetime.now(UTC).isoformat(),
        "employee": {"id": employee_id, "email": "jdekker@example.test", "display_name": "Julia"},
        "last_working_day": (date.today() + timedelta(days=10)).isoformat(),
        "urgent": False,
        "requested_by": REQUESTER,
    }
    body.update(changes)
    return TerminationEvent.model_validate(body)


def cancelled(employee_id: str = "E1013", **changes: Any) -> CancellationEvent:
    body: dict[str, Any] = {
        "id": f"evt-{uuid.uuid4().hex[:12]}",
        "type": "employee.termination_cancelled",
        "occurred_at": datetime.now(UTC).isoformat(),
        "employee": {"id": employee_id},
        "requested_by": REQUESTER,
        "reason": "stays",
    }
    body.update(changes)
    return CancellationEvent.model_validate(body)


def cases(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Case)).one()


def audit_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(AuditEvent)).one()


def test_an_urgent_event_upgrades_a_scheduled_case_once(services: Services) -> None:
    first = store_case(services, terminated())
    assert first.case.status == CaseStatus.SCHEDULED
    upgrade = terminated(urgent=True)
    second = store_case(services, upgrade)
    assert (second.case.id, second.outcome, second.changed) == (first.case.id, "upgraded", True)
    case = get_case(services.engine, first.case.id)
    assert case is not None and case.urgent and case.upgraded_at is not None
    assert case.status == CaseStatus.RECEIVED  # its run starts now
    again = store_case(services, terminated(urgent=True))  # another urgent event
    assert (again.outcome, again.changed) == ("unchanged", False)
    resend = store_case(services, upgrade)
    assert (resend.case.id, resend.outcome) == (first.case.id, "unchanged")
    actions = [e.action for e in events_for_case(services.engine, first.case.id)]
    assert actions.count("case.upgraded") == 1
    assert cases(services.engine) == 1
    assert verify_chain(services.engine).ok


def test_an_upgrade_after_approval_is_refused_and_changes_nothing(services: Services) -> None:
    first = store_case(services, terminated())
    set_status(services.engine, first.case.id, CaseStatus.REVOKING)
    before = audit_count(services.engine)
    with pytest.raises(Refused) as refused:
        store_case(services, terminated(urgent=True))
    assert refused.value.status == 409
    assert "access is being revoked" in refused.value.detail
    case = get_case(services.engine, first.case.id)
    assert case is not None and not case.urgent and case.upgraded_at is None
    assert audit_count(services.engine) == before


def test_a_new_last_working_day_reschedules_a_scheduled_case(services: Services) -> None:
    first = store_case(services, terminated())
    later = date.today() + timedelta(days=14)
    moved = store_case(services, terminated(last_working_day=later.isoformat()))
    assert (moved.case.id, moved.outcome) == (first.case.id, "rescheduled")
    assert moved.scheduled is not None and moved.scheduled.date() == later
    case = get_case(services.engine, first.case.id)
    assert case is not None and case.last_working_day == later
    assert case.status == CaseStatus.SCHEDULED
    today = store_case(services, terminated(last_working_day=date.today().isoformat()))
    assert today.outcome == "rescheduled" and today.scheduled is None
    assert get_case(services.engine, first.case.id).status == CaseStatus.RECEIVED  # type: ignore[union-attr]


def test_a_started_case_is_not_rescheduled(services: Services) -> None:
    first = store_case(services, terminated())
    set_status(services.engine, first.case.id, CaseStatus.AWAITING_APPROVAL)
    with pytest.raises(Refused) as refused:
        store_case(services, terminated(last_working_day=date.today().isoformat()))
    assert refused.value.status == 409 and "can no longer move" in refused.value.detail
    case = get_case(services.engine, first.case.id)
    assert case is not None and case.last_working_day == first.case.last_working_day
    with pytest.raises(Refused) as same_day:  # the same day again: still "already open"
        store_case(services, terminated())
    assert same_day.value.reason == "case_open"


@pytest.mark.parametrize("status", [CaseStatus.SCHEDULED, CaseStatus.AWAITING_APPROVAL])
def test_a_cancellation_closes_a_case_before_revocation(
    services: Services, status: CaseStatus
) -> None:
    first = store_case(services, terminated())
    set_status(services.engine, first.case.id, status)
    event = cancelled()
    done = store_case(services, event)
    assert (done.case.id, done.outcome, done.changed) == (first.case.id, "cancelled", True)
    assert get_case(services.engine, first.case.id).status == CaseStatus.CANCELLED  # type: ignore[union-attr]
    assert store_case(services, event).outcome == "unchanged"  # resend
    assert store_case(services, cancelled()).outcome == "unchanged"  # already cancelled
    with pytest.raises(Exception, match="cancelled by HR"):  # the run cannot move it on
        set_status(services.engine, first.case.id, CaseStatus.REVOKING)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (CaseStatus.REVOKING, "access is being revoked"),
        (CaseStatus.AWAITING_ATTESTATION, "access was revoked"),
        (CaseStatus.COMPLETED, "completed"),
        (CaseStatus.REJECTED, "rejected"),
    ],
)
def test_a_cancellation_after_approval_is_refused_saying_why(
    services: Services, status: CaseStatus, words: str
) -> None:
    first = store_case(services, terminated())
    set_status(services.engine, first.case.id, status)
    before = audit_count(services.engine)
    with pytest.raises(Refused) as refused:
        store_case(services, cancelled())
    assert refused.value.status == 409
    assert words in refused.value.detail and first.case.id in refused.value.detail
    assert get_case(services.engine, first.case.id).status == status  # type: ignore[union-attr]
    assert audit_count(services.engine) == before


def test_a_cancellation_without_a_case_is_404(services: Services) -> None:
    with pytest.raises(Refused) as refused:
        store_case(services, cancelled("E1014"))
    assert refused.value.status == 404 and "E1014" in refused.value.detail
    assert cases(services.engine) == 0


@pytest.mark.parametrize("end", [CaseStatus.COMPLETED, CaseStatus.REJECTED, CaseStatus.CANCELLED])
def test_a_rehire_leaving_again_opens_a_new_case(services: Services, end: CaseStatus) -> None:
    first = store_case(services, terminated())
    set_status(services.engine, first.case.id, CaseStatus.AWAITING_APPROVAL)
    if end == CaseStatus.CANCELLED:
        store_case(services, cancelled())
    else:
        set_status(services.engine, first.case.id, end)
    later = store_case(services, terminated())
    assert later.new and later.case.id != first.case.id
    assert cases(services.engine) == 2


def test_an_hr_system_that_reuses_its_event_id_for_a_rehire_gets_a_new_case(
    services: Services,
) -> None:
    """Personio's event id is per person: a rehire's later leaving brings the same id with a
    later moment. A resend (same moment) is the same case; the later one a new case."""
    event = terminated(id="personio:1:person.deleted:E1013")
    first = store_case(services, event)
    assert first.case.id == case_id_for(event.id)
    set_status(services.engine, first.case.id, CaseStatus.COMPLETED)
    assert store_case(services, event).case.id == first.case.id  # resend: same case
    later = terminated(
        id=event.id, occurred_at=(datetime.now(UTC) + timedelta(days=200)).isoformat()
    )
    rehired = store_case(services, later)
    assert rehired.new and rehired.case.id not in (first.case.id,)
    assert rehired.case.id == case_id_for(event.id, later.occurred_at)
    assert store_case(services, later).case.id == rehired.case.id  # its resend
    assert cases(services.engine) == 2


def test_an_unknown_event_type_names_the_field(services: Services) -> None:
    body = b'{"id": "evt-1", "type": "employee.hired"}'
    with pytest.raises(Refused) as refused:
        parse_event(body)
    assert refused.value.status == 422
    assert refused.value.detail[0]["loc"] == ("body", "type")
    missing = b'{"id": "evt-2", "type": "employee.termination_cancelled", "employee": {}}'
    with pytest.raises(Refused) as incomplete:
        parse_event(missing)
    named = {p["loc"] for p in incomplete.value.detail}
    assert ("body", "employee", "id") in named and ("body", "requested_by") in named
    assert cases(services.engine) == 0


def test_two_urgent_events_racing_upgrade_once(services: Services) -> None:
    """Two workers decide on the same case: the row lock (PostgreSQL) or the audit chain's
    retry (both) makes the second see the first's upgrade."""
    import threading

    first = store_case(services, terminated())
    results: list[Stored | Exception] = []

    def send() -> None:
        try:
            results.append(store_case(services, terminated(urgent=True)))
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = sorted(r.outcome if isinstance(r, Stored) else repr(r) for r in results)
    assert outcomes == ["unchanged", "upgraded"]
    actions = [e.action for e in events_for_case(services.engine, first.case.id)]
    assert actions.count("case.upgraded") == 1
