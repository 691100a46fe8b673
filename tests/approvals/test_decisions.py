"""One decision function: the page, the flow and the dispatcher read the same verdict,
and it follows the policy (how many approvals) and the rules as they are now."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from approvals_support import open_case, services_for
from sqlmodel import Session

from approvals.decisions import settle, valid_verdict
from approvals.requests import NotAwaitingApproval, renew_approvals
from approvals.rules import Verdict
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.domain.audit import events_for_case
from offboarding.domain.cases import get_case, set_status
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    CaseStatus,
    Decision,
    utcnow,
)


@pytest.fixture
def directory(tmp_path: Path):  # type: ignore[no-untyped-def]
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


def record(services, case, plan, approver_id: str, decision: Decision) -> ApprovalDecision:  # type: ignore[no-untyped-def]
    with Session(services.engine, expire_on_commit=False) as session:
        request = ApprovalRequest(
            case_id=case.id,
            plan_id=plan.id,
            plan_hash=plan.plan_hash,
            approver_id=approver_id,
            approver_email=f"{approver_id}@example.test",
            expires_at=utcnow(),
            used_at=utcnow(),
        )
        session.add(request)
        session.flush()
        stored = ApprovalDecision(
            case_id=case.id,
            request_id=request.id,
            plan_hash=plan.plan_hash,
            approver_id=approver_id,
            decision=decision,
            reason="" if decision == Decision.APPROVE else "not yet",
        )
        session.add(stored)
        session.commit()
    return stored


def test_two_of_the_managers_must_approve_when_the_policy_says_so(tmp_path, directory) -> None:  # type: ignore[no-untyped-def]
    services = services_for(
        tmp_path,
        directory,
        policy={"required_approvals": 2},
        managers_group=directory.org.managers_group_dn,
    )
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    assert settle(services, case, plan).verdict == Verdict.PENDING
    first = record(services, case, plan, "E1004", Decision.APPROVE)
    one = settle(services, case, plan)
    assert one.verdict == Verdict.PENDING and one.deciding is None
    second = record(services, case, plan, "E1007", Decision.APPROVE)
    both = settle(services, case, plan)
    assert both.verdict == Verdict.APPROVED
    assert both.deciding is not None and both.deciding.id in {first.id, second.id}


def test_a_decision_the_rules_no_longer_accept_counts_for_nobody(tmp_path, directory) -> None:  # type: ignore[no-untyped-def]
    """The page once said "already decided" on a decision the flow refused; now both
    ask `settle`: an approval by someone who is no longer a manager settles nothing."""
    services = services_for(tmp_path, directory, managers=["E1004", "E1007"])
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    stale = record(services, case, plan, "E1011", Decision.APPROVE)  # not in the managers list
    settlement = settle(services, case, plan)
    assert settlement.verdict == Verdict.PENDING
    assert [d.id for d, _ in settlement.refused] == [stale.id]
    assert not [
        e for e in events_for_case(services.engine, case.id) if e.action == "decision.refused"
    ]
    assert valid_verdict(services, case, plan) == Verdict.PENDING  # the flow's view records it
    refused = [
        e for e in events_for_case(services.engine, case.id) if e.action == "decision.refused"
    ]
    assert len(refused) == 1
    record(services, case, plan, "E1007", Decision.REJECT)
    rejected = settle(services, case, plan)
    assert rejected.verdict == Verdict.REJECTED and rejected.deciding is not None
    assert rejected.deciding.approver_id == "E1007"


def test_links_are_not_renewed_for_a_plan_that_is_already_decided(tmp_path, directory) -> None:  # type: ignore[no-untyped-def]
    """The CLI's `approvals resend` asks the same decision function: a decided plan whose
    run has not woken yet gets no new links."""
    services = services_for(tmp_path, directory, managers_group=directory.org.managers_group_dn)
    case, plan = open_case(services, "E1042", "jdevries@example.test")
    set_status(services.engine, case.id, CaseStatus.AWAITING_APPROVAL)
    case = get_case(services.engine, case.id)
    record(services, case, plan, "E1004", Decision.APPROVE)
    with pytest.raises(NotAwaitingApproval, match="already approved by E1004"):
        renew_approvals(services, case, actor="operator:test")
    renewed = [
        e for e in events_for_case(services.engine, case.id) if e.action == "approval.renewed"
    ]
    assert renewed == []
