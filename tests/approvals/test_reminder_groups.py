"""The follow-up pass on waiting approvals, for deputies and approver groups: a deputyship
that starts while a case waits brings the deputy the request (once, also with two passes at
once), and escalation stays inside the approvers group — against a real slapd, a real SMTP
server, SQLite and PostgreSQL. Time is driven by passing `now`; nothing sleeps.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import ldap3
import pytest
from approvals_support import open_case
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from approvals.decisions import settle
from approvals.deputies import name_deputy
from approvals.reminders import deputies_due, escalations
from approvals.requests import request_approvals
from approvals.rules import Verdict
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    AuditEvent,
    Case,
    CaseStatus,
    Decision,
    Deputyship,
    RevocationPlanRecord,
    utcnow,
)
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings, SmtpSettings

T = TypeVar("T")
HANNA, LARS, NOOR, IRIS = "E0007", "E1004", "E1007", "E1011"  # managers; Hanna requests
MILAN, JESSE = "E1016", "E1018"  # not managers, not in finance
FINANCE = ["E1005", "E1011", "E1013", "E1015"]
MILAN_MAIL = "mdijkstra@example.test"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LocalDirectory]:
    """A slapd per test: some tests change group membership."""
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


@pytest.fixture
def make(tmp_path: Path, engine: Engine, directory: LocalDirectory, smtp_server):  # type: ignore[no-untyped-def]
    """Services over the test's database, directory and SMTP server (each call: another
    process's worth of services on the same database)."""
    host, port, _ = smtp_server
    built: list[Services] = []

    def build(**policy: Any) -> Services:
        settings = Settings(
            home=tmp_path / f"home{len(built)}",
            connectors=[
                directory.connector_config(managers_group=directory.org.managers_group_dn)  # type: ignore[attr-defined]
            ],
            policy=policy,
            smtp=SmtpSettings(host=host, port=port, starttls=False),
        )
        built.append(build_services(settings, engine=engine))
        return built[-1]

    return build


def waiting_case(services: Services, *, urgent: bool = False) -> tuple[Case, RevocationPlanRecord]:
    case, record = open_case(services, "E1042", "jdevries@example.test")
    with Session(services.engine, expire_on_commit=False) as session:
        stored = session.get(Case, case.id)
        assert stored is not None
        stored.status = CaseStatus.AWAITING_APPROVAL
        stored.urgent = urgent
        session.add(stored)
        session.commit()
        session.refresh(stored)
    assert isinstance(record, RevocationPlanRecord)
    return stored, record


def deputy(services: Services, manager: str, who: str, start: datetime, days: int = 7) -> None:
    name_deputy(
        services,
        manager_id=manager,
        deputy_id=who,
        starts_at=start,
        ends_at=start + timedelta(days=days),
        actor="operator:test",
    )


def asked(services: Services, case: Case) -> dict[str, ApprovalRequest]:
    with Session(services.engine, expire_on_commit=False) as session:
        rows = session.exec(select(ApprovalRequest).where(ApprovalRequest.case_id == case.id))
        return {r.approver_id: r for r in rows}


def events(services: Services, case: Case, action: str) -> list[AuditEvent]:
    with Session(services.engine) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.case_id == case.id, AuditEvent.action == action)
            )
        )


def decide(services: Services, request: ApprovalRequest, at: datetime | None = None) -> None:
    with Session(services.engine) as session:
        stored = session.get(ApprovalRequest, request.id)
        assert stored is not None
        stored.used_at = at or utcnow()
        session.add(stored)
        session.add(
            ApprovalDecision(
                case_id=request.case_id,
                request_id=request.id,
                plan_hash=request.plan_hash,
                approver_id=request.approver_id,
                decision=Decision.APPROVE,
                decided_at=at or utcnow(),
            )
        )
        session.commit()


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())  # type: ignore[attr-defined]


def mails(mailbox, address: str, case: Case) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    return [m for m in mailbox.messages if address in str(m["To"]) and case.id in body(m)]


