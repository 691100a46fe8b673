"""Inventory, plan storage, revocation and verification across the configured connectors.

A step whose grant cascades from another grant of the plan is not sent to the connector
once that parent is gone: it is recorded as cascaded (stored as already done, with the
audit outcome "cascaded"). If the parent failed, the step is revoked on its own.
Verification reads everything back, cascaded grants included.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.base import (
    ELSEWHERE,
    KEEP,
    MANUAL,
    AccessGrant,
    AlreadyDone,
    Connector,
    ConnectorError,
    Leaver,
    Outcome,
    OutcomeStatus,
    PermanentError,
    TransientError,
    Verification,
)
from offboarding.domain import audit
from offboarding.domain.models import (
    Case,
    PlanStatus,
    RevocationPlanRecord,
    RevocationStep,
    StepStatus,
    utcnow,
)
from offboarding.domain.plan import PlanStep, RevocationPlan, build_plan
from offboarding.domain.policy import Policy

log = structlog.get_logger(__name__)


class RevocationPorts(Protocol):
    """What revocation needs from the service: the database and the configured systems."""

    @property
    def engine(self) -> Engine: ...

    @property
    def connectors(self) -> Mapping[str, Connector]: ...

    @property
    def rules(self) -> Policy:
        """The organisation's policy: containment, order, disable or delete."""
        ...


def inventory_all(services: RevocationPorts, leaver: Leaver) -> list[AccessGrant]:
    """Every grant the leaver holds, in every configured system."""
    grants: list[AccessGrant] = []
    for name, connector in services.connectors.items():
        try:
            found = connector.inventory(leaver)
        except TransientError as exc:  # retried by the flow; the message names the system
            raise TransientError(f"{name}: {exc}", exc.retry_after) from exc
        except ConnectorError as exc:
            raise PermanentError(f"{name}: {type(exc).__name__}: {exc}") from exc
        log.info("inventory", connector=name, grants=len(found))
        grants.extend(found)
    return grants


def store_plan(
    services: RevocationPorts,
    case: Case,
    leaver: Leaver,
    grants: list[AccessGrant],
    *,
    instruction: str | None = None,
    instruction_file: Mapping[str, str] | None = None,
) -> RevocationPlanRecord:
    """Store the plan as the case's next version (older pending ones are superseded),
    with its audit event, in one transaction; `instruction` is the version of the work
    instruction the plan follows (recorded in the event), `instruction_file` the work
    instruction file's version label and SHA-256 when there is one (recorded with it)."""
    plan = build_plan(
        case_id=case.id,
        leaver=leaver,
        grants=grants,
        policy=services.rules,
        urgent=case.urgent,
        capabilities={name: c.capabilities for name, c in services.connectors.items()},
    )

    def store(session: Session) -> RevocationPlanRecord:
        previous = session.exec(
            select(RevocationPlanRecord)
            .where(RevocationPlanRecord.case_id == case.id)
            .order_by(col(RevocationPlanRecord.version).desc())
        ).all()
        for old in previous:
            if old.status in (PlanStatus.PENDING, PlanStatus.APPROVED):
                old.status = PlanStatus.SUPERSEDED
                session.add(old)
        record = RevocationPlanRecord(
            case_id=case.id,
            version=(previous[0].version + 1) if previous else 1,
            plan_hash=plan.plan_hash,
            canonical=plan.canonical(),
        )
        session.add(record)
        audit.append(
            session,
            action="plan.created",
            actor="service",
            case_id=case.id,
            details={
                "version": record.version,
                "plan_hash": record.plan_hash,
                "steps": [step.grant.key for step in plan.steps],
                **({"instruction": instruction} if instruction else {}),
                **(instruction_file or {}),
            },
        )
        return record

    return audit.in_transaction(services.engine, store)


def record_step(
    services: RevocationPorts,
    *,
    case_id: str,
    plan_id: str,
    grant: AccessGrant,
    status: StepStatus,
    detail: str,
    action: str = "",
    outcome: str | None = None,
) -> None:
    """What happened to one grant, and its audit event (`outcome`: the status unless
    said otherwise), in one transaction."""

    def store(session: Session) -> None:
        step = session.exec(
            select(RevocationStep).where(
                RevocationStep.plan_id == plan_id, RevocationStep.grant_key == grant.key
            )
        ).first() or RevocationStep(
            case_id=case_id,
            plan_id=plan_id,
            grant_key=grant.key,
            label=grant.label.text,
            status=status,
        )
        step.status = status
        step.detail = detail
        step.attempted_at = utcnow()
        session.add(step)
        audit.append(
            session,
            action="revocation.step",
            actor=f"connector:{grant.connector}",
            outcome=outcome or status.value,
            case_id=case_id,
            details={"grant": grant.key, "action": action, "detail": detail},
        )

    audit.in_transaction(services.engine, store)


_STEP_STATUS = {
    OutcomeStatus.REVOKED: StepStatus.DONE,
    OutcomeStatus.ALREADY_DONE: StepStatus.ALREADY_DONE,
    OutcomeStatus.DRY_RUN: StepStatus.DRY_RUN,
    OutcomeStatus.CASCADED: StepStatus.ALREADY_DONE,  # nothing left to do; the audit says why
    OutcomeStatus.KEPT: StepStatus.ALREADY_DONE,  # nothing to do; the detail says why
    OutcomeStatus.ELSEWHERE: StepStatus.ALREADY_DONE,
}
# Outcomes after which a grant, and what cascades from it, is gone.
REMOVED = frozenset({OutcomeStatus.REVOKED, OutcomeStatus.ALREADY_DONE, OutcomeStatus.CASCADED})
CASCADED_DETAIL = "cascaded: removed together with {parent}"
# Steps the service records but never sends, by action: (outcome, detail prefix).
REPORTED = {
    KEEP: (OutcomeStatus.KEPT, "kept: "),
    ELSEWHERE: (OutcomeStatus.ELSEWHERE, "handled elsewhere: "),
}
ATTESTED_PREFIX = "attested by "  # the detail of an attested manual step


