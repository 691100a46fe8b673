"""The management view's rows, from cases in every state, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import count
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session

from connectors.base import MANUAL, AccessGrant, Effect, Leaver, Message
from offboarding.domain import audit
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    Attestation,
    Case,
    CaseStatus,
    Decision,
    PlanStatus,
    RevocationPlanRecord,
    RevocationStep,
    StepStatus,
)
from offboarding.domain.overview import (
    OverviewRow,
    breaches,
    duration,
    overview_rows,
    table,
)
from offboarding.domain.plan import PlanStep, RevocationPlan
from offboarding.domain.retention import apply_retention

ZONE = ZoneInfo("Europe/Amsterdam")
PEOPLE = {"M1": "Hanna Bakker", "M2": "Piet de Vries", "A1": "Sanne Visser"}
_events = count(1)


def name_of(employee_id: str) -> str | None:
    return PEOPLE.get(employee_id)


def add(engine: Engine, *rows: object) -> None:
    with Session(engine, expire_on_commit=False) as session:
        for row in rows:
            session.add(row)
        session.commit()


def new_case(
    engine: Engine,
    status: CaseStatus,
    *,
    name: str,
    employee_id: str,
    created: datetime,
    last_working_day: date | None = None,
    detail: str = "",
) -> Case:
    case = Case(
        event_id=f"evt-{next(_events)}",
        employee_id=employee_id,
        employee_email=f"{employee_id.lower()}@example.test",
        display_name=name,
        requested_by="R1",
        last_working_day=last_working_day or created.date(),
        occurred_at=created,
        status=status,
        status_detail=detail,
        created_at=created,
        updated_at=created,
    )
    add(engine, case)
    return case


def grant(connector: str, kind: str, label: str) -> AccessGrant:
    return AccessGrant(
        connector=connector,
        kind=kind,
        effect=Effect.MEMBERSHIP,
        system_id=f"{connector}-{kind}",
        account="u1",
        target=kind,
        label=Message.plain(label),
    )


def new_plan(
    engine: Engine, case: Case, status: PlanStatus, steps: list[PlanStep]
) -> RevocationPlanRecord:
    plan = RevocationPlan(
        case_id=case.id,
        leaver=Leaver(
            employee_id=case.employee_id, email=case.employee_email, display_name=case.display_name
        ),
        steps=tuple(steps),
    )
    record = RevocationPlanRecord(
        case_id=case.id,
        version=1,
        plan_hash=plan.plan_hash,
        canonical=plan.canonical(),
        status=status,
    )
    add(engine, record)
    return record


GROUP = grant("directory", "group", "Member of developers")
ACCOUNT = grant("directory", "account", "Sign-in account")
REPO = grant("github", "team", "Team platform")
BADGE = grant("manual", "badge", "Hand in the door badge")
PLAN = [
    PlanStep(grant=ACCOUNT, action="disable"),
    PlanStep(grant=GROUP, action="remove"),
    PlanStep(grant=REPO, action="remove"),
    PlanStep(grant=BADGE, action=MANUAL),
]


def rows_by_leaver(engine: Engine, now: datetime) -> dict[str, OverviewRow]:
    rows = overview_rows(engine, now=now, zone=ZONE, end_of_day="23:59", name_of=name_of)
    return {row.leaver: row for row in rows}


def test_every_state_reads_in_words_with_its_deadline_breach_and_what_is_left(
    engine: Engine,
) -> None:
    now = datetime.now(UTC)
    # scheduled: last working day in the past, yet still not started -> breach
    late = new_case(
        engine,
        CaseStatus.SCHEDULED,
        name="Late Starter",
        employee_id="E1",
        created=now - timedelta(days=10),
        last_working_day=(now - timedelta(days=2)).date(),
    )
    future_day = (now + timedelta(days=5)).astimezone(ZONE).date()
    new_case(
        engine,
        CaseStatus.SCHEDULED,
        name="Future Leaver",
        employee_id="E2",
        created=now - timedelta(hours=1),
        last_working_day=future_day,
    )
    # awaiting approval: two managers asked, one link expired already (the other not)
    waiting = new_case(
        engine,
        CaseStatus.AWAITING_APPROVAL,
        name="Bram Mulder",
        employee_id="E3",
        created=now - timedelta(hours=5),
    )
    plan = new_plan(engine, waiting, PlanStatus.PENDING, PLAN)
    asked_at = now - timedelta(hours=4)
    add(
        engine,
        *(
            ApprovalRequest(
                case_id=waiting.id,
                plan_id=plan.id,
                plan_hash=plan.plan_hash,
                approver_id=who,
                approver_email=f"{who}@example.test",
                created_at=asked_at,
                expires_at=now + timedelta(hours=hours),
                notified_at=asked_at,
            )
            for who, hours in (("M1", 68), ("M2", 20))
        ),
    )
    # revoking: one directory step done, the github step failed, the manual one open
    revoking = new_case(
        engine,
        CaseStatus.REVOKING,
        name="Finn Brouwer",
        employee_id="E4",
        created=now - timedelta(hours=3),
    )
    approved = new_plan(engine, revoking, PlanStatus.APPROVED, PLAN)
    add(
        engine,
        *(
            RevocationStep(
                case_id=revoking.id,
                plan_id=approved.id,
                grant_key=g.key,
                label=g.label.text,
                status=status,
            )
            for g, status in ((ACCOUNT, StepStatus.DONE), (REPO, StepStatus.FAILED))
        ),
    )
    # awaiting attestation, past its due time -> breach
    attesting = new_case(
        engine,
        CaseStatus.AWAITING_ATTESTATION,
        name="Zoë Çelik",
        employee_id="E5",
        created=now - timedelta(days=3),
    )
    attest_plan = new_plan(engine, attesting, PlanStatus.APPROVED, PLAN)
    add(
        engine,
        *(
            RevocationStep(
                case_id=attesting.id,
                plan_id=attest_plan.id,
                grant_key=g.key,
                label=g.label.text,
                status=StepStatus.DONE,
            )
            for g in (ACCOUNT, GROUP, REPO)
        ),
        Attestation(
            case_id=attesting.id,
            plan_id=attest_plan.id,
            plan_hash=attest_plan.plan_hash,
            grant_key=BADGE.key,
            label=BADGE.label.text,
            assignee_id="A1",
            assignee_email="a1@example.test",
            due_at=now - timedelta(hours=1),
        ),
    )
    new_case(
        engine,
        CaseStatus.NEEDS_ATTENTION,
        name="Stuck Person",
        employee_id="E6",
        created=now - timedelta(hours=2),
        detail="TransientError: github unreachable\nretry",
    )
    # completed: approved 2 h 30 min before the case.completed event
    done = new_case(
        engine,
        CaseStatus.COMPLETED,
        name="Done Person",
        employee_id="E7",
        created=now - timedelta(days=1),
    )
    done_plan = new_plan(engine, done, PlanStatus.APPROVED, PLAN[:1])
    request = ApprovalRequest(
        case_id=done.id,
        plan_id=done_plan.id,
        plan_hash=done_plan.plan_hash,
        approver_id="M1",
        approver_email="m1@example.test",
        expires_at=now,
        used_at=now - timedelta(hours=2.5),
    )
    add(engine, request)
    add(
        engine,
        ApprovalDecision(
            case_id=done.id,
            request_id=request.id,
            plan_hash=done_plan.plan_hash,
            approver_id="M1",
            decision=Decision.APPROVE,
            decided_at=datetime.now(UTC) - timedelta(hours=2, minutes=30),
        ),
    )
    audit.record(engine, action="case.completed", actor="service", case_id=done.id)
    # finished long ago: not in the view
    new_case(
        engine,
        CaseStatus.REJECTED,
        name="Old Rejection",
        employee_id="E8",
        created=now - timedelta(days=40),
    )

    rows = rows_by_leaver(engine, now)

    assert set(rows) == {
        "Late Starter",
        "Future Leaver",
        "Bram Mulder",
        "Finn Brouwer",
        "Zoë Çelik",
        "Stuck Person",
        "Done Person",
    }
    late_row = rows["Late Starter"]
    assert late_row.state.en == f"scheduled for {late.last_working_day.isoformat()}"
    assert late_row.state.nl.startswith("gepland voor ")
    assert late_row.breached
    assert late_row.deadline is not None
    assert late_row.deadline.astimezone(ZONE).strftime("%Y-%m-%d %H:%M") == (
        f"{late.last_working_day.isoformat()} 23:59"
    )
    future = rows["Future Leaver"]
    assert not future.breached and future.state.en == f"scheduled for {future_day.isoformat()}"

    asking = rows["Bram Mulder"]
    assert asking.state.en.startswith("awaiting approval since ")
    assert "asked: Hanna Bakker, Piet de Vries until " in asking.state.en
    assert "gevraagd: Hanna Bakker, Piet de Vries tot " in asking.state.nl
    assert asking.deadline == now + timedelta(hours=68)
    assert not asking.breached
    assert asking.left == {"directory": 2, "github": 1, "manual": 1}  # nothing done before approval
    assert rows_by_leaver(engine, now + timedelta(hours=69))["Bram Mulder"].breached

    assert rows["Finn Brouwer"].state.en == "revoking"
    assert rows["Finn Brouwer"].left == {"directory": 1, "github": 1, "manual": 1}
    assert rows["Finn Brouwer"].deadline is None and not rows["Finn Brouwer"].breached

    attest_row = rows["Zoë Çelik"]
    assert attest_row.state.en.startswith(
        "awaiting attestation: Hand in the door badge by Sanne Visser due "
    )
    assert "door Sanne Visser uiterlijk" in attest_row.state.nl
    assert attest_row.breached
    assert attest_row.left == {"manual": 1}

    stuck = rows["Stuck Person"]
    assert stuck.state.en == "needs attention: TransientError: github unreachable retry"
    assert stuck.state.nl.startswith("vraagt aandacht: ")

    finished = rows["Done Person"]
    assert finished.state.en.startswith("completed ") and finished.state.nl.startswith("afgerond ")
    assert finished.time_to_revoke is not None
    assert (
        timedelta(hours=2, minutes=30) <= finished.time_to_revoke < timedelta(hours=2, minutes=32)
    )
    assert finished.left == {} and not finished.breached

    assert {r.leaver for r in breaches(rows.values())} == {"Late Starter", "Zoë Çelik"}
    ordered = [
        r.leaver
        for r in overview_rows(engine, now=now, zone=ZONE, end_of_day="23:59", name_of=name_of)
    ]
    assert set(ordered[:2]) == {"Late Starter", "Zoë Çelik"}  # breaches first
    assert ordered[-1] == "Done Person"  # finished last


def test_the_table_names_each_system_and_reads_in_both_languages(engine: Engine) -> None:
    now = datetime.now(UTC)
    case = new_case(
        engine,
        CaseStatus.REVOKING,
        name="Jan \u202eseirf",
        employee_id="E9",
        created=now - timedelta(days=1, hours=2, minutes=5),
    )
    new_plan(engine, case, PlanStatus.APPROVED, PLAN)
    rows = overview_rows(engine, now=now, zone=ZONE, end_of_day="23:59", name_of=name_of)
    (cells,) = table(rows, zone=ZONE)
    assert cells["Leaver / Vertrekker"] == "Jan seirf (E9)"  # the bidi override is gone
    assert cells["Case / Zaak"] == case.id[:12]
    assert cells["State"] == "revoking" and cells["Stand"] == "toegang wordt ingetrokken"
    assert cells["Age / Leeftijd"] == "1d 02:05"
    assert cells["Left: directory / Nog te doen: directory"] == "2"
    assert cells["Left: github / Nog te doen: github"] == "1"
    assert cells["Breach / Overschreden"] == ""
    assert duration(timedelta(minutes=42)) == "00:42"


def test_a_finished_case_erased_by_retention_leaves_the_view(engine: Engine) -> None:
    now = datetime.now(UTC)
    case = new_case(
        engine,
        CaseStatus.COMPLETED,
        name="Erased Person",
        employee_id="E10",
        created=now - timedelta(days=3),
    )
    assert [r.leaver for r in rows_by_leaver(engine, now).values()] == ["Erased Person"]
    apply_retention(engine, retention_days=1, now=now)
    assert rows_by_leaver(engine, now) == {}
    with Session(engine) as session:
        assert session.get(Case, case.id) is not None  # the case itself stays
