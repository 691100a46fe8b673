"""A page hands what it recorded to the case's waiting run, and records how that went."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from approvals.ports import RunResumer
from offboarding.domain import audit
from offboarding.domain.models import Case

# why a run waiting for its manual steps was resumed (the page's and the dispatcher's record)
ATTESTED = "manual steps attested"
HANDOVER_ACTIONS = ("run.resumed", "run.resume_pending")  # resumed, could not be resumed now


async def hand_over(
    gateway: RunResumer,
    engine: Engine,
    case: Case,
    run_input: dict[str, Any],
    details: dict[str, Any],
) -> bool:
    """Resume the case's run with `run_input`; `run.resumed`, or `run.resume_pending` when
    it could not be resumed now (the dispatcher delivers it then). Whether it was resumed."""
    resumed = await gateway.resume(case.flow_run_id or "", run_input)
    await run_in_threadpool(
        partial(
            record_outcome,
            engine,
            case_id=case.id,
            flow_run_id=case.flow_run_id,
            resumed=resumed,
            actor="service",
            details=details,
        )
    )
    return resumed


def record_outcome(
    engine: Engine,
    *,
    case_id: str,
    flow_run_id: str | None,
    resumed: bool,
    actor: str,
    details: dict[str, Any],
) -> None:
    """How a hand-over went, in the audit log (`HANDOVER_ACTIONS`): the page's and the
    dispatcher's, which reads them to know what the run already took."""
    audit.record(
        engine,
        action=HANDOVER_ACTIONS[0] if resumed else HANDOVER_ACTIONS[1],
        actor=actor,
        outcome="ok" if resumed else "pending",
        case_id=case_id,
        details={**details, "flow_run_id": flow_run_id},
    )
