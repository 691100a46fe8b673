"""Offboard one leaver, following the work instruction:

inventory → plan → four-eyes approval → revoke → verify → record.

The run suspends (no process stays alive) until a second manager decides. On
resume Prefect runs this flow again from the top, so every step below is
idempotent and reads its state from the database.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NoReturn, TypeVar

import structlog
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel, ValidationError, model_validator
from sqlalchemy.exc import OperationalError

from approvals.attestations import evidence_rows, request_attestations, unattested
from approvals.decisions import check_run_input, settle, valid_verdict
from approvals.requests import NoEligibleApprover, request_approvals
from approvals.rules import Verdict
from approvals.tokens import SignedDecision
from connectors.base import MANUAL, AccessGrant, Outcome, OutcomeStatus, TransientError
from flows.oversight import refresh_overview_if_due
from offboarding.domain import audit
from offboarding.domain.anchors import ANCHOR_FILE, AnchorFileError, FileAnchorSink, write_anchor
from offboarding.domain.cases import (
    CaseCancelled,
    Recorded,
    get_case,
    get_plan,
    latest_plan,
    leaver_of,
    mark_contained,
    set_plan_status,
    set_status,
)
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    Case,
    CaseStatus,
    PlanStatus,
    RevocationPlanRecord,
    StepStatus,
)
from offboarding.domain.plan import Phase, PlanStep, unapproved_grants
from offboarding.domain.revocation import (
    REMOVED,
    VerificationReport,
    inventory_all,
    load_plan,
    recorded_outcome,
    revoke_step,
    steps_of,
    store_plan,
    verify_all,
)
from offboarding.domain.text import safe_display
from offboarding.evidence.pack import gather
from offboarding.evidence.render import Format, render_text
from offboarding.notification import notify
from offboarding.notification.mail import TransientMailError
from offboarding.wiring.logging import bind_case, configure_logging
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import get_settings
from offboarding.workinstruction.document import fingerprint

# named, not __name__: Prefect loads this file under a name of its own, and only the
# "flows" loggers reach the run log (PREFECT_LOGGING_EXTRA_LOGGERS)
log = structlog.get_logger("flows.offboard_leaver")
T = TypeVar("T")


class OffboardRequest(BaseModel):
    """The one parameter of the flow: which case to work on."""

    case_id: str


class DecisionInput(RunInput, SignedDecision):
    """What the approval pages resume the run with; checked before anything happens."""


class UpgradeNotice(BaseModel):
    """The intake recorded an urgent event for this case (`case.upgraded`)."""

    case_id: str
    reason: str = "urgent"


class ApprovalWake(RunInput):
    """What wakes a run that waits for approval: a decision (the approval pages, the
    dispatcher), or an upgrade notice (the dispatcher, after an urgent event). An upgrade is
    never a decision: it makes the run replay, contain the leaver as the case now says, and
    wait again. Neither proves anything: the flow checks both against the database."""

    decision_id: str = ""
    case_id: str = ""
    plan_hash: str = ""
    approver_id: str = ""
    decision: str = ""
    signature: str = ""
    upgrade: UpgradeNotice | None = None

    @model_validator(mode="after")
    def _one_of_them(self) -> ApprovalWake:
        if self.upgrade is None and not (self.decision_id and self.case_id and self.decision):
            raise ValueError("neither a decision nor an upgrade notice")
        return self

    def as_decision(self) -> SignedDecision:
        return SignedDecision.model_validate(self.model_dump(exclude={"upgrade"}))


class AttestationsDone(RunInput):
    """What the attestation page resumes the run with once every manual step is attested.
    It proves nothing: the flow reads the attestations from the database."""

    case_id: str


def _transient_only(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except (TransientError, TransientMailError):
        return True
    except Exception:  # noqa: BLE001 - anything else is not worth a retry
        return False
    return False


@lru_cache(maxsize=1)
def run_services() -> Services:
    """What this flow-run process needs, built once from its settings (the service passes
    them in the environment). Tasks take ids and build what they need from here, so no task
    parameter carries a connection, a secret or a client."""
    return build_services(get_settings(), migrate=False)


def case_by_id(case_id: str) -> Case:
    case = get_case(run_services().engine, case_id)
    if case is None:
        raise LookupError(f"case {case_id} not found")
    return case


def plan_by_id(plan_id: str) -> RevocationPlanRecord:
    record = get_plan(run_services().engine, plan_id)
    if record is None:
        raise LookupError(f"plan {plan_id} not found")
    return record


def patiently(step: Callable[..., T], *args: Any) -> T:
    """`step(*args)` inside this process, tried again after each of `retry_delays_seconds`
    while it fails transiently: for reads of the database and the steps inside a task, which
    need no task run of their own in Prefect (each costs the server several writes)."""
    delays = run_services().settings.retry_delays_seconds
    for delay in [*delays, None]:
        try:
            return step(*args)
        except (TransientError, TransientMailError, OperationalError) as exc:
            if delay is None:
                raise
            log.warning(
                "transient failure; trying again",
                step=getattr(step, "__name__", "step"),
                in_seconds=delay,
                problem=f"{type(exc).__name__}: {exc}"[:300],
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


# Every task has side effects or reads live state: none may be answered from a cache.
def resilient(fn: Any) -> Any:
    """A task that talks to a peer: retried with backoff, but only on transient errors.

    The delays here are defaults; the flow applies `retry_delays_seconds` from settings.
    """
    return task(
        retries=3,
        retry_delay_seconds=[2, 10, 30],
        retry_condition_fn=_transient_only,
        cache_policy=NO_CACHE,
    )(fn)


def with_retries(step: Any) -> Any:
    delays = run_services().settings.retry_delays_seconds
    return step.with_options(retries=len(delays), retry_delay_seconds=delays)


def take_inventory(case_id: str) -> list[AccessGrant]:
    return inventory_all(run_services(), leaver_of(case_by_id(case_id)))


def plan_for(case_id: str) -> RevocationPlanRecord:
    """Reuse the case's open plan, or inventory and store a new one (with its artifact)."""
    services, case = run_services(), case_by_id(case_id)
    record = latest_plan(services.engine, case.id)
    if record is not None and record.status in (PlanStatus.PENDING, PlanStatus.APPROVED):
        return record
    return new_plan(services, case, patiently(take_inventory, case.id))


