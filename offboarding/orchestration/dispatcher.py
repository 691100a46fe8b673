"""The dispatcher: keeps every open case moving, whatever happened to the request that
opened it or to the process that ran it.

Each pass (woken by the intake, and every `dispatch_interval_seconds`):

1. **start** — a stored case without a flow run gets one (the HR event id is Prefect's
   idempotency key, so a retry after a half-finished attempt finds the same run; a run
   deleted in Prefect is created again);
2. **deliver** — a recorded decision whose run is still asleep is handed to the run (the
   approval page tries once; a busy or restarting Prefect must not strand an approval);
3. **recover** — a crashed or failed run of an open case is rescheduled after
   `recovery_delays_seconds` (the flow is idempotent: it resumes where it stopped); when
   the delays are used up, or a run was cancelled by hand, the case goes to "needs
   attention" with a mail naming what was and was not done;
4. **attestations** — a run asleep while every manual step is attested is woken; a case
   whose manual steps are past their deadline goes to "needs attention" (the run keeps
   waiting: a late attestation still completes the case).
5. **anchor** — about once a minute, while the log grows, the audit chain's head goes into
   the anchor file outside the database (`offboarding audit verify` detects a cut tail).

Several web processes may run a dispatcher each: every change is claimed in the database
first, in the same transaction as its audit event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import structlog
from prefect.client.schemas.objects import FlowRun, StateType
from sqlmodel import Session, col, func, select

from approvals.attestations import overdue, unattested
from approvals.decisions import settle
from approvals.handover import ATTESTED, HANDOVER_ACTIONS
from approvals.reminders import deputies_due, due_reminders, escalations, expired_cases
from approvals.tokens import SignedDecision
from flows.oversight import OVERVIEW_EVERY, refresh_overview_if_due
from offboarding.domain import audit
from offboarding.domain.anchors import ANCHOR_FILE, AnchorFileError, FileAnchorSink, anchor_if_moved
from offboarding.domain.cases import latest_plan, run_name, start_time
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    ApprovalDecision,
    AuditEvent,
    Case,
    CaseStatus,
    PlanStatus,
    RevocationStep,
    StepStatus,
    as_utc,
    utcnow,
)
from offboarding.domain.plan import RevocationPlan
from offboarding.notification import notify
from offboarding.orchestration.handovers import Handovers, hand_over
from offboarding.orchestration.lifecycle import CaseLifecycle
from offboarding.orchestration.runs import OrchestratorUnavailable, RunGateway
from offboarding.wiring.services import Services

log = structlog.get_logger(__name__)
T = TypeVar("T")
ANCHOR_EVERY_SECONDS = 60.0
# A burst of HR events (a reorganisation) is answered first and handled afterwards in one
# pass, so that creating runs does not take the CPU the answers need. An urgent case
# (instant dismissal) ends the wait at once.
BURST_QUIET = 0.25  # seconds without a wake-up that end a burst
BURST_MAX = 2.0  # a pass starts at the latest this long after the first wake-up
START_CONCURRENCY = 4  # runs created at once; Prefect's own database is the bottleneck
# The approval page hands its decision to the run itself and records how that went; the
# dispatcher delivers a decision the page could not hand over at once, and one the page
# recorded no outcome for within this time (its process ended half-way).
HANDOVER_GRACE = timedelta(seconds=10)
_BROKEN = (StateType.CRASHED, StateType.FAILED)


class Dispatcher:
    def __init__(self, services: Services, gateway: RunGateway) -> None:
        self.services = services
        self.gateway = gateway
        self.lifecycle = CaseLifecycle(services, gateway)  # upgrades, start times, cancellations
        self.interval = services.settings.dispatch_interval_seconds
        self.limiter = anyio.CapacityLimiter(services.settings.db_concurrency)
        self._wake = asyncio.Event()
        self._urgent = False  # an urgent case was stored since the last pass began
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handovers = Handovers()  # suspensions handed their input, or to try again
        self._anchored = float("-inf")  # loop time of the last anchor
        self._viewed = float("-inf")  # loop time of the last look at the overview
        self._followed = float("-inf")  # loop time of the last follow-up of approvals

    # -- running ---------------------------------------------------------------

    def wake(self, *, urgent: bool = False) -> None:
        """Ask for a pass (safe from any thread): after the burst of wake-ups this one is
        part of, or at once when `urgent`."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._woken, urgent)

    def _woken(self, urgent: bool) -> None:
        self._urgent = self._urgent or urgent
        self._wake.set()

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            self._urgent = False
            try:
                await self.tick()
            except Exception:
                log.exception("dispatcher pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
                await self._after_burst()
            except TimeoutError:
                pass

    async def _after_burst(self) -> None:
        """Woken by an intake or a decision: wait until no further wake-up came for
        `BURST_QUIET` seconds (at most `BURST_MAX`), so a burst of events (a reorganisation)
        is answered first and then handled in one pass, not a pass per event. An urgent
        wake-up ends the wait."""
        loop = asyncio.get_running_loop()
        until = loop.time() + BURST_MAX
        while not self._urgent and (left := until - loop.time()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(BURST_QUIET, left))
            except TimeoutError:
                return

    async def tick(self) -> None:
        await self.start_pending()
        await self.follow_approvals()
        runs = await self._open_runs()
        if runs is None:
            return  # Prefect unreachable: nothing to compare against this time
        await self.lifecycle.follow(runs)
        await self.deliver_decisions(runs)
        await self.recover(runs)
        await self.follow_attestations(runs)
        await self.anchor()
        await self.refresh_view()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    # -- 1. start --------------------------------------------------------------

    async def start_pending(self) -> None:
        pending = await self._db(cases_without_run, self.services)
        if not pending:
            return
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start(case: Case) -> None:
            async with gate:
                settings = self.services.settings
                scheduled = start_time(
                    last_working_day=case.last_working_day,
                    urgent=case.urgent,
                    zone=settings.zone,
                    end_of_day=settings.end_of_day,
                    now=datetime.now(UTC),
                )
                try:
                    run_id = await self.gateway.start(
                        case_id=case.id,
                        event_id=case.event_id,
                        run_name=run_name(case.employee_id, case.employee_email),
                        scheduled_time=scheduled,
                        urgent=case.urgent,
                    )
                except OrchestratorUnavailable as exc:
                    log.warning("run not created yet", case_id=case.id, error=str(exc))
                    return
                await self._db(attach_run, self.services, case.id, run_id, scheduled)

        await asyncio.gather(*(start(case) for case in pending))

    async def follow_approvals(self) -> None:
        """Remind, escalate, ask deputies whose period started while a case waits, and hand
        cases whose links all expired to a person (never approve). Needs no Prefect.

        All of it is due by the clock (hours, days), and it reads every waiting case: done
        at most once per `dispatch_interval_seconds`, however often intake and decisions
        wake the dispatcher (a reorganisation wakes it many times a second)."""
        moment = asyncio.get_running_loop().time()
        if moment - self._followed < self.interval:
            return
        self._followed = moment
        now = utcnow()
        try:  # a directory or mail server that is down must not hold up the rest of the pass
            await self._db(due_reminders, self.services, now)
            await self._db(escalations, self.services, now)
            await self._db(deputies_due, self.services, now)
            for case, problem in await self._db(expired_cases, self.services, now):
                await self._db(give_up, self.services, case, problem)
        except Exception as exc:  # noqa: BLE001 - tried again on the next pass
            log.warning(
                "approvals not followed up this pass", problem=f"{type(exc).__name__}: {exc}"
            )

    # -- 2. deliver ------------------------------------------------------------

    async def _open_runs(self) -> dict[str, tuple[Case, FlowRun | None]] | None:
        cases = await self._db(open_cases_with_run, self.services)
        try:
            runs = await self.gateway.read([c.flow_run_id for c in cases if c.flow_run_id])
        except OrchestratorUnavailable as exc:
            log.warning("cannot see runs", error=str(exc))
            return None
        return {c.id: (c, runs.get(c.flow_run_id or "")) for c in cases}

    async def deliver_decisions(self, runs: dict[str, tuple[Case, FlowRun | None]]) -> None:
        now = asyncio.get_running_loop().time()
        asleep = {
            case.id: (case, run)
            for case, run in runs.values()
            if run is not None
            and run.state is not None
            and run.state.type == StateType.PAUSED
            and case.status == CaseStatus.AWAITING_APPROVAL
            and self._handovers.due(f"{run.id}:{run.state.id}", now)
        }
        # only a case with a decision on record can have one to deliver: one read for all
        decided = await self._db(cases_with_decisions, self.services, list(asleep))
        for case_id, (case, run) in asleep.items():
            if case_id not in decided or run is None or run.state is None:
                continue
            pause = f"{run.id}:{run.state.id}"
            since = as_utc(run.state.timestamp) if run.state.timestamp else utcnow()
            decision = await self._db(settled_decision, self.services, case, since)
            if decision is None:
                continue
            await self._hand_over(case, pause, decision, {"decision_id": decision["decision_id"]})

    async def _hand_over(
        self, case: Case, pause: str, run_input: dict[str, Any], details: dict[str, Any]
    ) -> None:
        await hand_over(
            self.gateway,
            self._handovers,
            pause,
            run_input,
            engine=self.services.engine,
            case_id=case.id,
            details=details,
            in_thread=self._db,
        )

    # -- 3. recover ------------------------------------------------------------

    async def recover(self, runs: dict[str, tuple[Case, FlowRun | None]]) -> None:
        delays = self.services.settings.recovery_delays_seconds
        now = utcnow()
        for case, run in runs.values():
            if case.status == CaseStatus.NEEDS_ATTENTION:
                continue  # a person is on it; their retry of the run continues the case
            if run is None:
                await self._db(forget_missing_run, self.services, case)
                continue
            if run.state is None:
                continue
            if run.state.type == StateType.CANCELLED:
                await self._db(
                    give_up,
                    self.services,
                    case,
                    "the run was cancelled in Prefect; retry it there to continue",
                )
                continue
            if run.state.type not in _BROKEN:
                continue
            attempt = case.recovery_attempts
            if attempt >= len(delays):
                problem = (
                    f"the run {run.state.type.value.lower()} {attempt + 1} times "
                    f"({run.state.message or run.state.name}); automatic recovery stopped"
                )
                await self._db(give_up, self.services, case, problem)
                continue
            since = as_utc(run.state.timestamp) if run.state.timestamp else now
            if now < since + timedelta(seconds=delays[attempt]):
                continue
            why = f"{run.state.type.value.lower()}: {run.state.message or run.state.name}"
            if not await self._db(claim_recovery, self.services, case, attempt, why):
                continue  # another dispatcher did it
            try:
                await self.gateway.reschedule(str(run.id), f"automatic recovery {attempt + 1}")
            except OrchestratorUnavailable as exc:
                log.warning("recovery postponed", case_id=case.id, error=str(exc))
            else:
                log.info("run rescheduled", case_id=case.id, attempt=attempt + 1, why=why)

    # -- 5. anchor the audit log ---------------------------------------------

    async def anchor(self) -> None:
        """About once a minute, while the log grows: its head into the anchor file, so that
        rows cut from the end are detected (`offboarding audit verify`)."""
        now = asyncio.get_running_loop().time()
        if now - self._anchored < ANCHOR_EVERY_SECONDS:
            return
        self._anchored = now
        sink = FileAnchorSink(self.services.settings.home / ANCHOR_FILE)
        try:
            await self._db(lambda: anchor_if_moved(self.services.engine, sink, actor="dispatcher"))
        except (AnchorFileError, OSError) as exc:
            log.error("audit log not anchored", problem=str(exc))

    # -- 6. the management view ----------------------------------------------------

    async def refresh_view(self) -> None:
        """A case changed after the newest version of the overview: publish a new one (the
        case runs skip theirs when one was made a moment ago). At most once per
        `OVERVIEW_EVERY`; a failure is logged and tried again on a later pass."""
        now = asyncio.get_running_loop().time()
        if now - self._viewed < OVERVIEW_EVERY.total_seconds():
            return
        self._viewed = now
        changed = await self._db(last_change, self.services)
        if changed is None:
            return
        try:
            await self._db(lambda: refresh_overview_if_due(self.services, changed=changed))
        except Exception as exc:  # noqa: BLE001 - the view is a convenience; cases go on
            log.warning("overview not refreshed", problem=f"{type(exc).__name__}: {exc}")

    # -- 4. attestations ---------------------------------------------------------

    async def follow_attestations(self, runs: dict[str, tuple[Case, FlowRun | None]]) -> None:
        waiting_states = (CaseStatus.AWAITING_ATTESTATION, CaseStatus.NEEDS_ATTENTION)
        for case, run in runs.values():
            if case.status not in waiting_states:
                continue
            if case.status == CaseStatus.AWAITING_ATTESTATION:
                late = await self._db(overdue, self.services, case.id)
                if late:
                    names = "; ".join(f"{a.label} ({a.assignee_id})" for a in late)
                    problem = f"manual steps not attested by their deadline: {names}"
                    await self._db(give_up, self.services, case, problem[:2000])
            if run is None or run.state is None or run.state.type != StateType.PAUSED:
                continue
            pause_key = (run.state.state_details.pause_key or "") if run.state.state_details else ""
            pause = f"{run.id}:{run.state.id}"
            now = asyncio.get_running_loop().time()
            if not pause_key.startswith("attest-") or not self._handovers.due(pause, now):
                continue
            if not await self._db(all_attested, self.services, case):
                continue
            since = as_utc(run.state.timestamp) if run.state.timestamp else utcnow()
            if await self._db(attestations_handed_over, self.services, case.id, since):
                continue
            await self._hand_over(case, pause, {"case_id": case.id}, {"why": ATTESTED})


# -- database work (worker threads) --------------------------------------------


def all_attested(services: Services, case: Case) -> bool:
    record = latest_plan(services.engine, case.id)
    return (
        record is not None
        and record.status == PlanStatus.APPROVED
        and not unattested(services, record)
    )


def cases_without_run(services: Services, limit: int = 200) -> list[Case]:
    with Session(services.engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(Case)
                .where(
                    col(Case.flow_run_id).is_(None),
                    col(Case.status).in_([CaseStatus.RECEIVED, CaseStatus.SCHEDULED]),
                )
                .order_by(col(Case.created_at))
                .limit(limit)
            )
        )


