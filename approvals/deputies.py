"""Deputies and approver groups: who may decide for a case, and a manager's stand-in.

A manager names a deputy for a period. While it is active, every approval request that goes
to the manager also goes to the deputy (the manager keeps their own link: back early, they
can still decide). Either may decide; together they count once. The deputy passes the same
four-eyes rules (not the requester, not the leaver) and must be a manager per the people
directory, unless the policy's `deputies_may_be_non_managers` allows any employee.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals.ports import ApprovalPorts
from approvals.rules import DeputyPeriod
from approvals.tokens import LinkInvalid, _SignedLinks
from connectors.base import Person
from offboarding.domain import audit
from offboarding.domain.models import Case, Deputyship, as_utc, utcnow

MAX_PERIOD = timedelta(days=366)
LINK_HOURS = 72  # a manager's link to name a deputy: short, since holding it is the proof


class DeputyLinkSigner(_SignedLinks):
    """The signed link that lets one manager name their deputy (and its pages' CSRF)."""

    def __init__(self, key: str, *, ttl: timedelta = timedelta(hours=LINK_HOURS)) -> None:
        super().__init__(key, ttl=ttl, purpose="deputy")

    def issue(self, manager_id: str) -> str:
        return self._dumps({"m": manager_id})

    def read(self, token: str) -> str:
        """The manager the link was issued to (LinkExpired / LinkInvalid otherwise)."""
        manager_id = self._loads(token).get("m")
        if not isinstance(manager_id, str) or not manager_id:
            raise LinkInvalid("this link is not valid")
        return manager_id


class DeputyProblem(ValueError):
    """A deputy cannot be named or ended as asked; the message says why and what to do,
    `key` names the problem for the pages (which say it in the reader's language)."""

    def __init__(self, message: str, key: str = "other") -> None:
        super().__init__(message)
        self.key = key


@runtime_checkable
class GroupDirectory(Protocol):
    """A people directory that can list a named group's members (the LDAP one can)."""

    def group_members(self, group: str) -> list[Person]: ...


def approvers_for(services: ApprovalPorts, *, urgent: bool) -> list[Person]:
    """Everyone who may approve a case of this kind: the policy's group, else the managers."""
    group = services.policy.group_for(urgent=urgent)
    if group is None:
        return services.people.managers()
    if not isinstance(services.people, GroupDirectory):
        raise DeputyProblem(
            f"[policy] approvers_group {group!r}: the people directory cannot list group "
            "members; remove the setting or use the LDAP people directory"
        )
    return services.people.group_members(group)


def _key(employee_id: str) -> str:
    return employee_id.strip().casefold()


def periods(engine: Engine, *, manager_ids: Iterable[str] | None = None) -> list[DeputyPeriod]:
    """Every deputyship as the rules read it (an early end shortens the period)."""
    with Session(engine) as session:
        rows = list(session.exec(select(Deputyship)))
    wanted = None if manager_ids is None else {_key(m) for m in manager_ids}
    found = []
    for row in rows:
        if wanted is not None and _key(row.manager_id) not in wanted:
            continue
        ends = as_utc(row.ends_at)
        if row.ended_at is not None:
            ends = min(ends, as_utc(row.ended_at))
        found.append(DeputyPeriod(row.manager_id, row.deputy_id, as_utc(row.starts_at), ends))
    return found


def _deputy_pool(services: ApprovalPorts) -> set[str] | None:
    """Who may be a deputy now: the managers, or anyone (None) when the policy allows."""
    if services.policy.deputies_may_be_non_managers:
        return None
    return {_key(p.employee_id) for p in services.people.managers()}


@dataclass(frozen=True)
class RuleInputs:
    """What the four-eyes rules need about people for one case, read once."""

    approvers: list[str]
    deputies: list[DeputyPeriod]


def rule_inputs(services: ApprovalPorts, case: Case) -> RuleInputs:
    """The case's approvers and the deputyships whose deputy may still stand in (a deputy
    who is no longer a manager, where that is required, speaks for nobody)."""
    approvers = [p.employee_id for p in approvers_for(services, urgent=case.urgent)]
    pool = _deputy_pool(services)
    deputies = [d for d in periods(services.engine) if pool is None or _key(d.deputy_id) in pool]
    return RuleInputs(approvers, deputies)


def deputies_to_ask(
    services: ApprovalPorts, case: Case, approvers: list[Person], at: datetime
) -> list[tuple[Person, Person]]:
    """(deputy, manager) for each eligible approver's active deputy who is not asked in
    their own right, and who passes the four-eyes rules for this case."""
    asked = {_key(p.employee_id) for p in approvers}
    excluded = {_key(case.requested_by), _key(case.employee_id)}
    by_id = {_key(p.employee_id): p for p in approvers}
    pool = _deputy_pool(services)
    found: dict[str, tuple[Person, Person]] = {}
    for period in periods(services.engine, manager_ids=by_id):
        deputy_key = _key(period.deputy_id)
        if (
            not period.active_at(at)
            or deputy_key in asked
            or deputy_key in excluded
            or deputy_key in found
            or (pool is not None and deputy_key not in pool)
        ):
            continue
        deputy = services.people.find_person(period.deputy_id)
        if deputy is None or not deputy.email:
            continue
        found[deputy_key] = (deputy, by_id[_key(period.manager_id)])
    return [found[k] for k in sorted(found)]


def may_name_deputies(services: ApprovalPorts, employee_id: str) -> Person | None:
    """The person behind `employee_id` when they may name a deputy (a manager, or a member
    of an approvers group); None otherwise."""
    approvers = {
        _key(p.employee_id): p
        for urgent in (False, True)
        for p in approvers_for(services, urgent=urgent)
    } | {_key(p.employee_id): p for p in services.people.managers()}
    return approvers.get(_key(employee_id))


def period_of_days(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """From the start of `first` to the end of `last`, both days in the company's timezone."""
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    return as_utc(start), as_utc(end)


def name_deputy(
    services: ApprovalPorts,
    *,
    manager_id: str,
    deputy_id: str,
    starts_at: datetime,
    ends_at: datetime,
    actor: str,
    now: datetime | None = None,
) -> Deputyship:
    """Record a deputyship and its audit event (`deputy.named`), after every check; nothing
    is stored when one fails."""
    now = now or utcnow()
    starts_at, ends_at = as_utc(starts_at), as_utc(ends_at)
    manager_id, deputy_id = manager_id.strip(), deputy_id.strip()
    if _key(manager_id) == _key(deputy_id):
        raise DeputyProblem("a manager cannot be their own deputy; name someone else", "self")
    if ends_at <= starts_at:
        raise DeputyProblem(
            "the period ends before it starts: --until must be after --from", "order"
        )
    if ends_at <= now:
        raise DeputyProblem("the period is over already: choose an --until in the future", "over")
    if ends_at - starts_at > MAX_PERIOD:
        raise DeputyProblem(
            "a deputy is named for at most 366 days; name them again later", "too_long"
        )
    manager = may_name_deputies(services, manager_id)
    if manager is None:
        raise DeputyProblem(
            f"{manager_id} is not a manager or approver in the people directory: only they "
            "name deputies",
            "not_manager",
        )
    deputy = services.people.find_person(deputy_id)
    if deputy is None:
        raise DeputyProblem(f"{deputy_id} is not in the people directory", "unknown")
    if not deputy.email:
        raise DeputyProblem(
            f"{deputy_id} has no email address: the deputy could not be asked", "no_email"
        )
    pool = _deputy_pool(services)
    if pool is not None and _key(deputy.employee_id) not in pool:
        raise DeputyProblem(
            f"{deputy_id} is not a manager: a deputy must be one (or set "
            "deputies_may_be_non_managers = true in [policy])",
            "not_eligible",
        )
    overlapping = [
        p
        for p in periods(services.engine, manager_ids=[manager.employee_id])
        if p.starts_at < ends_at and starts_at < p.ends_at
    ]
    if overlapping:
        other = overlapping[0]
        raise DeputyProblem(
            f"{manager.employee_id} already has deputy {other.deputy_id} from "
            f"{other.starts_at:%Y-%m-%d %H:%M} until {other.ends_at:%Y-%m-%d %H:%M} UTC; "
            "end that one first (`offboarding deputy end`)",
            "overlap",
        )
    row = Deputyship(
        manager_id=manager.employee_id,
        deputy_id=deputy.employee_id,
        starts_at=starts_at,
        ends_at=ends_at,
        named_by=actor,
    )

    def store(session: Session) -> None:
        session.add(row)
        audit.append(
            session,
            action="deputy.named",
            actor=actor,
            details={
                "deputyship_id": row.id,
                "manager_id": row.manager_id,
                "deputy_id": row.deputy_id,
                "starts_at": starts_at.isoformat(),
                "ends_at": ends_at.isoformat(),
            },
        )

    audit.in_transaction(services.engine, store)
    return row


def end_deputy(
    services: ApprovalPorts, deputyship_id: str, *, actor: str, now: datetime | None = None
) -> Deputyship:
    """End a deputyship now (`deputy.ended`); from then on the deputy speaks for nobody."""
    now = now or utcnow()

    def end(session: Session) -> Deputyship:
        row = session.get(Deputyship, deputyship_id)
        if row is None:
            raise DeputyProblem(
                f"no deputyship {deputyship_id}; `offboarding deputy list` shows them"
            )
        if row.ended_at is not None or as_utc(row.ends_at) <= now:
            raise DeputyProblem(f"deputyship {deputyship_id} has ended already")
        row.ended_at = now
        row.ended_by = actor
        session.add(row)
        audit.append(
            session,
            action="deputy.ended",
            actor=actor,
            details={
                "deputyship_id": row.id,
                "manager_id": row.manager_id,
                "deputy_id": row.deputy_id,
            },
        )
        return row

    return audit.in_transaction(services.engine, end)


def current_deputyships(
    engine: Engine, *, now: datetime | None = None, manager_id: str | None = None
) -> list[Deputyship]:
    """Deputyships not over yet (active or to come), soonest first."""
    now = now or utcnow()
    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.exec(select(Deputyship).order_by(col(Deputyship.starts_at))))
    return [
        row
        for row in rows
        if row.ended_at is None
        and as_utc(row.ends_at) > now
        and (manager_id is None or _key(row.manager_id) == _key(manager_id))
    ]