def new_plan(services: Services, case: Case, grants: list[AccessGrant]) -> RevocationPlanRecord:
    record = store_plan(
        services,
        case,
        leaver_of(case),
        grants,
        instruction=instruction_version(services),
        instruction_file=instruction_file_details(services),
    )
    create_table_artifact(
        key=f"plan-{case.id[:12]}",
        table=[
            {name: safe_display(str(value)) for name, value in row.items()}
            for row in load_plan(record).table()
        ],
        description=notify.artifact_description("plan", case, record),
    )
    return record


def ask_for_approval(case_id: str, plan_id: str) -> None:
    services = run_services()
    for link in request_approvals(services, case_by_id(case_id), plan_by_id(plan_id)):
        get_run_logger().info("approval requested from %s", link.approver.employee_id)
        if services.uses_outbox:
            # No mail server: the console is how the link reaches people. Written to the
            # process's stdout only, never to the run logs: the link is a personal credential.
            name = safe_display(link.approver.display_name)
            sys.stdout.write(f"Approval link for {name}: {link.url}\n")
            sys.stdout.flush()


@resilient
def revoke(case_id: str, plan_id: str, step: PlanStep, removed: frozenset[str]) -> Outcome:
    """One containment step (an urgent leaver), as its own task run."""
    return revoke_one(case_id, plan_id, step, removed)


def revoke_one(case_id: str, plan_id: str, step: PlanStep, removed: frozenset[str]) -> Outcome:
    """One plan step; a cascaded step whose parent is in `removed` is only recorded."""
    return revoke_step(run_services(), case_id=case_id, plan_id=plan_id, step=step, removed=removed)


def ask_for_attestations(case_id: str, plan_id: str) -> None:
    """Mail each manual step's assignee their attestation link (once)."""
    services = run_services()
    for issued in request_attestations(services, case_by_id(case_id), plan_by_id(plan_id)):
        get_run_logger().info("attestation requested from %s", issued.assignee.employee_id)
        if services.uses_outbox:  # as with approval links: the console, never the run logs
            name = safe_display(issued.assignee.display_name)
            sys.stdout.write(f"Attestation link for {name}: {issued.url}\n")
            sys.stdout.flush()