def revoke_one(
    services: RevocationPorts,
    *,
    case_id: str,
    plan_id: str,
    grant: AccessGrant,
    action: str | None = None,
) -> Outcome:
    """Take `action` (the kind's default when None) on one grant and record it. Connector
    errors propagate (after being recorded)."""
    connector = services.connectors[grant.connector]
    try:
        outcome = connector.revoke(grant, action)
    except AlreadyDone as exc:
        outcome = Outcome(grant, OutcomeStatus.ALREADY_DONE, str(exc), action or "")
    except Exception as exc:
        record_step(
            services,
            case_id=case_id,
            plan_id=plan_id,
            grant=grant,
            status=StepStatus.FAILED,
            detail=f"{type(exc).__name__}: {exc}",
        )
        raise
    record_step(
        services,
        case_id=case_id,
        plan_id=plan_id,
        grant=grant,
        status=_STEP_STATUS[outcome.status],
        detail=outcome.detail,
        action=outcome.action,
    )
    return outcome


def revoke_step(
    services: RevocationPorts,
    *,
    case_id: str,
    plan_id: str,
    step: PlanStep,
    removed: Collection[str] = (),
) -> Outcome:
    """Take one plan step. A cascaded step whose parent is in `removed` (keys of grants
    whose step ended revoked, already done or cascaded) is recorded, not sent; so is a step
    the plan keeps or leaves to another system. A manual step is never taken here: the
    person's attestation records it."""
    if step.action == MANUAL:
        raise ValueError(f"{step.grant.key} is a manual step: it is attested, not revoked")
    if step.action in REPORTED:
        status, prefix = REPORTED[step.action]
        detail = f"{prefix}{step.grant.label.text}"
        record_step(
            services,
            case_id=case_id,
            plan_id=plan_id,
            grant=step.grant,
            status=_STEP_STATUS[status],
            detail=detail,
            action=step.action,
            outcome=status.value,
        )
        return Outcome(step.grant, status, detail, step.action)
    if step.cascades_from is None or step.cascades_from not in removed:
        return revoke_one(
            services, case_id=case_id, plan_id=plan_id, grant=step.grant, action=step.action
        )
    detail = CASCADED_DETAIL.format(parent=step.cascades_from)
    record_step(
        services,
        case_id=case_id,
        plan_id=plan_id,
        grant=step.grant,
        status=_STEP_STATUS[OutcomeStatus.CASCADED],
        detail=detail,
        action=step.action,
        outcome=OutcomeStatus.CASCADED.value,
    )
    log.info("grant cascaded", connector=step.grant.connector, grant=step.grant.key)
    return Outcome(step.grant, OutcomeStatus.CASCADED, detail, step.action)


def recorded_outcome(step: PlanStep, record: RevocationStep) -> Outcome:
    """The outcome of a step done by an earlier run (a run recovered after a crash)."""
    if step.action == MANUAL:
        attested = record.status == StepStatus.DONE
        status = OutcomeStatus.ATTESTED if attested else OutcomeStatus.AWAITING_ATTESTATION
    elif step.action in REPORTED:
        status = REPORTED[step.action][0]
    elif record.status == StepStatus.DONE:
        status = OutcomeStatus.REVOKED
    elif step.cascaded and record.detail.startswith(CASCADED_DETAIL.split("{", 1)[0]):
        status = OutcomeStatus.CASCADED
    else:
        status = OutcomeStatus.ALREADY_DONE
    return Outcome(step.grant, status, record.detail, step.action)


@dataclass(frozen=True)
class VerificationReport:
    by_connector: dict[str, Verification]

    @property
    def clean(self) -> bool:
        return all(v.clean for v in self.by_connector.values())

    @property
    def remaining(self) -> list[AccessGrant]:
        return [g for v in self.by_connector.values() for g in v.remaining]


def verify_all(services: RevocationPorts, case_id: str, leaver: Leaver) -> VerificationReport:
    results = {name: c.verify(leaver) for name, c in services.connectors.items()}
    report = VerificationReport(results)
    audit.record(
        services.engine,
        action="verification",
        actor="service",
        outcome="clean" if report.clean else "access_remains",
        case_id=case_id,
        details={
            name: {
                "remaining": [g.key for g in v.remaining],
                "checks": [
                    {
                        "check": c.name.id,
                        "name": c.name.text,
                        "passed": c.passed,
                        "detail": c.detail.text if c.detail else "",
                    }
                    for c in v.checks
                ],
            }
            for name, v in results.items()
        },
    )
    return report


def check_rows(report: VerificationReport) -> list[dict[str, Any]]:
    """Every check, per connector, as templates show it (the `say` filter renders the
    messages in the reader's language)."""
    return [
        {
            "connector": name,
            "name": check.name,
            "passed": check.passed,
            "detail": check.detail or "",
        }
        for name, verification in report.by_connector.items()
        for check in verification.checks
    ]


def steps_of(services: RevocationPorts, plan_id: str) -> list[RevocationStep]:
    with Session(services.engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(RevocationStep)
                .where(RevocationStep.plan_id == plan_id)
                .order_by(col(RevocationStep.attempted_at))
            )
        )


def load_plan(record: RevocationPlanRecord) -> RevocationPlan:
    return RevocationPlan.from_canonical(record.canonical)