def attach_run(
    services: Services, case_id: str, flow_run_id: str, scheduled: datetime | None
) -> None:
    def attach(session: Session) -> None:
        case = session.get(Case, case_id)
        if case is None or case.flow_run_id == flow_run_id:
            return
        case.flow_run_id = flow_run_id
        case.updated_at = utcnow()
        session.add(case)
        audit.append(
            session,
            action="run.created",
            actor="dispatcher",
            case_id=case_id,
            details={
                "flow_run_id": flow_run_id,
                "scheduled_for": scheduled.isoformat() if scheduled else None,
            },
        )

    audit.in_transaction(services.engine, attach)


def open_cases_with_run(services: Services) -> list[Case]:
    with Session(services.engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(Case).where(
                    col(Case.flow_run_id).is_not(None),
                    col(Case.status).not_in(list(TERMINAL_STATUSES)),
                )
            )
        )


def cases_with_decisions(services: Services, case_ids: list[str]) -> set[str]:
    """Those of the cases that have any approval decision recorded."""
    if not case_ids:
        return set()
    with Session(services.engine) as session:
        return set(
            session.exec(
                select(ApprovalDecision.case_id)
                .where(col(ApprovalDecision.case_id).in_(case_ids))
                .distinct()
            )
        )


def settled_decision(
    services: Services, case: Case, paused_since: datetime
) -> dict[str, Any] | None:
    """The signed decision to hand the run asleep since `paused_since`, when the recorded
    decisions settle its plan (the same decision function the page and the flow use) and
    nobody handed it over already."""
    record = latest_plan(services.engine, case.id)
    if record is None or record.status != PlanStatus.PENDING:
        return None
    stored = settle(services, case, record).deciding
    if stored is None or handed_over(services, case.id, stored.id, stored.decided_at, paused_since):
        return None
    signed = services.decisions.sign(
        SignedDecision(
            decision_id=stored.id,
            case_id=case.id,
            plan_hash=stored.plan_hash,
            approver_id=stored.approver_id,
            decision=stored.decision.value,
        )
    )
    return signed.model_dump()


