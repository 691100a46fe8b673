"""Daily: erase personal data of closed cases older than the retention period (GDPR/AVG),
in the service's tables and in what Prefect holds of those cases (run, artifacts)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_client
from prefect.artifacts import create_markdown_artifact
from sqlalchemy.engine import Engine

from flows.oversight import erase_overview_history, history_cutoff
from offboarding.domain import audit
from offboarding.domain.retention import apply_retention as erase_old_cases
from offboarding.domain.retention import erased_with_run, forget_run
from offboarding.orchestration.prefect_retention import (
    ErasedCase,
    PrefectErasure,
    erase_from_prefect,
)
from offboarding.wiring.db import make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.settings import get_settings


def erase_case_runs(engine: Engine) -> PrefectErasure:
    """Every erased case that still names a flow run: its run and artifacts go (an earlier
    day's failure is picked up again here)."""
    pending = [ErasedCase(case_id, run_id) for case_id, run_id in erased_with_run(engine)]
    if not pending:
        return PrefectErasure(0, 0)
    with get_client(sync_client=True) as client:
        erased = erase_from_prefect(client, pending)
    for case_id in erased.done:
        forget_run(engine, case_id)
    audit.record(
        engine,
        action="retention.prefect_erased",
        actor="service",
        details={
            "cases": list(erased.done),
            "flow_runs_deleted": erased.runs_deleted,
            "artifacts_deleted": erased.artifacts_deleted,
            "problems": list(erased.problems),
        },
    )
    return erased


@flow(name="apply-retention", log_prints=False, persist_result=False)
def apply_retention() -> int:
    configure_logging(attach_handler=False)
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)  # the service migrated it on start
    report = erase_old_cases(
        engine,
        retention_days=settings.retention_days,
        now=datetime.now(UTC),
        outbox=settings.outbox_dir,
    )
    in_prefect = erase_case_runs(engine)
    # the overview's old versions name people of cases erased now
    problems = "".join(f"; problem: {p}" for p in in_prefect.problems)
    versions = erase_overview_history(history_cutoff(datetime.now(UTC), settings.retention_days))
    create_markdown_artifact(
        key="retention",
        markdown=(
            f"Retention ({settings.retention_days} days): personal data erased from "
            f"{len(report.cases)} closed case(s), {report.audit_events} audit event(s); "
            f"{report.outbox_files} outbox email(s) deleted; in Prefect "
            f"{in_prefect.runs_deleted} flow run(s) and {in_prefect.artifacts_deleted} "
            f"artifact(s) deleted{problems}; "
            f"{versions} old version(s) of the overview artifact deleted."
        ),
    )
    return len(report.cases)
