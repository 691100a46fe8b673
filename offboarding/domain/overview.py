"""The management view: where every open case stands, and how recently finished ones went.

One row per open case and per case finished (completed or rejected) within `recent`: who
is leaving, the case's state in words (English and Dutch), its age, the deadline it is
working against, whether that deadline has passed (a breach), for a completed case how
long revocation took after the approval, and per system what of the plan is still left.

Deadlines: a scheduled case must start by the end of the last working day (company
timezone); a case awaiting approval by the expiry of its approval links; a case awaiting
attestation by the earliest due time of its open manual steps. Other states have none.

Pure: it reads the database and takes the clock, the timezone and a name lookup (the
people directory, for approvers and assignees) as arguments; it writes nothing. The
Prefect flow `flows/oversight.py` turns the rows into the `offboarding-overview` artifact.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from offboarding.domain import watch
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    ApprovalDecision,
    ApprovalRequest,
    Attestation,
    AuditEvent,
    Case,
    CaseStatus,
    Decision,
    PlanStatus,
    RevocationPlanRecord,
    RevocationStep,
    StepStatus,
    as_utc,
)
from offboarding.domain.plan import RevocationPlan
from offboarding.domain.retention import ERASED
from offboarding.domain.text import safe_display

RECENT = timedelta(days=7)  # finished cases stay in the view this long
_DONE = (StepStatus.DONE, StepStatus.ALREADY_DONE)
_WHY_LENGTH = 200
NameOf = Callable[[str], str | None]
_T = TypeVar("_T")


@dataclass(frozen=True)
class State:
    """A case's state in words, for people: English and Dutch."""

    en: str
    nl: str


@dataclass(frozen=True)
class OverviewRow:
    case_id: str
    employee_id: str
    leaver: str  # display name
    status: CaseStatus
    state: State
    opened_at: datetime
    age: timedelta
    deadline: datetime | None
    breached: bool
    time_to_revoke: timedelta | None
    left: Mapping[str, int] = field(default_factory=dict)  # open plan steps per system
    watch_note: watch.WatchNote | None = None  # the watch after the case (found again, next)


