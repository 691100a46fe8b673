"""Run the whole service: Prefect server, flow runner, web app.

On embedded defaults the flows are served by one supervised runner (`serve`). In production
mode (`offboarding up --production`) the service and Prefect keep their data in PostgreSQL,
and the flows run on the workers of a Prefect `process` work pool: `workers` of them
started here, more joining from other machines (`offboarding worker`); the pool's
concurrency limit bounds the flow-run processes, however many leavers arrive.

Before anything starts, the ports must be free and the data dir not in use by another
service; the Prefect server that answers must be the one started here; the runner is
supervised (offboarding.orchestration.supervisor).

Used by `offboarding up` / `offboarding demo` and by the end-to-end tests, so
the tests exercise exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
import structlog
from pydantic import SecretStr

from connectors.holdoff import ENVIRONMENT as HOLDOFF_ENVIRONMENT
from offboarding.wiring.processes import (
    die_with_parent,
    exclusive_lock,
    lock_holder,
    port_problem,
    stop_process_group,
)
from offboarding.wiring.settings import Settings
from offboarding.wiring.web_processes import WakeListener, listening_socket, wake_address

if TYPE_CHECKING:
    from offboarding.orchestration.supervisor import ProcessKeeper, RunnerSupervisor, WorkerKeeper

log = structlog.get_logger(__name__)
EXTRA_LOGGERS = "offboarding,connectors,approvals,flows"


def settings_as_env(settings: Settings) -> dict[str, str]:
    """The settings as OFFBOARDING_* variables, so child processes see the same configuration."""
    env: dict[str, str] = {}
    for name, value in settings:
        if value is None:
            continue
        if name == "policy" and settings.work_instruction is not None:
            continue  # the work instruction file is the policy: children read it themselves
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif hasattr(value, "model_dump"):
            text = json.dumps(_reveal(value.model_dump(mode="python")), default=str)
        elif isinstance(value, list | dict):
            text = json.dumps(_reveal(value), default=str)
        else:
            text = str(value)
        env[f"OFFBOARDING_{name.upper()}"] = text
    return env


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_reveal(v) for v in value)
    return value


def prefect_env(
    home: Path,
    api_port: int,
    *,
    own_database: bool = False,
    database_url: str | None = None,
    api_host: str = "127.0.0.1",
) -> dict[str, str]:
    """Settings for the embedded Prefect server and its clients.

    Its database is `database_url`, else SQLite in the data dir unless
    PREFECT_SERVER_DATABASE_CONNECTION_URL names another; `own_database` (the demo) always
    uses its own SQLite.
    """
    prefect_home = (home / "prefect").resolve()
    sqlite = f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
    if own_database:
        database = sqlite
    else:
        database = database_url or os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", sqlite)
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": f"http://{api_host}:{api_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": EXTRA_LOGGERS,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        # a worker asks for scheduled runs this often (Prefect's default: every 10 s)
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
        # a Retry-After told to one flow run holds for all of them (connectors.holdoff)
        HOLDOFF_ENVIRONMENT: str((home / "holdoff").resolve()),
    }


def production_problem(settings: Settings, *, prefect_database: bool = True) -> str | None:
    """Why production mode cannot run on these settings, in one line naming the setting to
    change; None when it can. A worker (`prefect_database=False`) needs no Prefect database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    def backend(url: str) -> str:
        try:
            return make_url(url).get_backend_name()
        except ArgumentError:
            return "unparsable"

    if not settings.database_url or backend(settings.database_url) != "postgresql":
        found = "unset (SQLite in the data dir)" if not settings.database_url else "not PostgreSQL"
        return (
            f"--production needs PostgreSQL for the service: database_url "
            f"(OFFBOARDING_DATABASE_URL) is {found}; set it to postgresql://..."
        )
    if prefect_database and backend(settings.resolved_prefect_database_url) != "postgresql":
        found = "unset (SQLite)" if not settings.prefect_database_url else "not PostgreSQL"
        return (
            f"--production needs PostgreSQL for Prefect: prefect_database_url "
            f"(OFFBOARDING_PREFECT_DATABASE_URL) is {found}; set it to postgresql://..."
        )
    return None


def worker_command(pool: str, name: str) -> list[str]:
    """One Prefect process worker for the pool (it starts a process per flow run)."""
    return [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        name,
        "--install-policy",
        "never",  # the process worker ships with Prefect: never prompt
    ]


def worker_name(instance: str, number: int) -> str:
    """Unique per machine and worker: Prefect tells a pool's workers apart by name."""
    return f"{instance}-{socket.gethostname()}-{number}"


