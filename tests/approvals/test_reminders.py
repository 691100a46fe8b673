"""Approvals that wait: reminders, escalation, expiry to a person, and the "already decided"
mail — on SQLite and PostgreSQL, with a real directory and a real SMTP server.

Time is driven by passing `now`; nothing sleeps.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from approvals_support import open_case
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from approvals.decided_elsewhere import tell_other_approvers
from approvals.decisions import settle
from approvals.reminders import due_reminders, escalations, expired_cases
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
    RevocationPlanRecord,
    utcnow,
)
from offboarding.domain.policy import Policy
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings, SmtpSettings

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One slapd for the module: these tests only read it."""
    path = tmp_path_factory.mktemp("slapd")
    with LocalDirectory.start(path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


def build(  # type: ignore[no-untyped-def]
    tmp_path: Path, engine: Engine, directory, smtp_server, policy=None, **connector
) -> Services:
    host, port, _ = smtp_server
    settings = Settings(
        home=tmp_path / "home",
        connectors=[directory.connector_config(**connector)],
        policy=policy or {},
        smtp=SmtpSettings(host=host, port=port, starttls=False),
    )
    return build_services(settings, engine=engine)


def waiting_case(services: Services) -> tuple[Case, RevocationPlanRecord]:
    case, record = open_case(services, "E1042", "jdevries@example.test")
    with Session(services.engine, expire_on_commit=False) as session:
        stored = session.get(Case, case.id)
        assert stored is not None
        stored.status = CaseStatus.AWAITING_APPROVAL
        session.add(stored)
        session.commit()
        session.refresh(stored)
    assert isinstance(record, RevocationPlanRecord)
    return stored, record


def requests_of(services: Services, case: Case) -> dict[str, ApprovalRequest]:
    with Session(services.engine, expire_on_commit=False) as session:
        rows = session.exec(select(ApprovalRequest).where(ApprovalRequest.case_id == case.id))
        return {r.approver_id: r for r in rows}


def decide(services: Services, request: ApprovalRequest, decision: Decision) -> ApprovalDecision:
    """What the approval page stores: the link used, the decision recorded."""
    with Session(services.engine, expire_on_commit=False) as session:
        stored = session.get(ApprovalRequest, request.id)
        assert stored is not None
        stored.used_at = utcnow()
        made = ApprovalDecision(
            case_id=request.case_id,
            request_id=request.id,
            plan_hash=request.plan_hash,
            approver_id=request.approver_id,
            decision=decision,
            reason="" if decision == Decision.APPROVE else "not agreed",
        )
        session.add(stored)
        session.add(made)
        session.commit()
        return made


def events(services: Services, case: Case, action: str) -> list[AuditEvent]:
    with Session(services.engine) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.case_id == case.id, AuditEvent.action == action)
            )
        )


def mails_about(mailbox, case: Case, subject_part: str) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    return [m for m in mailbox.messages if subject_part in str(m["Subject"]) and case.id in body(m)]


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


MANAGERS = ("E1004", "E1007", "E1011")


