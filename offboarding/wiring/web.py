"""The one web app: HRIS intake, the approval pages, and the dispatcher behind them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from approvals.attestation_pages import attestation_router
from approvals.web import approvals_router
from offboarding.intake.routes import WakeDispatcher, document_intake, intake_router
from offboarding.orchestration.dispatcher import Dispatcher
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.services import Services
from offboarding.wiring.web_processes import WakeListener, listen_for_wakes


def create_app(
    services: Services,
    gateway: RunGateway | None = None,
    *,
    dispatch: bool = True,
    wake: WakeDispatcher | None = None,
    wakes_at: str | None = None,
) -> FastAPI:
    """The app; with `dispatch` (the default) its lifespan runs the dispatcher that starts,
    resumes and recovers case runs in the background, and, with `wakes_at`, listens there
    for the other web processes' wake-ups (`app.state.wakes`). Without `dispatch`, `wake`
    tells the dispatcher of another process (`offboarding.wiring.web_processes`)."""
    gateway = gateway or RunGateway(
        services.settings.deployment,
        one_resume_at_a_time=services.settings.resolved_prefect_database_url.startswith("sqlite"),
    )
    dispatcher = Dispatcher(services, gateway)
    wake = wake or dispatcher.wake
    wakes = WakeListener(dispatcher.wake)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not dispatch:
            yield
            return
        listening = await listen_for_wakes(wakes_at, wakes) if wakes_at else None
        task = asyncio.create_task(dispatcher.run_forever(), name="dispatcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if listening is not None:
                listening.close()

    app = FastAPI(
        title="Offboarding service",
        version="0.1.0",
        description=(
            "Receives signed employee.terminated events from the HR system and serves the "
            "four-eyes approval pages. Offboarding runs are visible in the Prefect UI."
        ),
        lifespan=lifespan,
    )
    app.state.dispatcher = dispatcher
    app.state.wakes = wakes
    app.include_router(intake_router(services, wake_dispatcher=wake))
    app.include_router(approvals_router(services, gateway, wake_dispatcher=wake))
    app.include_router(attestation_router(services, gateway, wake_dispatcher=wake))
    document_intake(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}  # answered on the event loop: never queued behind work

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app
