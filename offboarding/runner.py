"""Serve the flow deployments (the embedded default: no separate worker needed)."""

from __future__ import annotations

import inspect

from prefect import serve

from flows.offboard_leaver import offboard_leaver
from offboarding.logging import configure_logging

DEPLOYMENT_NAME = "offboard-leaver"


def main() -> None:
    configure_logging()
    deployment = offboard_leaver.to_deployment(
        name=DEPLOYMENT_NAME,
        description="Offboard one leaver: inventory, plan, four-eyes approval, revoke, verify.",
        tags=["offboarding"],
    )
    assert not inspect.isawaitable(deployment)  # called outside an event loop: synchronous
    serve(deployment, print_starting_message=False)


if __name__ == "__main__":
    main()
