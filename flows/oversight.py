"""Every 15 minutes: the management view of all cases, as one keyed table artifact.

The artifact `offboarding-overview` (Prefect UI → Artifacts) gets a new version on each
refresh: one row per open case and per case finished in the last week, with its state in
words, deadline, breach flag, time to revoke and what is left per system (see
`offboarding.domain.overview`). Breaches are logged as warnings on the run, naming the
case and the leaver's employee id, never a person's name.

The service may also call `refresh_overview(services)` whenever a case changes state, so
the view does not wait for the next scheduled run.

The view names people (leavers, approvers, assignees). Each version is kept by Prefect, so
retention deletes old versions with `erase_overview_history` (see its docstring).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

import structlog
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from connectors.base import ConnectorError
from offboarding.domain.models import TERMINAL_STATUSES, as_utc
from offboarding.domain.overview import (
    RECENT,
    OverviewRow,
    breaches,
    moment,
    overview_rows,
    table,
)
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import get_settings

OVERVIEW_KEY = "offboarding-overview"
log = structlog.get_logger(__name__)


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
    """Refresh the management view; returns the number of cases past their deadline."""
    configure_logging(attach_handler=False)
    rows = refresh_overview(oversight_services())
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
