"""A case keeps moving without a person: a run killed half-way through revocation is
recovered, a run forced awake from the Prefect API waits again, and an approval whose
run did not wake is handed to it by the dispatcher."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import Stack, start_stack
from fastapi.testclient import TestClient
from sqlmodel import Session
from support import (
    can_bind,
    csrf_of,
    decide,
    flow_run,
    groups_with,
    is_locked,
    link_in,
    run_of,
    send_leaver,
    text_of,
    wait_for_state,
)

from offboarding.domain.audit import events_for_case, verify_chain
from offboarding.domain.models import Case, CaseStatus
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.web import create_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def recovering_stack(tmp_path_factory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """The embedded default, with short connector timeouts and quick recovery."""
    yield from start_stack(
        tmp_path_factory.mktemp("recovery"),
        None,
        smtp_server,
        connector={"timeout_seconds": 1},
        retry_delays_seconds=[1.0] * 20,
        recovery_delays_seconds=[1.0, 2.0, 5.0],
        dispatch_interval_seconds=1.0,
    )


def start_case(stack: Stack, employee_id: str, uid: str, name: str) -> tuple[str, str, str]:
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    email = stack.mailbox.wait_for(lambda m: case_id in text_of(m) and "/approvals/" in text_of(m))
    return case_id, flow_run_id, link_in(email[0])


def case_of(stack: Stack, case_id: str) -> Case:
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        return case


def actions(stack: Stack, case_id: str) -> list[str]:
    return [e.action for e in events_for_case(stack.engine, case_id)]


def wait_until(predicate, *, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def flow_run_process(flow_run_id: str) -> int:
    """The pid of the process executing this flow run (found by its environment)."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no process runs flow run {flow_run_id}")


def approve_and_kill_half_way(stack: Stack, case_id: str, link: str, kill) -> float:  # type: ignore[no-untyped-def]
    """Approve; the moment the first grant is revoked the directory stops answering, so the
    run is stuck half-way, and `kill` strikes there. Returns when it struck."""
    slapd = stack.directory.pid
    with ThreadPoolExecutor(1) as pool:
        approval = pool.submit(decide, link, "approve")
        wait_until(
            lambda: "revocation.step" in actions(stack, case_id),
            timeout=90,
            what="the first revocation step",
        )
        os.kill(slapd, signal.SIGSTOP)
        try:
            assert approval.result(timeout=60).status_code == 200
            kill()
            return time.monotonic()
        finally:
            os.kill(slapd, signal.SIGCONT)


def test_a_run_killed_half_way_through_revocation_is_recovered_and_completes(
    recovering_stack,
) -> None:  # type: ignore[no-untyped-def]
    stack = recovering_stack
    uid, dn = "ddeboer", f"uid=ddeboer,{recovering_stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    assert groups_with(admin, stack.directory.groups_base, dn, uid)
    case_id, flow_run_id, link = start_case(stack, "E1002", uid, "Daan de Boer")
    killed_at = approve_and_kill_half_way(
        stack, case_id, link, lambda: os.kill(flow_run_process(flow_run_id), signal.SIGKILL)
    )
    assert case_of(stack, case_id).status == CaseStatus.REVOKING
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", timeout=120)
    recovered_in = time.monotonic() - killed_at
    print(f"flow-run process killed: case completed {recovered_in:.1f} s later")
    assert recovered_in < 120
    assert run["state"]["type"] == "COMPLETED"
    case = case_of(stack, case_id)
    assert case.status == CaseStatus.COMPLETED and case.recovery_attempts >= 1
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    assert is_locked(admin, dn)
    admin.unbind()
    assert not can_bind(stack.directory.url, dn, stack.password)
    trail = events_for_case(stack.engine, case_id)
    assert "run.recovered" in [e.action for e in trail]
    done = [e.details for e in trail if e.action == "revocation.step" and e.outcome == "done"]
    assert len(done) == len(set(done)), "a grant was revoked twice"
    assert verify_chain(stack.engine).ok


