"""Retention reaches into Prefect: what it holds of an erased case goes too (GDPR/AVG).

A case's flow run is named after the leaver (`offboard-E1042-jdevries`), its plan and evidence
artifacts name their access, and the engine's own log lines repeat the run's name. When the
service erases a closed case's personal data, it also deletes, through Prefect's API:

- the case's keyed artifacts (`plan-…`, `evidence-…`, `evidence-pack-…`, every version) and
  every other artifact its flow run wrote;
- the flow run itself (its name, parameters, state history and task runs).

Prefect has no API to delete log lines; the runs' logs are deleted by Prefect's own database
vacuum, which `offboarding up` enables for orphaned logs (see `vacuum_environment`). Events
age out after Prefect's event retention (7 days by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

import structlog
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.exceptions import ObjectNotFound

log = structlog.get_logger(__name__)

CASE_ARTIFACT_PREFIXES = ("plan", "evidence", "evidence-pack")
_PAGE = 200


@dataclass(frozen=True)
class ErasedCase:
    case_id: str
    flow_run_id: str | None


@dataclass(frozen=True)
class PrefectErasure:
    runs_deleted: int
    artifacts_deleted: int
    done: tuple[str, ...] = ()  # case ids whose Prefect data is gone
    problems: tuple[str, ...] = ()


def case_artifact_keys(case_id: str) -> list[str]:
    return [f"{prefix}-{case_id[:12]}" for prefix in CASE_ARTIFACT_PREFIXES]


def vacuum_environment(retention_days: int) -> dict[str, str]:
    """Environment for the Prefect server `offboarding up` starts: old finished runs and the
    logs and artifacts left by a deleted run are deleted by Prefect itself."""
    return {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs,orphans",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(retention_days * 86400),
    }


def _artifact_ids(client: SyncPrefectClient, artifact_filter: ArtifactFilter) -> set[UUID]:
    found: set[UUID] = set()
    offset = 0
    while True:
        page = client.read_artifacts(artifact_filter=artifact_filter, limit=_PAGE, offset=offset)
        found.update(artifact.id for artifact in page)
        if len(page) < _PAGE:
            return found
        offset += _PAGE


def erase_from_prefect(client: SyncPrefectClient, cases: Iterable[ErasedCase]) -> PrefectErasure:
    """Delete each case's artifacts and flow run. A failure for one case is reported and the
    others go on; running it again finishes the job (everything here is idempotent)."""
    runs = artifacts = 0
    done: list[str] = []
    problems: list[str] = []
    for case in cases:
        try:
            ids = _artifact_ids(
                client, ArtifactFilter(key=ArtifactFilterKey(any_=case_artifact_keys(case.case_id)))
            )
            if case.flow_run_id:
                ids |= _artifact_ids(
                    client,
                    ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(case.flow_run_id)])
                    ),
                )
            for artifact_id in ids:
                try:
                    client.delete_artifact(artifact_id)
                    artifacts += 1
                except ObjectNotFound:
                    pass
            if case.flow_run_id:
                try:
                    client.delete_flow_run(UUID(case.flow_run_id))
                    runs += 1
                except ObjectNotFound:
                    pass
            done.append(case.case_id)
        except Exception as exc:  # noqa: BLE001 - reported, the next case goes on
            problem = f"case {case.case_id}: {type(exc).__name__}: {exc}"
            log.warning("prefect data of an erased case not deleted", problem=problem)
            problems.append(problem)
    return PrefectErasure(runs, artifacts, tuple(done), tuple(problems))
