"""Serve the flow deployments (the embedded default: no separate worker needed)."""

from __future__ import annotations

import inspect

from prefect import serve

from flows.apply_retention import apply_retention
from flows.offboard_leaver import offboard_leaver
from offboarding.logging import configure_logging

DEPLOYMENT_NAME = "offboard-leaver"
RETENTION_NAME = "apply-retention"


def main() -> None:
    configure_logging()
    deployment = offboard_leaver.to_deployment(
        name=DEPLOYMENT_NAME,
        description="Offboard one leaver: inventory, plan, four-eyes approval, revoke, verify.",
        tags=["offboarding"],
    )
    retention = apply_retention.to_deployment(
        name=RETENTION_NAME,
        description="Erase personal data of closed cases older than the retention period.",
        cron="30 3 * * *",
        tags=["offboarding", "retention"],
    )
    # called outside an event loop, so these are synchronous
    assert not inspect.isawaitable(deployment) and not inspect.isawaitable(retention)
    serve(deployment, retention, print_starting_message=False)


if __name__ == "__main__":
    main()