@dataclass
class RunningService:
    settings: Settings
    api_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)  # production mode
    work_pool: str | None = None  # production mode: the pool whose workers run the flows
    supervisor: RunnerSupervisor | None = None
    keeper: WorkerKeeper | None = None  # production mode: starts a dead worker again
    web_processes: list[subprocess.Popen[bytes]] = field(default_factory=list)  # the others
    web_keeper: ProcessKeeper | None = None  # starts a dead web process again
    wakes: WakeListener | None = None  # what the other web processes told the dispatcher
    web_thread: threading.Thread | None = None
    web_server: Any = None

    @property
    def web_url(self) -> str:
        return self.settings.base_url

    @property
    def prefect_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api"

    def stop(self) -> None:
        # A second Ctrl-C must not cut the shutdown short and orphan a child.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            if self.web_server is not None:
                self.web_server.should_exit = True  # runs the app's lifespan shutdown
            if self.web_thread is not None:
                self.web_thread.join(timeout=30)
                if self.web_thread.is_alive():
                    log.error("the web app did not stop within 30 s")
            flush_prefect_events()  # while the server still runs
            if self.supervisor is not None:
                self.supervisor.stop()  # before the server: no restart, runs still reachable
            if self.keeper is not None:
                self.keeper.stop()  # no worker started again while they are stopped
            if self.web_keeper is not None:
                self.web_keeper.stop()
            for process in reversed(self.processes):
                stop_process_group(process)
            self.processes.clear()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


def flush_prefect_events(timeout: float = 5) -> None:
    """Send this process's last Prefect events (the overview's artifact events) and stop
    the client that sends them. It is made once per process and bound to the API it first
    met: a service started again in this process (tests, benchmarks) on another Prefect
    server gets a new one, instead of one that keeps calling the stopped server."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout, at_exit=False)


def check_ports_free(settings: Settings, api_port: int | None = None) -> None:
    """Refuse to start when a port the service needs is taken, saying how to choose another."""
    api_port = api_port or settings.prefect_port
    if api_port == settings.port:
        raise RuntimeError(
            f"the web app and the Prefect server are both set to port {api_port}: "
            "give one another port (--port / OFFBOARDING_PORT, --prefect-port / "
            "OFFBOARDING_PREFECT_PORT)"
        )
    for what, host, port, option in (
        ("the Prefect server", "127.0.0.1", api_port, "--prefect-port / OFFBOARDING_PREFECT_PORT"),
        ("the web app", settings.host, settings.port, "--port / OFFBOARDING_PORT"),
    ):
        problem = port_problem(host, port)
        if problem:
            raise RuntimeError(
                f"{what} cannot listen on {host}:{port} ({problem}); is another offboarding "
                f"service running? Stop it, or choose another port with {option}"
            )


def _lock_data_dir(home: Path) -> IO[str]:
    path = home / "run" / "service.lock"
    lock = exclusive_lock(path)
    if lock is None:
        raise RuntimeError(
            f"another offboarding service (pid {lock_holder(path)}) is running with the data "
            f"dir {home.resolve()}; stop it, or give this one its own OFFBOARDING_HOME"
        )
    return lock


def _spawn(
    args: list[str], env: dict[str, str], log_file: IO[bytes] | None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argument lists
        args,
        env=env,
        cwd=cwd,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
        start_new_session=True,
    )


def _wait_for_prefect_server(
    api_url: str,
    *,
    process: subprocess.Popen[bytes],
    prefect_home: Path,
    log: Path,
    timeout: float = 90,
) -> None:
    """Wait until the server we started answers, and make sure it is ours that answers."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"the Prefect server exited with code {process.returncode}; see {log}"
                " (is the port already in use?)"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the Prefect server did not become ready within {timeout:.0f} s ({api_url}); "
                f"see {log}"
            )
        time.sleep(0.3)
    # Another server that took the port first answers health too: ours keeps its data in
    # our data dir, and is still alive.
    try:
        home = httpx.get(f"{api_url}/admin/settings", timeout=10).json().get("home")
    except (httpx.HTTPError, ValueError) as exc:
        raise RuntimeError(f"the Prefect server at {api_url} did not answer: {exc}") from exc
    if process.poll() is not None or not home or Path(home).resolve() != prefect_home:
        raise RuntimeError(
            f"another Prefect server (data in {home}) answers at {api_url}, not the one this "
            f"service started (see {log}); choose another port with --prefect-port / "
            "OFFBOARDING_PREFECT_PORT"
        )


def migrate(settings: Settings) -> None:
    """Bring the service database to the newest schema, or say which database failed."""
    from sqlalchemy.exc import SQLAlchemyError

    from offboarding.wiring.db import create_schema, make_engine, where

    engine = make_engine(settings.resolved_database_url)
    try:
        create_schema(engine)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).splitlines() or [""])[0]
        raise RuntimeError(
            f"the service database at {where(settings.resolved_database_url)} could not be "
            f"prepared: {type(cause).__name__}: {first_line}"
        ) from exc
    finally:
        engine.dispose()


