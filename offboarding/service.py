"""Run the whole service on embedded defaults: Prefect server, flow runner, web app.

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
from typing import IO, Any

import httpx
import structlog
from pydantic import SecretStr

from offboarding.processes import die_with_parent
from offboarding.settings import Settings

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
    if isinstance(value, list):
        return [_reveal(v) for v in value]
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
                self.web_server.should_exit = True
            if self.web_thread is not None:
                self.web_thread.join(timeout=10)
            for process in reversed(self.processes):
                _stop_process(process)
            self.processes.clear()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # The Prefect runner does not always act on the first SIGTERM: escalate.
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


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


def _wait_for(
    url: str, *, timeout: float, process: subprocess.Popen[bytes], what: str, log: Path | str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {process.returncode}; see {log}"
                " (is the port already in use?)"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s ({url})")


def _wait_for_deployment(
    api_url: str, name: str, timeout: float, process: subprocess.Popen[bytes]
) -> None:
    flow_name, deployment_name = name.split("/", 1)
    _wait_for(
        f"{api_url}/deployments/name/{flow_name}/{deployment_name}",
        timeout=timeout,
        process=process,
        what="the flow runner",
        log="its output above (or logs/runner.log in the data dir)",
    )


@contextlib.contextmanager
def run_service(
    settings: Settings,
    *,
    api_port: int | None = None,
    quiet: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningService]:
    """Start Prefect server, runner and web app; stop all of them on exit."""
    import uvicorn
    from prefect.settings import PREFECT_API_URL, temporary_settings

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
        # this process (web app: start and resume runs) talks to the same Prefect server
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: running.api_url}))
        server_log = open(logs_dir / "prefect-server.log", "ab")
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
        _wait_for(
            f"{running.api_url}/health",
            timeout=90,
            process=server,
            what="the Prefect server",
            log=logs_dir / "prefect-server.log",
        )
        runner_log = open(logs_dir / "runner.log", "ab") if quiet else None
        runner = _spawn([sys.executable, "-m", "offboarding.runner"], child_env, runner_log)
        running.processes.append(runner)
        _wait_for_deployment(running.api_url, settings.deployment, 90, runner)

        from offboarding.services import build_services
        from offboarding.web import create_app

        app = create_app(build_services(settings))
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"
        )
        web = uvicorn.Server(config)
        context = contextvars.copy_context()  # carries the Prefect settings into the thread
        thread = threading.Thread(target=context.run, args=(web.run,), name="web", daemon=True)
        thread.start()
        running.web_server, running.web_thread = web, thread
        deadline = time.monotonic() + 20
        while not web.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the web app could not start on {settings.host}:{settings.port}"
                )
            time.sleep(0.05)
        yield running
    finally:
        running.stop()
        stack.close()
