"""A case's status change and the audit event that records it commit together, or not at all."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from offboarding.domain import audit
from offboarding.domain.cases import Recorded, get_case, set_status
from offboarding.domain.models import Case, CaseStatus


def a_case(engine: Engine) -> Case:
    case = Case(
        event_id="evt-cases-1",
        employee_id="E1042",
        employee_email="jdevries@example.test",
        display_name="Jan de Vries",
        requested_by="E0007",
        last_working_day=date(2026, 11, 30),
        occurred_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(case)
        session.commit()
    return case


def test_a_status_change_is_not_kept_when_its_audit_event_cannot_be_written(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = a_case(engine)

    def unavailable(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit, "append", unavailable)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        set_status(engine, case.id, CaseStatus.COMPLETED, event=Recorded("case.completed"))
    stored = get_case(engine, case.id)
    assert stored is not None and stored.status == CaseStatus.RECEIVED
    monkeypatch.undo()

    set_status(engine, case.id, CaseStatus.COMPLETED, event=Recorded("case.completed"))
    stored = get_case(engine, case.id)
    assert stored is not None and stored.status == CaseStatus.COMPLETED
    assert [e.action for e in audit.events_for_case(engine, case.id)] == ["case.completed"]
    assert audit.verify_chain(engine).ok
