"""Every 15 minutes: the watch after each case, and the management view of all cases.

Each run first takes the rechecks that are due (`offboarding.domain.watch`): the leaver
of a completed case is inventoried again in every system; access found again is recorded
(`watch.found_again`), mailed to the case's requester and the managers who approved it,
and opens a follow-up case that needs a second manager's approval like any other.

The artifact `offboarding-overview` (Prefect UI → Artifacts) gets a new version on each
refresh: one row per open case and per case finished in the last week, with its state in
words, deadline, breach flag, time to revoke and what is left per system (see
`offboarding.domain.overview`). Breaches are logged as warnings on the run, naming the
case and the leaver's employee id, never a person's name.

Case runs publish a new version when their case changes state, at most one every
`OVERVIEW_EVERY` across all runs; the service's dispatcher publishes what they skipped
(`refresh_overview_if_due`), so the view never waits for the next scheduled run.

The view names people (leavers, approvers, assignees). Each version is kept by Prefect, so
retention deletes old versions with `erase_overview_history` (see its docstring).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

import structlog
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.runtime import flow_run as current_run
from pydantic import ValidationError
from sqlmodel import Session, select

from connectors.base import ConnectorError, Person
from offboarding.domain import audit, watch
from offboarding.domain.cases import find_by_event, find_open_case, get_case, leaver_of, leaver_view
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    ApprovalDecision,
    AuditEvent,
    Case,
    Decision,
    Recheck,
    as_utc,
    new_id,
    utcnow,
)
from offboarding.domain.overview import (
    RECENT,
    OverviewRow,
    breaches,
    moment,
    overview_rows,
    table,
)
from offboarding.domain.retention import ERASED
from offboarding.intake.hris import Employee, TerminationEvent
from offboarding.notification.mail import OutgoingEmail
from offboarding.notification.rendering import pick_language, render_email
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import get_settings

OVERVIEW_KEY = "offboarding-overview"
# named, not __name__: Prefect loads this file under a name of its own, and only the
# "flows" loggers reach the run log (PREFECT_LOGGING_EXTRA_LOGGERS)
log = structlog.get_logger("flows.oversight")


@lru_cache(maxsize=1)
def oversight_services() -> Services:
    """Built once per flow-run process from its settings (the service migrated the database)."""
    return build_services(get_settings(), migrate=False)


def display_name(services: Services, employee_id: str) -> str | None:
    """The person's name from the people directory; None (the view shows the id) when the
    directory does not know them or cannot be reached right now."""
    try:
        person = services.people.find_person(employee_id)
    except ConnectorError as exc:
        log.warning("people directory unavailable; showing the employee id", error=str(exc))
        return None
    return person.display_name if person is not None else None


def description(rows: list[OverviewRow], made: datetime, services: Services) -> str:
    """When the view was made and what it shows, in English and Dutch."""
    at = moment(made, services.settings.zone)
    still_open = sum(1 for row in rows if row.status not in TERMINAL_STATUSES)
    late = len(breaches(rows))
    return (
        f"Made {at}: {still_open} open case(s), {late} past their deadline; cases finished in "
        f"the last {RECENT.days} days included.\n\n"
        f"Gemaakt {at}: {still_open} open zaak/zaken, {late} over de uiterste termijn; zaken "
        f"die de afgelopen {RECENT.days} dagen zijn afgesloten staan er ook in."
    )


def refresh_overview(services: Services, *, now: datetime | None = None) -> list[OverviewRow]:
    """Read every open and recently finished case and publish them as a new version of the
    `offboarding-overview` table artifact; returns the rows (breaches first).

    Callable from a flow run (the artifact is linked to that run) or from the service's
    own process (needs PREFECT_API_URL; from async code, run it in a worker thread).
    """
    made = as_utc(now or datetime.now(UTC))
    settings = services.settings
    rows = overview_rows(
        services.engine,
        now=made,
        zone=settings.zone,
        end_of_day=settings.end_of_day,
        name_of=lambda employee_id: display_name(services, employee_id),
    )
    # _sync: also synchronous when called from a thread that runs an event loop
    create_table_artifact(  # type: ignore[call-arg]  # _sync is async_dispatch's switch
        key=OVERVIEW_KEY,
        table=table(rows, zone=settings.zone),
        description=description(rows, made, services),
        _sync=True,
    )
    return rows


OVERVIEW_EVERY = timedelta(seconds=10)


def overview_made() -> datetime | None:
    """When the newest version of the overview was made; None before the first."""
    with get_client(sync_client=True) as client:
        newest = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[OVERVIEW_KEY])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return as_utc(newest[0].created) if newest and newest[0].created is not None else None


def refresh_overview_if_due(
    services: Services, *, every: timedelta = OVERVIEW_EVERY, changed: datetime | None = None
) -> bool:
    """`refresh_overview`, unless a version was made less than `every` ago (or, with
    `changed`, after that moment): when hundreds of cases change at once, each would
    otherwise publish the whole table (quadratic in cases). The change skipped here is
    published by the service's dispatcher within `every` (`Dispatcher.refresh_view`).
    Returns whether a new version was made."""
    made = overview_made()
    now = datetime.now(UTC)
    if made is not None and (now - made < every or (changed is not None and made >= changed)):
        return False
    refresh_overview(services, now=now)
    return True


def erase_overview_history(before: datetime) -> int:
    """Delete the versions of the overview made before `before`, never the newest one;
    returns how many were deleted.

    A version made at T shows cases open at T or finished at most `RECENT` before T. So
    for a retention period of R days, call this with `before = now - R days + RECENT`:
    every version that could name a case that retention erased is deleted, and the newest
    version (which never shows an erased case) stays.
    """
    cutoff = as_utc(before)
    deleted = 0
    with get_client(sync_client=True) as client:
        while True:
            older = [
                artifact
                for artifact in client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[OVERVIEW_KEY])),
                    sort=ArtifactSort.CREATED_DESC,
                    offset=1,  # the newest version stays
                    limit=200,
                )
                if artifact.created is not None and as_utc(artifact.created) < cutoff
            ]
            if not older:
                return deleted
            for artifact in older:
                client.delete_artifact(artifact.id)
                deleted += 1


@flow(name="oversight", log_prints=False, persist_result=False)
def oversight() -> int:
    """Run the rechecks that are due (the watch after a case), then refresh the management
    view; returns the number of cases past their deadline."""
    configure_logging(attach_handler=False)
    services = oversight_services()
    run_due_rechecks(services, claimant=str(current_run.id or new_id()))
    rows = refresh_overview(services)
    logger = get_run_logger()
    late = breaches(rows)
    for row in late:
        logger.warning(
            "deadline passed: case %s (employee %s) is %s, deadline was %s",
            row.case_id,
            row.employee_id,
            row.status.value,
            row.deadline.isoformat() if row.deadline else "?",
        )
    return len(late)


def history_cutoff(now: datetime, retention_days: int) -> datetime:
    """`before` for `erase_overview_history` under a retention period of `retention_days`."""
    return as_utc(now) - timedelta(days=retention_days) + RECENT


# -- the watch after a case --------------------------------------------------------------


def run_due_rechecks(services: Services, *, claimant: str) -> dict[str, str]:
    """Claim and run every recheck that is due; returns the outcome per recheck id. Each
    one is a task of this run (`recheck-<case>-day-<n>`), so the UI shows what was checked."""
    outcomes: dict[str, str] = {}
    for recheck in watch.due(services.engine, now=utcnow()):
        if not watch.claim(services.engine, recheck.id, claimant=claimant):
            continue  # another oversight run has it
        outcomes[recheck.id] = recheck_task(
            recheck.id,
            case=recheck.case_id[:12],
            day=watch.day_text(recheck.day),
            claimant=claimant,
        )
    return outcomes


@task(name="recheck", task_run_name="recheck-{case}-day-{day}", cache_policy=NO_CACHE)
def recheck_task(recheck_id: str, *, case: str, day: str, claimant: str) -> str:
    services = oversight_services()
    with Session(services.engine, expire_on_commit=False) as session:
        recheck = session.get(Recheck, recheck_id)
    if recheck is None:
        return "gone"
    try:
        return run_recheck(services, recheck, claimant=claimant)
    except Exception as exc:  # noqa: BLE001 - recorded, and tried again on the next pass
        watch.record_failed(
            services.engine,
            recheck,
            claimant=claimant,
            failures={"recheck": f"{type(exc).__name__}: {exc}"},
        )
        get_run_logger().error("recheck %s of case %s failed: %s", day, case, type(exc).__name__)
        return "failed"


def run_recheck(services: Services, recheck: Recheck, *, claimant: str) -> str:
    """One claimed recheck: inventory again, then record, report and follow up."""
    engine, logger = services.engine, get_run_logger()
    case = get_case(engine, recheck.case_id)
    if case is None or case.display_name == ERASED:
        watch.record_skipped(engine, recheck, claimant=claimant, why="case data erased")
        return "skipped"
    findings = watch.reinventory(services.connectors, leaver_of(case), services.rules)
    failures = dict(findings.failures)
    if findings.found:
        follow_up, problem = open_follow_up(services, case, recheck)
        try:
            tell_management(services, case, recheck, findings, follow_up, problem)
        except Exception as exc:  # noqa: BLE001 - the mail is tried again on the next pass
            failures["mail"] = f"{type(exc).__name__}: {exc}"
        watch.record_found_again(
            engine,
            recheck,
            findings,
            claimant=claimant,
            follow_up=follow_up,
            follow_up_problem=problem,
            retry=bool(failures),
        )
        logger.warning(
            "access found again: case %s (employee %s), day %s, %d grant(s) in %s; follow-up %s",
            case.id,
            case.employee_id,
            watch.day_text(recheck.day),
            len(findings.found),
            ", ".join(findings.systems),
            follow_up or f"not opened ({problem})",
        )
    if failures:
        watch.record_failed(engine, recheck, claimant=claimant, failures=failures)
        logger.warning(
            "recheck of case %s day %s incomplete, tried again next run: %s",
            case.id,
            watch.day_text(recheck.day),
            ", ".join(sorted(failures)),
        )
        return "failed"
    if findings.found:
        return "found_again"
    watch.record_clean(engine, recheck, claimant=claimant)
    return "clean"


def open_follow_up(services: Services, case: Case, recheck: Recheck) -> tuple[str | None, str]:
    """The follow-up case, stored the way the intake stores an HR event (same checks, same
    audit event); its internal event id makes a retry find the same case. Returns its id
    (or the leaver's case that is already open, which takes the access too: its flow
    inventories again after approval) and, when none, why not."""
    event_id = watch.follow_up_event_id(case.id, recheck.day)
    with Session(services.engine, expire_on_commit=False) as session:
        # looked up here, not left to the intake: an HR event for an open case may change
        # that case (its last working day), which a follow-up must never do
        earlier = find_by_event(session, event_id) or find_open_case(session, case.employee_id)
    if earlier is not None:
        return earlier.id, ""
    # the intake's web routes (FastAPI) load only when a follow-up is opened
    from offboarding.intake.routes import Refused, record_refusal, store_case

    try:
        event = TerminationEvent(
            id=event_id,
            type="employee.terminated",
            occurred_at=utcnow(),
            employee=Employee(
                id=case.employee_id,
                email=case.employee_email,
                display_name=case.display_name,
                manager_id=case.manager_id,
            ),
            last_working_day=case.last_working_day,  # past: the run starts at once
            urgent=False,
            requested_by=case.requested_by,
        )
        return store_case(services, event).case.id, ""
    except Refused as refusal:
        record_refusal(services, refusal, actor="oversight")
        if refusal.case_id is not None:
            return refusal.case_id, ""
        return None, f"{refusal.reason}: {refusal.detail}"
    except ValidationError as exc:
        return None, f"the case's data is not a valid event ({exc.error_count()} problem(s))"


def management_of(services: Services, case: Case) -> list[Person]:
    """Who hears that access came back: the case's requester and every manager who
    approved it; they answered for the case. People the directory no longer knows are
    left out."""
    with Session(services.engine) as session:
        approvers = session.exec(
            select(ApprovalDecision.approver_id).where(
                ApprovalDecision.case_id == case.id, ApprovalDecision.decision == Decision.APPROVE
            )
        ).all()
    people = []
    for employee_id in dict.fromkeys([case.requested_by, *approvers]):
        person = services.people.find_person(employee_id)
        if person is not None and person.email:
            people.append(person)
    return people


def tell_management(
    services: Services,
    case: Case,
    recheck: Recheck,
    findings: watch.Findings,
    follow_up: str | None,
    problem: str,
) -> None:
    """Mail `access_found_again` to management, once per person and set of grants."""
    context = {
        "leaver": leaver_view(case),
        "case_id": case.id,
        "day": watch.day_text(recheck.day),
        "checked_at": moment(utcnow(), services.settings.zone),
        "found": [
            {
                "connector": grant.connector,
                "kind": grant.kind,
                "effect": grant.effect.value,
                "message": grant.label.model_dump(),
                "label": grant.label.text,
                "target": grant.target,
            }
            for grant in findings.found
        ],
        "follow_up": {"case_id": follow_up or "", "problem": problem},
    }
    for person in management_of(services, case):
        once = f"email:access_found_again:{recheck.id}:{findings.fingerprint}:{person.email}"
        with Session(services.engine) as session:
            if session.exec(select(AuditEvent.seq).where(AuditEvent.once_key == once)).first():
                continue  # told on an earlier pass
        language = pick_language(person.language, services.settings.default_language)
        rendered = render_email(
            services.templates,
            "access_found_again",
            language,
            {**context, "recipient": {"display_name": person.display_name}},
        )
        message_id = services.mailer.send(
            OutgoingEmail(
                to=[person.email], subject=rendered.subject, text=rendered.text, html=rendered.html
            )
        )
        audit.record(
            services.engine,
            action="email.access_found_again",
            actor="oversight",
            case_id=case.id,
            details={"to": person.email, "message_id": message_id, "language": language},
            once_key=once,
        )