def test_each_pending_approver_is_reminded_once_after_the_set_hours(
    tmp_path, engine, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    services = build(
        tmp_path,
        engine,
        directory,
        smtp_server,
        policy={"required_approvals": 2},  # one approval leaves the plan pending
        managers_group=directory.org.managers_group_dn,
    )
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    asked = requests_of(services, case)
    assert sorted(asked) == list(MANAGERS)
    decide(services, asked["E1004"], Decision.APPROVE)  # decided: never reminded
    start = utcnow()

    assert due_reminders(services, start + timedelta(hours=23)) == []
    reminded = due_reminders(services, start + timedelta(hours=25))
    assert sorted(r.approver_id for r in reminded) == ["E1007", "E1011"]
    assert due_reminders(services, start + timedelta(hours=30)) == []  # once per request
    assert len(events(services, case, "approval.reminded")) == 2

    _, _, mailbox = smtp_server
    iris = mailbox.wait_for(
        lambda m: "Reminder" in str(m["Subject"]) and case.id in body(m)
    )  # E1011 reads English
    noor = mailbox.wait_for(lambda m: "Herinnering" in str(m["Subject"]) and case.id in body(m))
    assert [str(m["To"]) for m in iris] == ["ihendriks@example.test"]
    assert [str(m["To"]) for m in noor] == ["ndegroot@example.test"]
    expires = asked["E1011"].expires_at
    local = expires.replace(tzinfo=expires.tzinfo or ZoneInfo("UTC")).astimezone(AMSTERDAM)
    assert f"valid until {local.strftime('%Y-%m-%d %H:%M %Z')}" in body(iris[0])
    assert "UTC" not in body(iris[0])
    link = next(line for line in body(iris[0]).splitlines() if "/approvals/" in line)
    claims = services.links.read(link.rsplit("/", 1)[1])
    assert claims.request_id == asked["E1011"].id  # the reminder carries a working link


def test_a_decided_plan_sends_no_reminder(tmp_path, engine, directory, smtp_server) -> None:  # type: ignore[no-untyped-def]
    services = build(tmp_path, engine, directory, smtp_server, managers=["E1004", "E1007"])
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    decide(services, requests_of(services, case)["E1007"], Decision.REJECT)
    assert due_reminders(services, utcnow() + timedelta(hours=25)) == []
    assert events(services, case, "approval.reminded") == []


def test_escalation_asks_the_configured_managers_not_yet_asked(
    tmp_path, engine, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    first = build(tmp_path, engine, directory, smtp_server, managers=["E1004"])
    case, record = waiting_case(first)
    request_approvals(first, case, record)  # only E1004 was asked
    start = utcnow()
    # The escalation list names the requester too: the four-eyes rules keep her out.
    later = build(
        tmp_path,
        engine,
        directory,
        smtp_server,
        policy={"escalation_managers": ["E1011", "E0007", "E1004"]},
        managers=["E1004", "E1011", "E0007"],
    )

    assert escalations(later, start + timedelta(hours=47)) == []
    created = escalations(later, start + timedelta(hours=49))
    assert [r.approver_id for r in created] == ["E1011"]
    assert escalations(later, start + timedelta(hours=60)) == []  # asked once
    assert sorted(requests_of(later, case)) == ["E1004", "E1011"]
    assert len(events(later, case, "approval.escalated")) == 1

    _, _, mailbox = smtp_server
    mail = mailbox.wait_for(
        lambda m: str(m["To"]) == "ihendriks@example.test" and case.id in body(m)
    )
    link = next(line for line in body(mail[0]).splitlines() if "/approvals/" in line)
    assert later.links.read(link.rsplit("/", 1)[1]).request_id == created[0].id
    # The escalated manager's decision counts under the same rules.
    decide(later, created[0], Decision.APPROVE)
    assert settle(later, case, record).verdict == Verdict.APPROVED


def test_no_escalation_without_configured_managers(
    tmp_path, engine, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    services = build(tmp_path, engine, directory, smtp_server, managers=["E1004"])
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    assert escalations(services, utcnow() + timedelta(hours=100)) == []
    assert sorted(requests_of(services, case)) == ["E1004"]


def test_expired_links_put_the_case_to_a_person_never_approve(
    tmp_path, engine, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    services = build(tmp_path, engine, directory, smtp_server, managers=["E1004", "E1007"])
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    ttl = services.settings.approval_ttl_hours
    start = utcnow()

    assert expired_cases(services, start + timedelta(hours=ttl - 1)) == []
    stuck = expired_cases(services, start + timedelta(hours=ttl + 1))
    assert [c.id for c, _ in stuck] == [case.id]
    problem = stuck[0][1]
    last = max(r.expires_at for r in requests_of(services, case).values())
    local = last.replace(tzinfo=last.tzinfo or ZoneInfo("UTC")).astimezone(AMSTERDAM)
    assert local.strftime("%Y-%m-%d %H:%M %Z") in problem
    assert "nothing was approved" in problem and f"approvals resend {case.id}" in problem
    assert settle(services, case, record).verdict == Verdict.PENDING
    with Session(services.engine) as session:
        assert session.exec(select(ApprovalDecision)).all() == []


def test_a_decided_case_is_not_reported_expired(tmp_path, engine, directory, smtp_server) -> None:  # type: ignore[no-untyped-def]
    services = build(tmp_path, engine, directory, smtp_server, managers=["E1004", "E1007"])
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    decide(services, requests_of(services, case)["E1004"], Decision.APPROVE)
    hours = services.settings.approval_ttl_hours + 5
    assert expired_cases(services, utcnow() + timedelta(hours=hours)) == []


def test_the_other_approvers_hear_once_that_it_was_decided(
    tmp_path, engine, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    services = build(
        tmp_path, engine, directory, smtp_server, managers_group=directory.org.managers_group_dn
    )
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    asked = requests_of(services, case)
    decision = decide(services, asked["E1007"], Decision.APPROVE)

    mailed = tell_other_approvers(services, case, record, decision)
    assert sorted(mailed) == ["ihendriks@example.test", "lsmit@example.test"]
    assert tell_other_approvers(services, case, record, decision) == []
    assert len(events(services, case, "email.decided_elsewhere")) == 2

    _, _, mailbox = smtp_server
    english = mailbox.wait_for(
        lambda m: "Already decided" in str(m["Subject"]) and case.id in body(m)
    )
    dutch = mailbox.wait_for(lambda m: "Al beslist" in str(m["Subject"]) and case.id in body(m))
    assert [str(m["To"]) for m in english] == ["ihendriks@example.test"]
    assert [str(m["To"]) for m in dutch] == ["lsmit@example.test"]
    decided = decision.decided_at.astimezone(AMSTERDAM).strftime("%Y-%m-%d %H:%M %Z")
    assert f"Noor de Groot approved the revocation plan for Jan de Vries at {decided}" in " ".join(
        body(english[0]).split()
    )
    assert "goedgekeurd" in body(dutch[0]) and "niets te doen" in body(dutch[0]).lower()


def test_no_decided_mail_while_more_approvals_are_needed(
    tmp_path, engine, directory, smtp_server
) -> None:  # type: ignore[no-untyped-def]
    services = build(
        tmp_path,
        engine,
        directory,
        smtp_server,
        policy={"required_approvals": 2},
        managers_group=directory.org.managers_group_dn,
    )
    case, record = waiting_case(services)
    request_approvals(services, case, record)
    decision = decide(services, requests_of(services, case)["E1004"], Decision.APPROVE)
    assert tell_other_approvers(services, case, record, decision) == []
    assert events(services, case, "email.decided_elsewhere") == []


def test_policy_refuses_escalating_before_reminding_and_doubled_managers() -> None:
    assert Policy().remind_after_hours == 24 and Policy().escalate_after_hours == 48
    with pytest.raises(ValidationError, match="escalate_after_hours must not be earlier"):
        Policy(remind_after_hours=30, escalate_after_hours=12)
    with pytest.raises(ValidationError, match="names an employee twice"):
        Policy(escalation_managers=("E1011", "e1011"))
    with pytest.raises(ValidationError, match="empty employee id"):
        Policy(escalation_managers=(" ",))
