"""The service as `up` runs it: one instance per port and data dir, a supervised runner.

Real processes throughout: a Prefect server, the runner and its flow-run processes, and
PostgreSQL, where a table lock holds a flow run in RUNNING for as long as a test needs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from support import seed_prefect_database, until, wait_for_state

from flows.apply_retention import apply_retention
from flows.offboard_leaver import offboard_leaver
from offboarding.wiring.db import create_schema, make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.processes import free_port, group_members, port_problem, wait_until_gone
from offboarding.wiring.service import RunningService, _wait_for_prefect_server, run_service
from offboarding.wiring.settings import Settings

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "offboarding.cli"]
UNREACHABLE_DIRECTORY = {  # built, never contacted: these runs stop before they need it
    "kind": "ldap",
    "url": "ldap://127.0.0.1:1",
    "bind_dn": "cn=offboarding",
    "bind_password": "unused",
    "users_base": "ou=people",
    "groups_base": "ou=groups",
}


def settings_for(home: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "database_url": database_url,
        "port": free_port(),
        "prefect_port": free_port(),
        "connectors": [UNREACHABLE_DIRECTORY],
        **overrides,
    }
    settings = Settings(**values)
    if settings.resolved_prefect_database_url.startswith("sqlite"):
        seed_prefect_database(home, home.parent)  # Prefect's migrations are not under test here
    return settings


def start_run(api_url: str, deployment: str, case_id: str) -> str:
    """A run of the case flow, as the web app creates one. Prefect answers 503 while its
    SQLite database is busy (its own client retries those too): try again, bounded."""
    for _attempt in range(20):
        found = httpx.get(f"{api_url}/deployments/name/{deployment}", timeout=30)
        if found.status_code == 503:
            continue
        found.raise_for_status()
        created = httpx.post(
            f"{api_url}/deployments/{found.json()['id']}/create_flow_run",
            json={"parameters": {"request": {"case_id": case_id}}},
            timeout=30,
        )
        if created.status_code == 503:
            continue
        created.raise_for_status()
        return str(created.json()["id"])
    raise AssertionError("Prefect kept answering 503")


def runner_group(home: Path) -> int:
    return int(json.loads((home / "run" / "runner.pid").read_text())["pgid"])


@contextmanager
def case_table_locked(database_url: str) -> Iterator[Callable[[], bool]]:
    """Hold an exclusive lock on the case table; yields "is a query waiting for it?"."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as holder, engine.connect() as observer:
            holder.execute(sqlalchemy.text('LOCK TABLE "case" IN ACCESS EXCLUSIVE MODE'))

            def someone_waits() -> bool:
                waiting = observer.execute(
                    sqlalchemy.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
                observer.rollback()
                return bool(waiting)

            yield someone_waits
            holder.rollback()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def database_url(new_postgres_database: Callable[[], str]) -> str:
    url = new_postgres_database()
    engine = make_engine(url)
    create_schema(engine)  # so the case table exists before the first run
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[RunningService]:
    settings = settings_for(tmp_path_factory.mktemp("service") / "home", database_url)
    with run_service(settings, quiet=True) as running:
        yield running


# -- one installation, one instance ------------------------------------------------------


def test_installations_get_their_own_deployment_names(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OFFBOARDING_CONFIG", os.devnull)
    one, other = Settings(home=tmp_path / "one"), Settings(home=tmp_path / "two")
    assert one.instance != other.instance
    assert one.deployment != other.deployment
    assert one.retention_deployment != other.retention_deployment
    assert Settings(home=tmp_path / "one").deployment == one.deployment  # stable per data dir
    assert one.deployment == f"offboard-leaver/offboard-leaver-{one.instance}"
    assert one.deployment.split("/")[0] == offboard_leaver.name
    assert one.retention_deployment.split("/")[0] == apply_retention.name
    named = Settings(home=tmp_path / "one", instance="payroll-nl")
    assert named.deployment == "offboard-leaver/offboard-leaver-payroll-nl"
    with pytest.raises(ValueError, match="not a valid name"):
        Settings(instance="Payroll/NL")


def test_a_stopped_service_leaves_no_events_client_bound_to_its_prefect_server(  # type: ignore[no-untyped-def]
    service: RunningService, tmp_path: Path, monkeypatch
) -> None:
    # Prefect makes one events client per process, bound to the API it first met; a service
    # started again in this process (the benchmarks) must not send to the stopped server.
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("OFFBOARDING_CONFIG", os.devnull)
    # a service of no processes on the running server's API: its stop only lets go of Prefect
    stopped = RunningService(settings=Settings(home=tmp_path / "home"), api_port=service.api_port)
    with temporary_settings(updates={PREFECT_API_URL: f"{stopped.api_url}"}):
        first = EventsWorker.instance()
        assert EventsWorker.instance() is first  # one per process, as long as it runs
        stopped.stop()
        again = EventsWorker.instance()
        try:
            assert again is not first
        finally:
            EventsWorker.drain_all(timeout=10, at_exit=False)


def test_a_second_service_on_the_same_prefect_port_refuses_to_start(  # type: ignore[no-untyped-def]
    service: RunningService, tmp_path: Path
) -> None:
    second = settings_for(tmp_path / "second", prefect_port=service.api_port)
    with pytest.raises(RuntimeError) as refused:
        with run_service(second, quiet=True):
            pytest.fail("the second service must not run")
    message = str(refused.value)
    assert f"127.0.0.1:{service.api_port}" in message
    assert "--prefect-port" in message and "OFFBOARDING_PREFECT_PORT" in message
    assert not (second.home / "logs" / "prefect-server.log").exists()  # nothing was started
    assert port_problem(second.host, second.port) is None
    # the first one is untouched, and nothing of the second was registered at its server
    assert httpx.get(f"{service.api_url}/health").status_code == 200
    assert httpx.get(f"{service.web_url}/healthz").status_code == 200
    assert httpx.get(f"{service.api_url}/deployments/name/{second.deployment}").status_code == 404
    assert httpx.get(f"{service.api_url}/deployments/name/{service.settings.deployment}").is_success


def test_a_busy_web_port_refuses_to_start(service: RunningService, tmp_path: Path) -> None:
    second = settings_for(tmp_path / "second", port=service.settings.port)
    with pytest.raises(RuntimeError) as refused:
        with run_service(second, quiet=True):
            pytest.fail("the second service must not run")
    message = str(refused.value)
    assert f"the web app cannot listen on 127.0.0.1:{service.settings.port}" in message
    assert "--port" in message and "OFFBOARDING_PORT" in message
    assert port_problem("127.0.0.1", second.prefect_port) is None  # no Prefect server started
    assert httpx.get(f"{service.web_url}/healthz").status_code == 200


def test_one_data_dir_runs_one_service(service: RunningService) -> None:
    same_home = settings_for(service.settings.home, service.settings.database_url)
    with pytest.raises(RuntimeError, match=r"another offboarding service .* data dir"):
        with run_service(same_home, quiet=True):
            pytest.fail("the second service must not run")
    assert (service.settings.home / "run" / "runner.pid").exists()  # the first one's, kept


def test_the_prefect_server_that_answers_must_be_ours(
    service: RunningService, tmp_path: Path
) -> None:
    server = service.processes[0]
    ours = service.settings.home.resolve() / "prefect"
    _wait_for_prefect_server(service.api_url, process=server, prefect_home=ours, log=tmp_path)
    with pytest.raises(RuntimeError, match=r"another Prefect server .* answers at"):
        _wait_for_prefect_server(
            service.api_url, process=server, prefect_home=tmp_path / "prefect", log=tmp_path
        )


def test_up_and_demo_say_in_one_line_which_port_is_taken(
    service: RunningService, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "keep.txt").write_text("an earlier demo's data")
    (home / "config.toml").write_text(
        "[[connectors]]\n" + "".join(f'{k} = "{v}"\n' for k, v in UNREACHABLE_DIRECTORY.items())
    )
    env = {**os.environ, "OFFBOARDING_HOME": str(home)}
    for command in ("up", "demo"):
        done = subprocess.run(
            [*CLI, command, "--port", str(free_port()), "--prefect-port", str(service.api_port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Offboarding service is running" not in done.stdout
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Could not start: "), done.stderr
        assert f"127.0.0.1:{service.api_port}" in lines[0] and "--prefect-port" in lines[0]
    assert (home / "demo" / "keep.txt").exists()  # refused before the demo wiped its dir


# -- the supervised runner ------------------------------------------------------------------


def test_a_killed_runner_is_restarted_and_its_running_runs_end_crashed(  # type: ignore[no-untyped-def]
    service: RunningService, database_url: str, caplog
) -> None:
    configure_logging()
    caplog.set_level(logging.INFO, logger="offboarding")
    api, home = service.api_url, service.settings.home
    with case_table_locked(database_url) as someone_waits:
        stuck = start_run(api, service.settings.deployment, "case-that-waits")
        assert wait_for_state(api, stuck, "RUNNING", "FAILED", "CRASHED")["state"]["type"] == (
            "RUNNING"
        )
        until(someone_waits, "the flow run to wait for the case table")
        group = runner_group(home)
        in_group = group_members(group)
        assert len(in_group) > 1  # the runner and the flow-run process it started

        os.kill(group, signal.SIGKILL)  # the runner only: its flow-run process lives on

        crashed = wait_for_state(api, stuck, "CRASHED", "FAILED", "COMPLETED")
        assert crashed["state"]["type"] == "CRASHED"
        assert "runner" in crashed["state"]["message"]
        assert wait_until_gone(group, timeout=10), "the orphaned flow-run process must be killed"

    until(lambda: runner_group(home) != group, "a new runner")
    assert service.supervisor is not None
    until(lambda: service.supervisor.restarts == 1, "the restart to complete")  # type: ignore[union-attr]
    picked = start_run(api, service.settings.deployment, "no-such-case")
    done = wait_for_state(api, picked, "COMPLETED", "FAILED", "CRASHED")
    assert done["state"]["type"] == "FAILED"  # run by the new runner: the case does not exist
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("flow runner exited unexpectedly") for m in messages)
    assert any(m.startswith("flow runner restarted") for m in messages)


def test_after_a_killed_service_the_next_start_cleans_up(  # type: ignore[no-untyped-def]
    tmp_path: Path, database_url: str
) -> None:
    settings = settings_for(tmp_path / "home", database_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "config.toml").write_text(
        f'database_url = "{database_url}"\n[[connectors]]\n'
        + "".join(f'{k} = "{v}"\n' for k, v in UNREACHABLE_DIRECTORY.items())
    )
    output = tmp_path / "up.out"
    ports = ["--port", str(settings.port), "--prefect-port", str(settings.prefect_port)]
    with output.open("wb") as out:
        up = subprocess.Popen(
            [*CLI, "up", *ports],
            cwd=tmp_path,
            env={**os.environ, "OFFBOARDING_HOME": str(settings.home)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        until(lambda: "Press Ctrl-C" in output.read_text(), "`up` to start", timeout=120)
        api = f"http://127.0.0.1:{settings.prefect_port}/api"
        with case_table_locked(database_url) as someone_waits:
            stuck = start_run(api, settings.deployment, "case-that-waits")
            # the flow-run process itself is running (the dispatcher in `up` also reads the
            # case table, so a waiting query alone could be the dispatcher's)
            assert wait_for_state(api, stuck, "RUNNING", "FAILED", "CRASHED")["state"]["type"] == (
                "RUNNING"
            )
            until(someone_waits, "the flow run to wait for the case table")
            group = runner_group(settings.home)

            up.kill()  # like `kill -9`: no clean-up; the runner dies with it (PDEATHSIG)
            up.wait(timeout=30)
            until(lambda: group not in group_members(group), "the runner to die with `up`")
            left = group_members(group)
            assert left, "the flow-run process outlives a killed service"
            until(lambda: port_problem("127.0.0.1", settings.prefect_port) is None, "the port")

            with run_service(settings, quiet=True) as again:
                assert not group_members(group), "start-up kills what the last runner left"
                crashed = wait_for_state(again.api_url, stuck, "CRASHED", timeout=10)
                assert "restarted" in crashed["state"]["message"]
                new_group = runner_group(settings.home)
                assert new_group != group
        # a deliberate stop is no crash: the runner is gone and was not started again
        assert not group_members(new_group)
        assert not (settings.home / "run" / "runner.pid").exists()
        assert again.supervisor is not None and again.supervisor.restarts == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
