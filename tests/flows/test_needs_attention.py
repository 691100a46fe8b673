"""Failures leave a case a person can see and resume: transient ones are retried,
permanent ones stop the case in "needs attention" with what was and was not done."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import Stack, start_stack
from sqlmodel import Session
from support import (
    can_bind,
    decide,
    groups_with,
    is_locked,
    link_in,
    text_of,
    wait_for_state,
    waiting_case,
)

from offboarding.domain.audit import events_for_case, verify_chain
from offboarding.domain.models import Case, CaseStatus

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fragile_stack(tmp_path_factory, smtp_server, new_postgres_database) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """A directory where emptying a group is a permanent error, with short timeouts and retries."""
    yield from start_stack(
        tmp_path_factory.mktemp("fragile"),
        new_postgres_database(),
        smtp_server,
        connector={"empty_group_placeholder": None, "timeout_seconds": 1},
        retry_delays_seconds=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    )


def start_case(stack: Stack, employee_id: str, uid: str, name: str) -> tuple[str, str, str]:
    case_id, flow_run_id, requests = waiting_case(stack, employee_id, uid, name)
    return case_id, flow_run_id, link_in(requests[0])


def status_of(stack: Stack, case_id: str) -> Case:
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        return case


def wait_for_action(stack: Stack, case_id: str, action: str, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if action in [e.action for e in events_for_case(stack.engine, case_id)]:
            return True
        time.sleep(0.02)
    return False


def wait_until_retrying(stack: Stack, flow_run_id: str, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = httpx.post(
            f"{stack.running.api_url}/task_runs/filter",
            json={"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}},
        ).json()
        # a task run may exist before its first state does: look only at what is there
        if any(
            t.get("run_count", 0) > 1
            or (t.get("state") or {}).get("name") in ("AwaitingRetry", "Retrying")
            for t in tasks
        ):
            return True
        # a step retried inside its task, or a read of the flow's own, says so in the run log
        logs = httpx.post(
            f"{stack.running.api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}, "level": {"ge_": 30}}},
        ).json()
        if any("transient failure; trying again" in entry["message"] for entry in logs):
            return True
        time.sleep(0.3)
    return False


def test_a_directory_outage_during_the_run_is_retried_and_the_case_completes(fragile_stack) -> None:  # type: ignore[no-untyped-def]
    stack = fragile_stack
    case_id, flow_run_id, link = start_case(stack, "E1020", "zkuipers", "Zoë Kuipers")
    slapd = stack.directory.pid
    # Approve in the background; the moment the decision is recorded (the page no longer
    # needs the directory, the run has not resumed yet) the directory stops answering.
    with ThreadPoolExecutor(1) as pool:
        approval = pool.submit(decide, link, "approve")
        recorded = wait_for_action(stack, case_id, "decision.recorded", timeout=60)
        os.kill(slapd, signal.SIGSTOP)  # connections now hang
        try:
            assert recorded and approval.result(timeout=60).status_code == 200
            retrying = wait_until_retrying(stack, flow_run_id, timeout=60)
        finally:
            os.kill(slapd, signal.SIGCONT)  # the directory is back (also when this failed)
    assert retrying, "a step should have failed transiently and been retried"
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert status_of(stack, case_id).status == CaseStatus.COMPLETED
    dn = f"uid=zkuipers,{stack.directory.users_base}"
    assert not can_bind(stack.directory.url, dn, stack.password)


def test_a_permanent_failure_stops_in_needs_attention_and_resumes_after_a_fix(
    fragile_stack,
) -> None:  # type: ignore[no-untyped-def]
    stack = fragile_stack
    org = stack.org
    only_member_group = f"cn=legacy-ftp,{stack.directory.groups_base}"
    case_id, flow_run_id, link = start_case(stack, org.leaver_id, org.leaver_uid, org.leaver_name)
    assert decide(link, "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", timeout=180)
    assert run["state"]["type"] == "FAILED"

    case = status_of(stack, case_id)
    assert case.status == CaseStatus.NEEDS_ATTENTION
    assert "legacy-ftp" in case.status_detail
    admin = stack.directory.admin_connection()
    left = groups_with(admin, stack.directory.groups_base, org.leaver_dn, org.leaver_uid)
    assert left == [only_member_group]  # everything else was done
    assert is_locked(admin, org.leaver_dn)
    notice = stack.mailbox.wait_for(
        lambda m: (
            case_id in text_of(m)
            and "legacy-ftp" in text_of(m)
            and "hbakker@example.test" in str(m["To"])
        )
    )
    assert notice
    assert "case.needs_attention" in [e.action for e in events_for_case(stack.engine, case_id)]

    # a person fixes the cause (the group gets another member) and retries the run
    admin.modify(
        only_member_group,
        {"member": [("MODIFY_ADD", [f"uid=bmulder,{stack.directory.users_base}"])]},
    )
    response = httpx.post(
        f"{stack.running.api_url}/flow_runs/{flow_run_id}/set_state",
        json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
    )
    assert response.status_code in (200, 201), response.text
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert groups_with(admin, stack.directory.groups_base, org.leaver_dn, org.leaver_uid) == []
    admin.unbind()
    assert status_of(stack, case_id).status == CaseStatus.COMPLETED
    assert verify_chain(stack.engine).ok