def handed_over(
    services: Services,
    case_id: str,
    decision_id: str,
    decided_at: datetime,
    paused_since: datetime,
) -> bool:
    """The decision is in other hands: the run took it after it fell asleep (the dispatcher's
    view of the run, read before that, still shows it asleep), or the approval page that
    recorded it is still handing it over (recent, no outcome recorded yet). Two resumes at
    once: one is refused."""
    outcomes = [
        (action, at)
        for action, at, details in _handovers_of(services, case_id)
        if details.get("decision_id") == decision_id
    ]
    if any(action == "run.resumed" and at >= paused_since for action, at in outcomes):
        return True
    return not outcomes and utcnow() - as_utc(decided_at) < HANDOVER_GRACE


def attestations_handed_over(services: Services, case_id: str, paused_since: datetime) -> bool:
    """The run took "all attested" after it fell asleep (from the attestation page, or an
    earlier pass): the dispatcher's view of the run, read before that, is out of date."""
    return any(
        action == "run.resumed" and at >= paused_since and details.get("why") == ATTESTED
        for action, at, details in _handovers_of(services, case_id)
    )


def _handovers_of(services: Services, case_id: str) -> list[tuple[str, datetime, dict[str, Any]]]:
    """The case's recorded hand-overs: action, when (UTC), details (empty when erased)."""
    with Session(services.engine) as session:
        recorded = session.exec(
            select(AuditEvent.action, AuditEvent.at, AuditEvent.details).where(
                AuditEvent.case_id == case_id, col(AuditEvent.action).in_(HANDOVER_ACTIONS)
            )
        ).all()
    return [(action, as_utc(at), _details(details)) for action, at, details in recorded]