def open_manual_steps(case_id: str, plan_id: str) -> list[str]:
    """Labels of the plan's manual steps that nobody has attested yet."""
    return [step.grant.label.text for step in unattested(run_services(), plan_by_id(plan_id))]


@task(cache_policy=NO_CACHE, task_run_name="revoke-{system}")
def revoke_system(
    system: str, case_id: str, plan_id: str, steps: list[PlanStep], removed: frozenset[str]
) -> tuple[list[Outcome], list[str]]:
    """One system's steps, in the plan's order, as one task run (each step retried on its
    own, in this process); a failed step is recorded and the next one taken. Returns the
    outcomes and the failures, in words."""
    outcomes: list[Outcome] = []
    failures: list[str] = []
    gone = set(removed)
    for step in steps:
        try:
            outcome = patiently(revoke_one, case_id, plan_id, step, frozenset(gone))
        except Exception as exc:  # noqa: BLE001 - recorded; the case goes to needs-attention
            failures.append(f"{step.grant.label.text}: {type(exc).__name__}: {exc}")
            continue
        outcomes.append(outcome)
        if outcome.status in REMOVED:
            gone.add(step.grant.key)
    return outcomes, failures


def verify(case_id: str) -> VerificationReport:
    return verify_all(run_services(), case_id, leaver_of(case_by_id(case_id)))


def settled_verdict(case_id: str, plan_id: str) -> Verdict:
    """The verdict of the recorded decisions that pass every rule now (managers read live)."""
    return valid_verdict(run_services(), case_by_id(case_id), plan_by_id(plan_id))


def check_decision(case_id: str, plan_id: str, received: SignedDecision) -> list[str]:
    return check_run_input(run_services(), case_by_id(case_id), plan_by_id(plan_id), received)


def await_verdict(services: Services, case: Case, record: RevocationPlanRecord) -> Verdict:
    """Suspend until a valid decision settles the plan; refuse and re-suspend on anything else.

    Prefect replays the flow from the top on every wake-up, so each suspension has its own
    key: a key seen before answers with the input it was resumed with (or none, when the
    run was forced to run from the Prefect UI or API). Whatever it holds, the stored
    decisions are what count; a wake-up without a valid decision waits again, logged.
    """
    attempt = 0
    while True:
        verdict = patiently(settled_verdict, case.id, record.id)
        if verdict != Verdict.PENDING:
            return verdict
        attempt += 1
        key = f"decision-{record.plan_hash[:16]}-{attempt}"
        set_status(services.engine, case.id, CaseStatus.AWAITING_APPROVAL)
        if attempt == 1:
            refresh_view(services)
        try:
            woken = suspend_flow_run(wait_for_input=ApprovalWake, key=key, timeout=None)
        except ValidationError:
            audit.record(
                services.engine,
                action="decision.missing",
                actor="prefect:resume",
                outcome="refused",
                case_id=case.id,
                details={"key": key, "why": "the run was woken without a decision"},
                once_key=f"{current_run.id}:{key}:missing",
            )
            log.warning("woken without a decision; waiting again", key=key)
            continue
        if woken.upgrade is not None:
            # replayed with the same plan: the case's urgency changed nothing to contain
            note_upgrade(services, case, woken.upgrade, key)
            continue
        received = woken.as_decision()
        problems = patiently(check_decision, case.id, record.id, received)
        if problems:
            audit.record(
                services.engine,
                action="decision.refused",
                actor="prefect:resume",
                outcome="refused",
                case_id=case.id,
                details={"key": key, "refusals": problems, "approver_id": received.approver_id},
                once_key=f"{current_run.id}:{key}",
            )
            log.warning("decision refused; waiting again", key=key, refusals=problems)


def note_upgrade(services: Services, case: Case, notice: UpgradeNotice, key: str) -> None:
    """An upgrade notice reached the wait itself: the replay before it already contained
    what the case asks (or found nothing to contain). Recorded; never a decision."""
    current = case_by_id(case.id)
    genuine = notice.case_id == case.id and current.urgent and current.upgraded_at is not None
    audit.record(
        services.engine,
        action="upgrade.received" if genuine else "upgrade.refused",
        actor="prefect:resume",
        outcome="ok" if genuine else "refused",
        case_id=case.id,
        details={"key": key, "why": "waiting again for the decision"}
        if genuine
        else {"key": key, "why": "the case has no recorded urgent upgrade"},
        once_key=f"{current_run.id}:{key}:upgrade",
    )
    log.info("woken by an upgrade notice; waiting again", key=key, genuine=genuine)