def moment(value: datetime, zone: ZoneInfo) -> str:
    """A point in time as people in the company read it: local time with the zone."""
    return as_utc(value).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def duration(value: timedelta) -> str:
    """`2d 03:05`, `00:42`: days, hours and minutes, the same in every language."""
    minutes = max(int(value.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    clock = f"{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


def end_of_working_day(day: date, *, zone: ZoneInfo, end_of_day: str) -> datetime:
    hour, minute = (int(part) for part in end_of_day.split(":", 1))
    return datetime.combine(day, time(hour, minute), tzinfo=zone)


def _by_case(rows: Iterable[_T]) -> dict[str, list[_T]]:
    grouped: dict[str, list[_T]] = defaultdict(list)
    for row in rows:
        grouped[row.case_id].append(row)  # type: ignore[attr-defined]
    return grouped


@dataclass(frozen=True)
class _Records:
    """Everything the view needs about a set of cases, read in one session."""

    plans: dict[str, list[RevocationPlanRecord]]
    requests: dict[str, list[ApprovalRequest]]
    decisions: dict[str, list[ApprovalDecision]]
    steps: dict[str, list[RevocationStep]]
    attestations: dict[str, list[Attestation]]
    completed: dict[str, datetime]


def _load(session: Session, ids: list[str]) -> _Records:
    def rows(model: Any) -> dict[str, list[Any]]:
        return _by_case(session.exec(select(model).where(col(model.case_id).in_(ids))).all())

    completed: dict[str, datetime] = {}
    for event in session.exec(
        select(AuditEvent)
        .where(col(AuditEvent.case_id).in_(ids), AuditEvent.action == "case.completed")
        .order_by(col(AuditEvent.seq))
    ):
        completed[str(event.case_id)] = as_utc(event.at)
    return _Records(
        plans=rows(RevocationPlanRecord),
        requests=rows(ApprovalRequest),
        decisions=rows(ApprovalDecision),
        steps=rows(RevocationStep),
        attestations=rows(Attestation),
        completed=completed,
    )


def _current_plan(plans: list[RevocationPlanRecord]) -> RevocationPlanRecord | None:
    """The plan the case works on: the newest one still pending or approved."""
    live = [p for p in plans if p.status in (PlanStatus.PENDING, PlanStatus.APPROVED)]
    return max(live, key=lambda p: p.version, default=None)


def _left(
    record: RevocationPlanRecord, steps: list[RevocationStep], attestations: list[Attestation]
) -> dict[str, int]:
    """Steps of the plan not done yet, counted per system (connector name)."""
    try:
        plan = RevocationPlan.from_canonical(record.canonical)
    except ValidationError:
        return {}  # erased by retention: nothing to count
    done = {s.grant_key for s in steps if s.plan_id == record.id and s.status in _DONE}
    done |= {a.grant_key for a in attestations if a.plan_id == record.id and a.attested_at}
    return dict(Counter(step.grant.connector for step in plan.steps if step.grant.key not in done))


def _time_to_revoke(
    plans: list[RevocationPlanRecord], decisions: list[ApprovalDecision], completed: datetime
) -> timedelta | None:
    """From the approval that let revocation start to the case.completed event."""
    approved = {p.plan_hash for p in plans if p.status == PlanStatus.APPROVED}
    moments = [
        as_utc(d.decided_at)
        for d in decisions
        if d.decision == Decision.APPROVE
        and (d.plan_hash in approved or not approved)
        and as_utc(d.decided_at) <= completed
    ]
    return completed - max(moments) if moments else None


def _names(ids: Iterable[str], name_of: NameOf) -> str:
    """The people's names (their id where the directory has none), alphabetically."""
    return ", ".join(sorted({safe_display(name_of(i) or i).strip() for i in ids}))


def _state(
    case: Case, records: _Records, *, zone: ZoneInfo, end_of_day: str, name_of: NameOf
) -> tuple[State, datetime | None]:
    """The state in words and the deadline the case works against (None: no deadline)."""
    status = case.status
    if status == CaseStatus.SCHEDULED:
        day = case.last_working_day.isoformat()
        deadline = end_of_working_day(case.last_working_day, zone=zone, end_of_day=end_of_day)
        return State(f"scheduled for {day}", f"gepland voor {day}"), deadline
    if status == CaseStatus.RECEIVED:
        return State("starting", "wordt gestart"), None
    if status == CaseStatus.AWAITING_APPROVAL:
        return _awaiting_approval(case, records, zone=zone, name_of=name_of)
    if status == CaseStatus.REVOKING:
        return State("revoking", "toegang wordt ingetrokken"), None
    if status == CaseStatus.AWAITING_ATTESTATION:
        return _awaiting_attestation(case, records, zone=zone, name_of=name_of)
    if status == CaseStatus.NEEDS_ATTENTION:
        why = safe_display(case.status_detail).strip()[:_WHY_LENGTH] or "see the run"
        return State(f"needs attention: {why}", f"vraagt aandacht: {why}"), None
    finished = moment(records.completed.get(case.id) or case.updated_at, zone)
    if status == CaseStatus.COMPLETED:
        return State(f"completed {finished}", f"afgerond {finished}"), None
    return State(f"rejected {finished}", f"afgewezen {finished}"), None


def _awaiting_approval(
    case: Case, records: _Records, *, zone: ZoneInfo, name_of: NameOf
) -> tuple[State, datetime | None]:
    record = _current_plan(records.plans.get(case.id, []))
    asked = [
        r
        for r in records.requests.get(case.id, [])
        if record is not None and r.plan_id == record.id and r.used_at is None
    ]
    if not asked:
        return State("awaiting approval", "wacht op goedkeuring"), None
    since = moment(min(as_utc(r.created_at) for r in asked), zone)
    expiry = max(as_utc(r.expires_at) for r in asked)
    names = _names((r.approver_id for r in asked), name_of)
    until = moment(expiry, zone)
    return (
        State(
            f"awaiting approval since {since}, asked: {names} until {until}",
            f"wacht sinds {since} op goedkeuring, gevraagd: {names} tot {until}",
        ),
        expiry,
    )


def _awaiting_attestation(
    case: Case, records: _Records, *, zone: ZoneInfo, name_of: NameOf
) -> tuple[State, datetime | None]:
    record = _current_plan(records.plans.get(case.id, []))
    open_ones = sorted(
        (
            a
            for a in records.attestations.get(case.id, [])
            if a.attested_at is None and (record is None or a.plan_id == record.id)
        ),
        key=lambda a: (as_utc(a.due_at), a.grant_key),
    )
    if not open_ones:
        return State("awaiting attestation", "wacht op bevestiging"), None
    en, nl = [], []
    for item in open_ones:
        step = safe_display(item.label).strip()
        who = _names([item.assignee_id], name_of)
        due = moment(item.due_at, zone)
        en.append(f"{step} by {who} due {due}")
        nl.append(f"{step} door {who} uiterlijk {due}")
    return (
        State("awaiting attestation: " + "; ".join(en), "wacht op bevestiging: " + "; ".join(nl)),
        as_utc(open_ones[0].due_at),
    )


def overview_rows(
    engine: Engine,
    *,
    now: datetime,
    zone: ZoneInfo,
    end_of_day: str,
    name_of: NameOf,
    recent: timedelta = RECENT,
) -> list[OverviewRow]:
    """Rows for every open case and every case finished within `recent` (not yet erased).

    Breached cases first (most overdue first), then the other open cases (oldest first),
    then the finished ones (newest first).
    """
    now = as_utc(now)
    with Session(engine, expire_on_commit=False) as session:
        cases = list(
            session.exec(
                select(Case).where(
                    or_(
                        col(Case.status).not_in(list(TERMINAL_STATUSES)),
                        (col(Case.updated_at) >= now - recent) & (Case.display_name != ERASED),
                        col(Case.id).in_(watch.recently_found(session, since=now - recent)),
                    )
                )
            ).all()
        )
        records = _load(session, [c.id for c in cases])
        notes = watch.notes(session, [c.id for c in cases], zone=zone)
    known: dict[str, str | None] = {}

    def cached_name(employee_id: str) -> str | None:
        if employee_id not in known:
            known[employee_id] = name_of(employee_id)
        return known[employee_id]

    rows = [
        replace(
            _row(case, records, now, zone, end_of_day, cached_name), watch_note=notes.get(case.id)
        )
        for case in cases
    ]
    return sorted(rows, key=_order)


def _row(
    case: Case, records: _Records, now: datetime, zone: ZoneInfo, end_of_day: str, name_of: NameOf
) -> OverviewRow:
    state, deadline = _state(case, records, zone=zone, end_of_day=end_of_day, name_of=name_of)
    finished = case.status in TERMINAL_STATUSES
    completed = records.completed.get(case.id)
    end = completed or as_utc(case.updated_at)  # when a finished case finished
    record = None if finished else _current_plan(records.plans.get(case.id, []))
    return OverviewRow(
        case_id=case.id,
        employee_id=case.employee_id,
        leaver=safe_display(case.display_name).strip(),
        status=case.status,
        state=state,
        opened_at=as_utc(case.created_at),
        age=(end if finished else now) - as_utc(case.created_at),
        deadline=deadline,
        breached=not finished and deadline is not None and now > deadline,
        time_to_revoke=_time_to_revoke(
            records.plans.get(case.id, []), records.decisions.get(case.id, []), completed
        )
        if case.status == CaseStatus.COMPLETED and completed is not None
        else None,
        left={}
        if record is None
        else _left(record, records.steps.get(case.id, []), records.attestations.get(case.id, [])),
    )


def _order(row: OverviewRow) -> tuple[int, float]:
    if row.breached and row.deadline is not None:
        return (0, row.deadline.timestamp())
    if row.status not in TERMINAL_STATUSES:
        return (1, row.opened_at.timestamp())
    return (2, -row.opened_at.timestamp())


def breaches(rows: Iterable[OverviewRow]) -> list[OverviewRow]:
    return [row for row in rows if row.breached]


def table(rows: list[OverviewRow], *, zone: ZoneInfo) -> list[dict[str, str]]:
    """The rows as the artifact's table: column names in English and Dutch, one column per
    system with what is left there; every cell plain one-line text."""
    systems = sorted({system for row in rows for system in row.left})
    return [
        {
            "Leaver / Vertrekker": f"{row.leaver} ({safe_display(row.employee_id).strip()})",
            "Case / Zaak": row.case_id[:12],
            "State": row.state.en,
            "Stand": row.state.nl,
            "Age / Leeftijd": duration(row.age),
            "Deadline / Uiterlijk": moment(row.deadline, zone) if row.deadline else "",
            "Breach / Overschreden": "yes / ja" if row.breached else "",
            "Time to revoke / Tijd tot intrekking": duration(row.time_to_revoke)
            if row.time_to_revoke is not None
            else "",
            "Watch / Nazorg": f"{row.watch_note.en} / {row.watch_note.nl}"
            if row.watch_note
            else "",
            **{
                f"Left: {system} / Nog te doen: {system}": str(row.left.get(system, ""))
                for system in systems
            },
        }
        for row in rows
    ]
