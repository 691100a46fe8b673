"""Serve the flow deployments (the embedded default: no separate worker needed).

The deployments carry this installation's instance name (settings.instance), so several
installations can share one Prefect server without running each other's cases.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any

from prefect.runner import Runner

from flows.apply_retention import apply_retention
from flows.offboard_leaver import offboard_leaver
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


def deployment_name(full_name: str) -> str:
    """The deployment part of "flow/deployment"."""
    return full_name.split("/", 1)[1]


def main() -> None:
    configure_logging()
    settings = get_settings()
    deployment = offboard_leaver.to_deployment(
        name=deployment_name(settings.deployment),
        description="Offboard one leaver: inventory, plan, four-eyes approval, revoke, verify.",
        tags=["offboarding"],
    )
    retention = apply_retention.to_deployment(
        name=deployment_name(settings.retention_deployment),
        description="Erase personal data of closed cases older than the retention period.",
        cron="30 3 * * *",
        tags=["offboarding", "retention"],
    )
    # called outside an event loop, so these are synchronous
    assert not inspect.isawaitable(deployment) and not inspect.isawaitable(retention)
    runner = _Runner(pause_on_shutdown=True)  # what prefect.serve() does, with our SIGTERM
    runner.add_deployment(deployment)
    runner.add_deployment(retention)
    asyncio.run(runner.start())


if __name__ == "__main__":
    main()
