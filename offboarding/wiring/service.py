"""Run the whole service on embedded defaults: Prefect server, flow runner, web app.

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

from offboarding.wiring.processes import (
    die_with_parent,
    exclusive_lock,
    lock_holder,
    port_problem,
    stop_process_group,
)
from offboarding.wiring.settings import Settings

if TYPE_CHECKING:
    from offboarding.orchestration.supervisor import RunnerSupervisor

log = structlog.get_logger(__name__)
EXTRA_LOGGERS = "offboarding,connectors,approvals,flows"


def settings_as_env(settings: Settings) -> dict[str, str]:
    """The settings as OFFBOARDING_* variables, so child processes see the same configuration."""
    env: dict[str, str] = {}
    for name, value in settings:
        if value is None:
            continue
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


def prefect_env(home: Path, api_port: int, *, own_database: bool = False) -> dict[str, str]:
    """Settings for the embedded Prefect server and its clients.

    Its database is SQLite in the data dir unless PREFECT_SERVER_DATABASE_CONNECTION_URL
    names another; `own_database` (the demo) always uses its own SQLite.
    """
    prefect_home = (home / "prefect").resolve()
    sqlite = f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": f"http://127.0.0.1:{api_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": EXTRA_LOGGERS,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": sqlite
        if own_database
        else os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", sqlite),
    }


@dataclass
class RunningService:
    settings: Settings
    api_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    supervisor: RunnerSupervisor | None = None
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
            if self.supervisor is not None:
                self.supervisor.stop()  # before the server: no restart, runs still reachable
            for process in reversed(self.processes):
                stop_process_group(process)
            self.processes.clear()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


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
    args: list[str], env: dict[str, str], log_file: IO[bytes] | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argument lists
        args,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
        start_new_session=True,
    )


def _wait_for_prefect_server(
    api_url: str, *, process: subprocess.Popen[bytes], prefect_home: Path, log: Path
) -> None:
    """Wait until the server we started answers, and make sure it is ours that answers."""
    deadline = time.monotonic() + 90
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
            raise RuntimeError(f"the Prefect server did not become ready within 90 s ({api_url})")
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
) -> Iterator[RunningService]:
    """Start Prefect server, runner (supervised) and web app; stop all of them on exit.

    Refuses to start (RuntimeError, one line saying what to change) when a port is taken
    or another service uses the same data dir.
    """
    import uvicorn
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from offboarding.orchestration.supervisor import RunnerSupervisor

    settings.home.mkdir(parents=True, exist_ok=True)
    api_port = api_port or settings.prefect_port
    env_prefect = prefect_env(settings.home, api_port, own_database=settings.env == "demo")
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
                "127.0.0.1",
                "--port",
                str(api_port),
            ],
            child_env,
            server_log,
        )
        running.processes.append(server)
        _wait_for_prefect_server(
            running.api_url,
            process=server,
            prefect_home=Path(env_prefect["PREFECT_HOME"]),
            log=logs_dir / "prefect-server.log",
        )
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

        from offboarding.wiring.services import build_services
        from offboarding.wiring.web import create_app

        app = create_app(build_services(settings))
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"
        )
        web = uvicorn.Server(config)
        context = contextvars.copy_context()  # carries the Prefect settings into the thread
        thread = threading.Thread(target=context.run, args=(web.run,), name="web", daemon=True)
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
        yield running
    finally:
        running.stop()
        stack.close()
