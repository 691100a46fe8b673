"""A decision the dispatcher could not hand to its waiting run (Prefect busy, slow or
restarting) is tried again on a later pass, not given up: a case must never stay asleep with
its approval on record."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Suspended

from approvals.handover import ATTESTED
from offboarding.domain import audit
from offboarding.domain.models import Case, CaseStatus, utcnow
from offboarding.orchestration import dispatcher as dispatching
from offboarding.orchestration.dispatcher import Dispatcher, attestations_handed_over, handed_over
from offboarding.orchestration.handovers import Handovers
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.db import create_schema, make_engine


def test_a_failed_hand_over_waits_longer_each_time_and_a_resumed_one_is_done() -> None:
    handovers = Handovers(delays=(5.0, 15.0))
    assert handovers.due("run:pause", now=0.0)
    assert handovers.failed("run:pause", now=0.0) is True  # the first: worth recording
    assert not handovers.due("run:pause", now=4.9)
    assert handovers.due("run:pause", now=5.0)
    assert handovers.failed("run:pause", now=5.0) is False
    assert not handovers.due("run:pause", now=19.9)
    assert handovers.due("run:pause", now=20.0)
    assert handovers.failed("run:pause", now=20.0) is False
    assert not handovers.due("run:pause", now=34.9)  # the last delay repeats
    assert handovers.due("run:pause", now=35.0)
    handovers.resumed("run:pause")
    assert not handovers.due("run:pause", now=1e9)
    assert handovers.due("run:another-pause", now=0.0)  # a new suspension of the same run


class BusyThenFreeRuns(RunGateway):
    """Prefect does not take the first `busy` resumes (as its SQLite database, locked by
    concurrent writers, answered in a reorganisation), then takes them."""

    def __init__(self, busy: int) -> None:
        super().__init__("none/none")
        self.busy = busy
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def resume(self, flow_run_id, run_input, *, wait_seconds=5.0):  # type: ignore[no-untyped-def, override]
        self.calls.append((flow_run_id, run_input))
        return len(self.calls) > self.busy


def test_the_dispatcher_hands_a_decision_over_again_until_the_run_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decision = {"decision_id": "d1", "case_id": "c1", "decision": "approve"}
    recorded: list[str] = []
    monkeypatch.setattr(dispatching, "cases_with_decisions", lambda _s, ids: set(ids))
    monkeypatch.setattr(dispatching, "settled_decision", lambda _s, _case, _since: decision)
    monkeypatch.setattr(
        dispatching.audit, "record", lambda _engine, *, action, **_: recorded.append(action)
    )
    run = FlowRun(
        id=uuid.uuid4(), name="offboard", flow_id=uuid.uuid4(), state=Suspended(key="decision-1")
    )
    case = Case(
        id="c1",
        event_id="e1",
        employee_id="E1",
        employee_email="e1@example.test",
        display_name="E One",
        requested_by="E0",
        last_working_day=None,  # type: ignore[arg-type]
        occurred_at=None,  # type: ignore[arg-type]
        status=CaseStatus.AWAITING_APPROVAL,
        flow_run_id=str(run.id),
    )
    runs = {str(run.id): (case, run)}
    gateway = BusyThenFreeRuns(busy=2)
    settings = SimpleNamespace(dispatch_interval_seconds=5.0, db_concurrency=1)
    dispatcher = Dispatcher(SimpleNamespace(settings=settings, engine=None), gateway)  # type: ignore[arg-type]
    dispatcher._handovers = Handovers(delays=(0.0,))  # each pass may try again

    async def passes(count: int) -> None:
        for _ in range(count):
            await dispatcher.deliver_decisions(runs)

    asyncio.run(passes(5))
    assert [call[0] for call in gateway.calls] == [str(run.id)] * 3  # busy, busy, taken
    assert all(call[1] == decision for call in gateway.calls)
    assert recorded == ["run.resume_pending", "run.resumed"]  # pending once, then resumed


def test_a_decision_the_run_took_is_not_handed_over_again(tmp_path: Path) -> None:
    # The dispatcher reads the runs at the start of its pass; a page may resume one after
    # that. Its view then still shows the run asleep: a second resume would be refused.
    engine = make_engine(f"sqlite:///{tmp_path / 'offboarding.db'}")
    create_schema(engine)
    services = SimpleNamespace(engine=engine)
    asleep = utcnow() - timedelta(seconds=30)
    decided = utcnow() - timedelta(seconds=20)  # older than the page's grace
    assert not handed_over(services, "c1", "d1", decided, asleep)  # the dispatcher's to do
    audit.record(
        engine,
        action="run.resumed",
        actor="service",
        case_id="c1",
        details={"decision_id": "d1", "flow_run_id": "r1"},
    )
    assert handed_over(services, "c1", "d1", decided, asleep)  # the run took it
    asleep_again = utcnow() + timedelta(seconds=1)
    assert not handed_over(services, "c1", "d1", decided, asleep_again)  # a new suspension

    just_now = utcnow()  # a decision the page is handing over right now
    assert handed_over(services, "c1", "d2", just_now, asleep)
    audit.record(
        engine,
        action="run.resume_pending",
        actor="service",
        case_id="c1",
        details={"decision_id": "d2", "flow_run_id": "r1"},
    )
    assert not handed_over(services, "c1", "d2", just_now, asleep)  # the page could not
    engine.dispose()


def test_attestations_the_run_took_are_not_handed_over_again(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'offboarding.db'}")
    create_schema(engine)
    services = SimpleNamespace(engine=engine)
    asleep = utcnow() - timedelta(seconds=30)
    assert not attestations_handed_over(services, "c1", asleep)
    audit.record(  # a decision handed over earlier: not the attestations
        engine,
        action="run.resumed",
        actor="service",
        case_id="c1",
        details={"decision_id": "d1", "flow_run_id": "r1"},
    )
    assert not attestations_handed_over(services, "c1", asleep)
    audit.record(  # as the attestation page records it
        engine,
        action="run.resumed",
        actor="service",
        case_id="c1",
        details={"why": ATTESTED, "flow_run_id": "r1"},
    )
    assert attestations_handed_over(services, "c1", asleep)
    assert not attestations_handed_over(services, "c1", utcnow() + timedelta(seconds=1))
    engine.dispose()
