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
            audit.record,
            engine,
            action="run.resumed" if resumed else "run.resume_pending",
            actor="service",
            outcome="ok" if resumed else "pending",
            case_id=case.id,
            details={**details, "flow_run_id": case.flow_run_id},
        )
    )
    return resumed
