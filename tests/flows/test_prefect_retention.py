"""Retention reaches into Prefect: when a closed case's personal data is erased, its flow run
(named after the leaver), its artifacts and — through Prefect's own vacuum of orphaned rows —
its log lines are gone too, read back through Prefect's API."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Stack, start_stack
from sqlalchemy import update
from sqlmodel import Session, select
from support import decide, link_in, prefect, run_of, send_leaver, text_of, wait_for_state

from offboarding.domain.models import AuditEvent, Case, CaseStatus
from offboarding.domain.retention import ERASED

pytestmark = pytest.mark.e2e
LEAVER = ("E1008", "sbakker", "Sanne Bakker")
# Prefect's vacuum of logs whose run was deleted runs daily; here every few seconds.
ORPHAN_LOOP = {"PREFECT_SERVER_SERVICES_DB_VACUUM_ORPHAN_CLEANUP_LOOP_SECONDS": "3"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    saved = {name: os.environ.get(name) for name in ORPHAN_LOOP}
    os.environ.update(ORPHAN_LOOP)
    try:
        yield from start_stack(tmp_path_factory.mktemp("retention"), None, smtp_server)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def artifacts(api: str, **criteria: Any) -> list[dict[str, Any]]:
    found = prefect("POST", f"{api}/artifacts/filter", json={"artifacts": criteria})
    assert found.status_code == 200, found.text
    return list(found.json())


def logs_of(api: str, flow_run_id: str) -> list[dict[str, Any]]:
    found = prefect(
        "POST", f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}}
    )
    assert found.status_code == 200, found.text
    return list(found.json())


def prefect_erasures(stack: Stack) -> list[dict[str, Any]]:
    with Session(stack.engine) as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.action == "retention.prefect_erased")
        ).all()
    return [json.loads(event.details) for event in events]


def run_retention(stack: Stack) -> str:
    api = stack.running.api_url
    name = stack.settings.retention_deployment
    deployment = wait_until(
        lambda: (
            (r := prefect("GET", f"{api}/deployments/name/{name}")).status_code == 200
            and r.json()["id"]
        ),
        f"the runner serves {name}",
    )
    created = prefect("POST", f"{api}/deployments/{deployment}/create_flow_run", json={})
    assert created.status_code == 201, created.text
    run_id = str(created.json()["id"])
    run = wait_for_state(api, run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return run_id


def test_retention_deletes_the_case_run_its_artifacts_and_its_logs(stack: Stack) -> None:
    api = stack.running.api_url
    employee_id, uid, name = LEAVER
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(api, flow_run_id, "PAUSED")
    (request,) = stack.mailbox.wait_for(  # type: ignore[attr-defined]
        lambda m: case_id in text_of(m) and "/approvals/" in text_of(m)
    )[:1]
    decided = decide(link_in(request), "reject", "Wrong person")
    assert decided.status_code == 200, decided.text
    wait_for_state(api, flow_run_id, "COMPLETED")

    # what Prefect holds of this leaver before retention
    run = prefect("GET", f"{api}/flow_runs/{flow_run_id}").json()
    assert uid in run["name"]
    keyed = [f"plan-{case_id[:12]}"]
    assert artifacts(api, key={"any_": keyed}), "the plan artifact exists"
    assert artifacts(api, flow_run_id={"any_": [flow_run_id]})
    assert any(uid in entry["message"] for entry in logs_of(api, flow_run_id)), (
        "Prefect's own log lines name the run (and so the leaver)"
    )

    # a year and a day later (retention_days is 365 by default)
    with Session(stack.engine) as session:
        session.execute(
            update(Case)
            .where(Case.id == case_id)  # type: ignore[arg-type]
            .values(updated_at=datetime.now(UTC) - timedelta(days=366))
        )
        session.commit()
    run_retention(stack)

    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        assert case.status == CaseStatus.REJECTED
        assert case.display_name == ERASED
        assert case.flow_run_id is None  # the case no longer names a run that is gone
    assert prefect("GET", f"{api}/flow_runs/{flow_run_id}").status_code == 404
    assert artifacts(api, key={"any_": keyed}) == []
    assert artifacts(api, flow_run_id={"any_": [flow_run_id]}) == []
    (erased,) = prefect_erasures(stack)
    assert erased["cases"] == [case_id]
    assert erased["flow_runs_deleted"] == 1
    assert erased["artifacts_deleted"] >= 1
    assert erased["problems"] == []
    # Prefect's vacuum deletes the log lines of the deleted run
    wait_until(lambda: logs_of(api, flow_run_id) == [], "the run's logs are deleted", timeout=180)

    # running retention again finds nothing more to delete in Prefect
    run_retention(stack)
    assert len(prefect_erasures(stack)) == 1
