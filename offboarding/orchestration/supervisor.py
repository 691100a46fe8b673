"""Keep the flow runner alive, and leave no flow run RUNNING that no process runs.

The runner (`python -m offboarding.orchestration.runner`) is started in a process group of
its own; the flow-run processes it starts share that group. When the runner dies while the
service is up (killed, out of memory), the supervisor kills what is left of the group, marks
the runs of our deployments that were in flight as CRASHED (the dispatcher reschedules those
of open cases), and starts a new runner, waiting longer after each quick failure.

The group id sits in `<data dir>/run/runner.pid` with a mark the group's processes carry in
their environment: a service killed with SIGKILL leaves flow-run processes behind, and the
next start-up kills exactly those (never a process that merely got the same number).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import httpx
import structlog
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from offboarding.wiring.processes import (
    environment_has,
    group_members,
    kill_process_group,
    stop_process_group,
    wait_until_gone,
)

log = structlog.get_logger(__name__)

RUNNER_MARK_ENV = "OFFBOARDING_RUNNER_MARK"
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before each further quick restart
STABLE_AFTER = 60.0  # a runner up this long starts the delays from the first again
ORPHAN_STATES = (StateType.RUNNING, StateType.PENDING, StateType.CANCELLING)

Spawn = Callable[[dict[str, str]], "subprocess.Popen[bytes]"]


class _Stopping(Exception):
    """The service is stopping: do not (re)start anything."""


async def crash_orphaned_runs(
    client: PrefectClient,
    deployment_ids: Iterable[UUID],
    *,
    message: str = "The flow runner running this flow run stopped unexpectedly.",
    orphaned: Callable[[FlowRun], bool] = lambda _run: True,
) -> list[str]:
    """Force every RUNNING, PENDING or CANCELLING run of these deployments to CRASHED (with
    `orphaned`, only the runs it picks).

    Only call it when no process can be running them. Returns the ids of the runs changed.
    """
    ids = list(deployment_ids)
    if not ids:
        return []
    in_flight = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=ids),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(ORPHAN_STATES))),
    )
    found: list[UUID] = []
    seen = 0
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=in_flight, sort=FlowRunSort.ID_DESC, limit=200, offset=seen
        )
        found.extend(run.id for run in page if orphaned(run))
        seen += len(page)
        if len(page) < 200:
            break
    for run_id in found:
        await client.set_flow_run_state(run_id, state=Crashed(message=message), force=True)
    return [str(run_id) for run_id in found]


def crash_runs_of(
    api_url: str,
    deployments: Sequence[str],
    *,
    message: str,
    orphaned: Callable[[FlowRun], bool] = lambda _run: True,
) -> list[str]:
    """`crash_orphaned_runs` for deployments named "flow/deployment" (unknown names are skipped)."""

    async def crash() -> list[str]:
        async with PrefectClient(api_url) as client:
            ids: list[UUID] = []
            for name in deployments:
                try:
                    ids.append((await client.read_deployment_by_name(name)).id)
                except ObjectNotFound:
                    continue  # never served here yet: no runs either
            return await crash_orphaned_runs(client, ids, message=message, orphaned=orphaned)

    return asyncio.run(crash())


def kill_leftover_runner(pidfile: Path) -> list[int]:
    """Kill the process group a previous runner left alive (its service was killed).

    Returns the pids that were found (and killed); the pidfile is removed.
    """
    try:
        record = json.loads(pidfile.read_text())
        pgid, mark = int(record["pgid"]), str(record["mark"])
    except (OSError, ValueError, KeyError, TypeError):
        pidfile.unlink(missing_ok=True)
        return []
    ours = [pid for pid in group_members(pgid) if environment_has(pid, RUNNER_MARK_ENV, mark)]
    if ours:
        kill_process_group(pgid)
        wait_until_gone(pgid, timeout=10)
    pidfile.unlink(missing_ok=True)
    return ours


def wait_until_served(
    api_url: str,
    deployments: Sequence[str],
    *,
    since: datetime,
    process: subprocess.Popen[bytes],
    timeout: float,
    stopping: threading.Event | None = None,
) -> None:
    """Wait until `process` has registered every deployment ("flow/deployment") after `since`.

    A deployment that merely exists may be left from an earlier runner; registering
    updates it. Raises RuntimeError when the runner exits or does not register in time.
    """
    pending = list(deployments)
    deadline = time.monotonic() + timeout
    while pending:
        if stopping is not None and stopping.is_set():
            raise _Stopping
        if process.poll() is not None:
            raise RuntimeError(
                f"the flow runner exited with code {process.returncode}; see its output "
                "(or logs/runner.log in the data dir)"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the flow runner did not serve {', '.join(pending)} within {timeout:.0f} s"
            )
        name = pending[0]
        try:
            response = httpx.get(f"{api_url}/deployments/name/{name}", timeout=5)
            if response.status_code == 200:
                updated = datetime.fromisoformat(response.json()["updated"])
                if updated >= since:
                    pending.pop(0)
                    continue
        except httpx.HTTPError:
            pass  # the server is busy; ask again
        time.sleep(0.2)


class RunnerSupervisor:
    """Starts the runner, restarts it when it dies, and stops it (without a restart)."""

    def __init__(
        self,
        *,
        spawn: Spawn,
        api_url: str,
        deployments: Sequence[str],
        pidfile: Path,
        timeout: float = 90.0,
    ) -> None:
        self._spawn = spawn
        self.api_url = api_url
        self.deployments = list(deployments)
        self.pidfile = pidfile
        self.timeout = timeout
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._served_at = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Clean up after an earlier service, start the runner, wait until it serves, watch it."""
        leftover = kill_leftover_runner(self.pidfile)
        if leftover:
            log.warning("killed flow-run processes a previous service left", pids=leftover)
        self._crash_runs("The service restarted; no process was running this flow run.")
        try:
            self._launch()
        except _Stopping as exc:
            raise RuntimeError("the service is stopping") from exc
        self._thread = threading.Thread(target=self._watch, name="runner-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None:
            stop_process_group(process)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.pidfile.unlink(missing_ok=True)

    def _launch(self) -> None:
        mark = secrets.token_hex(16)
        since = datetime.now(UTC)
        with self._lock:  # stop() either sees this process or it is never started
            if self._stopping.is_set():
                raise _Stopping
            process = self._spawn({RUNNER_MARK_ENV: mark})
            self._process = process
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(json.dumps({"pgid": process.pid, "mark": mark}))
        wait_until_served(
            self.api_url,
            self.deployments,
            since=since,
            process=process,
            timeout=self.timeout,
            stopping=self._stopping,
        )
        self._served_at = time.monotonic()

    def _watch(self) -> None:
        """Runs in its own thread, which also starts every new runner (see die_with_parent)."""
        quick_failures = 0
        while True:
            process = self._process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._served_at >= STABLE_AFTER:
                quick_failures = 0
            log.error("flow runner exited unexpectedly", exit_code=code, pid=process.pid)
            self._clean_up(process)
            while True:
                delay = RESTART_DELAYS[min(quick_failures, len(RESTART_DELAYS) - 1)]
                quick_failures += 1
                log.warning("restarting the flow runner", attempt=quick_failures, delay_s=delay)
                if self._stopping.wait(delay):
                    return
                try:
                    self._launch()
                except _Stopping:
                    return
                except Exception as exc:  # noqa: BLE001 - logged; the next attempt follows
                    log.error("flow runner did not come back", error=str(exc))
                    if self._process is not None:
                        self._clean_up(self._process)
                    continue
                self.restarts += 1
                log.warning("flow runner restarted", pid=self.pid, restarts=self.restarts)
                break

    def _clean_up(self, process: subprocess.Popen[bytes]) -> None:
        stop_process_group(process)  # flow-run processes it left would run on unsupervised
        if not wait_until_gone(process.pid, timeout=10):
            log.error("processes of the dead flow runner survived SIGKILL", pgid=process.pid)
        self._crash_runs("The flow runner running this flow run stopped unexpectedly.")

    def _crash_runs(self, message: str) -> None:
        try:
            crashed = crash_runs_of(self.api_url, self.deployments, message=message)
        except Exception:  # the runner must come back even if Prefect is busy
            log.exception("could not mark orphaned flow runs as crashed")
            return
        if crashed:
            log.warning("flow runs left without a runner marked crashed", flow_run_ids=crashed)


def process_gone(run: FlowRun) -> bool:
    """The run's process (Prefect's `infrastructure_pid`: "pid", or "host:pid") no longer
    exists on this machine. Only for runs a worker of this machine started; a run without
    a pid is never called gone (a worker may be starting it)."""
    import socket

    host, _, pid = (run.infrastructure_pid or "").rpartition(":")
    if not pid.isdigit() or host not in ("", socket.gethostname()):
        return False
    return not Path(f"/proc/{pid}").exists()


def runs_submitted_by(api_url: str, worker: str, *, since: datetime) -> set[str]:
    """The flow runs the process worker named `worker` submitted since `since` (from
    Prefect's events: the worker records each one)."""
    from slugify import slugify

    found: set[str] = set()
    with httpx.Client(timeout=30) as client:
        page = client.post(
            f"{api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": ["prefect.worker.submitted-flow-run"]},
                    "resource": {"id": [f"prefect.worker.process.{slugify(worker)}"]},
                    "occurred": {"since": since.isoformat()},
                },
                "limit": 50,
            },
        )
        while True:
            page.raise_for_status()
            body = page.json()
            for event in body.get("events", []):
                for related in event.get("related", []):
                    rid = str(related.get("prefect.resource.id", ""))
                    if rid.startswith("prefect.flow-run."):
                        found.add(rid.removeprefix("prefect.flow-run."))
            if not body.get("next_page"):
                return found
            page = client.get(body["next_page"])


