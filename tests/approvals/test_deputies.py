"""Deputies and approver groups against a real directory (slapd) and both databases:
who is asked, who may decide, and how the approvals count."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from approvals_support import open_case
from sqlmodel import Session, select

from approvals.decisions import settle
from approvals.deputies import DeputyProblem, current_deputyships, end_deputy, name_deputy
from approvals.requests import NoEligibleApprover, request_approvals
from approvals.rules import Refusal, Verdict
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    AuditEvent,
    Case,
    Decision,
    Deputyship,
    utcnow,
)
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings

LARS, NOOR, IRIS, HANNA = "E1004", "E1007", "E1011", "E0007"  # managers; Hanna requests
MILAN = "E1016"  # not a manager
FINANCE = ["E1005", "E1011", "E1013", "E1015"]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LocalDirectory]:
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


@pytest.fixture
def make_services(tmp_path: Path, directory: LocalDirectory, database_url: str):  # type: ignore[no-untyped-def]
    built: list[Services] = []

    def make(**policy: Any) -> Services:
        settings = Settings(
            home=tmp_path / f"home{len(built)}",
            database_url=database_url,
            connectors=[
                directory.connector_config(managers_group=directory.org.managers_group_dn)  # type: ignore[attr-defined]
            ],
            policy=policy,
        )
        built.append(build_services(settings))
        return built[-1]

    yield make
    for services in built:
        services.engine.dispose()


def name(services: Services, manager: str, deputy: str, days: int = 7) -> Deputyship:
    now = utcnow()
    return name_deputy(
        services,
        manager_id=manager,
        deputy_id=deputy,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=days),
        actor="operator:test",
    )


def record(services: Services, case: Case, plan: Any, approver: str, decision: Decision) -> None:
    with Session(services.engine, expire_on_commit=False) as session:
        mailed = session.exec(
            select(ApprovalRequest).where(
                ApprovalRequest.plan_id == plan.id, ApprovalRequest.approver_id == approver
            )
        ).first()
        request = mailed or ApprovalRequest(
            case_id=case.id,
            plan_id=plan.id,
            plan_hash=plan.plan_hash,
            approver_id=approver,
            approver_email=f"{approver}@example.test",
            expires_at=utcnow() + timedelta(hours=1),
        )
        request.used_at = utcnow()
        session.add(request)
        session.flush()
        session.add(
            ApprovalDecision(
                case_id=case.id,
                request_id=request.id,
                plan_hash=plan.plan_hash,
                approver_id=approver,
                decision=decision,
                reason="" if decision == Decision.APPROVE else "not now",
            )
        )
        session.commit()


def actions(services: Services) -> list[str]:
    with Session(services.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent)).all()]


def test_naming_and_ending_a_deputy_are_audited(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services()
    row = name(services, LARS, NOOR)
    assert [d.id for d in current_deputyships(services.engine)] == [row.id]
    end_deputy(services, row.id, actor="operator:test")
    assert current_deputyships(services.engine) == []
    assert [a for a in actions(services) if a.startswith("deputy.")] == [
        "deputy.named",
        "deputy.ended",
    ]
    with pytest.raises(DeputyProblem, match="ended already"):
        end_deputy(services, row.id, actor="operator:test")


@pytest.mark.parametrize(
    ("manager", "deputy", "days", "problem"),
    [
        (LARS, LARS, 7, "self"),
        (LARS, MILAN, 7, "not_eligible"),  # not a manager, and the policy asks for one
        (LARS, "E9999", 7, "unknown"),
        (MILAN, LARS, 7, "not_manager"),  # only managers name deputies
        (LARS, NOOR, 400, "too_long"),
    ],
)
def test_a_deputy_that_breaks_a_rule_is_refused_and_nothing_is_stored(  # type: ignore[no-untyped-def]
    make_services, manager: str, deputy: str, days: int, problem: str
) -> None:
    services = make_services()
    with pytest.raises(DeputyProblem) as refused:
        name(services, manager, deputy, days)
    assert refused.value.key == problem
    with Session(services.engine) as session:
        assert session.exec(select(Deputyship)).all() == []
    assert not [a for a in actions(services) if a.startswith("deputy.")]


def test_an_overlapping_period_is_refused(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services()
    name(services, LARS, NOOR)
    with pytest.raises(DeputyProblem) as refused:
        name(services, LARS, IRIS)
    assert refused.value.key == "overlap"
    assert len(current_deputyships(services.engine)) == 1


def test_the_deputy_is_asked_next_to_the_manager(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(deputies_may_be_non_managers=True)
    name(services, LARS, MILAN)
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    issued = request_approvals(services, case, plan)
    asked = {link.approver.employee_id: link.deputy_for for link in issued}
    assert set(asked) == {LARS, NOOR, IRIS, MILAN}
    assert asked[MILAN] is not None and asked[MILAN].employee_id == LARS
    assert asked[LARS] is None


def test_the_requester_named_as_deputy_is_not_asked_and_cannot_decide(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(approvers_group="finance")  # Hanna is not in finance
    name(services, IRIS, HANNA)
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    asked = {link.approver.employee_id for link in request_approvals(services, case, plan)}
    assert HANNA not in asked
    record(services, case, plan, HANNA, Decision.APPROVE)
    settled = settle(services, case, plan)
    assert settled.verdict == Verdict.PENDING
    assert [set(broken) for _, broken in settled.refused] == [{Refusal.IS_REQUESTER}]


def test_a_leaver_named_as_deputy_is_not_asked_and_cannot_decide(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(deputies_may_be_non_managers=True)
    name(services, LARS, "E1042")  # Jan, who is leaving
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    asked = {link.approver.employee_id for link in request_approvals(services, case, plan)}
    assert "E1042" not in asked
    record(services, case, plan, "E1042", Decision.APPROVE)
    settled = settle(services, case, plan)
    assert settled.verdict == Verdict.PENDING
    assert Refusal.IS_LEAVER in settled.refused[0][1]


def test_a_manager_and_their_own_deputy_count_once(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(required_approvals=2, deputies_may_be_non_managers=True)
    name(services, LARS, MILAN)
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    record(services, case, plan, LARS, Decision.APPROVE)
    record(services, case, plan, MILAN, Decision.APPROVE)
    settled = settle(services, case, plan)
    assert settled.verdict == Verdict.PENDING and settled.refused == ()
    record(services, case, plan, NOOR, Decision.APPROVE)
    assert settle(services, case, plan).verdict == Verdict.APPROVED


def test_a_deputy_alone_approves_for_their_manager(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(deputies_may_be_non_managers=True)
    row = name(services, LARS, MILAN)
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    record(services, case, plan, MILAN, Decision.APPROVE)
    assert settle(services, case, plan).verdict == Verdict.APPROVED
    # the decision was made inside the period: ending it later does not undo it
    end_deputy(services, row.id, actor="operator:test")
    assert settle(services, case, plan).verdict == Verdict.APPROVED


def test_n_of_m_from_a_named_group_for_an_instant_dismissal(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(
        required_approvals=1, required_approvals_urgent=2, approvers_group_urgent="finance"
    )
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    with Session(services.engine, expire_on_commit=False) as session:
        stored = session.get(Case, case.id)
        assert stored is not None
        stored.urgent = True
        session.add(stored)
        session.commit()
        session.refresh(stored)
        case = stored
    asked = {link.approver.employee_id for link in request_approvals(services, case, plan)}
    assert asked == set(FINANCE)  # the finance team, not the managers
    record(services, case, plan, LARS, Decision.APPROVE)  # a manager, not in finance
    settled = settle(services, case, plan)
    assert settled.verdict == Verdict.PENDING
    assert [set(b) for _, b in settled.refused] == [{Refusal.NOT_A_MANAGER}]
    record(services, case, plan, "E1005", Decision.APPROVE)
    assert settle(services, case, plan).verdict == Verdict.PENDING  # 1 of 2
    record(services, case, plan, "E1013", Decision.APPROVE)
    assert settle(services, case, plan).verdict == Verdict.APPROVED


def test_too_few_approvers_for_the_count_is_said_not_waited_for(make_services) -> None:  # type: ignore[no-untyped-def]
    services = make_services(approvers_group="hr", required_approvals=2)  # Hanna requests
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    with pytest.raises(NoEligibleApprover, match="2 approvals are needed"):
        request_approvals(services, case, plan)
    with Session(services.engine) as session:
        assert session.exec(select(ApprovalRequest)).all() == []
