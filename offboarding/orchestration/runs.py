"""The service's side of Prefect: start a case's flow run, resume it with a decision, move
its scheduled start, cancel it."""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.deployments.flow_runs import arun_deployment
from prefect.states import Cancelled, Cancelling, Scheduled

from offboarding.domain.cases import case_id_for

log = structlog.get_logger(__name__)
_LIVE = (StateType.RUNNING, StateType.PENDING)
READ_PAGE = 200  # the most runs Prefect's API returns for one filter (PREFECT_API_DEFAULT_LIMIT)
# A hand-over that takes longer is given up and left to the dispatcher: Prefect's client
# retries a busy server (503) for a minute or more, or as long as its Retry-After asks,
# and an approver must not wait that long for the page's answer.
HANDOVER_SECONDS = 15.0


class OrchestratorUnavailable(Exception):
    """Prefect could not be reached or refused; nothing was started or resumed."""


class RunGateway:
    """Starts and resumes case runs on the deployment that `offboarding up` serves."""

    def __init__(
        self,
        deployment: str,
        *,
        handover_seconds: float = HANDOVER_SECONDS,
        one_resume_at_a_time: bool = False,
    ) -> None:
        """`one_resume_at_a_time`: for a Prefect server on SQLite, which refuses concurrent
        state changes ("database is locked") and has the client retry them for seconds:
        this process's resumes (pages and dispatcher) queue instead of colliding."""
        self.deployment = deployment
        self.handover_seconds = handover_seconds
        self.one_resume_at_a_time = one_resume_at_a_time
        self._resuming: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def start(
        self,
        *,
        case_id: str,
        event_id: str,
        run_name: str,
        scheduled_time: datetime | None,
        urgent: bool = False,
    ) -> str:
        """Create the run; the event id is the idempotency key, so a resend returns the same run
        (a rehire's later case under an HR system's reused event id has a key of its own)."""
        key = f"hris-event:{event_id}"
        if case_id != case_id_for(event_id):
            key = f"hris-event:{event_id}:case:{case_id}"
        try:
            flow_run = await arun_deployment(
                name=self.deployment,
                parameters={"request": {"case_id": case_id}},
                idempotency_key=key,
                flow_run_name=run_name,
                scheduled_time=scheduled_time,
                timeout=0,
                as_subflow=False,
                tags=["offboarding", *(["urgent"] if urgent else [])],
            )
        except Exception as exc:
            raise OrchestratorUnavailable(
                f"could not create the flow run on deployment {self.deployment!r}: {exc}"
            ) from exc
        return str(flow_run.id)

    async def read(self, flow_run_ids: list[str]) -> dict[str, FlowRun]:
        """The runs that exist among these ids (a deleted run is simply absent); asked for
        in pages, so any number of open cases can be followed."""
        unique = list(dict.fromkeys(flow_run_ids))
        runs: list[FlowRun] = []
        try:
            async with get_client() as client:
                for start in range(0, len(unique), READ_PAGE):
                    page = unique[start : start + READ_PAGE]
                    runs += await client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            id=FlowRunFilterId(any_=[UUID(i) for i in page])
                        ),
                        limit=len(page),
                    )
        except Exception as exc:
            raise OrchestratorUnavailable(f"could not read flow runs: {exc}") from exc
        return {str(run.id): run for run in runs}

    async def reschedule(self, flow_run_id: str, why: str) -> None:
        """Run it again from the top (every step of the flow is idempotent)."""
        try:
            async with get_client() as client:
                await client.set_flow_run_state(
                    UUID(flow_run_id), Scheduled(name="AwaitingRetry", message=why), force=True
                )
        except Exception as exc:
            raise OrchestratorUnavailable(f"could not reschedule {flow_run_id}: {exc}") from exc

    async def move_start(self, flow_run_id: str, when: datetime, why: str) -> None:
        """A scheduled run starts at `when` instead (the state history keeps the why)."""
        try:
            async with get_client() as client:
                await client.set_flow_run_state(
                    UUID(flow_run_id),
                    Scheduled(scheduled_time=when, message=why[:500]),
                    force=True,
                )
        except Exception as exc:
            raise OrchestratorUnavailable(f"could not reschedule {flow_run_id}: {exc}") from exc

    async def cancel(self, flow_run_id: str, run: FlowRun | None, why: str) -> None:
        """Cancel the run: a scheduled or paused one at once (no process holds it), a running
        one through its runner (Cancelling)."""
        running = run is not None and run.state is not None and run.state.type in _LIVE
        state: State[Any] = (
            Cancelling(message=why[:500]) if running else Cancelled(message=why[:500])
        )
        try:
            async with get_client() as client:
                await client.set_flow_run_state(UUID(flow_run_id), state, force=True)
        except Exception as exc:
            raise OrchestratorUnavailable(f"could not cancel {flow_run_id}: {exc}") from exc

    async def resume(
        self, flow_run_id: str, run_input: dict[str, Any], *, wait_seconds: float = 5.0
    ) -> bool:
        """Hand the decision to the waiting run. Waits briefly if the run is not suspended yet.

        Returns False when the run could not be resumed now (the decision stays recorded;
        the dispatcher hands it to the run as soon as the run waits for it), also when
        Prefect did not answer within `wait_seconds` + `handover_seconds`.
        """
        try:
            return await asyncio.wait_for(
                self._resume(flow_run_id, run_input, wait_seconds),
                wait_seconds + self.handover_seconds,
            )
        except TimeoutError:
            log.warning(
                "resume not answered in time; the dispatcher hands it over",
                flow_run_id=flow_run_id,
                seconds=wait_seconds + self.handover_seconds,
            )
            return False
        except Exception as exc:  # noqa: BLE001 - the dispatcher tries again
            log.warning("resume failed", flow_run_id=flow_run_id, error=str(exc))
            return False

    async def _resume(
        self, flow_run_id: str, run_input: dict[str, Any], wait_seconds: float
    ) -> bool:
        if not self.one_resume_at_a_time:
            return await self._resume_now(flow_run_id, run_input, wait_seconds)
        loop = asyncio.get_running_loop()
        async with self._resuming.setdefault(loop, asyncio.Lock()):
            return await self._resume_now(flow_run_id, run_input, wait_seconds)

    async def _resume_now(
        self, flow_run_id: str, run_input: dict[str, Any], wait_seconds: float
    ) -> bool:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        async with get_client() as client:
            while True:
                run = await client.read_flow_run(UUID(flow_run_id))
                if run.state is not None and run.state.type == StateType.PAUSED:
                    result = await client.resume_flow_run(UUID(flow_run_id), run_input=run_input)
                    if str(result.status.value).upper() == "ACCEPT":
                        return True
                    log.warning(
                        "resume rejected", flow_run_id=flow_run_id, status=str(result.status)
                    )
                    return False
                if run.state is not None and run.state.is_final():
                    log.warning("run already finished", flow_run_id=flow_run_id)
                    return False
                if asyncio.get_running_loop().time() >= deadline:
                    log.info("run is not waiting yet", flow_run_id=flow_run_id)
                    return False
                await asyncio.sleep(0.5)
