"""`offboarding worker`: one more worker for production mode's work pool, on any machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Annotated

import typer

from offboarding.cli.app import PrefectPortOption, _fail, _say, app
from offboarding.cli.configuration import _require_connectors, _settings


@app.command()
def worker(
    prefect_port: PrefectPortOption = None,
    number: Annotated[
        int, typer.Option(help="This worker's number on this machine (names it; default 1).")
    ] = 1,
) -> None:
    """Run one Prefect process worker for the service's work pool (production mode).

    It uses the same settings as `offboarding up --production` (the same config.toml and
    OFFBOARDING_* variables, so its flow runs reach the same databases and systems), and
    the Prefect API at PREFECT_API_URL, default the local server on --prefect-port. Give
    each worker on one machine its own --number.
    """
    from offboarding.orchestration.runner import project_root, warm_starter, work_pool_name
    from offboarding.orchestration.warm_client import SOCKET_ENV
    from offboarding.wiring.service import (
        prefect_env,
        production_problem,
        settings_as_env,
        worker_command,
        worker_name,
    )

    settings = _settings(prefect_port=prefect_port)
    if problem := production_problem(settings, prefect_database=False):
        _fail(f"Could not start the worker: {problem}", 2)
    _require_connectors(settings, why="the worker's flow runs need them")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFBOARDING_")}
    env.update(
        prefect_env(
            settings.home,
            settings.prefect_port,
            database_url=settings.resolved_prefect_database_url,
        )
    )
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL")  # the server's business, not a worker's
    if "PREFECT_API_URL" in os.environ:  # a worker on another machine: the service's server
        env["PREFECT_API_URL"] = os.environ["PREFECT_API_URL"]
    env.update(settings_as_env(settings))
    env["OFFBOARDING_CONFIG"] = os.devnull  # the flow runs see exactly these settings
    pool = work_pool_name()
    name = worker_name(settings.instance, number)
    _say(f"Worker {name} for work pool {pool!r} at {env['PREFECT_API_URL']}; Ctrl-C stops it.")
    try:
        with warm_starter(env=env) if settings.warm_start else contextlib.nullcontext() as socket:
            if socket is not None:  # this worker's flow runs fork from it
                env[SOCKET_ENV] = socket
            done = subprocess.run(  # noqa: S603 - a fixed argument list
                worker_command(pool, name), env=env, cwd=project_root(), check=False
            )
    except KeyboardInterrupt:
        _fail("Worker stopped.", 130)
    if done.returncode not in (0, -2, 130):
        _fail(f"The worker exited with code {done.returncode} (see its output above).")
    sys.exit(0)