def _details(details: str) -> dict[str, Any]:
    try:
        found = json.loads(details)
    except ValueError:  # erased by the retention policy
        return {}
    return found if isinstance(found, dict) else {}


def forget_missing_run(services: Services, case: Case) -> None:
    """The run is gone from Prefect (deleted, or a new Prefect database): start it again."""

    def forget(session: Session) -> None:
        current = session.get(Case, case.id)
        if current is None or current.flow_run_id != case.flow_run_id:
            return
        current.flow_run_id = None
        if current.status not in (CaseStatus.SCHEDULED,):
            current.status = CaseStatus.RECEIVED
        current.updated_at = utcnow()
        session.add(current)
        audit.append(
            session,
            action="run.missing",
            actor="dispatcher",
            outcome="restarting",
            case_id=case.id,
            details={"flow_run_id": case.flow_run_id},
        )

    audit.in_transaction(services.engine, forget)


def claim_recovery(services: Services, case: Case, attempt: int, why: str) -> bool:
    def claim(session: Session) -> bool:
        current = session.get(Case, case.id)
        if current is None or current.recovery_attempts != attempt:
            return False
        current.recovery_attempts = attempt + 1
        current.recovered_at = utcnow()
        session.add(current)
        audit.append(
            session,
            action="run.recovered",
            actor="dispatcher",
            case_id=case.id,
            details={"attempt": attempt + 1, "why": why, "flow_run_id": case.flow_run_id},
        )
        return True

    return audit.in_transaction(services.engine, claim)