@contextlib.contextmanager
def run_service(
    settings: Settings,
    *,
    api_port: int | None = None,
    quiet: bool = False,
    extra_env: dict[str, str] | None = None,
    production: bool = False,
) -> Iterator[RunningService]:
    """Start Prefect server, runner (supervised) and web app; stop all of them on exit.

    `production`: PostgreSQL for both databases, and `settings.workers` process workers of
    the work pool instead of the runner.

    Refuses to start (RuntimeError, one line saying what to change) when a port is taken,
    another service uses the same data dir, or production mode lacks PostgreSQL.
    """
    import uvicorn
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from offboarding.orchestration.prefect_retention import vacuum_environment
    from offboarding.orchestration.prefect_tls import share_tls_contexts

    if production and (problem := production_problem(settings)):
        raise RuntimeError(problem)
    share_tls_contexts()  # the dispatcher and the pages make a Prefect client per call
    settings.home.mkdir(parents=True, exist_ok=True)
    api_port = api_port or settings.prefect_port
    env_prefect = prefect_env(
        settings.home,
        api_port,
        own_database=settings.env == "demo",
        database_url=settings.resolved_prefect_database_url,
    )
    # Children see exactly this process's settings: no OFFBOARDING_* from the outer
    # environment and no config file, only the effective values (None stays unset).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("OFFBOARDING_")}
    child_env = {
        **inherited,
        **env_prefect,
        **settings_as_env(settings),
        "OFFBOARDING_CONFIG": os.devnull,
        **(extra_env or {}),
    }
    logs_dir = settings.home / "logs"
    logs_dir.mkdir(exist_ok=True)
    running = RunningService(settings=settings, api_port=api_port)
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(_lock_data_dir(settings.home))
        check_ports_free(settings, api_port)
        migrate(settings)  # once, before any flow run can start (flow runs do not migrate)
        # this process (web app: start and resume runs) talks to the same Prefect server
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: running.api_url}))
        server_log = stack.enter_context(open(logs_dir / "prefect-server.log", "ab"))
        server = _spawn(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                settings.prefect_host,
                "--port",
                str(api_port),
            ],
            # retention: Prefect deletes old runs and the logs of runs the service deleted
            {**vacuum_environment(settings.retention_days), **child_env},
            server_log,
        )
        running.processes.append(server)
        _wait_for_prefect_server(
            running.api_url,
            process=server,
            prefect_home=Path(env_prefect["PREFECT_HOME"]),
            log=logs_dir / "prefect-server.log",
            # on a new database, Prefect first runs its migrations: minutes on a busy
            # machine (PostgreSQL more than SQLite)
            timeout=180
            if "sqlite" in env_prefect["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
            else 300,
        )
        if production:
            _start_workers(running, child_env, logs_dir, stack, quiet=quiet)
        else:
            _start_runner(running, child_env, logs_dir, stack, quiet=quiet)

        from offboarding.orchestration.automations import ensure_attention_automation

        # management hears on its webhook of a case in needs attention; matched by the
        # deployment's name, so a runner still registering it is no problem
        ensure_attention_automation(
            running.api_url,
            settings.deployment,
            settings.attention_webhook_url,
            instance=settings.instance,
            ui_url=running.prefect_ui_url,
            include_crashes=False,  # a crashed run is restarted by the service itself
        )

        from offboarding.wiring.services import build_services
        from offboarding.wiring.web import create_app

        # migrated above: neither the web app nor any flow run does schema work
        shared = settings.web_processes > 1  # the port, with more web processes
        app = create_app(
            build_services(settings, migrate=False),
            wakes_at=wake_address(settings.home) if shared else None,
        )
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"
        )
        web = uvicorn.Server(config)
        sockets = [listening_socket(settings.host, settings.port)] if shared else None
        context = contextvars.copy_context()  # carries the Prefect settings into the thread
        thread = threading.Thread(
            target=context.run, args=(web.run, sockets), name="web", daemon=True
        )
        thread.start()
        running.web_server, running.web_thread = web, thread
        deadline = time.monotonic() + 60
        while not web.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the web app could not start on {settings.host}:{settings.port}; "
                    "see the log above"
                )
            time.sleep(0.05)
        if shared:
            running.wakes = app.state.wakes
            _start_web_processes(running, running.wakes, child_env, logs_dir, stack, quiet=quiet)
        yield running
    finally:
        running.stop()
        stack.close()


