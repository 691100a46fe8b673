"""The watch after a case, on SQLite and PostgreSQL: rechecks are stored when a case
completes, come due at +N days, and one conditional UPDATE lets exactly one pass run each."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from offboarding.domain import audit, watch
from offboarding.domain.cases import Recorded, set_status
from offboarding.domain.models import Case, CaseStatus, Recheck, RecheckStatus, as_utc
from offboarding.domain.overview import overview_rows, table


def a_case(engine: Engine, event_id: str = "evt-watch-1", employee_id: str = "E1042") -> Case:
    case = Case(
        event_id=event_id,
        employee_id=employee_id,
        employee_email="jdevries@example.test",
        display_name="Jan de Vries",
        requested_by="E0007",
        last_working_day=date(2026, 11, 30),
        occurred_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(case)
        session.commit()
    return case


def completed(engine: Engine, days: tuple[float, ...] = (1, 7, 30)) -> Case:
    case = a_case(engine)
    set_status(
        engine, case.id, CaseStatus.COMPLETED, event=Recorded("case.completed"), rechecks=days
    )
    with Session(engine, expire_on_commit=False) as session:
        stored = session.get(Case, case.id)
    assert stored is not None
    return stored


def test_completing_a_case_stores_its_rechecks_in_the_same_transaction(engine: Engine) -> None:
    case = completed(engine)
    rechecks = watch.rechecks_of(engine, case.id)
    done = as_utc(case.updated_at)
    assert [(r.day, as_utc(r.due_at) - done) for r in rechecks] == [
        (1, timedelta(days=1)),
        (7, timedelta(days=7)),
        (30, timedelta(days=30)),
    ]
    assert {r.status for r in rechecks} == {RecheckStatus.DUE}
    # completing again (a replayed run) adds nothing
    set_status(engine, case.id, CaseStatus.COMPLETED, rechecks=(1, 7, 30))
    assert len(watch.rechecks_of(engine, case.id)) == 3


def test_other_statuses_and_an_empty_policy_store_no_rechecks(engine: Engine) -> None:
    case = a_case(engine)
    set_status(engine, case.id, CaseStatus.NEEDS_ATTENTION, "x", rechecks=(1, 7))
    set_status(engine, case.id, CaseStatus.REVOKING, rechecks=(1, 7))
    assert watch.rechecks_of(engine, case.id) == []
    set_status(engine, case.id, CaseStatus.COMPLETED, rechecks=())
    assert watch.rechecks_of(engine, case.id) == []


def test_a_recheck_is_due_only_once_its_day_has_come(engine: Engine) -> None:
    case = completed(engine)
    done = as_utc(case.updated_at)
    assert watch.due(engine, now=done + timedelta(hours=23)) == []
    assert [r.day for r in watch.due(engine, now=done + timedelta(days=1, minutes=1))] == [1]
    assert [r.day for r in watch.due(engine, now=done + timedelta(days=8))] == [1, 7]


def test_two_passes_claiming_at_once_run_it_once(engine: Engine) -> None:
    case = completed(engine)
    (first, *_) = watch.rechecks_of(engine, case.id)
    now = as_utc(first.due_at) + timedelta(minutes=1)
    passes = 8
    start = threading.Barrier(passes)
    won: list[str] = []
    errors: list[BaseException] = []

    def claim(name: str) -> None:
        start.wait()
        try:
            if watch.claim(engine, first.id, claimant=name, now=now):
                won.append(name)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"pass-{i}",)) for i in range(passes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(won) == 1
    with Session(engine) as session:
        row = session.get(Recheck, first.id)
        assert row is not None
        assert row.status == RecheckStatus.RUNNING and row.claimed_by == won[0]
        assert row.attempts == 1
    # claimed: not due for anyone else, until the claim is older than the lease
    assert first.id not in {r.id for r in watch.due(engine, now=now + timedelta(minutes=5))}
    assert not watch.claim(engine, first.id, claimant="late", now=now + timedelta(minutes=5))
    later = now + watch.CLAIM_LEASE + timedelta(minutes=1)
    assert watch.claim(engine, first.id, claimant="after-a-crash", now=later)


def test_a_failed_system_hands_the_recheck_back_and_is_recorded(engine: Engine) -> None:
    case = completed(engine, days=(1,))
    (recheck,) = watch.rechecks_of(engine, case.id)
    now = as_utc(recheck.due_at) + timedelta(minutes=1)
    assert watch.claim(engine, recheck.id, claimant="one", now=now)
    assert watch.record_failed(
        engine, recheck, claimant="one", failures={"directory": "ldap.example.nl: unreachable"}
    )
    (again,) = watch.due(engine, now=now)  # the next pass takes it again
    assert again.status == RecheckStatus.DUE and again.attempts == 1
    assert "directory" in again.detail
    failed = [e for e in audit.events_for_case(engine, case.id) if e.action == "watch.failed"]
    assert len(failed) == 1 and failed[0].outcome == "retry"
    assert "ldap.example.nl: unreachable" in failed[0].details

    assert watch.claim(engine, recheck.id, claimant="two", now=now)
    assert not watch.record_clean(engine, recheck, claimant="one")  # not its claim any more
    assert watch.record_clean(engine, recheck, claimant="two")
    assert not watch.record_clean(engine, recheck, claimant="two")  # closed once
    assert watch.due(engine, now=now + timedelta(days=400)) == []
    actions = [e.action for e in audit.events_for_case(engine, case.id)]
    assert actions.count("watch.clean") == 1
    assert audit.verify_chain(engine).ok


def test_the_overview_shows_the_watch(engine: Engine) -> None:
    case = completed(engine, days=(1, 7))
    zone = ZoneInfo("Europe/Amsterdam")
    now = as_utc(case.updated_at) + timedelta(hours=1)

    def cell(at: datetime) -> str:
        rows = overview_rows(engine, now=at, zone=zone, end_of_day="23:59", name_of=lambda _: None)
        (row,) = [r for r in table(rows, zone=zone) if r["Case / Zaak"] == case.id[:12]]
        return row["Watch / Nazorg"]

    assert cell(now).startswith("next recheck ") and "volgende controle" in cell(now)
    first, second = watch.rechecks_of(engine, case.id)
    for recheck in (first, second):
        assert watch.claim(engine, recheck.id, claimant="p", now=as_utc(recheck.due_at))
    follow_up = a_case(engine, event_id=watch.follow_up_event_id(case.id, 7))
    assert watch.record_clean(engine, first, claimant="p")
    assert watch.record_found_again(
        engine, second, watch.Findings(), claimant="p", follow_up=follow_up.id
    )
    # finished more than a week ago, but access came back (on day 7): still in the view
    with Session(engine) as session:
        row = session.get(Recheck, second.id)
        assert row is not None and row.done_at is not None
        row.done_at = as_utc(second.due_at)
        session.add(row)
        session.commit()
    late = as_utc(case.updated_at) + timedelta(days=9)
    assert cell(late) == (
        f"access found again on day 7; follow-up {follow_up.id[:12]} / "
        f"toegang opnieuw gevonden op dag 7; vervolgzaak {follow_up.id[:12]}"
    )
    with Session(engine) as session:
        (event,) = session.exec(
            select(audit.AuditEvent).where(audit.AuditEvent.action == "watch.found_again")
        ).all()
    assert follow_up.id in event.details


@pytest.mark.parametrize("day", [1, 7.0, 0.5])
def test_the_follow_up_event_id_names_the_case_and_day(day: float) -> None:
    assert watch.follow_up_event_id("abc", day) == f"recheck-abc-{day:g}"
