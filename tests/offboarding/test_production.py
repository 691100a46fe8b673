"""Production mode: PostgreSQL for the service and for Prefect, flows run by the workers of
a Prefect process work pool (two worker processes here), no embedded runner.

One leaver goes the whole way (signed event → mailed link → approve → revoked in slapd),
and the run is seen to be taken by one of the pool's workers.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from support import (
    can_bind,
    decide,
    groups_with,
    is_locked,
    link_in,
    run_of,
    until,
    wait_for_state,
    waiting_case,
)

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.orchestration.supervisor import runs_submitted_by
from offboarding.wiring.db import make_engine
from offboarding.wiring.processes import free_port
from offboarding.wiring.service import RunningService, production_problem, run_service
from offboarding.wiring.settings import Settings, SmtpSettings

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "offboarding.cli"]
POOL = "offboarding"  # the work pool prefect.yaml names
LEAVER = ("E1006", "bmulder", "Bram Mulder")


@dataclass
class ProductionStack:
    """What the helpers in tests/support.py look for on a stack."""

    running: RunningService
    settings: Settings
    directory: LocalDirectory
    org: DemoOrg
    password: str
    mailbox: Any
    engine: Engine


@pytest.fixture(scope="module")
def production(
    tmp_path_factory: pytest.TempPathFactory,
    smtp_server: tuple[str, int, Any],
    new_postgres_database: Callable[[], str],
) -> Iterator[ProductionStack]:
    tmp = tmp_path_factory.mktemp("production")
    password = "Pw-" + secrets.token_urlsafe(12)
    with LocalDirectory.start(tmp / "slapd", admin_password=secrets.token_urlsafe(16)) as directory:
        org = seed_demo_org(directory, password=password)
        host, port, mailbox = smtp_server
        settings = Settings(
            home=tmp / "home",
            database_url=new_postgres_database(),
            prefect_database_url=new_postgres_database(),
            workers=2,
            work_pool_concurrency=3,
            web_processes=2,
            port=free_port(),
            prefect_port=free_port(),
            smtp=SmtpSettings(host=host, port=port, starttls=False),
            hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
            signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
            connectors=[directory.connector_config(managers_group=org.managers_group_dn)],
        )
        with run_service(settings, quiet=True, production=True) as running:
            engine = make_engine(settings.resolved_database_url)
            try:
                yield ProductionStack(running, settings, directory, org, password, mailbox, engine)
            finally:
                engine.dispose()


def workers_of_pool(api_url: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{api_url}/work_pools/{POOL}/workers/filter", json={}, timeout=30)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def submitted_by(stack: ProductionStack, flow_run_id: str) -> str:
    """The name of the pool's worker that submitted the run (from Prefect's own events,
    which are stored a moment after they happen)."""
    keeper = stack.running.keeper
    assert keeper is not None
    return str(
        until(
            lambda: next(
                (
                    name
                    for name in keeper.names
                    if flow_run_id
                    in runs_submitted_by(stack.running.api_url, name, since=keeper.started)
                ),
                None,
            ),
            f"a worker's submitted-flow-run event for {flow_run_id}",
            timeout=30,
        )
    )


def test_the_pool_has_the_deployments_its_limit_and_two_workers(
    production: ProductionStack,
) -> None:
    api, settings = production.running.api_url, production.settings
    pool = httpx.get(f"{api}/work_pools/{POOL}", timeout=30).json()
    assert pool["type"] == "process"
    assert pool["concurrency_limit"] == 3
    for name in (settings.deployment, settings.retention_deployment, settings.oversight_deployment):
        deployment = httpx.get(f"{api}/deployments/name/{name}", timeout=30).json()
        assert deployment["work_pool_name"] == POOL, name
    deployment = httpx.get(f"{api}/deployments/name/{settings.deployment}", timeout=30).json()
    assert deployment["entrypoint"] == "flows/offboard_leaver.py:offboard_leaver"
    step = deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    assert (Path(step["directory"]) / "prefect.yaml").exists()
    wanted = {f"{settings.instance}-{os.uname().nodename}-{n}" for n in (1, 2)}
    deadline = time.monotonic() + 60
    while {w["name"] for w in workers_of_pool(api)} != wanted and time.monotonic() < deadline:
        time.sleep(0.5)  # a worker registers with its first heartbeat
    assert {w["name"] for w in workers_of_pool(api)} == wanted
    assert production.running.supervisor is None  # no embedded runner in production mode
    assert not (settings.home / "run" / "runner.pid").exists()


def test_a_leaver_is_offboarded_by_the_pools_workers(production: ProductionStack) -> None:
    stack = production
    employee_id, uid, name = LEAVER
    dn = f"uid={uid},{stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    assert groups_with(admin, stack.directory.groups_base, dn, uid)
    _, flow_run_id, requests = waiting_case(stack, employee_id, uid, name)
    api = stack.running.api_url
    first_worker = submitted_by(stack, flow_run_id)
    result = decide(link_in(requests[0]), "approve")
    assert result.status_code == 200, result.text

    run = wait_for_state(api, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["work_pool_name"] == POOL
    assert first_worker in {w["name"] for w in workers_of_pool(api)}
    # both starts of the run (intake, and the wake-up after the approval) were forked by the
    # machine's warm starter, not new interpreters
    starter_log = (stack.settings.home / "logs" / "warm-starter.log").read_text()
    assert starter_log.count(f"warm start of flow run {flow_run_id}:") == 2, starter_log
    deployment = httpx.get(f"{api}/deployments/name/{stack.settings.deployment}", timeout=30)
    assert "warm_client" in deployment.json()["job_variables"]["command"]
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    assert is_locked(admin, dn)
    assert not can_bind(stack.directory.url, dn, stack.password)
    admin.unbind()


def test_killed_workers_are_started_again_and_the_waiting_case_completes(
    production: ProductionStack,
) -> None:
    stack = production
    # the case waits for its approval: no process holds its run
    _, flow_run_id, requests = waiting_case(stack, "E1020", "zkuipers", "Zoë Kuipers")
    api = stack.running.api_url
    keeper = stack.running.keeper
    assert keeper is not None
    # the keeper finds which runs a worker submitted (to crash only a dead worker's own runs)
    deadline = time.monotonic() + 60
    submitted: set[str] = set()
    while flow_run_id not in submitted and time.monotonic() < deadline:
        submitted = set().union(
            *(runs_submitted_by(api, name, since=keeper.started) for name in keeper.names)
        )
        time.sleep(0.5)  # events are stored a moment after they happen
    assert flow_run_id in submitted
    dead = list(stack.running.workers)
    for worker in dead:
        worker.kill()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        fresh not in dead and fresh.poll() is None for fresh in stack.running.workers
    ):
        time.sleep(0.2)
    assert all(fresh not in dead for fresh in stack.running.workers), "no worker was restarted"
    assert keeper.restarts == 2
    assert all(worker in stack.running.processes for worker in stack.running.workers)

    assert decide(link_in(requests[0]), "approve").status_code == 200
    run = wait_for_state(api, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    dn = f"uid=zkuipers,{stack.directory.users_base}"
    assert not can_bind(stack.directory.url, dn, stack.password)


def test_a_run_is_orphaned_only_when_its_process_on_this_machine_is_gone() -> None:
    from prefect.client.schemas.objects import FlowRun

    from offboarding.orchestration.supervisor import process_gone

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()

    def run(pid: str | None) -> FlowRun:
        return FlowRun(flow_id="00000000-0000-0000-0000-000000000000", infrastructure_pid=pid)

    assert process_gone(run(f"{host}:{gone.pid}"))
    assert process_gone(run(str(gone.pid)))  # Prefect's process worker records the bare pid
    assert not process_gone(run(f"{host}:{os.getpid()}"))  # alive
    assert not process_gone(run(f"elsewhere.example:{gone.pid}"))  # another machine's worker
    assert not process_gone(run(None))  # a worker may be starting it


def test_two_web_processes_share_the_port_and_wake_the_dispatcher(
    production: ProductionStack,
) -> None:
    """Events sent at once are spread over both web processes; each gets its case and its
    run (the other process wakes the dispatcher). A killed web process is started again."""
    stack = production
    wakes, extra = stack.running.wakes, stack.running.web_processes
    assert wakes is not None and len(extra) == 1
    assert extra[0].pid in wakes.ready
    leavers = [
        e
        for e in stack.org.employee_ids
        if e not in {LEAVER[0], "E1020", stack.org.requester_id, *stack.org.manager_ids}
    ][:12]
    before = wakes.wakes
    answers = send_at_once(stack, leavers)
    assert [a.status_code for a in answers] == [202] * len(leavers), [a.text for a in answers]
    assert len({a.json()["case_id"] for a in answers}) == len(leavers)
    assert wakes.wakes > before, "no event reached the second web process"
    for answer in answers:
        run_of(stack, answer.json()["case_id"], timeout=120)

    dead = extra[0]
    dead.kill()
    until(
        lambda: (
            stack.running.web_processes[0] is not dead
            and stack.running.web_processes[0].pid in wakes.ready
        ),
        "the web process to be started again",
        timeout=120,
    )
    assert stack.running.web_keeper is not None and stack.running.web_keeper.restarts == 1
    assert stack.running.web_processes[0] in stack.running.processes
    assert dead not in stack.running.processes
    answers = send_at_once(stack, [stack.org.manager_ids[0]] * 4)  # copies of one event
    codes = [a.status_code for a in answers]
    assert codes.count(202) == 1 and set(codes) <= {200, 202, 409}, codes


def test_the_dispatcher_reads_more_runs_than_prefect_returns_at_once(
    production: ProductionStack,
) -> None:
    """Prefect's API returns at most 200 runs per filter; with more open cases than that,
    the dispatcher still sees every one of them."""
    import asyncio
    import uuid

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from offboarding.orchestration.runs import READ_PAGE, RunGateway

    stack = production
    answer = send_at_once(stack, [stack.org.manager_ids[-1]])[0]
    assert answer.status_code in (200, 202), answer.text
    real = run_of(stack, answer.json()["case_id"])
    absent = [str(uuid.uuid4()) for _ in range(READ_PAGE + 50)]
    ids = [*absent[:120], real, *absent[120:]]
    with temporary_settings(updates={PREFECT_API_URL: stack.running.api_url}):
        found = asyncio.run(RunGateway(stack.settings.deployment).read(ids))
    assert list(found) == [real]


def send_at_once(stack: ProductionStack, employee_ids: list[str]) -> list[httpx.Response]:
    """One signed event per id (a copy for a repeated id), all released together, each on
    its own connection; the last working day is far ahead, so the runs wait (SCHEDULED)."""
    from datetime import date, timedelta

    from offboarding.intake.client import termination_event
    from offboarding.intake.hris import SIGNATURE_HEADER, sign

    events = {
        employee_id: termination_event(
            employee_id=employee_id,
            email=f"{employee_id.lower()}@example.test",
            display_name=f"Leaver {employee_id}",
            requested_by=stack.org.requester_id,
            last_working_day=date.today() + timedelta(days=60),
        )
        for employee_id in employee_ids
    }
    secret = stack.settings.hris_secret.get_secret_value()
    gate = threading.Barrier(len(employee_ids))

    def post(employee_id: str) -> httpx.Response:
        body = json.dumps(events[employee_id]).encode()
        with httpx.Client(timeout=60) as client:
            gate.wait()
            return client.post(
                f"{stack.running.web_url}/hris/events",
                content=body,
                headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)},
            )

    with ThreadPoolExecutor(len(employee_ids)) as pool:
        return list(pool.map(post, employee_ids))


# -- refusals ------------------------------------------------------------------------------


def test_production_refuses_sqlite_naming_the_setting(
    tmp_path: Path, new_postgres_database: Callable[[], str]
) -> None:
    unset = Settings(home=tmp_path / "a", connectors=[], prefect_database_url="postgresql://x/y")
    problem = production_problem(unset)
    assert problem is not None and "database_url (OFFBOARDING_DATABASE_URL)" in problem
    sqlite = Settings(
        home=tmp_path / "b",
        connectors=[],
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        prefect_database_url="postgresql://x/y",
    )
    assert "database_url" in (production_problem(sqlite) or "")
    no_prefect = Settings(
        home=tmp_path / "c",
        connectors=[],
        database_url="postgresql://postgres@127.0.0.1:5432/x",
        prefect_database_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
    )
    problem = production_problem(no_prefect)
    assert problem is not None and "prefect_database_url" in problem
    assert "OFFBOARDING_PREFECT_DATABASE_URL" in problem
    with pytest.raises(RuntimeError, match="prefect_database_url"):
        with run_service(no_prefect, production=True):
            pytest.fail("production mode must not start on SQLite")
    assert not (tmp_path / "c").exists()  # refused before anything was created


def test_up_production_says_in_one_line_which_setting_to_change(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[[connectors]]\nkind = "ldap"\nurl = "ldap://127.0.0.1:1"\nbind_dn = "cn=x"\n'
        'bind_password = "unused"\nusers_base = "ou=people"\ngroups_base = "ou=groups"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFBOARDING_", "PREFECT_"))}
    started = [  # both at once: each spends most of its time importing
        subprocess.Popen(
            [*CLI, *command],
            cwd=tmp_path,
            env={**env, "OFFBOARDING_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in (["up", "--production"], ["worker"])
    ]
    for process in started:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, stdout + stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1, stderr
        assert "database_url (OFFBOARDING_DATABASE_URL)" in lines[0]
        assert "PostgreSQL" in lines[0]
    assert not (home / "prefect").exists() and not (home / "offboarding.db").exists()
