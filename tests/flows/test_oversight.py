"""The management view through a real Prefect server: the served `oversight` deployment
refreshes the keyed table artifact, read back through Prefect's API at each stage of a case."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import Session, select
from support import (
    decide,
    link_in,
    prefect,
    wait_for_state,
    waiting_case,
)

from approvals.requests import renew_approvals
from flows.oversight import OVERVIEW_KEY, erase_overview_history
from offboarding.domain.models import ApprovalRequest, Case, CaseStatus

pytestmark = pytest.mark.e2e
LEAVER = ("E1006", "bmulder", "Bram Mulder")


def oversight_deployment(stack: Any, timeout: float = 120) -> str:
    """The id of this installation's oversight deployment, once the runner serves it."""
    name = f"oversight/oversight-{stack.settings.instance}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = prefect("GET", f"{stack.running.api_url}/deployments/name/{name}")
        if found.status_code == 200:
            return str(found.json()["id"])
        time.sleep(0.3)
    raise AssertionError(f"the runner does not serve {name}")


def run_oversight(stack: Any) -> tuple[str, list[dict[str, str]]]:
    """Start the deployment, wait for it, and read the table it published (with the run id)."""
    api = stack.running.api_url
    created = prefect(
        "POST", f"{api}/deployments/{oversight_deployment(stack)}/create_flow_run", json={}
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    run = wait_for_state(api, run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    found = prefect(
        "POST",
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [OVERVIEW_KEY]}, "flow_run_id": {"any_": [run_id]}}},
    ).json()
    assert len(found) == 1, found
    (artifact,) = found
    assert artifact["type"] == "table"
    assert artifact["description"].startswith("Made ") and "Gemaakt " in artifact["description"]
    data = artifact["data"]
    return run_id, json.loads(data) if isinstance(data, str) else data


def latest_overview(stack: Any) -> list[dict[str, str]]:
    """The overview as the Prefect UI shows it now (the newest version of the keyed artifact)."""
    latest = prefect("GET", f"{stack.running.api_url}/artifacts/{OVERVIEW_KEY}/latest")
    assert latest.status_code == 200, latest.text
    data = latest.json()["data"]
    return json.loads(data) if isinstance(data, str) else data  # type: ignore[no-any-return]


def overview_row(stack: Any, case_id: str, shows: str, timeout: float = 60) -> dict[str, str]:
    """The case's row in the newest overview, once its state reads `shows...` (a run skips
    its refresh when one was made a moment ago; the dispatcher then publishes it)."""
    deadline = time.monotonic() + timeout
    row: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = [r for r in latest_overview(stack) if r["Case / Zaak"] == case_id[:12]]
        if rows and rows[0]["State"].startswith(shows):
            return rows[0]
        row = rows[0] if rows else {}
        time.sleep(0.3)
    raise AssertionError(f"the overview never showed {case_id[:12]} as {shows!r}: {row}")


def warnings_of(stack: Any, run_id: str, expected: str, timeout: float = 30) -> list[str]:
    """The run's warning lines, once one containing `expected` arrived (logs ship in batches)."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        logs = prefect(
            "POST",
            f"{stack.running.api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [run_id]}, "level": {"ge_": 30}}},
        ).json()
        lines = [entry["message"] for entry in logs]
        if any(expected in line for line in lines):
            return lines
        time.sleep(0.3)
    raise AssertionError(f"no warning with {expected!r} in {lines}")


def set_expiry(
    stack: Any, case_id: str, expires: dict[str, datetime] | datetime
) -> dict[str, datetime]:
    """Move the case's approval links' expiry (time passing); returns the old values."""
    with Session(stack.engine) as session:
        requests = session.exec(
            select(ApprovalRequest).where(ApprovalRequest.case_id == case_id)
        ).all()
        before = {r.id: r.expires_at for r in requests}
        for request in requests:
            request.expires_at = expires[request.id] if isinstance(expires, dict) else expires
            session.add(request)
        session.commit()
    return before


def case_status(stack: Any, case_id: str) -> CaseStatus:
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        return case.status


def row_of(rows: list[dict[str, str]], case_id: str) -> dict[str, str]:
    (row,) = [r for r in rows if r["Case / Zaak"] == case_id[:12]]
    return row


def test_the_overview_follows_a_case_from_approval_to_completion(stack) -> None:  # type: ignore[no-untyped-def]
    employee_id, uid, name = LEAVER
    case_id, flow_run_id, requests = waiting_case(stack, employee_id, uid, name)
    approvers = sorted(
        person.display_name
        for person in stack.services.people.managers()
        if person.employee_id not in (stack.org.requester_id, employee_id)
    )
    assert len(approvers) >= 2

    # the overview was refreshed when the run began to wait
    waiting = overview_row(stack, case_id, "awaiting approval since ")
    assert waiting["Leaver / Vertrekker"] == f"{name} ({employee_id})"
    assert waiting["State"].startswith("awaiting approval since ")
    assert f"asked: {', '.join(approvers)} until " in waiting["State"]
    assert f"gevraagd: {', '.join(approvers)} tot " in waiting["Stand"]
    assert waiting["Deadline / Uiterlijk"]  # the links' expiry
    assert waiting["Breach / Overschreden"] == ""
    assert waiting["Time to revoke / Tijd tot intrekking"] == ""
    assert int(waiting["Left: directory / Nog te doen: directory"]) > 0

    # the links expire before anyone decides: the dispatcher hands the case to a person
    # (never approves), and the overview says so
    set_expiry(stack, case_id, datetime.now(UTC) - timedelta(minutes=1))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and case_status(stack, case_id) != CaseStatus.NEEDS_ATTENTION:
        time.sleep(0.3)
    assert case_status(stack, case_id) == CaseStatus.NEEDS_ATTENTION
    _, rows = run_oversight(stack)
    late = row_of(rows, case_id)
    assert late["State"].startswith("needs attention: "), late
    assert late["Stand"].startswith("vraagt aandacht: "), late
    # `offboarding approvals resend`: fresh links, and the case waits for a decision again
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
    assert case is not None
    renew_approvals(stack.services, case, actor="test")
    assert case_status(stack, case_id) == CaseStatus.AWAITING_APPROVAL

    assert decide(link_in(requests[0]), "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]

    done = overview_row(stack, case_id, "completed ")  # refreshed as the case completed
    assert done["State"].startswith("completed ") and done["Stand"].startswith("afgerond ")
    assert done["Time to revoke / Tijd tot intrekking"].count(":") == 1  # e.g. "00:01"
    assert done["Deadline / Uiterlijk"] == "" and done["Breach / Overschreden"] == ""
    assert done.get("Left: directory / Nog te doen: directory", "") == ""  # nothing left

    # retention: every version but the newest goes; the newest still shows the case
    api = stack.running.api_url
    versions = prefect(
        "POST", f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [OVERVIEW_KEY]}}}
    ).json()
    assert len(versions) >= 2
    with temporary_settings({PREFECT_API_URL: api}):
        erased = erase_overview_history(datetime.now(UTC))
    assert erased >= len(versions) - 1  # (one more if a scheduled run added a version)
    (left,) = prefect(
        "POST", f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [OVERVIEW_KEY]}}}
    ).json()
    latest = prefect("GET", f"{api}/artifacts/{OVERVIEW_KEY}/latest").json()
    assert left["data"] == latest["data"]  # the version kept is the one the UI shows
    assert case_id[:12] in left["data"]