def plan_for_urgency(
    services: Services, case: Case, record: RevocationPlanRecord
) -> RevocationPlanRecord:
    """A case upgraded to urgent after its plan was made: the same grants again, with the
    policy's containment phase, as the plan's next version (the approvers get links for
    it: they approve what was contained). A plan already decided stays as it is."""
    if not case.urgent or record.status != PlanStatus.PENDING:
        return record
    plan = load_plan(record)
    missing = [
        step
        for step in plan.steps
        if step.phase != Phase.CONTAINMENT
        and services.rules.contains_at_once(step.grant.effect, urgent=True)
    ]
    if not missing or settle(services, case, record).verdict != Verdict.PENDING:
        return record
    upgraded = new_plan(services, case, [step.grant for step in plan.steps])
    audit.record(
        services.engine,
        action="plan.changed",
        actor="service",
        case_id=case.id,
        details={
            "why": "urgent upgrade: containment before the decision",
            "previous_plan": record.plan_hash,
            "plan_hash": upgraded.plan_hash,
        },
        once_key=f"plan.urgent:{record.id}",
    )
    return upgraded


def note_contained(services: Services, case: Case) -> None:
    """An urgent case's containment is done: the dispatcher stops waking the run for it."""
    if case.urgent:
        mark_contained(services.engine, case.id)


def await_attestations(services: Services, case: Case, record: RevocationPlanRecord) -> bool:
    """Suspend until every manual step of the plan is attested; True when it had to wait.

    Woken early (the Prefect UI, a forged input), it reads the attestations again and
    waits again; each suspension has its own key, as in `await_verdict`.
    """
    attempt = 0
    while True:
        still_open = patiently(open_manual_steps, case.id, record.id)
        if not still_open:
            return attempt > 0
        attempt += 1
        key = f"attest-{record.plan_hash[:16]}-{attempt}"
        set_status(
            services.engine,
            case.id,
            CaseStatus.AWAITING_ATTESTATION,
            f"{len(still_open)} manual step(s) to attest: {'; '.join(still_open)}"[:2000],
        )
        refresh_view(services)
        try:
            suspend_flow_run(wait_for_input=AttestationsDone, key=key, timeout=None)
        except ValidationError:
            log.warning("woken without input; waiting for attestations again", key=key)


@flow(name="offboard-leaver", log_prints=False, persist_result=False)
def offboard_leaver(request: OffboardRequest) -> str:
    configure_logging(attach_handler=False)  # Prefect's handlers print and ship our lines
    services = run_services()
    bind_case(request.case_id)
    case = patiently(case_by_id, request.case_id)
    if case.status in TERMINAL_STATUSES:
        return case.status.value
    try:
        record = plan_for(case.id)
        record = plan_for_urgency(services, case, record)
        contain(services, case, record)
        note_contained(services, case)
        while True:
            if patiently(settled_verdict, case.id, record.id) == Verdict.PENDING:
                # before the links go out: an approver who clicks at once finds a waiting case
                set_status(services.engine, case.id, CaseStatus.AWAITING_APPROVAL)
                patiently(ask_for_approval, case.id, record.id)
            verdict = await_verdict(services, case, record)
            if verdict == Verdict.REJECTED:
                deciding = settle(services, case, record).deciding
                set_status(
                    services.engine,
                    case.id,
                    CaseStatus.REJECTED,
                    "rejected by second manager",
                    plan=(record.id, PlanStatus.REJECTED),
                    event=Recorded(
                        "case.rejected",
                        actor=f"employee:{deciding.approver_id}" if deciding else "service",
                        outcome="rejected",
                        details={"reason": deciding.reason if deciding else ""},
                        once_key=f"case.rejected:{case.id}",
                    ),
                )
                notify.rejected(services, case, record)
                publish_evidence_pack(services, case)
                refresh_view(services)
                return CaseStatus.REJECTED.value
            set_plan_status(services.engine, record.id, PlanStatus.APPROVED)
            current = patiently(take_inventory, case.id)
            extra = unapproved_grants(load_plan(record), current)
            if not extra:
                break
            audit.record(
                services.engine,
                action="plan.changed",
                actor="service",
                case_id=case.id,
                details={"unapproved": [g.key for g in extra], "approved_plan": record.plan_hash},
            )
            record = new_plan(services, case, current)
        return revoke_and_verify(services, case, record)
    except NeedsAttention:
        raise  # already recorded and reported
    except CaseCancelled:
        log.info("case cancelled by HR; the run ends here")
        return CaseStatus.CANCELLED.value
    except NoEligibleApprover as exc:
        stop_for_attention(services, case, str(exc), done=[], not_done=["second-manager approval"])
    except Exception as exc:  # noqa: BLE001 - any failure must leave a visible, resumable case
        stop_for_attention(
            services, case, f"{type(exc).__name__}: {exc}", done=[], not_done=["see the run logs"]
        )