def test_a_waiting_run_forced_awake_waits_again_and_its_links_still_work(
    recovering_stack,
) -> None:  # type: ignore[no-untyped-def]
    stack = recovering_stack
    case_id, flow_run_id, link = start_case(stack, "E1003", "evisser", "Emma Visser")
    paused = flow_run(stack.running.api_url, flow_run_id)["state"]
    forced = httpx.post(
        f"{stack.running.api_url}/flow_runs/{flow_run_id}/set_state",
        json={"state": {"type": "SCHEDULED"}, "force": True},
    )
    assert forced.status_code in (200, 201), forced.text

    def waits_again() -> bool:
        state = flow_run(stack.running.api_url, flow_run_id)["state"]
        return state["type"] == "PAUSED" and state["id"] != paused["id"]

    wait_until(waits_again, timeout=90, what="the run to wait for a decision again")
    assert "decision.missing" in actions(stack, case_id)
    assert case_of(stack, case_id).status == CaseStatus.AWAITING_APPROVAL
    assert "revocation.step" not in actions(stack, case_id)  # nothing was revoked

    assert decide(link, "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert case_of(stack, case_id).status == CaseStatus.COMPLETED


class UnreachableRuns(RunGateway):
    """A gateway whose resume never gets through (Prefect busy or restarting)."""

    async def resume(self, flow_run_id, run_input, *, wait_seconds=5.0):  # type: ignore[no-untyped-def, override]
        return False


def test_an_approval_that_did_not_reach_its_run_is_delivered_by_the_dispatcher(
    recovering_stack,
) -> None:  # type: ignore[no-untyped-def]
    stack = recovering_stack
    case_id, flow_run_id, link = start_case(stack, "E1009", "lvos", "Lotte Vos")
    path = "/" + link.split("/", 3)[3]
    app = create_app(stack.services, UnreachableRuns(stack.settings.deployment), dispatch=False)
    with TestClient(app) as browser:
        page = browser.get(path)
        assert page.status_code == 200
        result = browser.post(path, data={"decision": "approve", "csrf_token": csrf_of(page.text)})
    assert result.status_code == 200
    assert "run.resume_pending" in actions(stack, case_id)
    # the service's dispatcher hands the recorded decision to the sleeping run
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert "run.resumed" in actions(stack, case_id)


class DyingRuns(RunGateway):
    """A gateway whose resume never returns: as when the page's process ends half-way."""

    async def resume(self, flow_run_id, run_input, *, wait_seconds=5.0):  # type: ignore[no-untyped-def, override]
        raise RuntimeError("the web process ended while handing the decision over")


def test_a_decision_whose_page_ended_half_way_is_delivered_after_the_grace(
    recovering_stack,
) -> None:  # type: ignore[no-untyped-def]
    """The decision is recorded, then the page's process ends before it resumes the run or
    records how that went: the dispatcher waits `HANDOVER_GRACE` (the page might still be
    handing it over), then delivers it itself."""
    from offboarding.orchestration.dispatcher import HANDOVER_GRACE

    stack = recovering_stack
    case_id, flow_run_id, link = start_case(stack, "E1010", "rpeters", "Ruben Peters")
    path = "/" + link.split("/", 3)[3]
    app = create_app(stack.services, DyingRuns(stack.settings.deployment), dispatch=False)
    with TestClient(app, raise_server_exceptions=False) as browser:
        page = browser.get(path)
        assert page.status_code == 200
        ended = browser.post(path, data={"decision": "approve", "csrf_token": csrf_of(page.text)})
        assert ended.status_code == 500
    trail = actions(stack, case_id)
    assert "decision.recorded" in trail
    assert "run.resumed" not in trail and "run.resume_pending" not in trail
    recorded = next(
        e for e in events_for_case(stack.engine, case_id) if e.action == "decision.recorded"
    )
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    resumed = [e for e in events_for_case(stack.engine, case_id) if e.action == "run.resumed"]
    assert [e.actor for e in resumed] == ["dispatcher"]
    assert resumed[0].at - recorded.at >= HANDOVER_GRACE


def test_the_runner_killed_half_way_through_revocation_is_restarted_and_the_case_completes(
    recovering_stack,
) -> None:  # type: ignore[no-untyped-def]
    """The whole runner (and the flow run inside it) dies: the supervisor restarts it,
    the orphaned run is marked crashed, and the dispatcher reschedules it."""
    stack = recovering_stack
    uid, dn = "tbos", f"uid=tbos,{recovering_stack.directory.users_base}"
    case_id, flow_run_id, link = start_case(stack, "E1008", uid, "Thijs Bos")
    supervisor = stack.running.supervisor
    assert supervisor is not None
    runner, restarts = supervisor.pid, supervisor.restarts
    assert runner is not None
    # the runner and every flow run it started
    killed_at = approve_and_kill_half_way(
        stack, case_id, link, lambda: os.killpg(runner, signal.SIGKILL)
    )
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", timeout=120)
    recovered_in = time.monotonic() - killed_at
    print(f"runner killed: case completed {recovered_in:.1f} s later")
    assert recovered_in < 120
    assert run["state"]["type"] == "COMPLETED"
    assert supervisor.restarts > restarts and supervisor.pid != runner
    assert case_of(stack, case_id).status == CaseStatus.COMPLETED
    admin = stack.directory.admin_connection()
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    assert is_locked(admin, dn)
    admin.unbind()
    assert "run.recovered" in actions(stack, case_id)
    assert verify_chain(stack.engine).ok