class ProcessKeeper:
    """Starts a kept process (number n is `processes[n - 1]`) again when it dies: its
    process group is stopped first, then `on_death(n)` runs, then `start(n)`; after a
    failure 1, 2, 5, 10, then 30 s apart."""

    def __init__(
        self,
        *,
        processes: list[subprocess.Popen[bytes]],
        start: Callable[[int], subprocess.Popen[bytes]],
        replaced: Callable[[subprocess.Popen[bytes], subprocess.Popen[bytes]], None],
        what: str,
        on_death: Callable[[int], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.processes = processes  # the running service's list: kept up to date here
        self.what = what
        self.started = datetime.now(UTC)
        self._start = start  # process number (from 1) -> its new process
        self._replaced = replaced
        self._on_death = on_death
        self.interval = interval
        self.restarts = 0
        self._failures = [0] * len(processes)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{what}-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No restart from now on (the service stops the processes itself)."""
        self._stopping.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            for index, process in enumerate(list(self.processes)):
                if process.poll() is None or self._stopping.is_set():
                    continue
                self._restart(index, process)

    def _restart(self, index: int, dead: subprocess.Popen[bytes]) -> None:
        what, number = self.what, index + 1
        log.error(f"{what} exited unexpectedly", number=number, exit_code=dead.returncode)
        stop_process_group(dead)  # the processes it started end with it
        delay = RESTART_DELAYS[min(self._failures[index], len(RESTART_DELAYS) - 1)]
        self._failures[index] += 1
        if self._stopping.wait(delay):
            return
        if self._on_death is not None:
            self._on_death(number)
        try:
            fresh = self._start(number)
        except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
            log.error(f"{what} did not come back", number=number, error=str(exc))
            return
        self.processes[index] = fresh
        self._replaced(dead, fresh)
        self.restarts += 1
        log.warning(f"{what} restarted", number=number, pid=fresh.pid, restarts=self.restarts)


class WorkerKeeper(ProcessKeeper):
    """Production mode: starts a worker again when it dies. Its process group is stopped
    first (the flow runs it started end with it), and the runs whose process is gone are
    marked CRASHED, which the dispatcher recovers like any crashed run."""

    def __init__(
        self,
        *,
        workers: list[subprocess.Popen[bytes]],
        names: Sequence[str],
        start: Callable[[int], subprocess.Popen[bytes]],
        replaced: Callable[[subprocess.Popen[bytes], subprocess.Popen[bytes]], None],
        api_url: str,
        deployments: Sequence[str],
        interval: float = 1.0,
    ) -> None:
        super().__init__(
            processes=workers,
            start=start,
            replaced=replaced,
            what="worker",
            on_death=self._crash_runs_of,
            interval=interval,
        )
        self.names = list(names)  # worker n is named names[n - 1]
        self.api_url = api_url
        self.deployments = list(deployments)

    def _crash_runs_of(self, number: int) -> None:
        try:
            its_runs = runs_submitted_by(self.api_url, self.names[number - 1], since=self.started)
            crashed = crash_runs_of(
                self.api_url,
                self.deployments,
                message="The worker running this flow run stopped unexpectedly.",
                orphaned=lambda run: str(run.id) in its_runs and process_gone(run),
            )
        except Exception:
            log.exception("could not mark the dead worker's flow runs as crashed")
            crashed = []
        if crashed:
            log.warning("flow runs of the dead worker marked crashed", flow_run_ids=crashed)