def give_up(services: Services, case: Case, problem: str) -> None:
    """Stop the case for a person, once, and tell them what was and was not done."""

    def stop(session: Session) -> bool:
        current = session.get(Case, case.id)
        if current is None or current.status in (*TERMINAL_STATUSES, CaseStatus.NEEDS_ATTENTION):
            return False
        current.status = CaseStatus.NEEDS_ATTENTION
        current.status_detail = problem
        current.updated_at = utcnow()
        session.add(current)
        audit.append(
            session,
            action="case.needs_attention",
            actor="dispatcher",
            outcome="needs_attention",
            case_id=case.id,
            details={"problem": problem, "done": done, "not_done": not_done},
        )
        return True

    done, not_done = progress(services, case.id)
    if not audit.in_transaction(services.engine, stop):
        return
    notify.needs_attention(services, case, problem, done=done, not_done=not_done)
    log.warning("case needs attention", case_id=case.id, problem=problem)


def progress(services: Services, case_id: str) -> tuple[list[str], list[str]]:
    """Labels of the latest plan's steps that were done, and of those that were not."""
    record = latest_plan(services.engine, case_id)
    if record is None:
        return [], ["inventory and plan", "second-manager approval", "revocation"]
    plan = RevocationPlan.from_canonical(record.canonical)
    with Session(services.engine) as session:
        finished = {
            step.grant_key
            for step in session.exec(
                select(RevocationStep).where(RevocationStep.plan_id == record.id)
            )
            if step.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)
        }
    done = [s.grant.label.text for s in plan.steps if s.grant.key in finished]
    not_done = [s.grant.label.text for s in plan.steps if s.grant.key not in finished]
    if record.status == PlanStatus.PENDING:
        not_done.insert(0, "second-manager approval")
    return done, not_done


def last_change(services: Services) -> datetime | None:
    """When a case last changed (any case); None without cases."""
    with Session(services.engine) as session:
        newest = session.exec(select(func.max(Case.updated_at))).one()
    return as_utc(newest) if newest is not None else None