def _start_web_processes(
    running: RunningService,
    wakes: WakeListener,
    child_env: dict[str, str],
    logs_dir: Path,
    stack: contextlib.ExitStack,
    *,
    quiet: bool,
) -> None:
    """`web_processes - 1` more processes serving the app on the same port (see
    `offboarding.wiring.web_processes`); each is started again when it dies."""
    from offboarding.orchestration.supervisor import ProcessKeeper

    extra = running.settings.web_processes - 1
    logs = {
        number: stack.enter_context(open(logs_dir / f"web-{number + 1}.log", "ab"))
        if quiet
        else None
        for number in range(1, extra + 1)
    }

    def start(number: int) -> subprocess.Popen[bytes]:
        process = _spawn(
            [sys.executable, "-m", "offboarding.wiring.web_processes"], child_env, logs[number]
        )
        deadline = time.monotonic() + 120
        while process.pid not in wakes.ready:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process_group(process)
                raise RuntimeError(
                    f"web process {number + 1} did not start serving on port "
                    f"{running.settings.port}; see {logs_dir / f'web-{number + 1}.log'}"
                )
            time.sleep(0.05)
        return process

    def replaced(dead: subprocess.Popen[bytes], fresh: subprocess.Popen[bytes]) -> None:
        at = running.processes.index(dead) if dead in running.processes else len(running.processes)
        running.processes[at : at + 1] = [fresh]

    for number in range(1, extra + 1):
        process = start(number)
        running.web_processes.append(process)
        running.processes.append(process)
    running.web_keeper = ProcessKeeper(
        processes=running.web_processes, start=start, replaced=replaced, what="web process"
    )
    running.web_keeper.start()


def _start_runner(
    running: RunningService,
    child_env: dict[str, str],
    logs_dir: Path,
    stack: contextlib.ExitStack,
    *,
    quiet: bool,
) -> None:
    """The embedded default: one supervised runner serves every deployment."""
    from offboarding.orchestration.supervisor import RunnerSupervisor

    settings = running.settings
    runner_log = stack.enter_context(open(logs_dir / "runner.log", "ab")) if quiet else None
    running.supervisor = RunnerSupervisor(
        spawn=lambda extra: _spawn(
            [sys.executable, "-m", "offboarding.orchestration.runner"],
            {**child_env, **extra},
            runner_log,
        ),
        api_url=running.api_url,
        deployments=[
            settings.deployment,
            settings.retention_deployment,
            settings.oversight_deployment,
        ],
        pidfile=settings.home / "run" / "runner.pid",
    )
    running.supervisor.start()


def _start_workers(
    running: RunningService,
    child_env: dict[str, str],
    logs_dir: Path,
    stack: contextlib.ExitStack,
    *,
    quiet: bool,
) -> None:
    """Production mode: the work pool (created if missing, its concurrency limit set), this
    installation's deployments on it, and `settings.workers` process workers. A worker
    starts each flow run as a process in the project directory (the deployments' pull step),
    with the environment it has: the same settings as this process."""
    from offboarding.orchestration.runner import prepare_production, project_root, warm_starter
    from offboarding.orchestration.supervisor import WorkerKeeper
    from offboarding.orchestration.warm_client import SOCKET_ENV

    settings = running.settings
    running.work_pool = prepare_production(
        running.api_url,
        settings.instance,
        settings.work_pool_concurrency,
        warm=settings.warm_start,
    )
    if settings.warm_start:  # one warm starter for this machine's workers
        starter_log = (
            stack.enter_context(open(logs_dir / "warm-starter.log", "ab")) if quiet else None
        )
        socket = stack.enter_context(warm_starter(env=child_env, log=starter_log))
        if socket is not None:
            child_env = {**child_env, SOCKET_ENV: socket}
    pool = running.work_pool
    worker_logs = {
        number: stack.enter_context(open(logs_dir / f"worker-{number}.log", "ab"))
        if quiet
        else None
        for number in range(1, settings.workers + 1)
    }

    def start_worker(number: int) -> subprocess.Popen[bytes]:
        return _spawn(
            worker_command(pool, worker_name(settings.instance, number)),
            child_env,
            worker_logs[number],
            cwd=project_root(),
        )

    def replaced(dead: subprocess.Popen[bytes], fresh: subprocess.Popen[bytes]) -> None:
        at = running.processes.index(dead) if dead in running.processes else len(running.processes)
        running.processes[at : at + 1] = [fresh]

    for number in range(1, settings.workers + 1):
        worker = start_worker(number)
        running.workers.append(worker)
        running.processes.append(worker)  # stopped before the server (reversed order)
    running.keeper = WorkerKeeper(
        workers=running.workers,
        names=[worker_name(settings.instance, n) for n in range(1, settings.workers + 1)],
        start=start_worker,
        replaced=replaced,
        api_url=running.api_url,
        deployments=[
            settings.deployment,
            settings.retention_deployment,
            settings.oversight_deployment,
        ],
    )
    running.keeper.start()
