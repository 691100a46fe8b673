"""Serve the flow deployments (the embedded default: no separate worker needed), or, in
production mode, register them with a Prefect process work pool whose workers run them.

The deployments carry this installation's instance name (settings.instance), so several
installations can share one Prefect server without running each other's cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from prefect.client.orchestration import PrefectClient
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.flows import Flow
from prefect.runner import Runner
from prefect.schedules import Cron

import flows
from offboarding.orchestration.warm_client import SOCKET_ENV
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.settings import get_settings

# by path, not -m: a process worker starts it in a temporary directory, and -S (no site, so
# no editable install on the path) keeps it to the standard library
WARM_COMMAND = f"{sys.executable} -S {Path(__file__).with_name('warm_client.py')}"


class _Runner(Runner):
    """Prefect's runner with a SIGTERM that stops it cleanly, and warm starts.

    Warm starts (`warm=True`): each flow run is started with the warm client's command
    (forked from the warm starter, see `offboarding.orchestration.warm`) instead of a new
    interpreter that imports everything again.

    Prefect 3.8's own handler calls the async `stop()` from inside the event loop (the
    coroutine is never awaited) and exits in the middle of the loop. Here SIGTERM ends
    the polling loops; the runner then waits for its flow-run processes, which share its
    process group and so got the same SIGTERM. Runs are not cancelled: a run cut short
    ends CRASHED, and the service reschedules it.
    """

    def __init__(self, *args: Any, warm: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._warm = warm

    async def __aenter__(self) -> _Runner:
        entered = await super().__aenter__()
        poller = getattr(self, "_scheduled_run_poller", None)
        if self._warm and poller is not None:
            # Prefect 3.8 builds an EngineCommandStarter (`python -m prefect.engine`) per
            # run of a served deployment; the same starter, with our command
            from prefect.runner._starter_engine import EngineCommandStarter

            resolve = poller._resolve_starter

            def warm_starter_for(flow_run: Any) -> Any:
                starter = resolve(flow_run)
                if isinstance(starter, EngineCommandStarter) and starter._command is None:
                    starter._command = WARM_COMMAND
                return starter

            poller._resolve_starter = warm_starter_for
        return entered

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        self._logger.info("SIGTERM received, stopping")
        if self._loop is None or not self.started:
            sys.exit(0)  # not serving yet: nothing to wind down
        self._loop.call_soon_threadsafe(self._stop_polling)

    def _stop_polling(self) -> None:
        self.started = False
        self.stopping = True
        poller = getattr(self, "_scheduled_run_poller", None)
        if poller is not None:
            poller.stopping = True
        self._loops_task_group.cancel_scope.cancel()


INSTANCE_PLACEHOLDER = "{{ $OFFBOARDING_INSTANCE }}"


def deployments_file() -> Path:
    """`prefect.yaml`, the one description of the deployments: `prefect deploy` reads it for
    work pools, and the embedded runner serves the same deployments from it."""
    return Path(flows.__file__).resolve().parents[1] / "prefect.yaml"


def served_deployments(instance: str, path: Path | None = None) -> list[RunnerDeployment]:
    """The deployments in prefect.yaml, named for this installation, ready to serve."""
    spec = yaml.safe_load((path or deployments_file()).read_text())
    built: list[RunnerDeployment] = []
    for entry in spec["deployments"]:
        file, function = entry["entrypoint"].split(":", 1)
        # imported as the package module it is (not loaded again from its path)
        module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        flow: Flow[..., Any] = getattr(module, function)
        schedules = [
            Cron(item["cron"], timezone=item.get("timezone")) for item in entry.get("schedules", [])
        ]
        deployment = flow.to_deployment(
            name=entry["name"].replace(INSTANCE_PLACEHOLDER, instance),
            description=entry.get("description"),
            tags=entry.get("tags", []),
            schedules=schedules or None,
        )
        assert not inspect.isawaitable(deployment)  # called outside an event loop: synchronous
        built.append(deployment)
    return built


def entrypoint_files(path: Path | None = None) -> list[Path]:
    """The files prefect.yaml's entrypoints name, relative to the project root."""
    spec = yaml.safe_load((path or deployments_file()).read_text())
    return sorted({Path(e["entrypoint"].split(":", 1)[0]) for e in spec["deployments"]})