class NeedsAttention(Exception):
    """The case stopped in a state a person must look at; the run fails visibly.

    Fix the cause, then retry the run in the Prefect UI: every step is idempotent and
    an approval already given still counts.
    """


def stop_for_attention(
    services: Services, case: Case, problem: str, *, done: list[str], not_done: list[str]
) -> NoReturn:
    set_status(
        services.engine,
        case.id,
        CaseStatus.NEEDS_ATTENTION,
        problem,
        event=Recorded(
            "case.needs_attention",
            outcome="needs_attention",
            details={"problem": problem, "done": done, "not_done": not_done},
        ),
    )
    notify.needs_attention(services, case, problem, done=done, not_done=not_done)
    publish_evidence_pack(services, case)
    refresh_view(services)
    raise NeedsAttention(f"case {case.id} needs attention: {problem}")


def contain(services: Services, case: Case, record: RevocationPlanRecord) -> None:
    """Instant dismissal: revoke the plan's containment steps now, before the decision.

    Only what the configured policy (`urgent_containment`) puts in that phase; the
    rest waits for the second manager. Failures stop the case like any revocation step.
    """
    done = {
        step.grant_key
        for step in steps_of(services, record.id)
        if step.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)
    }
    steps = [s for s in load_plan(record).steps_in(Phase.CONTAINMENT) if s.grant.key not in done]
    if not steps:
        return  # nothing to contain, or done before this run was resumed
    audit.record(
        services.engine,
        action="containment.started",
        actor="service",
        case_id=case.id,
        details={"steps": [s.grant.key for s in steps], "plan_hash": record.plan_hash},
        once_key=f"containment:{record.id}",
    )
    removed = set(done)
    for step in steps:
        outcome = with_retries(revoke)(case.id, record.id, step, frozenset(removed))
        if outcome.status in REMOVED:
            removed.add(step.grant.key)


def revoke_and_verify(services: Services, case: Case, record: RevocationPlanRecord) -> str:
    set_status(services.engine, case.id, CaseStatus.REVOKING)
    plan = load_plan(record)
    # people start on the manual steps while the systems are revoked
    patiently(ask_for_attestations, case.id, record.id)
    # A run recovered after a crash continues where it stopped: steps done stay done.
    finished = {
        step.grant_key: step
        for step in steps_of(services, record.id)
        if step.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)
    }
    by_key: dict[str, Outcome] = {}
    pending: dict[str, list[PlanStep]] = {}  # per system, in the plan's order
    for step in plan.steps:
        earlier = finished.get(step.grant.key)
        if earlier is not None:
            by_key[step.grant.key] = recorded_outcome(step, earlier)
        elif step.action == MANUAL:  # attested by a person, through their link
            by_key[step.grant.key] = Outcome(
                step.grant, OutcomeStatus.AWAITING_ATTESTATION, "", MANUAL
            )
        else:
            pending.setdefault(step.grant.connector, []).append(step)
    # systems at once, each its own steps in order: a slow or failing system delays no other
    removed = frozenset(finished)  # a cascaded step goes with a removed parent
    running = [
        revoke_system.submit(system, case.id, record.id, steps, removed)
        for system, steps in pending.items()
    ]
    failures: list[str] = []
    for future in running:
        done, failed = future.result()
        by_key.update((o.grant.key, o) for o in done)
        failures += failed
    outcomes = [by_key[s.grant.key] for s in plan.steps if s.grant.key in by_key]
    report = patiently(verify, case.id)
    publish_evidence(services, case, record, outcomes, report, failures)
    if failures or not report.clean:
        open_steps = OutcomeStatus.AWAITING_ATTESTATION
        stop_for_attention(
            services,
            case,
            "; ".join(failures) or "access remains after revocation",
            done=[o.grant.label.text for o in outcomes if o.status is not open_steps],
            not_done=[
                *failures,
                *(g.label.text for g in report.remaining),
                *(o.grant.label.text for o in outcomes if o.status is open_steps),
            ],
        )
    if await_attestations(services, case, record):
        outcomes = outcomes_of(services, record)
        publish_evidence(services, case, record, outcomes, report, failures)
    set_status(
        services.engine,
        case.id,
        CaseStatus.COMPLETED,
        event=Recorded("case.completed"),
        rechecks=services.rules.recheck_after_days,  # the watch after the case
    )
    notify.completed(services, case, record, outcomes, report)
    anchor_audit_log(services)
    publish_evidence_pack(services, case)
    refresh_view(services)
    return CaseStatus.COMPLETED.value