def link_of(message: EmailMessage) -> str:
    return next(word for word in body(message).split() if "/approvals/" in word)


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together (two dispatchers' passes at one moment)."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        gate.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def add_to_group(directory: LocalDirectory, group: str, *uids: str) -> None:
    conn = directory.admin_connection()
    try:
        dns = [f"uid={uid},{directory.users_base}" for uid in uids]
        conn.modify(f"cn={group},{directory.groups_base}", {"member": [(ldap3.MODIFY_ADD, dns)]})
        assert conn.result["result"] == 0, conn.result
    finally:
        conn.unbind()


# --- a deputyship that starts while a case waits -------------------------------------------


def test_a_deputyship_that_starts_while_a_case_waits_brings_the_deputy_the_request(
    make, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    services = make(required_approvals=2, deputies_may_be_non_managers=True)
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    assert sorted(asked(services, case)) == [LARS, NOOR, IRIS]
    now = utcnow()
    deputy(services, LARS, MILAN, now + timedelta(days=1))  # from tomorrow

    assert deputies_due(services, now) == []  # not started: nothing yet
    assert MILAN not in asked(services, case)
    later = now + timedelta(days=1, hours=1)
    [link] = deputies_due(services, later)
    assert link.approver.employee_id == MILAN
    assert link.deputy_for is not None and link.deputy_for.employee_id == LARS
    assert deputies_due(services, later + timedelta(hours=2)) == []  # once per plan
    assert len(events(services, case, "approval.deputy_asked")) == 1
    request = asked(services, case)[MILAN]
    assert request.plan_hash == record.plan_hash

    _, _, mailbox = smtp_server
    [mail] = mailbox.wait_for(lambda m: MILAN_MAIL in str(m["To"]) and case.id in body(m))
    assert "plaatsvervanger van Lars Smit" in body(mail)  # Milan reads Dutch
    assert services.links.read(link_of(mail).rsplit("/", 1)[1]).request_id == request.id

    # Lars and his own deputy count once; another manager completes the two
    decide(services, asked(services, case)[LARS], later)
    decide(services, request, later)
    assert settle(services, case, record).verdict == Verdict.PENDING
    decide(services, asked(services, case)[NOOR], later)
    assert settle(services, case, record).verdict == Verdict.APPROVED


def test_two_passes_at_once_ask_the_deputy_once(make, smtp_server) -> None:  # type: ignore[no-untyped-def]
    first = make(deputies_may_be_non_managers=True)
    second = make(deputies_may_be_non_managers=True)  # another dispatcher, same database
    case, record = waiting_case(first)
    request_approvals(first, case, record)
    deputy(first, LARS, MILAN, utcnow() - timedelta(hours=1))  # started: the case waits

    now = utcnow()
    results = at_once([lambda: deputies_due(first, now), lambda: deputies_due(second, now)])
    assert sorted(len(r) for r in results) == [0, 1]
    with Session(first.engine) as session:
        rows = session.exec(
            select(ApprovalRequest).where(
                ApprovalRequest.plan_id == record.id, ApprovalRequest.approver_id == MILAN
            )
        ).all()
    assert len(rows) == 1
    assert len(events(first, case, "approval.deputy_asked")) == 1
    _, _, mailbox = smtp_server
    mailbox.wait_for(lambda m: MILAN_MAIL in str(m["To"]) and case.id in body(m))
    assert len(mails(mailbox, MILAN_MAIL, case)) == 1  # both passes are over: no second mail


def test_the_flow_asking_while_a_pass_asks_the_deputy_gives_one_request(make, smtp_server) -> None:  # type: ignore[no-untyped-def]
    services = make(deputies_may_be_non_managers=True)
    other = make(deputies_may_be_non_managers=True)
    deputy(services, LARS, MILAN, utcnow() - timedelta(hours=1))
    case, record = waiting_case(services)
    with Session(services.engine) as session:  # Lars is asked; the flow goes on with the rest
        session.add(
            ApprovalRequest(
                case_id=case.id,
                plan_id=record.id,
                plan_hash=record.plan_hash,
                approver_id=LARS,
                approver_email="lsmit@example.test",
                language="nl",
                expires_at=utcnow() + timedelta(hours=72),
            )
        )
        session.commit()
    now = utcnow()
    at_once([lambda: request_approvals(services, case, record), lambda: deputies_due(other, now)])
    assert sorted(asked(services, case)) == [LARS, NOOR, IRIS, MILAN]
    _, _, mailbox = smtp_server
    mailbox.wait_for(lambda m: MILAN_MAIL in str(m["To"]) and case.id in body(m))
    assert len(mails(mailbox, MILAN_MAIL, case)) == 1


@pytest.mark.parametrize(
    ("manager", "who", "why"),
    [
        (LARS, "E1042", "the leaver"),
        (LARS, HANNA, "the requester"),
        (HANNA, MILAN, "the requester's deputy"),
        (LARS, NOOR, "asked in her own right"),
    ],
)
def test_the_pass_keeps_the_four_eyes_rules(make, manager: str, who: str, why: str) -> None:  # type: ignore[no-untyped-def]
    services = make(deputies_may_be_non_managers=True)
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    before = sorted(asked(services, case))
    deputy(services, manager, who, utcnow() - timedelta(hours=1))
    assert deputies_due(services, utcnow()) == [], why
    assert sorted(asked(services, case)) == before
    assert events(services, case, "approval.deputy_asked") == []


def test_a_decided_plan_brings_the_deputy_nothing(make) -> None:  # type: ignore[no-untyped-def]
    services = make(deputies_may_be_non_managers=True)
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    decide(services, asked(services, case)[NOOR])
    deputy(services, LARS, MILAN, utcnow() - timedelta(hours=1))
    assert deputies_due(services, utcnow()) == []
    assert MILAN not in asked(services, case)


def test_no_deputyship_reads_nothing_and_asks_nobody(make) -> None:  # type: ignore[no-untyped-def]
    services = make()
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    with Session(services.engine) as session:
        assert session.exec(select(Deputyship)).all() == []
    assert deputies_due(services, utcnow()) == []


# --- escalation inside the approvers group ------------------------------------------------


def test_escalation_asks_the_next_group_member_not_a_manager_outside_it(
    make, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    # Lars is a manager but not in finance; Hanna requests; neither may be asked
    services = make(approvers_group="finance", escalation_managers=[LARS, HANNA])
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    assert sorted(asked(services, case)) == FINANCE
    start = utcnow()
    add_to_group(directory, "finance", "hbakker", "mdijkstra")  # joined since

    assert escalations(services, start + timedelta(hours=47)) == []
    created = escalations(services, start + timedelta(hours=49))
    assert [r.approver_id for r in created] == [MILAN]
    assert escalations(services, start + timedelta(hours=60)) == []  # once per plan
    assert sorted(asked(services, case)) == sorted([*FINANCE, MILAN])
    [escalated] = events(services, case, "approval.escalated")
    assert json.loads(escalated.details)["approver_id"] == MILAN

    _, _, mailbox = smtp_server
    [mail] = mailbox.wait_for(lambda m: MILAN_MAIL in str(m["To"]) and case.id in body(m))
    assert services.links.read(link_of(mail).rsplit("/", 1)[1]).request_id == created[0].id
    decide(services, created[0])  # a group member: his approval counts
    assert settle(services, case, record).verdict == Verdict.APPROVED


def test_escalation_prefers_the_configured_managers_inside_the_group(make, directory) -> None:  # type: ignore[no-untyped-def]
    services = make(approvers_group="finance", escalation_managers=[LARS, JESSE])
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    add_to_group(directory, "finance", "mdijkstra", "jdegraaf")
    start = utcnow()
    created = escalations(services, start + timedelta(hours=49))
    assert [r.approver_id for r in created] == [JESSE]  # configured, in the group
    # a later pass does not go on to Milan: a plan is escalated once
    assert escalations(services, start + timedelta(hours=100)) == []
    assert MILAN not in asked(services, case) and LARS not in asked(services, case)


def test_an_urgent_case_escalates_within_the_urgent_group(make, directory) -> None:  # type: ignore[no-untyped-def]
    services = make(
        required_approvals_urgent=2,
        approvers_group_urgent="finance",
        escalation_managers=[NOOR],  # a manager: fine for ordinary cases, not for this one
    )
    case, record = waiting_case(services, urgent=True)
    request_approvals(services, case, record)
    assert sorted(asked(services, case)) == FINANCE
    add_to_group(directory, "finance", "mdijkstra")
    created = escalations(services, utcnow() + timedelta(hours=49))
    assert [r.approver_id for r in created] == [MILAN]


def test_escalation_without_a_group_is_unchanged(make) -> None:  # type: ignore[no-untyped-def]
    services = make(escalation_managers=[MILAN, LARS])  # Milan is no manager
    case, record = waiting_case(services)
    with Session(services.engine) as session:  # only Noor was asked
        session.add(
            ApprovalRequest(
                case_id=case.id,
                plan_id=record.id,
                plan_hash=record.plan_hash,
                approver_id=NOOR,
                approver_email="ndegroot@example.test",
                expires_at=utcnow() + timedelta(hours=72),
                notified_at=utcnow(),
            )
        )
        session.commit()
    created = escalations(services, utcnow() + timedelta(hours=49))
    assert [r.approver_id for r in created] == [LARS]


def test_two_escalation_passes_at_once_ask_each_member_once(  # type: ignore[no-untyped-def]
    make, directory, smtp_server
) -> None:
    first = make(approvers_group="finance", escalation_managers=[LARS])
    second = make(approvers_group="finance", escalation_managers=[LARS])
    case, record = waiting_case(first)
    request_approvals(first, case, record)
    add_to_group(directory, "finance", "mdijkstra")
    later = utcnow() + timedelta(hours=49)
    results = at_once([lambda: escalations(first, later), lambda: escalations(second, later)])
    assert sorted(len(r) for r in results) == [0, 1]
    assert len(events(first, case, "approval.escalated")) == 1
    _, _, mailbox = smtp_server
    mailbox.wait_for(lambda m: MILAN_MAIL in str(m["To"]) and case.id in body(m))
    assert len(mails(mailbox, MILAN_MAIL, case)) == 1
