"""Serve the flow deployments (the embedded default: no separate worker needed).

The deployments carry this installation's instance name (settings.instance), so several
installations can share one Prefect server without running each other's cases.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import Flow
from prefect.runner import Runner
from prefect.schedules import Cron

import flows
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.settings import get_settings


class _Runner(Runner):
    """Prefect's runner with a SIGTERM that stops it cleanly.

    Prefect 3.8's own handler calls the async `stop()` from inside the event loop (the
    coroutine is never awaited) and exits in the middle of the loop. Here SIGTERM ends
    the polling loops; the runner then waits for its flow-run processes, which share its
    process group and so got the same SIGTERM. Runs are not cancelled: a run cut short
    ends CRASHED, and the service reschedules it.
    """

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


def main() -> None:
    configure_logging()
    settings = get_settings()
    runner = _Runner(pause_on_shutdown=True)  # what prefect.serve() does, with our SIGTERM
    for deployment in served_deployments(settings.instance):
        runner.add_deployment(deployment)
    asyncio.run(runner.start())


if __name__ == "__main__":
    main()