def instruction_version(services: Services) -> str:
    """The version of the work instruction (`offboarding workinstruction render`) that this
    process runs, as the rendered document shows it."""
    return fingerprint(services.settings)[:12]


def instruction_file_details(services: Services) -> dict[str, str]:
    """The work instruction file's version label and the SHA-256 of its bytes, as this
    process loaded them (what the plan follows); empty without a file."""
    loaded = services.settings.work_instruction_file
    return loaded.details() if loaded is not None else {}


def publish_evidence_pack(services: Services, case: Case) -> None:
    """The finished case's full evidence pack (`offboarding evidence` renders the same as
    HTML or PDF), in English and Dutch, as the run's artifact. Never stops a case."""
    try:
        pack = gather(services.engine, case.id)
        markdown = "\n\n---\n\n".join(render_text(pack, lang, Format.MD) for lang in ("en", "nl"))
        create_markdown_artifact(
            key=f"evidence-pack-{case.id[:12]}",
            markdown=markdown,
            description=notify.artifact_description("evidence", case),
        )
    except Exception as exc:  # noqa: BLE001 - the case's own evidence artifact is already there
        log.warning("evidence pack not published", problem=f"{type(exc).__name__}: {exc}")


def refresh_view(services: Services) -> None:
    """A new version of the management overview (`offboarding-overview`) after a change of
    state, unless one was made a moment ago (the dispatcher then publishes this change); the
    scheduled `oversight` run refreshes it too. Never stops a case."""
    try:
        refresh_overview_if_due(services)
    except Exception as exc:  # noqa: BLE001 - the view is a convenience, the case goes on
        log.warning("overview not refreshed", problem=f"{type(exc).__name__}: {exc}")


def anchor_audit_log(services: Services) -> None:
    """Anchor the audit chain's head outside the database — in the anchor file and as the
    keyed artifact `audit-anchor` in Prefect — so a cut tail is detected
    (`offboarding audit verify`). A failure here is logged; the case is done."""
    try:
        anchor = write_anchor(services.engine, FileAnchorSink(services.settings.home / ANCHOR_FILE))
    except (AnchorFileError, OSError) as exc:
        log.error("audit log not anchored", problem=str(exc))
        return
    create_markdown_artifact(
        key="audit-anchor",
        markdown=(
            "| seq | hash | events | at |\n|---|---|---|---|\n"
            f"| {anchor.seq} | `{anchor.hash}` | {anchor.count} | {anchor.when} |\n"
        ),
        description="Head of the audit hash chain / Kop van de audit-hashketen",
    )


def outcomes_of(services: Services, record: RevocationPlanRecord) -> list[Outcome]:
    """Every step's outcome as recorded (after the manual steps were attested)."""
    recorded = {step.grant_key: step for step in steps_of(services, record.id)}
    return [
        recorded_outcome(step, recorded[step.grant.key])
        for step in load_plan(record).steps
        if step.grant.key in recorded
    ]


def publish_evidence(
    services: Services,
    case: Case,
    record: RevocationPlanRecord,
    outcomes: list[Outcome],
    report: VerificationReport,
    failures: list[str],
) -> None:
    create_markdown_artifact(
        key=f"evidence-{case.id[:12]}",
        markdown=notify.evidence_markdown(
            services,
            case,
            record,
            outcomes,
            report,
            failures,
            attestations=evidence_rows(services, record.id),
        ),
        description=notify.artifact_description("evidence", case),
    )
