"""The watch after a case: access that comes back after the leaver was offboarded.

A re-sync from HR, a colleague re-adding a group, a mailbox switched on again: when a
case completes, one recheck per day of the policy's `recheck_after_days` is stored with
it (in the same transaction as the completion). Each pass of the scheduled oversight
flow claims the rechecks that are due — with one conditional UPDATE, so two passes never
run the same recheck — and inventories the leaver again in every configured system
(read only). What the plan would take away again (not what it keeps, leaves to a person
or to another system) is *found again*: the caller reports it and opens a follow-up case
that goes through approval like any other. A system that cannot be read is recorded and
the recheck is tried again on the next pass.

Plain domain code: the database, the connectors and the policy are passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.base import NOT_SENT, AccessGrant, Connector, ConnectorError, Leaver
from offboarding.domain import audit
from offboarding.domain.models import (
    Case,
    CaseStatus,
    Recheck,
    RecheckStatus,
    as_utc,
    utcnow,
)
from offboarding.domain.plan import build_plan
from offboarding.domain.policy import Policy

# A claim older than this is taken to belong to a pass that died half-way: claimable again.
CLAIM_LEASE = timedelta(hours=1)
FOLLOW_UP_PREFIX = "recheck-"  # event ids of follow-up cases: recheck-<case id>-<day>
_DONE = (RecheckStatus.CLEAN, RecheckStatus.FOUND_AGAIN, RecheckStatus.SKIPPED)


def day_text(day: float) -> str:
    """`1`, `7`, `0.5`: the day as people (and event ids) write it."""
    return f"{day:g}"


def follow_up_event_id(case_id: str, day: float) -> str:
    """The internal event id of the follow-up a recheck opens: the same recheck always
    names the same follow-up, however often it is retried."""
    return f"{FOLLOW_UP_PREFIX}{case_id}-{day_text(day)}"


# -- scheduling -------------------------------------------------------------------------


def schedule(session: Session, case_id: str, days: Iterable[float], completed_at: datetime) -> int:
    """Store the rechecks of a case that just completed, inside the caller's transaction;
    days already stored are left alone. Returns how many were added."""
    known = set(session.exec(select(Recheck.day).where(Recheck.case_id == case_id)).all())
    added = 0
    for day in sorted(set(days) - known):
        session.add(
            Recheck(case_id=case_id, day=day, due_at=as_utc(completed_at) + timedelta(days=day))
        )
        added += 1
    return added


def rechecks_of(engine: Engine, case_id: str) -> list[Recheck]:
    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(Recheck).where(Recheck.case_id == case_id).order_by(col(Recheck.day))
            )
        )


def due(engine: Engine, *, now: datetime, limit: int = 100) -> list[Recheck]:
    """Rechecks whose moment has come, and claims left behind by a pass that died."""
    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(Recheck)
                .where(_claimable(as_utc(now)))
                .order_by(col(Recheck.due_at))
                .limit(limit)
            )
        )


def _claimable(now: datetime) -> Any:
    return or_(
        (col(Recheck.status) == RecheckStatus.DUE) & (col(Recheck.due_at) <= now),
        (col(Recheck.status) == RecheckStatus.RUNNING)
        & (col(Recheck.claimed_at) < now - CLAIM_LEASE),
    )


def claim(engine: Engine, recheck_id: str, *, claimant: str, now: datetime | None = None) -> bool:
    """Take one recheck for this pass. One conditional UPDATE: of two passes claiming the
    same recheck at once, exactly one changes the row (the other's condition no longer
    holds once the winner committed), so only one runs it."""
    moment = as_utc(now or utcnow())
    with Session(engine) as session:
        result = session.execute(
            update(Recheck)
            .where(col(Recheck.id) == recheck_id, _claimable(moment))
            .values(
                status=RecheckStatus.RUNNING,
                claimed_by=claimant,
                claimed_at=moment,
                attempts=Recheck.attempts + 1,  # type: ignore[operator]
            )
        )
        session.commit()
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


# -- looking again ----------------------------------------------------------------------


@dataclass(frozen=True)
class Findings:
    """What one re-inventory saw: access the plan would take away again, and the systems
    that could not be read (name → the error, in words)."""

    found: list[AccessGrant] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def systems(self) -> list[str]:
        return sorted({grant.connector for grant in self.found})

    @property
    def keys(self) -> list[str]:
        return sorted(grant.key for grant in self.found)

    @property
    def fingerprint(self) -> str:
        """Short and stable for the same set of grants: reports once per set."""
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()[:16]


def reinventory(connectors: Mapping[str, Connector], leaver: Leaver, policy: Policy) -> Findings:
    """Read the leaver's access in every system (inventory only: nothing is changed) and
    keep what a plan would revoke. A system that fails is named, the others still read."""
    grants: list[AccessGrant] = []
    failures: dict[str, str] = {}
    for name, connector in connectors.items():
        try:
            grants += connector.inventory(leaver)
        except ConnectorError as exc:
            failures[name] = str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried
            failures[name] = f"{type(exc).__name__}: {exc}"
    plan = build_plan(
        case_id="recheck",
        leaver=leaver,
        grants=grants,
        policy=policy,
        capabilities={
            name: c.capabilities for name, c in connectors.items() if name not in failures
        },
    )
    found = [step.grant for step in plan.steps if step.action not in NOT_SENT]
    return Findings(found=found, failures=failures)


# -- recording what happened ------------------------------------------------------------


def _finish(
    engine: Engine,
    recheck: Recheck,
    *,
    claimant: str,
    status: RecheckStatus,
    action: str,
    outcome: str,
    details: dict[str, Any],
    detail: str = "",
    follow_up: str | None = None,
) -> bool:
    """Close (or, with status DUE, hand back) a recheck this pass holds, with its audit
    event, in one transaction. False when the claim was lost meanwhile."""

    def store(session: Session) -> bool:
        current = session.get(Recheck, recheck.id)
        if current is None or current.claimed_by != claimant or current.status in _DONE:
            return False
        current.status = status
        current.detail = detail[:2000]
        if follow_up is not None:
            current.follow_up_case_id = follow_up
        if status in _DONE:
            current.done_at = utcnow()
        session.add(current)
        audit.append(
            session,
            action=action,
            actor="oversight",
            outcome=outcome,
            case_id=recheck.case_id,
            details={"day": recheck.day, "recheck_id": recheck.id, **details},
        )
        return True

    return audit.in_transaction(engine, store)


def record_clean(engine: Engine, recheck: Recheck, *, claimant: str) -> bool:
    return _finish(
        engine,
        recheck,
        claimant=claimant,
        status=RecheckStatus.CLEAN,
        action="watch.clean",
        outcome="clean",
        details={},
    )


def record_skipped(engine: Engine, recheck: Recheck, *, claimant: str, why: str) -> bool:
    return _finish(
        engine,
        recheck,
        claimant=claimant,
        status=RecheckStatus.SKIPPED,
        action="watch.skipped",
        outcome="skipped",
        details={"why": why},
        detail=why,
    )


def record_found_again(
    engine: Engine,
    recheck: Recheck,
    findings: Findings,
    *,
    claimant: str,
    follow_up: str | None,
    follow_up_problem: str = "",
    retry: bool = False,
) -> bool:
    """Access is back. With `retry` (a system could not be read, or the mail did not go
    out) only the event is recorded, once per set of grants, and the caller hands the
    recheck back (`record_failed`); otherwise the recheck is closed with it."""
    details = {
        "systems": findings.systems,
        "grants": findings.keys,
        "targets": sorted({grant.target for grant in findings.found}),
        "follow_up_case_id": follow_up,
        **({"follow_up_problem": follow_up_problem} if follow_up_problem else {}),
    }
    if retry:
        audit.record(
            engine,
            action="watch.found_again",
            actor="oversight",
            outcome="found_again",
            case_id=recheck.case_id,
            details={"day": recheck.day, "recheck_id": recheck.id, **details},
            once_key=f"watch.found_again:{recheck.id}:{findings.fingerprint}",
        )
        return True
    return _finish(
        engine,
        recheck,
        claimant=claimant,
        status=RecheckStatus.FOUND_AGAIN,
        action="watch.found_again",
        outcome="found_again",
        details=details,
        detail=f"found again in {', '.join(findings.systems)}: {len(findings.found)} grant(s)",
        follow_up=follow_up,
    )


def record_failed(
    engine: Engine, recheck: Recheck, *, claimant: str, failures: Mapping[str, str]
) -> bool:
    """Some systems could not be read: recorded, and the recheck is due again at once
    (the next pass tries it again). Never dropped."""
    return _finish(
        engine,
        recheck,
        claimant=claimant,
        status=RecheckStatus.DUE,
        action="watch.failed",
        outcome="retry",
        details={"failures": dict(failures)},
        detail="; ".join(f"{name}: {error}" for name, error in sorted(failures.items())),
    )


# -- the management view ----------------------------------------------------------------


@dataclass(frozen=True)
class WatchNote:
    """What the watch says about one case, in English and Dutch."""

    en: str
    nl: str


def notes(session: Session, case_ids: Sequence[str], *, zone: Any) -> dict[str, WatchNote]:
    """Per case: access found again (with the follow-up), else the next recheck, else clean."""
    by_case: dict[str, list[Recheck]] = {}
    for row in session.exec(select(Recheck).where(col(Recheck.case_id).in_(list(case_ids)))):
        by_case.setdefault(row.case_id, []).append(row)
    shown: dict[str, WatchNote] = {}
    for case_id, rows in by_case.items():
        rows.sort(key=lambda r: r.day)
        found = [r for r in rows if r.status == RecheckStatus.FOUND_AGAIN]
        waiting = [r for r in rows if r.status in (RecheckStatus.DUE, RecheckStatus.RUNNING)]
        if found:
            latest = found[-1]
            follow = (latest.follow_up_case_id or "-")[:12]
            day = day_text(latest.day)
            shown[case_id] = WatchNote(
                f"access found again on day {day}; follow-up {follow}",
                f"toegang opnieuw gevonden op dag {day}; vervolgzaak {follow}",
            )
        elif waiting:
            when = as_utc(waiting[0].due_at).astimezone(zone).strftime("%Y-%m-%d")
            shown[case_id] = WatchNote(f"next recheck {when}", f"volgende controle {when}")
        elif rows:
            shown[case_id] = WatchNote("rechecked: clean", "gecontroleerd: schoon")
    return shown


def recently_found(session: Session, *, since: datetime) -> list[str]:
    """Cases whose recheck found access again since `since` (they stay in the view)."""
    return list(
        session.exec(
            select(Recheck.case_id).where(
                Recheck.status == RecheckStatus.FOUND_AGAIN, col(Recheck.done_at) >= as_utc(since)
            )
        ).all()
    )


def known_leavers(engine: Engine, *, erased_marker: str) -> list[Case]:
    """Leavers the service knows are gone: completed or needs-attention cases whose data
    retention has not erased yet; the newest case per employee."""
    with Session(engine, expire_on_commit=False) as session:
        cases = session.exec(
            select(Case)
            .where(
                col(Case.status).in_([CaseStatus.COMPLETED, CaseStatus.NEEDS_ATTENTION]),
                Case.display_name != erased_marker,
            )
            .order_by(col(Case.updated_at).desc())
        ).all()
    newest: dict[str, Case] = {}
    for case in cases:
        newest.setdefault(case.employee_id, case)
    return sorted(newest.values(), key=lambda c: c.employee_id)