@contextlib.contextmanager
def warm_starter(
    *, env: dict[str, str] | None = None, log: IO[bytes] | None = None, timeout: float = 120.0
) -> Iterator[str | None]:
    """Start the warm starter; yields its socket (None if it did not come up: runs then
    start cold). Flow runs find it through OFFBOARDING_WARM_SOCKET in their environment.
    It is stopped, and its socket removed, on exit."""
    folder = Path(tempfile.mkdtemp(prefix="offboarding-warm-"))  # short: a socket path
    path = folder / "starter.sock"
    process = subprocess.Popen(  # noqa: S603 - a fixed argument list
        [sys.executable, "-m", "offboarding.orchestration.warm", "--socket", str(path)],
        cwd=project_root(),
        env=env,  # what its flow runs will see (the modules it imports read some of it)
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + timeout
        while not path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        up = path.exists() and process.poll() is None
        yield str(path) if up else None
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


# -- production mode: the same deployments, run by the workers of a process work pool ------


def work_pool_name(path: Path | None = None) -> str:
    """The work pool prefect.yaml puts every deployment in (one pool for all of them)."""
    spec = yaml.safe_load((path or deployments_file()).read_text())
    names = {entry["work_pool"]["name"] for entry in spec["deployments"]}
    if len(names) != 1:
        raise ValueError(f"prefect.yaml: every deployment must use one work pool, not {names}")
    return names.pop()


async def prepare_work_pool(client: PrefectClient, name: str, concurrency_limit: int) -> None:
    """Create the process work pool if it is missing; set its concurrency limit (how many
    flow-run processes all its workers together run at once)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.workers.process import ProcessWorker

    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                concurrency_limit=concurrency_limit,
            )
        )
        return
    if pool.type != ProcessWorker.type:
        raise RuntimeError(
            f"the Prefect work pool {name!r} exists with type {pool.type!r}; production mode "
            "needs a process pool: delete it (prefect work-pool delete) or use another server"
        )
    if pool.concurrency_limit != concurrency_limit:
        await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))


async def register_with_pool(
    client: PrefectClient,
    deployments: list[RunnerDeployment],
    *,
    root: Path,
    path: Path | None = None,
    warm: bool = False,
) -> list[str]:
    """Create (or update) this installation's deployments on the work pool, as
    `prefect deploy --all` does from prefect.yaml: same names, entrypoints, schedules, job
    variables, and a pull step that makes the project directory the flow run's working
    directory (so the entrypoints import). `deployments`: `served_deployments(...)`, built
    outside the event loop. Returns "flow/deployment" names."""
    spec = yaml.safe_load((path or deployments_file()).read_text())
    registered: list[str] = []
    for entry, deployment in zip(spec["deployments"], deployments, strict=True):
        pool = entry["work_pool"]
        if deployment.flow_name is None:  # to_deployment names it; a hand-made one may not
            raise ValueError(f"deployment {deployment.name!r} names no flow")
        flow_id = await client.create_flow_from_name(deployment.flow_name)
        await client.create_deployment(
            flow_id=flow_id,
            name=deployment.name,
            description=deployment.description,
            tags=deployment.tags,
            schedules=deployment._schedules_with_serialized_block_parameters(),  # type: ignore[arg-type]
            entrypoint=entry["entrypoint"],
            work_pool_name=pool["name"],
            work_queue_name=pool.get("work_queue_name"),
            job_variables={**(pool.get("job_variables") or {}), **warm_job_variables(warm)},
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}
            ],
            parameter_openapi_schema=deployment._parameter_openapi_schema.model_dump(
                exclude_unset=True
            ),
            enforce_parameter_schema=deployment.enforce_parameter_schema,
        )
        registered.append(f"{deployment.flow_name}/{deployment.name}")
    return registered


def warm_job_variables(warm: bool) -> dict[str, str]:
    """A process worker starts our warm client instead of `python -m prefect.engine`; the
    client starts cold by itself where no warm starter runs next to the worker."""
    return {"command": WARM_COMMAND} if warm else {}


def prepare_production(
    api_url: str, instance: str, concurrency_limit: int, *, warm: bool = False
) -> str:
    """The work pool ready and this installation's deployments on it; returns the pool's name."""
    name = work_pool_name()
    deployments = served_deployments(instance)

    async def prepare() -> None:
        async with PrefectClient(api_url) as client:
            await prepare_work_pool(client, name, concurrency_limit)
            await register_with_pool(client, deployments, root=project_root(), warm=warm)

    asyncio.run(prepare())
    return name


def project_root() -> Path:
    """The directory holding prefect.yaml and `flows/`: a flow run's working directory."""
    return deployments_file().parent


def main() -> None:
    configure_logging()
    settings = get_settings()
    with contextlib.ExitStack() as stack:
        socket = stack.enter_context(warm_starter()) if settings.warm_start else None
        if socket is not None:  # the flow-run processes inherit it
            os.environ[SOCKET_ENV] = socket
        # what prefect.serve() does, with our SIGTERM
        runner = _Runner(pause_on_shutdown=True, warm=socket is not None)
        for deployment in served_deployments(settings.instance):
            runner.add_deployment(deployment)
        asyncio.run(runner.start())


if __name__ == "__main__":
    main()
