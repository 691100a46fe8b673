"""Daily: erase personal data of closed cases older than the retention period (GDPR/AVG)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.oversight import erase_overview_history, history_cutoff
from offboarding.domain.retention import apply_retention as erase_old_cases
from offboarding.wiring.db import make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.settings import get_settings


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
    # the overview's old versions name people of cases erased now
    versions = erase_overview_history(history_cutoff(datetime.now(UTC), settings.retention_days))
    create_markdown_artifact(
        key="retention",
        markdown=(
            f"Retention ({settings.retention_days} days): personal data erased from "
            f"{len(report.cases)} closed case(s), {report.audit_events} audit event(s); "
            f"{report.outbox_files} outbox email(s) deleted; {versions} old version(s) of the "
            "overview artifact deleted."
        ),
    )
    return len(report.cases)
