from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from offboarding.domain import audit
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    AuditEvent,
    Case,
    CaseStatus,
    Decision,
    RevocationPlanRecord,
    RevocationStep,
    StepStatus,
)
from offboarding.domain.retention import ERASED, apply_retention

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_case(engine: Engine, event_id: str, status: CaseStatus, closed_days_ago: int) -> str:
    closed = NOW - timedelta(days=closed_days_ago)
    with Session(engine, expire_on_commit=False) as session:
        case = Case(
            event_id=event_id,
            employee_id="E1042",
            employee_email="jdevries@example.test",
            display_name="Jan de Vries",
            requested_by="E0007",
            last_working_day=date(2025, 1, 1),
            occurred_at=closed,
            status=status,
            status_detail="detail with Jan",
            updated_at=closed,
        )
        session.add(case)
        session.flush()
        plan = RevocationPlanRecord(
            case_id=case.id, version=1, plan_hash="a" * 64, canonical='{"leaver":"Jan de Vries"}'
        )
        session.add(plan)
        session.flush()
        request = ApprovalRequest(
            case_id=case.id,
            plan_id=plan.id,
            plan_hash=plan.plan_hash,
            approver_id="E1004",
            approver_email="lsmit@example.test",
            expires_at=closed,
        )
        session.add(request)
        session.flush()
        session.add(
            ApprovalDecision(
                case_id=case.id,
                request_id=request.id,
                plan_hash=plan.plan_hash,
                approver_id="E1004",
                decision=Decision.REJECT,
                reason="Jan stays after all",
            )
        )
        session.add(
            RevocationStep(
                case_id=case.id,
                plan_id=plan.id,
                grant_key="k",
                label="uid=jdevries in developers",
                status=StepStatus.DONE,
                detail="removed uid=jdevries",
            )
        )
        session.commit()
    audit.record(
        engine,
        action="case.opened",
        actor="hris:E0007",
        case_id=case.id,
        details={"employee": "Jan de Vries", "email": "jdevries@example.test"},
    )
    return case.id


def test_closed_cases_past_retention_lose_personal_data_and_the_chain_holds(
    engine: Engine, tmp_path: Path
) -> None:
    old = make_case(engine, "e-old", CaseStatus.COMPLETED, closed_days_ago=400)
    recent = make_case(engine, "e-recent", CaseStatus.REJECTED, closed_days_ago=10)
    waiting = make_case(engine, "e-waiting", CaseStatus.AWAITING_APPROVAL, closed_days_ago=400)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    stale, fresh = outbox / "old.eml", outbox / "new.eml"
    stale.write_text("Jan de Vries")
    fresh.write_text("Jan de Vries")
    long_ago = (NOW - timedelta(days=400)).timestamp()
    os.utime(stale, (long_ago, long_ago))

    report = apply_retention(engine, retention_days=365, now=NOW, outbox=outbox)

    assert report.cases == [old] and report.audit_events == 1 and report.outbox_files == 1
    assert not stale.exists() and fresh.exists()
    with Session(engine) as session:
        erased = session.get(Case, old)
        assert erased is not None
        assert (erased.display_name, erased.employee_email) == (ERASED, ERASED)
        assert erased.employee_id == "E1042" and erased.status == CaseStatus.COMPLETED
        plan = session.exec(
            select(RevocationPlanRecord).where(RevocationPlanRecord.case_id == old)
        ).one()
        assert plan.canonical == "{}" and plan.plan_hash == "a" * 64
        assert (
            session.exec(select(ApprovalDecision).where(ApprovalDecision.case_id == old))
            .one()
            .reason
            == ERASED
        )
        assert (
            session.exec(select(ApprovalRequest).where(ApprovalRequest.case_id == old))
            .one()
            .approver_email
            == ERASED
        )
        assert (
            session.exec(select(RevocationStep).where(RevocationStep.case_id == old)).one().label
            == ERASED
        )
        for kept in (recent, waiting):
            assert session.get(Case, kept).display_name == "Jan de Vries"  # type: ignore[union-attr]
        everything = " ".join(
            e.details for e in session.exec(select(AuditEvent).where(AuditEvent.case_id == old))
        )
        assert "Jan" not in everything and "jdevries" not in everything
    assert audit.verify_chain(engine).ok
    assert apply_retention(engine, retention_days=365, now=NOW).cases == []  # once is enough


def test_an_erased_event_cannot_be_refilled_unnoticed(engine: Engine) -> None:
    old = make_case(engine, "e-old", CaseStatus.COMPLETED, closed_days_ago=400)
    apply_retention(engine, retention_days=365, now=NOW)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_event SET details = :d WHERE case_id = :c"),
            {"d": '{"employee":"someone else"}', "c": old},
        )
    report = audit.verify_chain(engine)
    assert not report.ok and "erased" in report.problem
